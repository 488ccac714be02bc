"""Repair DVC's own bookkeeping after a killed run.

The lab writes every artefact to a temporary file and renames it, so a kill -9 never leaves a
half-written output. DVC 3.67 does not do the same for two of its own files: it rewrites
`.dvc/tmp/rwlock` (which stage holds which path) and each `dvc.lock` in place. A kill landing
inside one of those writes leaves it truncated, and the next `dvc repro` stops with

    ERROR: Unable to read RWLock-file '.dvc/tmp/rwlock'. JSON structure is corrupted
    ERROR: unable to read: 'pipelines/…/dvc.lock', …

`collapse recover` finds such files (with DVC's own loaders and schema, so "damaged" means what
DVC would refuse), moves each aside under `.dvc/tmp/recovered/<time>/` (nothing is deleted), and
refuses while a DVC command is still running in the project. Without a damaged lock file DVC
re-runs the stages it recorded (they are deterministic, so they give the same bytes); without the
rwlock table there is nothing to lose, since every entry in it belonged to the killed process.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

RWLOCK = Path(".dvc/tmp/rwlock")
REPO_LOCK = Path(".dvc/tmp/lock")
RECOVERED = Path(".dvc/tmp/recovered")


class DvcBusyError(RuntimeError):
    """A DVC command is running in the project: its files are in use, not damaged."""


@dataclass(frozen=True)
class Damage:
    path: Path  # relative to the project root
    problem: str


def _lock_files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in [root / "dvc.lock", *root.glob("pipelines/**/dvc.lock")]
                  if p.is_file())


def _lock_file_problem(path: Path) -> str | None:
    from dvc.exceptions import DvcException
    from dvc.schema import COMPILED_LOCKFILE_SCHEMA
    from dvc.utils import strictyaml

    try:
        strictyaml.load(str(path), COMPILED_LOCKFILE_SCHEMA)
    except DvcException as error:
        return " ".join(str(error).split())[:300]
    # a cut at a line boundary reads as stages or fields not yet recorded, which DVC re-runs; a cut
    # inside a line can pass the schema (`hash: m`) and then crash DVC
    if not path.read_bytes().endswith(b"\n"):
        return "cut off inside a line (DVC ends every lock file it writes with a newline)"
    return None


def _rwlock_problem(path: Path) -> str | None:
    from dvc.rwlock import SCHEMA
    from voluptuous import Invalid

    try:
        SCHEMA(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (ValueError, Invalid) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return f"DVC's stage lock table is not valid JSON of its schema ({type(error).__name__}: {error})"
    return None


def find_damage(root: Path) -> list[Damage]:
    """Every DVC bookkeeping file under ``root`` that DVC itself would refuse to read."""
    found = []
    problem = _rwlock_problem(root / RWLOCK)
    if problem:
        found.append(Damage(RWLOCK, problem))
    for path in _lock_files(root):
        problem = _lock_file_problem(root / path)
        if problem:
            found.append(Damage(path, problem))
    return found


def _dvc_processes(root: Path) -> list[str]:
    """Live DVC commands working in ``root`` (Linux /proc; processes of other users are not visible)."""
    resolved, found = root.resolve(), []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = Path(os.readlink(proc / "cwd"))
        except OSError:
            continue
        words = [Path(a.decode(errors="replace")).name for a in argv[:3]]
        # `dvc daemon …` (analytics, updater) touches no project file
        if "dvc" in words and "daemon" not in words and (cwd == resolved or resolved in cwd.parents):
            found.append(f"pid {proc.name}: {b' '.join(argv).decode(errors='replace').strip()}")
    return found


@contextmanager
def _holding_repo_lock(root: Path) -> Iterator[None]:
    """DVC's repository lock (a flock on .dvc/tmp/lock), so no DVC command starts meanwhile."""
    running = _dvc_processes(root)
    path = root / REPO_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            running = running or ["(a process holds .dvc/tmp/lock)"]
        if running:
            raise DvcBusyError("a DVC command is running in this project, so its files are in use, not damaged: "
                               + "; ".join(running) + " — wait for it to end (or stop it), then run "
                               "`collapse recover` again")
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def recover(root: Path) -> tuple[list[Damage], Path | None]:
    """Move every damaged DVC bookkeeping file aside; returns what was damaged and where it went."""
    with _holding_repo_lock(root):
        damage = find_damage(root)
        if not damage:
            return [], None
        aside = root / RECOVERED / f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}"
        for item in damage:
            target = aside / item.path
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(root / item.path, target)
        return damage, aside.relative_to(root)
