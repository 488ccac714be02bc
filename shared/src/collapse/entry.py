"""The ``collapse`` console script: a thin command that runs in a warm fork server when it can.

It imports nothing heavier than the standard library. It connects to this environment's
:mod:`collapse.forkserver` and hands it the command (arguments, working directory, environment,
umask and the three standard streams). The command then runs in a forked child, and this process
waits for its exit status, forwarding Ctrl-C/SIGTERM to it. With no server running, or one that
went stale, the command runs right here, in this process (:func:`collapse.cli.main`), and a
server is started in the background for the next command. ``COLLAPSE_FORKSERVER=0`` turns the
server off.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

# the fork server's protocol; collapse.forkserver imports only the standard library at module level
from collapse.forkserver import EXIT, HEADER, PID, STALE, STATUS

# environment read once at interpreter or library start-up: a server serves only its own values
STARTUP_ENV_PREFIXES = ("PYTHON", "OMP_", "MKL_", "OPENBLAS_", "NUMEXPR_", "CUDA", "TORCH", "PYDANTIC",
                        "LD_")


def socket_path() -> Path:
    """Where this interpreter + sys.path + start-up environment's server listens."""
    startup_env = sorted((k, v) for k, v in os.environ.items() if k.startswith(STARTUP_ENV_PREFIXES))
    key = json.dumps([sys.executable, sys.path[1:], startup_env, sys.flags.optimize])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    folder = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / f"collapse-{os.getuid()}"
    if len(str(folder)) > 80:  # a unix socket's path (folder + 27) holds at most 107 bytes
        folder = Path(tempfile.gettempdir()) / f"collapse-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder.stat().st_uid != os.getuid() or folder.stat().st_mode & 0o077:
        raise PermissionError(f"{folder} is not private to this user")
    return folder / f"fork-{digest}.sock"


def _in_process(argv: list[str]) -> int:
    from collapse.cli import main as cli_main

    return cli_main(argv)


def _start_server(path: Path) -> None:
    subprocess.Popen(
        [sys.executable, "-m", "collapse.forkserver", str(path), json.dumps(sys.path[1:])],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True, cwd="/",
    )


def _read_exactly(connection: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _via_server(connection: socket.socket, argv: list[str]) -> int | None:
    """Run ``argv`` in a forked child; None if the server refused (stale)."""
    umask = os.umask(0)
    os.umask(umask)
    request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask}).encode()
    try:
        socket.send_fds(connection, [HEADER.pack(len(request)) + request], [0, 1, 2])
    except OSError:  # the server went away, or refused (stale) before reading
        return None
    kind = _read_exactly(connection, 1)
    if kind in (None, STALE):
        return None
    pid_bytes = _read_exactly(connection, STATUS.size) if kind == PID else None
    if pid_bytes is None:
        return None
    (child,) = STATUS.unpack(pid_bytes)

    def forward(signum: int, _frame: object) -> None:
        try:
            os.killpg(child, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    reply = _read_exactly(connection, 1 + STATUS.size)
    if reply is None or reply[:1] != EXIT:  # the child died without a status (killed)
        print("collapse: the command's process was killed", file=sys.stderr)
        return 137
    return int(STATUS.unpack(reply[1:])[0])


def main() -> int:
    argv = sys.argv[1:]
    if os.environ.get("COLLAPSE_FORKSERVER", "1") == "0" or not hasattr(socket, "send_fds"):
        return _in_process(argv)
    try:
        path = socket_path()
    except OSError:
        return _in_process(argv)
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(str(path))
    except OSError:
        connection.close()
        _start_server(path)
        return _in_process(argv)
    with connection:
        code = _via_server(connection, argv)
    if code is None:  # stale server (it exits): a fresh one for the next command
        _start_server(path)
        return _in_process(argv)
    return code


if __name__ == "__main__":
    sys.exit(main())
