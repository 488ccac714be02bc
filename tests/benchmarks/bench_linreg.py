"""linreg benchmarks (`nox -s bench`); every figure is a ratio to a baseline from the same run.

1. Sufficient-statistics simulator vs naive stacking + pseudo-inverse on the same seeds
   (d=100, T=1000, 100 iterations, accumulate): speed ratio and max |Δŵ|.
(The pipeline's wall time and per-stage cost are in bench_pipeline.py.)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from collapse.contracts import REGIMES
from collapse_linreg.config import PRESETS, LinregConfig
from collapse_linreg.simulate import simulate


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=2, help="seeds for the simulator benchmark")
    parser.add_argument("--iterations", type=int, default=100)
    args = parser.parse_args()
    bench_simulator(args.seeds, args.iterations)


if __name__ == "__main__":
    main()
