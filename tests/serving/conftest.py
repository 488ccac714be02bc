"""Serving fixtures: one smoke-trained project per test session, and real BentoML servers on it.

Set ``COLLAPSE_SERVING_LAB`` to a directory that :func:`serving.smoke.build_smoke_lab` already
trained to skip the 1–2 minute training (the directory is used as is; nothing is written to it
but ``reports/screenshots``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.servers import Server, start_server
from serving.smoke import build_smoke_lab, lineages

ENV_LAB = "COLLAPSE_SERVING_LAB"


@pytest.fixture(scope="session")
def smoke_lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get(ENV_LAB)
    if given:
        return Path(given).resolve()
    return build_smoke_lab(tmp_path_factory.mktemp("serving") / "lab")


def _serve(lab: Path, modality: str, tmp: Path) -> Iterator[Server]:
    server = start_server(lab, modality, tmp / f"{modality}-server.log",
                          lineage=lineages(lab, modality)["replace"], iteration="2")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def linreg_server(smoke_lab: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _serve(smoke_lab, "linreg", tmp_path_factory.mktemp("linreg-server"))


@pytest.fixture(scope="session")
def lm_server(smoke_lab: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _serve(smoke_lab, "lm", tmp_path_factory.mktemp("lm-server"))


@pytest.fixture(scope="session")
def vae_server(smoke_lab: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _serve(smoke_lab, "vae", tmp_path_factory.mktemp("vae-server"))
