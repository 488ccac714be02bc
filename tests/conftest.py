"""Shared fixtures: the project root and a way to run the real `collapse`/`dvc` commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def command_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update({"DVC_NO_ANALYTICS": "1", "BENTOML_DO_NOT_TRACK": "True",
                "GIT_AUTHOR_NAME": "lab", "GIT_AUTHOR_EMAIL": "lab@localhost",
                "GIT_COMMITTER_NAME": "lab", "GIT_COMMITTER_EMAIL": "lab@localhost"})
    return env


def run(*args: str, cwd: Path = ROOT, check: bool = True, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=cwd, env={**command_env(), **(env or {})}, capture_output=True, text=True,
                            check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def copy_project(where: Path) -> Path:
    """The committed-or-not project files (what `git ls-files` sees) in ``where/lab``."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()
    target = where / "lab"
    for name in listed:
        source = ROOT / name
        if source.is_file() and not name.endswith("dvc.lock"):
            destination = target / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(source.read_bytes())
    return target


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    return copy_project(tmp_path)


def smoke_params(lab: Path, iterations: int, lineages: tuple[str, ...] = ("linreg-replace", "linreg-accumulate",
                                                                         "lm-replace", "lm-accumulate"),
                 scale: str = "smoke", env: dict[str, str] | None = None) -> None:
    """Turn a project copy into a small smoke-scale lab: the given lineages, ``iterations`` each,
    the graph regenerated and everything committed to a fresh git repository."""
    import yaml

    params_file = lab / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["lineages"] = {name: {**spec, "iterations": iterations}
                          for name, spec in params["lineages"].items() if name in lineages}
    used = {spec["modality"] for spec in params["lineages"].values()}
    for key in list(params):
        if key not in ("lineages", "serving") and key not in used:
            del params[key]
    for modality in used:
        params[modality]["scale"] = scale
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    run("collapse", "pipeline", "write", cwd=lab, env=env)
    if not (lab / ".git").exists():
        run("git", "init", "-q", cwd=lab)
    run("git", "add", "-A", cwd=lab)
    run("git", "commit", "-qm", "smoke lab", cwd=lab)


ARTIFACTS = Path(os.environ.get("COLLAPSE_TEST_ARTIFACTS", "/tmp/collapse-test-artifacts"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


SLOW_LINEAGES = ("linreg-replace", "linreg-accumulate", "lm-replace", "lm-accumulate", "vae-replace",
                 "vae-accumulate")


@pytest.fixture(scope="session")
def slow_lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke lab (replace + accumulate per modality, 2 iterations) run once and committed."""
    target = copy_project(tmp_path_factory.mktemp("slow"))
    smoke_params(target, 2, SLOW_LINEAGES)
    run("dvc", "repro", cwd=target)
    run("git", "add", "-A", cwd=target)
    run("git", "commit", "-qm", "baseline run", cwd=target)
    return target


def reset_lab(lab: Path) -> None:
    """Back to a lab's committed state: params, graph, locks and exactly the outputs they record
    (outputs of experiments' extra stages, which git ignores, are removed too)."""
    import shutil

    # A fresh index: after a failed `dvc exp run -S`, DVC can leave git's index holding the
    # committed blob with the stat data of the edited file (same size, same second), so a plain
    # `git reset --hard` would believe the edited params.yaml is clean and keep it.
    (lab / ".git/index").unlink(missing_ok=True)
    run("git", "reset", "-q", "--hard", cwd=lab)
    run("git", "clean", "-qfd", cwd=lab)
    for folder in ("runs", "reports"):
        shutil.rmtree(lab / folder, ignore_errors=True)
    run("dvc", "checkout", "--force", "-q", cwd=lab)
