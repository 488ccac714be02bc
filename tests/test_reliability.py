"""Crashes lose nothing and runs are deterministic (slow tier).

* kill -9 of the whole `dvc repro` process group at seeded pseudo-random points — inside or
  right after a linreg, lm and vae fit or generate — then, as the README says to after a crash,
  `collapse recover` (DVC rewrites `.dvc/tmp/rwlock` and `dvc.lock` files in place, so a kill in
  DVC's own bookkeeping can leave one truncated) and `dvc repro` again: it completes, every output
  is byte-identical to an uninterrupted run (the session's `slow_lab`) and no scratch file or
  folder is left under runs/;
* two clean runs give identical hashes for every DVC output (their lock files are identical).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import SLOW_LINEAGES, command_env, copy_project, reset_lab, run, smoke_params

pytestmark = pytest.mark.slow

KILL_SEED = 20261130
LINEAGES = SLOW_LINEAGES


def _outputs(lab: Path) -> dict[str, bytes]:
    return {p.relative_to(lab).as_posix(): p.read_bytes() for folder in ("runs", "reports")
            for p in (lab / folder).rglob("*") if p.is_file() and p.name != ".gitignore"}


def _locks(lab: Path) -> dict[str, str]:
    files = [lab / "dvc.lock", *lab.glob("pipelines/*/*/dvc.lock")]
    return {p.relative_to(lab).as_posix(): p.read_text() for p in files}


def _running(pattern: str) -> bool:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if pattern in command and "pytest" not in command:
                return True
    return False


def _recover(lab: Path) -> str:
    """The README's step after a crash; what it moved aside, if anything."""
    printed = run("collapse", "recover", cwd=lab).stdout
    moved = re.findall(r"^moved aside (\S+):", printed, flags=re.M)
    return f" (recovered {', '.join(moved)})" if moved else ""


def _kill_during(lab: Path, pattern: str, rng: random.Random, timeout: float = 900) -> str:
    """`collapse recover`, start `dvc repro`, kill -9 its process group a seeded moment after ``pattern`` runs."""
    recovered = _recover(lab)
    log = lab.parent / "killed-repro.log"
    with log.open("wb") as output:
        process = subprocess.Popen(["dvc", "repro"], cwd=lab, env=command_env(), stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    started = time.monotonic()
    while not _running(pattern):
        if process.poll() is not None or time.monotonic() - started > timeout:
            tail = log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"`{pattern}` never ran (dvc repro exited {process.returncode}):\n{tail}")
        time.sleep(0.05)
    # a seeded moment inside the stage; a stage that ends sooner (smoke linreg stages take ~0.1 s) is
    # killed right after, in DVC's bookkeeping, before later stages (the next kill's target) start
    delay = rng.uniform(0.1, 1.5)
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and _running(pattern):
        time.sleep(0.01)
    waited = delay - max(0.0, deadline - time.monotonic())
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return f"{recovered.strip()} killed {waited:.2f} s into `{pattern}` (drawn {delay:.2f} s)".strip()


def test_kill_9_anywhere_then_repro_gives_the_uninterrupted_bytes(slow_lab: Path, tmp_path: Path) -> None:
    reset_lab(slow_lab)
    lab = copy_project(tmp_path)
    smoke_params(lab, 2, LINEAGES)
    rng = random.Random(KILL_SEED)
    # in the order DVC runs them: dvc.yaml's stages first, then the lineage files by path
    kills = [
        _kill_during(lab, "collapse fit --modality lm", rng),
        _kill_during(lab, "collapse fit --lineage runs/config/lineages/linreg-accumulate.json --iteration 2", rng),
        _kill_during(lab, "collapse generate --lineage runs/config/lineages/linreg-replace.json --iteration 1", rng),
        _kill_during(lab, "collapse generate --lineage runs/config/lineages/lm-replace.json --iteration 1", rng),
        _kill_during(lab, "collapse fit --lineage runs/config/lineages/vae-accumulate.json --iteration 2", rng),
        _kill_during(lab, "collapse generate --lineage runs/config/lineages/vae-replace.json --iteration 2", rng),
    ]
    print(f"kill seed {KILL_SEED}: " + "; ".join(kills) + _recover(lab))
    # the kills above land in DVC's in-place writes only by chance; here, what such a kill leaves: an
    # empty stage lock table and one iteration's lock file cut off inside a line
    (lab / ".dvc/tmp/rwlock").write_bytes(b"")
    lock = lab / "pipelines/lm-accumulate/iter_2/dvc.lock"
    lock.write_bytes(lock.read_bytes()[:lock.read_bytes().index(b"md5: ") + 9])
    assert run("dvc", "repro", cwd=lab, check=False).returncode != 0
    assert _recover(lab) == " (recovered .dvc/tmp/rwlock, pipelines/lm-accumulate/iter_2/dvc.lock)"
    run("dvc", "repro", cwd=lab)
    # every output, and every hash DVC recorded, equals the uninterrupted clean run's: a killed and
    # resumed run and a clean one are byte-identical (so two clean runs are too)
    assert _outputs(lab) == _outputs(slow_lab)
    first, second = _locks(slow_lab), _locks(lab)
    assert first.keys() == second.keys()
    assert [path for path in first if first[path] != second[path]] == []
    scratch = [p for p in (lab / "runs").rglob(".*") if p.name != ".gitignore"]
    assert scratch == [], scratch


@pytest.mark.parametrize(("file", "edit"), [
    ("config.json", lambda text: text.replace('"layer_norm_epsilon": 1e-05', '"layer_norm_epsilon": 0.5')),
    ("tokenizer.json", lambda text: text.replace('"<|bos|>"', '"<|BOS|>"', 1) + " "),
    ("model.safetensors", None),
])
def test_an_edited_model_file_is_caught_and_the_printed_command_repairs_it(slow_lab: Path, file: str,
                                                                           edit) -> None:  # type: ignore[no-untyped-def]
    reset_lab(slow_lab)
    model = slow_lab / "runs/lm/lm-replace/iter_2/model"
    target = model / file
    original = target.read_bytes()
    if edit is None:
        data = bytearray(target.read_bytes())
        data[-10] ^= 0xFF
        target.write_bytes(bytes(data))
    else:
        target.write_text(edit(target.read_text()))
    stage = "pipelines/lm-replace/iter_2/dvc.yaml:evaluate-generate"
    result = run("dvc", "repro", "-s", stage, cwd=slow_lab, check=False)
    message = result.stdout + result.stderr
    assert result.returncode != 0 and f"{file} is corrupted" in message, message
    assert len(re.findall(r"[0-9a-f]{64}", message)) >= 2
    commands = re.findall(r"`(dvc [^`]+)`", message)
    assert commands[0].startswith("dvc checkout --force") and commands[1] == "dvc repro", message
    for command in commands[:2]:
        run(*command.split(), cwd=slow_lab)
    status = run("dvc", "status", cwd=slow_lab).stdout
    assert "modified" not in status and "deleted" not in status, status
    assert target.read_bytes() == original
