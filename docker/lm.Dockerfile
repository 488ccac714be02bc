# collapse-lab lm service: pipeline stages (`collapse …`, `dvc repro`, `torchrun` for DDP fits)
# and its BentoML endpoint. Built from the project root: docker build -f docker/lm.Dockerfile .
# On the GPU the sampler uses vLLM, which pins its own torch/transformers: the image is that
# environment, with the lab installed on top (the lab's own ranges admit vLLM's pins).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BENTOML_DO_NOT_TRACK=True \
    DVC_NO_ANALYTICS=1 \
    HF_HUB_OFFLINE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential git nodejs npm \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /lab
RUN pip install "vllm==0.33.*"
COPY shared/ shared/
COPY services/lm/ services/lm/
RUN pip install ./shared ./services/lm "dvc>=3.60,<4"

RUN useradd --create-home --uid 1000 lab && chown -R lab /lab
USER 1000

# The project (params.yaml, dvc.yaml, pipelines/, data/tinystories) is mounted at /lab/project.
WORKDIR /lab/project
ENTRYPOINT ["collapse"]
CMD ["--help"]
