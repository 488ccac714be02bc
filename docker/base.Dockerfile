# collapse-lab base image: Python 3.11 in /opt/venv holding every pinned runtime dependency of the
# lab (requirements/runtime.txt: torch + torchvision, BentoML, DVC, each service's libraries), and
# the non-root user `lab` (uid 1000). The service images (docker/<modality>.Dockerfile) start
# FROM it, so its large layers are built once and shared by all of them. Build it first, from the
# project root:
#   docker build -f docker/base.Dockerfile -t collapse-lab/base:0.1.0 .
#
# BASE: NVIDIA's CUDA 13.0 runtime image on Ubuntu 22.04. torch 2.14.1 here is a CUDA 13.0 build
# that brings its CUDA libraries (cuBLAS, cuDNN, NCCL, ...) as pinned pip wheels; running it on a
# GPU needs an NVIDIA driver for CUDA 13.0 (R580 or newer) and the NVIDIA Container Toolkit.
ARG BASE=nvidia/cuda:13.0.1-runtime-ubuntu22.04
FROM ${BASE}

# Where pip gets wheels: the package index by default; an offline build passes a wheel
# directory instead (--build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=<URL or path>).
ARG PIP_NO_INDEX=0
ARG PIP_FIND_LINKS=""

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONHASHSEED=0 \
    BENTOML_DO_NOT_TRACK=True \
    BENTOML_HOME=/tmp/bentoml \
    DVC_NO_ANALYTICS=1 \
    HF_HUB_OFFLINE=1 \
    COLLAPSE_PROJECT=/lab/project \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Python 3.11 and git from the distribution (on Ubuntu 22.04 python3.11 is in universe); a base
# that already has both (the Debian bookworm one of the offline build) skips apt altogether.
RUN if ! { command -v python3.11 && command -v git && python3.11 -c "import ensurepip"; } >/dev/null 2>&1; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3.11 python3.11-venv git ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3.11 -m venv /opt/venv \
    && useradd --create-home --uid 1000 --shell /bin/bash lab

WORKDIR /lab
COPY requirements/runtime.txt requirements/
# Exactly the pinned versions: runtime.txt is pip's full resolution, so --no-deps re-resolves
# nothing. torch with its CUDA libraries is about 5.5 GB installed, so it goes in layers of at
# most about 2 GB (pulled in parallel; a builder needs less free disk to commit each); the last
# step installs every remaining pin and `pip check` confirms that every requirement is met.
RUN grep -E '^(torch|torchvision)==' requirements/runtime.txt > /tmp/layer.txt \
    && pip install --no-cache-dir --no-deps -r /tmp/layer.txt \
    && rm /tmp/layer.txt
RUN grep -E '^(triton|nvidia-cudnn-cu13)==' requirements/runtime.txt > /tmp/layer.txt \
    && pip install --no-cache-dir --no-deps -r /tmp/layer.txt \
    && rm /tmp/layer.txt
RUN grep -E '^nvidia-(cublas|cufft|cusolver|nccl-cu13|cuda-nvrtc|cusparselt-cu13)==' requirements/runtime.txt > /tmp/layer.txt \
    && pip install --no-cache-dir --no-deps -r /tmp/layer.txt \
    && rm /tmp/layer.txt
RUN pip install --no-cache-dir --no-deps -r requirements/runtime.txt \
    && pip check
