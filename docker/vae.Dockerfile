# collapse-lab vae image: its default command serves the VAE BentoML endpoint; the same image runs
# the lab's pipeline stages (`collapse …`, `dvc repro`), on the GPU when the container has one.
# Build from the project root, after docker/base.Dockerfile:
#   docker build -f docker/vae.Dockerfile -t collapse-lab/vae:0.1.0 .
ARG BASE_IMAGE=collapse-lab/base:0.1.0
FROM ${BASE_IMAGE}
WORKDIR /lab

# The lab's packages from source, without dependencies (the base holds them all, pinned): shared,
# this service and the other services too, since the mounted project's params.yaml names every
# modality and `collapse` checks it against the installed ones before any stage or endpoint runs.
COPY shared/ shared/
COPY services/ services/
RUN pip install --no-cache-dir --no-deps --no-build-isolation ./shared ./services/* \
    && pip check \
    && rm -rf shared/build services/*/build

# lab, the base image's non-root user
USER 1000:1000
# The project (params.yaml, dvc.yaml, pipelines/, runs/, .cache/collapse-vae with Fashion-MNIST)
# is mounted here; COLLAPSE_PROJECT points the endpoint at it, and stage commands run in it:
#   docker run … collapse-lab/vae dvc repro pipelines/<lineage>/dvc.yaml
WORKDIR /lab/project
EXPOSE 3000
# BentoML's readiness route on the default command's port. Pipeline-stage runs start no server
# (docker run --no-healthcheck … skips the check for them).
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/readyz', timeout=4)"]
# Serves the (lineage, iteration) picked by params.yaml's `serving` section or COLLAPSE_LINEAGE /
# COLLAPSE_ITERATION. Inside a container it binds 0.0.0.0; the port mapping decides who can reach
# it (docker run -p 127.0.0.1:3000:3000 … keeps it on the host's loopback).
CMD ["bentoml", "serve", "collapse_vae.serving:VaeService", "--host", "0.0.0.0", "--port", "3000"]
