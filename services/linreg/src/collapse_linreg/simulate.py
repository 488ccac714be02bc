"""Batched simulator: many seeds at once, training sets from the shared policy, sufficient stats.

Replicate k is exactly the DVC lineage with lineage seed = data seed = ``seeds[k]``: the same
problem draw, the same :func:`collapse.policy.compose` selections, the same generator streams.
Instead of stacking rows, each shard keeps its XᵀX and Xᵀy (per replicate), and the sum over
the full shards of the previous training set is reused when the new one contains it, so an
accumulate iteration costs O(d² + T·d) per seed, independent of n. ``method="naive"`` stacks
rows and uses the pseudo-inverse instead (the reference the fast path is tested against).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from tqdm import tqdm

from collapse.contracts import PolicySpec
from collapse.policy import (
    Selection,
    compose,
    items_to_generate,
    real_items_needed,
    synthetic_inputs,
)
from collapse_linreg.config import LinregConfig
from collapse_linreg.data import coordinate_scales, draw_problem, synthetic_rows
from collapse_linreg.estimator import naive_fit, solve, test_error


@dataclass(eq=False)
class SimShard:
    """One shard for all K replicates at once (compared by identity)."""

    origin: str
    produced_by: int
    items: int
    y: np.ndarray  # (K, items)
    x: np.ndarray | None  # (K, items, d); None → row r is the fixed design row r mod T
    xtx: np.ndarray = field(repr=False)  # (K, d, d) over all items
    xty: np.ndarray = field(repr=False)  # (K, d)


@dataclass(frozen=True)
class SimulationResult:
    errors: np.ndarray  # (N, K) ‖ŵ_n − w*‖²_Σ
    weights: np.ndarray  # (N, K, d) ŵ_n

    @property
    def mean(self) -> np.ndarray:
        return self.errors.mean(axis=1)

    @property
    def sem(self) -> np.ndarray:
        return self.errors.std(axis=1, ddof=1) / np.sqrt(self.errors.shape[1])


class Simulator:
    def __init__(self, config: LinregConfig, policy: PolicySpec, seeds: list[int], iterations: int):
        self.config, self.policy, self.seeds, self.iterations = config, policy, seeds, iterations
        t = config.samples
        pool = real_items_needed(policy, iterations, t)
        problems = [
            draw_problem(s, config.dim, pool, config.sigma, config.cov_decay, 1) for s in seeds
        ]
        self.w_star = np.stack([p.w_star for p in problems])  # (K, d)
        self.cov_diag = problems[0].cov_diag  # (d,)
        self.design = np.stack([p.x[:t] for p in problems])  # (K, T, d)
        self.design_gram = self.design.transpose(0, 2, 1) @ self.design  # (K, d, d)
        self.real = self._explicit_shard(
            "real", 0, np.stack([p.x for p in problems]), np.stack([p.y for p in problems])
        )
        self.fresh_scales = (
            coordinate_scales(config.dim, config.cov_decay) if config.fresh_design else None
        )

    # --- shards ------------------------------------------------------------------------------

    def _explicit_shard(self, origin: str, producer: int, x: np.ndarray, y: np.ndarray) -> SimShard:
        xtx = x.transpose(0, 2, 1) @ x  # (K, d, d)
        xty = np.einsum("kid,ki->kd", x, y)
        return SimShard(origin, producer, y.shape[1], y, x, xtx, xty)

    def _fixed_design_shard(self, producer: int, y: np.ndarray) -> SimShard:
        items, t = y.shape[1], self.config.samples
        copies = np.bincount(np.arange(items) % t, minlength=t)  # (T,) uses of each design row
        y_by_row = np.stack([np.bincount(np.arange(items) % t, row, minlength=t) for row in y])
        xtx = (
            self.design_gram * (items // t)
            if items % t == 0
            else self.design.transpose(0, 2, 1) @ (copies[None, :, None] * self.design)
        )
        xty = np.einsum("ktd,kt->kd", self.design, y_by_row)
        return SimShard("synthetic", producer, items, y, None, xtx, xty)

    def _generate(self, weights: np.ndarray, producer: int) -> SimShard:
        items = items_to_generate(self.policy, producer, self.config.samples)
        xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        for k, seed in enumerate(self.seeds):
            x, y = synthetic_rows(
                seed, producer, weights[k], self.design[k], 0, items, self.config.sigma,
                self.fresh_scales,
            )
            if x is not None:
                xs.append(x)
            ys.append(y)
        if xs:  # fresh design: every replicate drew its own x
            return self._explicit_shard("synthetic", producer, np.stack(xs), np.stack(ys))
        return self._fixed_design_shard(producer, np.stack(ys))

    def _rows(self, shard: SimShard, k: int, indices: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of replicate k's selected rows."""
        idx = np.arange(shard.items) if indices is None else indices
        if shard.x is not None:
            return shard.x[k, idx], shard.y[k, idx]
        return self.design[k][idx % self.config.samples], shard.y[k, idx]  # fixed design, cycled

    # --- one run -----------------------------------------------------------------------------

    def _selections(self, iteration: int, synthetic: list[SimShard]) -> list[list[Selection[SimShard]]]:
        """Per replicate; computed once when the policy draws nothing at random."""
        t = self.config.samples
        if self.policy.subsample is None:
            shared = compose(self.policy, iteration, [self.real], synthetic, t, self.seeds[0])
            return [shared] * len(self.seeds)
        return [compose(self.policy, iteration, [self.real], synthetic, t, s) for s in self.seeds]

    def run(self, method: Literal["sufficient", "naive"] = "sufficient", progress: bool = False) -> SimulationResult:
        ridge, k_count = self.config.ridge, len(self.seeds)
        synthetic: list[SimShard] = []
        summed_keys: list[SimShard] = []
        summed_xtx = np.zeros_like(self.design_gram)
        summed_xty = np.zeros_like(self.w_star)
        errors, history = [], []
        steps = tqdm(range(1, self.iterations + 1), desc=f"{self.policy.name} ({method})", disable=not progress)
        for iteration in steps:
            per_replicate = self._selections(iteration, synthetic)
            rows = sum(selection.items for selection in per_replicate[0])
            if method == "naive":
                weights = np.stack([self._naive(k, per_replicate[k]) for k in range(k_count)])
            else:
                full = [s.shard for s in per_replicate[0] if s.indices is None]
                if not all(any(old is new for new in full) for old in summed_keys):
                    summed_keys, summed_xtx, summed_xty = [], np.zeros_like(summed_xtx), np.zeros_like(summed_xty)
                for shard in full:
                    if not any(shard is old for old in summed_keys):
                        summed_keys.append(shard)
                        summed_xtx = summed_xtx + shard.xtx
                        summed_xty = summed_xty + shard.xty
                xtx, xty = summed_xtx.copy(), summed_xty.copy()
                for k, selections in enumerate(per_replicate):
                    for selection in selections:
                        if selection.indices is not None:
                            x, y = self._rows(selection.shard, k, selection.indices)
                            xtx[k] += x.T @ x
                            xty[k] += x.T @ y
                weights = solve(xtx, xty, rows, ridge)  # (K, d)
            errors.append(test_error(weights, self.w_star, self.cov_diag))
            history.append(weights)
            if self.policy.synthetic != "none" and iteration < self.iterations:
                synthetic.append(self._generate(weights, iteration))
                still_read = set(synthetic_inputs(self.policy, iteration + 1))
                synthetic = [shard for shard in synthetic if shard.produced_by in still_read]
        return SimulationResult(errors=np.stack(errors), weights=np.stack(history))

    def _naive(self, k: int, selections: list[Selection[SimShard]]) -> np.ndarray:
        parts = [self._rows(s.shard, k, s.indices) for s in selections]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        return naive_fit(x, y, self.config.ridge)


def simulate(
    config: LinregConfig,
    policy: PolicySpec,
    iterations: int,
    seeds: list[int],
    method: Literal["sufficient", "naive"] = "sufficient",
    progress: bool = False,
) -> SimulationResult:
    return Simulator(config, policy, seeds, iterations).run(method, progress)
