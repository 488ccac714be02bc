"""The data-generating process: real problem draws and a model's synthetic rows.

Every draw has its own seeded stream, so a pool of P rows is a prefix-stable extension of a
pool of T < P rows, and the DVC lineage and the batched simulator see identical numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from collapse.seeds import rng_for


def coordinate_scales(dim: int, cov_decay: float) -> np.ndarray:
    """(d,) standard deviations: Σ = diag(C^0, C^1, …, C^(d-1))."""
    return np.sqrt(cov_decay ** np.arange(dim, dtype=np.float64))


@dataclass(frozen=True)
class Problem:
    w_star: np.ndarray  # (d,)
    cov_diag: np.ndarray  # (d,) diagonal of Σ
    x: np.ndarray  # (P, d) real pool; rows [0, T) are the fixed design X
    y: np.ndarray  # (P,) noisy real labels
    x_test: np.ndarray  # (M, d)
    y_test: np.ndarray  # (M,) noiseless x_test · w*


def draw_problem(
    data_seed: int, dim: int, pool_items: int, sigma: float, cov_decay: float, test_items: int
) -> Problem:
    scales = coordinate_scales(dim, cov_decay)
    w_star = rng_for(data_seed, "linreg", "w_star").standard_normal(dim) / np.sqrt(dim)
    x = rng_for(data_seed, "linreg", "design").standard_normal((pool_items, dim)) * scales
    noise = rng_for(data_seed, "linreg", "noise").standard_normal(pool_items)
    x_test = rng_for(data_seed, "linreg", "test").standard_normal((test_items, dim)) * scales
    return Problem(
        w_star=w_star,
        cov_diag=scales**2,
        x=x,
        y=x @ w_star + sigma * noise,
        x_test=x_test,
        y_test=x_test @ w_star,
    )


def synthetic_rows(
    seed: int,
    producer: int,
    w_hat: np.ndarray,
    design: np.ndarray,
    start: int,
    stop: int,
    sigma: float,
    fresh_design_scales: np.ndarray | None,
) -> tuple[np.ndarray | None, np.ndarray]:
    """Rows ``[start, stop)`` of model ``producer``'s stream under lineage ``seed``: (x, y).

    Fixed design: row r has x = design[r mod T] (the paper's setup); fresh design: new
    x ~ N(0, Σ) from a stream of its own. Labels are x·ŵ + σ·ε_r. Noise and x come from
    separate seeded streams read from position 0, so row r is the same whatever ``start``/
    ``stop`` a caller asks for. x is None when rows reuse the fixed design.
    """
    noise = rng_for(seed, "linreg", "generate", producer).standard_normal(stop)[start:]  # (k,)
    if fresh_design_scales is not None:
        x_stream = rng_for(seed, "linreg", "generate-x", producer)
        x = x_stream.standard_normal((stop, len(w_hat)))[start:] * fresh_design_scales  # (k, d)
        return x, x @ w_hat + sigma * noise
    mean = (design @ w_hat)[np.arange(start, stop) % design.shape[0]]  # (k,) design rows cycled
    return None, mean + sigma * noise


def cycled_design(design: np.ndarray, start: int, stop: int) -> np.ndarray:
    """(stop - start, d): design rows repeated in order, as the fixed-design generator uses them."""
    return design[np.arange(start, stop) % design.shape[0]]


def pack_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n, d+1) shard rows [x | y]."""
    return np.concatenate([x, y[:, None]], axis=1)


def unpack_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return rows[:, :-1], rows[:, -1]
