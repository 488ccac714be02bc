"""Linear-regression configuration and its scale presets."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from collapse.contracts import REGIMES, Contract


class FigureSweep(Contract):
    """The many-seed simulation behind the paper-style figures (Fig. 2 linear, Fig. 9 log)."""

    dim: int = Field(ge=1, le=1000)
    sigma: float = Field(gt=0)
    samples: list[int] = Field(min_length=1, description="several T, one panel each")
    regimes: list[str] = Field(min_length=1)
    seeds: int = Field(ge=2, le=100_000)
    iterations_linear: int = Field(ge=1)
    iterations_log: int = Field(ge=1)
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _valid(self) -> FigureSweep:
        unknown = [name for name in self.regimes if name not in REGIMES]
        if unknown:
            raise ValueError(f"unknown regimes {unknown}; allowed: {', '.join(REGIMES)}")
        small = [t for t in self.samples if t < self.dim + 2]
        if small:
            raise ValueError(f"samples {small} must each be >= dim + 2 = {self.dim + 2}")
        if self.iterations_linear > self.iterations_log:
            raise ValueError("iterations_linear must be <= iterations_log (same runs, cut short)")
        return self


class LinregConfig(Contract):
    """x ~ N(0, Σ), Σ = diag(C^0..C^(d-1)); y = x·w* + ε, ε ~ N(0, σ²)."""

    dim: int = Field(ge=1, le=10_000, description="d")
    samples: int = Field(ge=1, description="T: real training rows, and rows per generation")
    sigma: float = Field(gt=0, description="noise standard deviation σ")
    ridge: float = Field(default=0.0, ge=0, description="λ on the mean squared error; 0 = OLS")
    cov_decay: float = Field(default=1.0, gt=0, le=1, description="C; 1 = isotropic")
    fresh_design: bool = Field(
        default=False, description="draw new x for every generation instead of reusing X"
    )
    test_items: int = Field(default=1000, ge=1, description="noiseless real test rows")
    reserve_items: int = Field(
        default=1000, ge=0, description="real rows beyond T for fresh-data policies (accumulate_fresh)"
    )
    figures: FigureSweep

    @model_validator(mode="after")
    def _enough_samples(self) -> LinregConfig:
        if self.ridge == 0 and self.samples < self.dim + 2:
            raise ValueError(
                f"samples (T={self.samples}) must be >= dim + 2 = {self.dim + 2} for OLS: "
                "below that the expected test error is infinite (Theorem 2 needs T >= d+2); "
                "raise samples or set ridge > 0"
            )
        return self


_REGIMES_IN_FIGURES = ["replace", "accumulate", "replace_multiple", "accumulate_subsample"]

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "dim": 4,
        "samples": 24,
        "sigma": 1.0,
        "test_items": 200,
        "figures": {
            "dim": 4,
            "sigma": 1.0,
            "samples": [24, 64],
            "regimes": _REGIMES_IN_FIGURES,
            "seeds": 16,
            "iterations_linear": 4,
            "iterations_log": 8,
        },
    },
    "default": {
        "dim": 10,
        "samples": 100,
        "sigma": 1.0,
        "figures": {
            "dim": 10,
            "sigma": 1.0,
            "samples": [32, 100, 316],
            "regimes": _REGIMES_IN_FIGURES,
            "seeds": 100,
            "iterations_linear": 10,
            "iterations_log": 50,
        },
    },
    # The paper's sweep (App. C / Collapse-or-Thrive code): σ² = 1, d = 10, T up to 1000,
    # 100 iterations, 100 seeds, test error on 1000 fresh noiseless points.
    "paper": {
        "dim": 10,
        "samples": 100,
        "sigma": 1.0,
        "figures": {
            "dim": 10,
            "sigma": 1.0,
            "samples": [32, 100, 316, 1000],
            "regimes": _REGIMES_IN_FIGURES,
            "seeds": 100,
            "iterations_linear": 10,
            "iterations_log": 100,
        },
    },
}
