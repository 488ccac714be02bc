"""The `collapse` command through its warm fork server behaves exactly like a fresh process:
same output, exit codes, working directory, umask and file modes; a stale server (an edited lab
module) steps aside; a killed command takes its forked child with it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT, command_env

SIMULATE = ["linreg", "simulate", "--regime", "accumulate", "--dim", "5", "--samples", "20", "--sigma", "1",
            "--iterations", "4", "--seeds", "3", "--json"]


@pytest.fixture
def runtime() -> Iterator[Path]:
    """A private socket folder (short: socket paths are limited), so each test gets its own
    server; the server is stopped after."""
    folder = Path(tempfile.mkdtemp(prefix="cfs-"))
    yield folder
    for lock in folder.glob("collapse-*/fork-*.sock.lock"):
        pid = lock.read_text().strip()
        if pid:
            try:
                os.kill(int(pid), signal.SIGTERM)
            except ProcessLookupError:
                pass
    shutil.rmtree(folder, ignore_errors=True)


def collapse(args: list[str], runtime: Path, cwd: Path = ROOT, server: bool = True,
             **popen: object) -> subprocess.CompletedProcess[str]:
    env = {**command_env(), "XDG_RUNTIME_DIR": str(runtime), "COLLAPSE_FORKSERVER": "1" if server else "0"}
    return subprocess.run(["collapse", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False,
                          timeout=120, **popen)  # type: ignore[call-overload,no-any-return]


def server_pid(runtime: Path, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for socket_file in runtime.glob("collapse-*/fork-*.sock"):
            try:
                pid = Path(f"{socket_file}.lock").read_text().strip()
            except FileNotFoundError:  # a server that is ending removes its lock file
                continue
            if pid:
                return int(pid)
        time.sleep(0.05)
    raise AssertionError("no fork server came up")


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children(pid: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(proc.name))
    return found


def test_a_forked_command_answers_like_a_fresh_process(runtime: Path) -> None:
    fresh = collapse(SIMULATE, runtime, server=False)
    collapse(["lineages", "--json"], runtime)  # starts the server
    server_pid(runtime)
    forked = collapse(SIMULATE, runtime)
    assert forked.returncode == fresh.returncode == 0
    assert forked.stdout == fresh.stdout and forked.stdout.startswith("{")
    for bad in (["linreg", "simulate", "--sigma", "inf"], ["no-such-command"], ["fit", "--iteration", "x"]):
        a, b = collapse(bad, runtime, server=False), collapse(bad, runtime)
        assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr) and a.returncode == 2
    helped = collapse(["--help"], runtime)
    assert helped.returncode == 0 and "usage: collapse" in helped.stdout


def test_cwd_and_umask_are_the_commands(runtime: Path, tmp_path: Path) -> None:
    collapse(["lineages", "--json"], runtime)
    server_pid(runtime)
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    result = collapse(["pipeline", "write"], runtime, cwd=lab, umask=0o027)
    assert result.returncode == 0, result.stderr
    written = lab / "dvc.yaml"
    assert written.is_file()  # relative paths resolved in the command's working directory
    assert written.stat().st_mode & 0o777 == 0o640  # the command's umask, not the server's


def test_an_edited_lab_module_retires_the_server(runtime: Path) -> None:
    collapse(["lineages", "--json"], runtime)
    first = server_pid(runtime)
    contracts = ROOT / "shared/src/collapse/contracts.py"
    stat = contracts.stat()
    try:
        os.utime(contracts, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        result = collapse(SIMULATE, runtime)  # refused by the stale server: runs in its own process
        assert result.returncode == 0 and result.stdout.startswith("{")
        deadline = time.monotonic() + 10
        while alive(first) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(first)
        # a server that ends removes its lock file: none is left naming it
        assert [p for p in runtime.glob("collapse-*/fork-*.sock.lock") if p.read_text().strip() == str(first)] == []
    finally:
        os.utime(contracts, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_killing_the_command_kills_its_forked_child(runtime: Path) -> None:
    collapse(["lineages", "--json"], runtime)
    server = server_pid(runtime)
    long_run = ["linreg", "simulate", "--regime", "accumulate", "--dim", "40", "--samples", "80", "--sigma", "1",
                "--iterations", "100000", "--seeds", "50", "--json"]
    env = {**command_env(), "XDG_RUNTIME_DIR": str(runtime)}
    command = subprocess.Popen(["collapse", *long_run], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while not children(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    forked = children(server)
    assert forked, "the command did not run in a forked child"
    os.killpg(command.pid, signal.SIGKILL)
    command.wait()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in forked) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in forked)
    assert alive(server)  # the server itself goes on serving
