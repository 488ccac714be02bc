"""Pipeline bookkeeping benchmarks (`nox -s bench`); ratios against baselines of the same run.

1. Per-stage cost as lineages grow: a linreg replace + accumulate pair at smoke scale (compute
   ≈ 0) with N = 10, 50, 100 iterations, through `dvc repro` and through `dvc exp run`, each in a
   fresh copy of the project. Prints seconds per stage and the ratio N=100 / N=10 (target ≤ 1.3),
   plus one `collapse` start-up as the unit.
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


def _env(pythonpath: str | None = None) -> dict[str, str]:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1")
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


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


def bench_scaling(sizes: list[int], tools: list[str]) -> None:
    env = _env()
    start = time.perf_counter()
    subprocess.run(["collapse", "lineages", "--json"], cwd=ROOT, env=env, check=True, capture_output=True)
    unit = time.perf_counter() - start
    rows = []
    for n in sizes:
        row: dict[str, float] = {"N": n}
        commands = {"repro": ["dvc", "repro"], "exp": ["dvc", "exp", "run"]}
        for tool in tools:
            command = commands[tool]
            with tempfile.TemporaryDirectory() as tmp:
                lab = _lab(Path(tmp), ROOT, _pair(n), "smoke", env)
                wall, stages = _timed(command, lab, env)
            row[f"{tool}_s"], row[f"{tool}_stages"], row[f"{tool}_per"] = wall, stages, wall / stages
            print(f"  N={n:>3} {tool:>5}: {stages} stages in {wall:7.1f} s = {wall / stages:.3f} s/stage", flush=True)
        rows.append(row)
    print("\nlinreg replace + accumulate at smoke scale (compute ≈ 0): DVC bookkeeping per stage")
    print(f"{'N':>4} {'stages':>7} {'repro s':>9} {'s/stage':>8} {'stages':>7} {'exp s':>9} {'s/stage':>8}")
    for row in rows:
        cells = "".join(f" {row.get(f'{t}_stages', 0):>7.0f} {row.get(f'{t}_s', 0):>9.1f} "
                        f"{row.get(f'{t}_per', 0):>8.3f}" for t in ("repro", "exp"))
        print(f"{row['N']:>4.0f}{cells}")
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        ratios = ", ".join(f"{t} {last[f'{t}_per'] / first[f'{t}_per']:.2f}" for t in tools)
        print(f"ratio per stage N={last['N']:.0f} / N={first['N']:.0f}: {ratios}  (target ≤ 1.3)")
    print(f"one `collapse` start-up: {unit:.2f} s")


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
                old = _default_linreg(tree, _env(path), "linreg-only")
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
        print(f"  revision {before}: {old:.1f} s → after/before = {after / old:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--before", help="also time the default linreg pipeline of this git revision")
    parser.add_argument("--tools", nargs="+", choices=["repro", "exp"], default=["repro", "exp"])
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--skip-default", action="store_true")
    args = parser.parse_args()
    if not args.skip_default:
        bench_default(args.before)
    if not args.skip_scaling:
        bench_scaling(args.sizes, args.tools)


if __name__ == "__main__":
    main()
