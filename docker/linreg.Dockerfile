# collapse-lab linreg service: runs pipeline stages (`collapse …`, `dvc repro`) and, later, its
# BentoML endpoint. Built from the project root: docker build -f docker/linreg.Dockerfile .
# linreg itself needs no GPU; it shares the CUDA base of the other services so one image
# family runs every stage of a lineage on the same nodes.
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BENTOML_DO_NOT_TRACK=True \
    DVC_NO_ANALYTICS=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv git \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /lab
COPY shared/ shared/
COPY services/linreg/ services/linreg/
RUN pip install ./shared ./services/linreg "dvc>=3.60,<4"

RUN useradd --create-home --uid 1000 lab && chown -R lab /lab
USER 1000

# The project (params.yaml, dvc.yaml, pipelines/) is mounted at /lab/project.
WORKDIR /lab/project
ENTRYPOINT ["collapse"]
CMD ["--help"]
