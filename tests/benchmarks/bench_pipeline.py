"""Pipeline bookkeeping benchmarks (`nox -s bench`); ratios against baselines of the same run.

1. Per-stage cost as lineages grow: a linreg replace + accumulate pair at smoke scale (compute
   ≈ 0) with N = 10, 50, 100 iterations, through `dvc repro`, `collapse exp run` (repro + exp
   save) and `dvc exp run` (N = 10, 50 only: its cost per stage grows with the lab's stage count),
   each in a fresh copy of the project. Prints seconds per stage and the ratio N=100 / N=10
   (target ≤ 1.3), plus one `collapse` start-up in its own process as the unit.
2. The default linreg pipeline (5 regimes × 10 iterations, figures and report) wall time; with
   ``--before REV`` the same for an older revision of the lab, run in the same session from a git
   worktree (its sources put first on PYTHONPATH), so before/after share the machine's load.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]


def _env(pythonpath: str | None = None, shim: Path | None = None) -> dict[str, str]:
    path = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    env = dict(os.environ, PATH=f"{shim}{os.pathsep}{path}" if shim else path, DVC_NO_ANALYTICS="1")
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode cached, as on any ordinary machine
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def _old_console_script(folder: Path) -> Path:
    """A `collapse` command for revisions whose console script was ``collapse.cli:main``."""
    folder.mkdir()
    script = folder / "collapse"
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom collapse.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)
    return folder


def _copy(source: Path, lab: Path) -> None:
    files = subprocess.run(["git", "ls-files"], cwd=source, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if not name.endswith("dvc.lock") and (source / name).is_file():
            (lab / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, lab / name)


def _lab(where: Path, source: Path, lineages: dict[str, dict[str, object]], scale: str,
         env: dict[str, str]) -> Path:
    lab = where / "lab"
    _copy(source, lab)
    params = yaml.safe_load((lab / "params.yaml").read_text())
    params = {"linreg": {**params["linreg"], "scale": scale}, "lineages": lineages}
    (lab / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["collapse", "pipeline", "write"], cwd=lab, env=env, check=True, capture_output=True)
    for command in (["git", "init", "-q"], ["git", "add", "-A"], [*GIT, "commit", "-qm", "bench"]):
        subprocess.run(command, cwd=lab, check=True, capture_output=True)
    return lab


def _timed(command: list[str], lab: Path, env: dict[str, str]) -> tuple[float, int]:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=lab, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return wall, len(re.findall(r"Running stage '", result.stdout))


def _pair(n: int) -> dict[str, dict[str, object]]:
    return {f"linreg-{p}": {"modality": "linreg", "policy": p, "seed": 0, "iterations": n}
            for p in ("replace", "accumulate")}


COMMANDS = {
    "repro": ["dvc", "repro"],
    "collapse-exp": ["collapse", "exp", "run", "-S", "linreg.scale=smoke"],  # repro + dvc exp save
    "dvc-exp": ["dvc", "exp", "run"],
}


def bench_scaling(sizes: list[int], tools: list[str], dvc_exp_sizes: list[int]) -> None:
    env = _env()
    start = time.perf_counter()
    subprocess.run(["collapse", "lineages", "--json"], cwd=ROOT, env={**env, "COLLAPSE_FORKSERVER": "0"},
                   check=True, capture_output=True)
    unit = time.perf_counter() - start
    rows: dict[str, dict[int, tuple[int, float]]] = {tool: {} for tool in tools}
    for n in sorted(set(sizes) | set(dvc_exp_sizes)):
        for tool in tools:
            if n not in (dvc_exp_sizes if tool == "dvc-exp" else sizes):
                continue
            with tempfile.TemporaryDirectory() as tmp:
                lab = _lab(Path(tmp), ROOT, _pair(n), "smoke", env)
                wall, stages = _timed(COMMANDS[tool], lab, env)
            rows[tool][n] = (stages, wall)
            print(f"  N={n:>3} {tool:>12}: {stages} stages in {wall:7.1f} s = {wall / stages:.3f} s/stage", flush=True)
    print("\nlinreg replace + accumulate at smoke scale (compute ≈ 0): DVC bookkeeping per stage")
    print(f"{'tool':>12} {'N':>4} {'stages':>7} {'wall s':>8} {'s/stage':>8}")
    for tool, by_n in rows.items():
        for n, (stages, wall) in sorted(by_n.items()):
            print(f"{tool:>12} {n:>4} {stages:>7} {wall:>8.1f} {wall / stages:>8.3f}")
        if len(by_n) > 1:
            first, last = min(by_n), max(by_n)
            ratio = (by_n[last][1] / by_n[last][0]) / (by_n[first][1] / by_n[first][0])
            print(f"{tool:>12} ratio per stage N={last} / N={first}: {ratio:.2f}  (target ≤ 1.3)")
    print(f"one `collapse` start-up in its own process (COLLAPSE_FORKSERVER=0): {unit:.2f} s")


DEFAULT_LINREG = ("replace", "accumulate", "replace_multiple", "accumulate_subsample", "accumulate_fresh")


def _default_linreg(source: Path, env: dict[str, str], targets: str) -> float:
    lineages = {f"linreg-{p.replace('_', '-')}": {"modality": "linreg", "policy": p, "seed": 0, "iterations": 10}
                for p in DEFAULT_LINREG}
    with tempfile.TemporaryDirectory() as tmp:
        lab = _lab(Path(tmp), source, lineages, "default", env)
        command = ["dvc", "repro"]
        if targets == "linreg-only":  # an old revision's report stage may need other modalities
            command += [str(p.relative_to(lab)) for p in sorted(lab.glob("pipelines/*/dvc.yaml"))]
            command += ["linreg.prepare", "linreg.figures"]
        wall, _ = _timed(command, lab, env)
    return wall


def bench_default(before: str | None) -> None:
    after = _default_linreg(ROOT, _env(), "all")
    print(f"\ndefault linreg pipeline (5 regimes × 10 iterations, figures, report): {after:.1f} s (target < 60 s)")
    if before:
        with tempfile.TemporaryDirectory() as tmp:
            tree = Path(tmp) / "before"
            subprocess.run(["git", "worktree", "add", "--detach", str(tree), before], cwd=ROOT, check=True,
                           capture_output=True)
            try:
                path = os.pathsep.join(str(tree / p) for p in ("shared/src", "services/linreg/src", "services/lm/src"))
                old = _default_linreg(tree, _env(path, _old_console_script(Path(tmp) / "bin")), "linreg-only")
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
        print(f"  revision {before}: {old:.1f} s → after/before = {after / old:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--before", help="also time the default linreg pipeline of this git revision")
    parser.add_argument("--tools", nargs="+", choices=list(COMMANDS), default=list(COMMANDS))
    parser.add_argument("--dvc-exp-sizes", type=int, nargs="+", default=[10, 50],
                        help="N for `dvc exp run`, whose cost per stage grows with the lab's stage count")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--skip-default", action="store_true")
    args = parser.parse_args()
    if not args.skip_default:
        bench_default(args.before)
    if not args.skip_scaling:
        bench_scaling(args.sizes, args.tools, args.dvc_exp_sizes)


if __name__ == "__main__":
    main()
