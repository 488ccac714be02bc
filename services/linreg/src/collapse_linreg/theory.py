"""Closed-form expected test error E‖ŵ_n − w*‖²_Σ (fixed design, OLS, T ≥ d+2).

With X rows ~ N(0, Σ), E[(XᵀX)⁻¹] = Σ⁻¹/(T−d−1), so one OLS fit on T rows with noise σ² adds
c = σ²·d/(T−d−1) of error whatever Σ is. Iteration i's fresh label noise then enters ŵ_n
with weight 1/i (accumulate: averaged over the i stacked copies of X), 1 (replace) or on i
copies of X (replace_multiple), which gives (paper Theorem 2 and Dohmatob et al.):

* replace           c·n
* accumulate        c·Σ_{i≤n} 1/i²   (≤ c·π²/6)
* replace_multiple  c·Σ_{i≤n} 1/i    (harmonic; iteration i fits i·T rows of model i−1)

Other policies (subsampling, fresh real data, ridge, fresh design) have no closed form here.
"""

from __future__ import annotations

from collapse.contracts import REGIMES, PolicySpec


def _same_rule(policy: PolicySpec, regime: str) -> bool:
    return policy.model_dump(exclude={"name"}) == REGIMES[regime].model_dump(exclude={"name"})


def expected_error(
    policy: PolicySpec,
    iterations: int,
    dim: int,
    samples: int,
    sigma: float,
    ridge: float = 0.0,
    fresh_design: bool = False,
) -> list[float] | None:
    """E‖ŵ_n − w*‖²_Σ for n = 1..iterations, or None where no closed form is known."""
    if ridge or fresh_design or samples < dim + 2:
        return None
    one_fit = sigma**2 * dim / (samples - dim - 1)
    ns = range(1, iterations + 1)
    if _same_rule(policy, "replace"):
        return [one_fit * n for n in ns]
    if _same_rule(policy, "accumulate"):
        return [one_fit * sum(1 / i**2 for i in range(1, n + 1)) for n in ns]
    if _same_rule(policy, "replace_multiple"):
        return [one_fit * sum(1 / i for i in range(1, n + 1)) for n in ns]
    return None
