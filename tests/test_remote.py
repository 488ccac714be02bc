"""Nothing is lost with a remote: push a finished smoke run, clone afresh, pull, nothing to re-run;
the README's clean-up commands keep every committed lineage (slow tier)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import reset_lab, run

pytestmark = pytest.mark.slow


def _outputs(lab: Path) -> dict[str, bytes]:
    return {p.relative_to(lab).as_posix(): p.read_bytes() for folder in ("runs", "reports")
            for p in (lab / folder).rglob("*") if p.is_file() and p.name != ".gitignore"}


def test_push_clone_pull_restores_everything(slow_lab: Path, tmp_path: Path) -> None:
    lab = slow_lab
    reset_lab(lab)
    remote = tmp_path / "remote"
    run("dvc", "remote", "add", "-d", "storage", str(remote), cwd=lab)
    run("git", "add", ".dvc/config", cwd=lab)
    run("git", "commit", "-qm", "remote", cwd=lab)
    run("dvc", "exp", "remove", "--all-commits", cwd=lab)
    run("dvc", "gc", "--workspace", "--all-commits", "-f", cwd=lab)
    run("dvc", "push", cwd=lab)

    clone = tmp_path / "clone"
    run("git", "clone", "-q", str(lab), str(clone))
    run("dvc", "pull", cwd=clone)
    status = run("dvc", "status", cwd=clone).stdout
    assert "modified" not in status and "deleted" not in status and "new" not in status, status
    assert re.findall(r"Running stage '([^']+)'", run("dvc", "repro", cwd=clone).stdout) == ["check"]
    assert _outputs(clone) == _outputs(lab)
