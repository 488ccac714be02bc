"""A warm ``collapse`` process that forks one child per command: interpreter start-up and the
imports every stage needs (pydantic contracts, numpy, the stage code) are paid once, not once per
DVC stage.

Why: a linreg stage at smoke scale computes for milliseconds, but a fresh ``collapse`` process
spends ≈ 0.5 s importing before it starts; with two stages per iteration and lineage, a
100-iteration pair paid that ≈ 400 times. DVC still runs every stage as its own command — the
`collapse` console script (:mod:`collapse.entry`) — so the graph, the lock files and the
crash/resume behaviour are unchanged; the command hands its arguments, working directory,
environment, umask and standard streams to this server, which forks a child that runs exactly
what a fresh process would (:func:`collapse.cli.main`) and reports the exit status back.

Rules that keep a child equivalent to a fresh process:

* one server per (interpreter, ``sys.path``, start-up-relevant environment): the socket name is
  a hash of them, so a different venv, PYTHONPATH, PYTHONHASHSEED or thread setting gets its
  own server;
* the server imports only the lab's own modules (never a service, never torch); a service is
  imported fresh in each child;
* before every fork the server re-checks the files it imported and the directories on
  ``sys.path``; if anything changed (an edited ``contracts.py``, a ``pip install``) it refuses,
  exits, and the command runs in its own process while a fresh server starts;
* a child whose command process dies (kill -9 of DVC's process group) kills itself and its
  process group at once: the connection closing is the signal;
* the server exits after :data:`IDLE_SECONDS` without a command.

``COLLAPSE_FORKSERVER=0`` turns it off (every command runs in its own process).
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import select
import signal
import socket
import struct
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

IDLE_SECONDS = 60.0
PRELOAD = ("collapse.cli", "collapse.stages", "collapse.params", "collapse.pipeline", "collapse.seeds")
HEADER = struct.Struct("!I")  # length of the JSON request that follows
STATUS = struct.Struct("!i")  # a pid or an exit code

# server → command messages
PID, EXIT, STALE = b"P", b"X", b"S"


def _fingerprint() -> dict[str, int]:
    """mtimes of every imported lab module and of every directory on sys.path."""
    marks: dict[str, int] = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and (module.__name__ == "collapse" or module.__name__.startswith("collapse.")):
            marks[path] = _mtime(path)
    for entry in sys.path:
        if entry:
            marks[entry] = _mtime(entry)
    return marks


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


def serve(socket_path: Path, python_path: list[str]) -> None:
    """Run the server on ``socket_path`` until idle; at most one per path (a lock file)."""
    sys.path[:] = python_path
    lock = _take_lock(Path(f"{socket_path}.lock"))
    if lock is None:
        return  # another server for this key is starting or running
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    fingerprint = _fingerprint()
    os.chdir("/")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staging = f"{socket_path}.{os.getpid()}"
    listener.bind(staging)
    listener.listen(16)
    os.replace(staging, socket_path)  # a stale socket of a dead server is replaced atomically
    inode = os.stat(socket_path).st_ino
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    try:
        while select.select([listener], [], [], IDLE_SECONDS)[0]:
            connection, _ = listener.accept()
            if _fingerprint() != fingerprint:
                connection.sendall(STALE)
                connection.close()
                break
            sys.stdout.flush()
            sys.stderr.flush()
            if os.fork() == 0:
                listener.close()
                lock.close()
                _child(connection)  # never returns
            connection.close()
    finally:
        try:
            if os.stat(socket_path).st_ino == inode:
                os.unlink(socket_path)
        except OSError:
            pass
        os.unlink(lock.name)  # still holding it: a server starting now locks a new file (see _take_lock)
        lock.close()


def _take_lock(path: Path) -> TextIO | None:
    """Hold ``path`` (flock) with our pid in it, or None when another server holds it. A server
    removes its lock file on exit, so the file locked must still be the one at ``path``."""
    while True:
        lock = open(path, "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            return None
        try:
            current = os.stat(path).st_ino == os.fstat(lock.fileno()).st_ino
        except FileNotFoundError:
            current = False
        if current:
            lock.truncate(0)
            lock.write(f"{os.getpid()}\n")  # who serves this socket (for people and tests)
            lock.flush()
            return lock
        lock.close()  # removed by a server that ended after we opened it: try the new file


def _receive(connection: socket.socket) -> tuple[dict[str, Any], list[int]]:
    data, fds, _, _ = socket.recv_fds(connection, 1 << 16, 3)
    if len(data) < HEADER.size:
        raise ConnectionError("short request")
    (length,) = HEADER.unpack_from(data)
    body = bytearray(data[HEADER.size:])
    while len(body) < length:
        chunk = connection.recv(length - len(body))
        if not chunk:
            raise ConnectionError("request cut short")
        body += chunk
    return json.loads(bytes(body)), list(fds)


def _standard_streams() -> None:
    """New sys.std* on fds 0–2 with the buffering a fresh interpreter would choose."""
    sys.stdin = io.TextIOWrapper(open(0, "rb", closefd=False), encoding=sys.stdin.encoding,
                                 errors=sys.stdin.errors)
    sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False), encoding=sys.stdout.encoding,
                                  errors=sys.stdout.errors, line_buffering=os.isatty(1))
    sys.stderr = io.TextIOWrapper(open(2, "wb", closefd=False), encoding=sys.stderr.encoding,
                                  errors="backslashreplace", line_buffering=True)


def _child(connection: socket.socket) -> None:
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.setpgid(0, 0)
        request, fds = _receive(connection)
        for target, fd in zip((0, 1, 2), fds, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        _standard_streams()
        os.chdir(request["cwd"])
        os.umask(request["umask"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [sys.argv[0], *request["argv"]]
        connection.sendall(PID + STATUS.pack(os.getpid()))
        threading.Thread(target=_die_with_the_command, args=(connection,), daemon=True).start()
        from collapse.cli import main

        try:
            code = main(request["argv"])
        except SystemExit as stop:  # argparse: --help (0), bad arguments (2)
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            if isinstance(stop.code, str):
                print(stop.code, file=sys.stderr)
        except KeyboardInterrupt:
            code = 130
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        try:
            connection.sendall(EXIT + STATUS.pack(code))
        finally:
            os._exit(code)


def _die_with_the_command(connection: socket.socket) -> None:
    """The command process only ever closes its end: when it does (it was killed), so do we."""
    try:
        connection.recv(1)
    except OSError:
        pass
    os.killpg(0, signal.SIGKILL)


if __name__ == "__main__":  # python -m collapse.forkserver SOCKET PYTHONPATH-JSON
    serve(Path(sys.argv[1]), json.loads(sys.argv[2]))
