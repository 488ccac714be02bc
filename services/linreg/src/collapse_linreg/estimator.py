"""OLS / ridge from sufficient statistics, the naive reference, and the Σ-norm test error."""

from __future__ import annotations

import numpy as np


def solve(xtx: np.ndarray, xty: np.ndarray, rows: int, ridge: float) -> np.ndarray:
    """ŵ = (XᵀX + λ·N·I)⁻¹ Xᵀy; batched over leading axes. xtx (..., d, d), xty (..., d)."""
    dim = xtx.shape[-1]
    system = xtx + ridge * rows * np.eye(dim) if ridge else xtx
    return np.linalg.solve(system, xty[..., None])[..., 0]


def naive_fit(x: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
    """The reference: pseudo-inverse of the stacked rows (ridge via augmented rows)."""
    if ridge:
        dim = x.shape[1]
        x = np.concatenate([x, np.sqrt(ridge * len(y)) * np.eye(dim)])
        y = np.concatenate([y, np.zeros(dim)])
    return np.linalg.pinv(x) @ y


def test_error(w_hat: np.ndarray, w_star: np.ndarray, cov_diag: np.ndarray) -> np.ndarray:
    """‖ŵ − w*‖²_Σ for diagonal Σ; batched over leading axes of w_hat."""
    delta = w_hat - w_star
    return np.sum(delta * delta * cov_diag, axis=-1)
