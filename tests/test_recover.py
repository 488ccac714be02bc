"""`collapse recover`: the DVC files a kill -9 can leave truncated are found and moved aside.

A tiny real DVC project (one stage) stands in for the lab: the damage is what DVC itself leaves
when killed inside its in-place writes (an empty or cut-off `.dvc/tmp/rwlock`, a cut-off
`dvc.lock`); `dvc repro` refuses it, and after `collapse recover` it runs and gives the same bytes.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from conftest import run

STAGE = """stages:
  double:
    cmd: python -c "import pathlib; t = pathlib.Path('in.txt').read_text(); pathlib.Path('out.txt').write_text(t * 2)"
    deps: [in.txt]
    outs: [out.txt]
"""


@pytest.fixture
def dvc_project(tmp_path: Path) -> Path:
    run("git", "init", "-q", cwd=tmp_path)
    run("dvc", "init", "-q", cwd=tmp_path)
    (tmp_path / "dvc.yaml").write_text(STAGE)
    (tmp_path / "in.txt").write_text("collapse\n")
    run("dvc", "repro", cwd=tmp_path)
    assert (tmp_path / "out.txt").read_text() == "collapse\ncollapse\n"
    return tmp_path


def _repro_refuses(project: Path, message: str) -> None:
    result = run("dvc", "repro", cwd=project, check=False)
    assert result.returncode != 0 and message in result.stdout + result.stderr, result.stdout + result.stderr


def _recover(project: Path) -> str:
    result = run("collapse", "recover", cwd=project)
    return result.stdout


@pytest.mark.parametrize("content", [b"", b'{"read": {}, "write": {"out.txt": {"pid": 4', b"\x00\x00\x00"],
                         ids=["empty", "cut-off", "zeroed"])
def test_a_truncated_rwlock_is_moved_aside_and_repro_runs(dvc_project: Path, content: bytes) -> None:
    rwlock = dvc_project / ".dvc/tmp/rwlock"
    rwlock.write_bytes(content)
    _repro_refuses(dvc_project, "Unable to read RWLock-file")
    printed = _recover(dvc_project)
    assert "moved aside .dvc/tmp/rwlock" in printed and "dvc repro" in printed, printed
    kept = list((dvc_project / ".dvc/tmp/recovered").rglob("rwlock"))
    assert [p.read_bytes() for p in kept] == [content]  # nothing is deleted
    run("dvc", "repro", cwd=dvc_project)
    assert run("dvc", "status", cwd=dvc_project).stdout.strip() == "Data and pipelines are up to date."


@pytest.mark.parametrize(("cut", "refusal"), [
    (lambda text: b"", "dvc.lock' validation failed"),  # the usual case: killed between truncate and write
    (lambda text: text[:text.index(b"hash: md5") + 7], "failed to reproduce"),  # `hash: m`, DVC crashes
    (lambda text: text[:text.index(b"outs:") + 3], "dvc.lock' is invalid"),
], ids=["empty", "inside-a-value", "inside-a-key"])
def test_a_cut_off_lock_file_is_moved_aside_and_the_stage_reruns_to_the_same_bytes(dvc_project: Path, cut, refusal
                                                                                  ) -> None:  # type: ignore[no-untyped-def]
    lock = dvc_project / "dvc.lock"
    original = lock.read_bytes()
    lock.write_bytes(cut(original))  # as a kill inside DVC's in-place rewrite leaves it
    _repro_refuses(dvc_project, refusal)
    printed = _recover(dvc_project)
    assert "moved aside dvc.lock" in printed, printed
    assert not lock.exists()
    run("dvc", "repro", cwd=dvc_project)
    assert lock.read_bytes() == original
    assert (dvc_project / "out.txt").read_text() == "collapse\ncollapse\n"


def test_intact_files_are_left_alone(dvc_project: Path) -> None:
    before = (dvc_project / "dvc.lock").read_bytes()
    assert "nothing to do" in _recover(dvc_project)
    assert (dvc_project / "dvc.lock").read_bytes() == before
    assert not (dvc_project / ".dvc/tmp/recovered").exists()


def test_it_refuses_while_a_dvc_command_runs_in_the_project(dvc_project: Path) -> None:
    rwlock = dvc_project / ".dvc/tmp/rwlock"
    rwlock.write_bytes(b"")
    # a process whose argv[0] is `dvc`, working in the project (as a DVC command mid-stage is)
    busy = subprocess.Popen(["bash", "-c", "exec -a dvc sleep 30"], cwd=dvc_project)
    try:
        deadline = time.monotonic() + 10
        while b"dvc" not in Path(f"/proc/{busy.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.02)
        result = run("collapse", "recover", cwd=dvc_project, check=False)
    finally:
        busy.kill()
        busy.wait()
    assert result.returncode == 1 and "a DVC command is running" in result.stderr, result.stderr
    assert f"pid {busy.pid}" in result.stderr and "collapse recover" in result.stderr
    assert rwlock.exists() and rwlock.read_bytes() == b""


def test_it_refuses_while_dvc_holds_the_repository_lock(dvc_project: Path) -> None:
    import fcntl

    (dvc_project / ".dvc/tmp/rwlock").write_bytes(b"")
    with open(dvc_project / ".dvc/tmp/lock", "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = run("collapse", "recover", cwd=dvc_project, check=False)
    assert result.returncode == 1 and "holds .dvc/tmp/lock" in result.stderr, result.stderr
    assert (dvc_project / ".dvc/tmp/rwlock").exists()
