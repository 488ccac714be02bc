"""The sufficient-statistics simulator equals naive stacking + pseudo-inverse, and theory."""

from __future__ import annotations

import numpy as np
import pytest

from collapse.contracts import REGIMES
from collapse_linreg.config import PRESETS, LinregConfig
from collapse_linreg.simulate import simulate
from collapse_linreg.theory import expected_error

FIGURES = PRESETS["smoke"]["figures"]


def config(**changes: object) -> LinregConfig:
    fields = {"dim": 4, "samples": 20, "sigma": 1.0, "figures": FIGURES} | changes
    return LinregConfig.model_validate(fields)


@pytest.mark.parametrize("regime", sorted(REGIMES))
@pytest.mark.parametrize(
    "changes",
    [{}, {"ridge": 0.3}, {"cov_decay": 0.6}, {"fresh_design": True}, {"samples": 23}],
    ids=["ols", "ridge", "decay", "fresh-design", "odd-T"],
)
def test_sufficient_statistics_equal_naive_pinv(regime: str, changes: dict[str, object]) -> None:
    cfg = config(**changes)
    fast = simulate(cfg, REGIMES[regime], 7, [11, 12, 13])
    naive = simulate(cfg, REGIMES[regime], 7, [11, 12, 13], method="naive")
    assert np.max(np.abs(fast.weights - naive.weights)) < 1e-8
    assert np.max(np.abs(fast.errors - naive.errors)) < 1e-8


def test_replicates_are_independent_of_their_neighbours() -> None:
    """Replicate k depends on seeds[k] only: running it alone gives the same numbers."""
    cfg = config()
    together = simulate(cfg, REGIMES["accumulate_subsample"], 5, [4, 5, 6])
    alone = simulate(cfg, REGIMES["accumulate_subsample"], 5, [5])
    assert np.array_equal(together.weights[:, 1], alone.weights[:, 0])


@pytest.mark.parametrize(
    ("regime", "dim", "samples", "sigma", "cov_decay"),
    [
        ("replace", 5, 30, 1.0, 1.0),
        ("accumulate", 5, 30, 1.0, 1.0),
        ("replace_multiple", 5, 30, 1.0, 1.0),
        ("replace", 10, 40, 0.7, 0.8),
        ("accumulate", 10, 40, 0.7, 0.8),
    ],
)
def test_numerics_within_three_sem_of_closed_form(
    regime: str, dim: int, samples: int, sigma: float, cov_decay: float
) -> None:
    """Theorem 2 (and its replace / replace_multiple analogues) at every iteration."""
    cfg = config(dim=dim, samples=samples, sigma=sigma, cov_decay=cov_decay)
    iterations, seeds = 12, list(range(1000, 1600))
    result = simulate(cfg, REGIMES[regime], iterations, seeds)
    analytic = np.asarray(expected_error(REGIMES[regime], iterations, dim, samples, sigma))
    z = np.abs(result.mean - analytic) / result.sem
    assert np.all(z < 3), f"|numeric - analytic| / SEM per iteration: {np.round(z, 2)}"


def test_accumulate_is_bounded_and_replace_grows() -> None:
    cfg = config(dim=5, samples=30)
    seeds = list(range(300))
    replace = simulate(cfg, REGIMES["replace"], 20, seeds).mean
    accumulate = simulate(cfg, REGIMES["accumulate"], 20, seeds).mean
    one_fit = 5 / (30 - 5 - 1)
    assert replace[-1] > 10 * one_fit
    assert accumulate.max() < one_fit * np.pi**2 / 6 * 1.2
