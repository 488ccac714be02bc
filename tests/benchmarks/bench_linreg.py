"""linreg benchmarks (`nox -s bench`); every figure is a ratio to a baseline from the same run.

1. Sufficient-statistics simulator vs naive stacking + pseudo-inverse on the same seeds
   (d=100, T=1000, 100 iterations, accumulate): speed ratio and max |Δŵ|.
2. Wall time of the default linreg pipeline (`dvc repro` in a fresh copy of the project),
   against the time of one `collapse` stage command as the unit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from collapse.contracts import REGIMES
from collapse_linreg.config import PRESETS, LinregConfig
from collapse_linreg.simulate import simulate

ROOT = Path(__file__).resolve().parents[2]


def bench_simulator(seeds: int, iterations: int) -> None:
    config = LinregConfig.model_validate(
        {"dim": 100, "samples": 1000, "sigma": 1.0, "figures": PRESETS["default"]["figures"]}
    )
    seed_list = list(range(seeds))
    start = time.perf_counter()
    fast = simulate(config, REGIMES["accumulate"], iterations, seed_list, progress=True)
    fast_s = time.perf_counter() - start
    start = time.perf_counter()
    naive = simulate(config, REGIMES["accumulate"], iterations, seed_list, method="naive",
                     progress=True)
    naive_s = time.perf_counter() - start
    print(f"\nsimulator, accumulate, d=100, T=1000, {iterations} iterations, {seeds} seeds")
    print(f"  sufficient statistics: {fast_s:8.2f} s")
    print(f"  naive stack + pinv:    {naive_s:8.2f} s")
    print(f"  speed-up:              {naive_s / fast_s:8.1f}x  (target >= 100x)")
    print(f"  max |Δŵ|:              {np.max(np.abs(fast.weights - naive.weights)):.2e}")


def bench_pipeline() -> None:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    with tempfile.TemporaryDirectory() as tmp:
        lab = Path(tmp) / "lab"
        files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.split()
        for name in files:
            if not name.endswith("dvc.lock"):
                (lab / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, lab / name)
        for command in (["git", "init", "-q"], ["git", "add", "-A"],
                        ["git", "-c", "user.name=b", "-c", "user.email=b@localhost", "commit", "-qm", "b"]):
            subprocess.run(command, cwd=lab, check=True)
        start = time.perf_counter()
        subprocess.run(["collapse", "--help"], cwd=lab, env=env, check=True, capture_output=True)
        unit = time.perf_counter() - start
        targets = ["linreg.prepare", "linreg.figures", *sorted(
            str(p.relative_to(lab)) for p in lab.glob("pipelines/linreg-*/dvc.yaml"))]
        start = time.perf_counter()
        subprocess.run(["dvc", "repro", "-q", *targets], cwd=lab, env=env, check=True, capture_output=True)
        total = time.perf_counter() - start
        start = time.perf_counter()
        subprocess.run(["collapse", "figures", "--modality", "linreg", "--out", str(Path(tmp) / "f")],
                       cwd=lab, env=env, check=True, capture_output=True)
        figures = time.perf_counter() - start
    print("\ndefault linreg pipeline (`dvc repro` of its stages, fresh copy, 5 regimes × 10 iterations × 4 steps)")
    print(f"  wall time:                      {total:8.1f} s  (target < 60 s)")
    print(f"  of which the figure sweep:      {figures:8.1f} s")
    print(f"  one `collapse` start-up:        {unit:8.2f} s  → pipeline = {total / unit:.0f} start-ups")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=2, help="seeds for the simulator benchmark")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--skip-pipeline", action="store_true")
    args = parser.parse_args()
    bench_simulator(args.seeds, args.iterations)
    if not args.skip_pipeline:
        bench_pipeline()


if __name__ == "__main__":
    main()
