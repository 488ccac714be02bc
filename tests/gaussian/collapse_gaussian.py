"""A throwaway modality for the tests: fit a 1-D Gaussian by maximum likelihood.

The classic demonstration of model collapse: refitting (μ, σ) to samples of the previous fit
shrinks σ in expectation (the MLE variance is biased low by (T-1)/T), so under replace the fitted
σ drifts towards 0 while accumulating real data keeps it near the truth. It lives in tests/ and
registers through an entry point written by the test: the lab runs it without a single edit to
shared/, which is the point.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from collapse.contracts import Contract, DatasetManifest, FitSummary, ModelCard, RealDataCard, ShardRef
from collapse.modality import Generator, LineageView, Modality, ReportBlock
from collapse.seeds import rng_for
from collapse.store import read_array, write_array_shard


class GaussianConfig(Contract):
    samples: int = Field(ge=2, description="T")
    test_items: int = Field(ge=1)


class GaussianGenerator(Generator):
    chunk_items = 1 << 40

    def __init__(self, model_dir: Path, card: ModelCard) -> None:
        self.card = card
        fitted = json.loads((model_dir / card.weights_file).read_text())
        self.mean, self.std = fitted["mean"], fitted["std"]

    def sample(self, start: int, stop: int, seed: int, options: Mapping[str, Any] | None = None) -> np.ndarray:
        draws = rng_for(seed, "gaussian", self.card.iteration).standard_normal(stop)[start:]
        return (self.mean + self.std * draws)[:, None]  # (k, 1)

    def write(self, items: Iterable[np.ndarray], out_dir: Path, produced_by: int) -> ShardRef:
        return write_array_shard(out_dir / "shard.npy", np.concatenate(list(items)), origin="synthetic",
                                 produced_by=produced_by)


class GaussianModality(Modality):
    name = "gaussian"
    config_model = GaussianConfig
    presets = {"smoke": {"samples": 20, "test_items": 500}}  # noqa: RUF012
    primary_metric = "test_log_likelihood"
    lower_is_better = False

    def real_items(self, config: GaussianConfig) -> int:
        return config.samples

    def prepare(self, config: GaussianConfig, out_dir: Path, data_seed: int) -> RealDataCard:
        train = rng_for(data_seed, "gaussian", "train").standard_normal((config.samples, 1))
        test = rng_for(data_seed, "gaussian", "test").standard_normal((config.test_items, 1))
        return RealDataCard(
            modality=self.name, root=out_dir.as_posix(),
            train=[write_array_shard(out_dir / "train.npy", train, origin="real", produced_by=0)],
            test=[write_array_shard(out_dir / "test.npy", test, origin="real", produced_by=0)],
            initial_items=config.samples, data_seed=data_seed,
        )

    def fit(self, config: GaussianConfig, manifest: DatasetManifest, real: RealDataCard, out_dir: Path,
            seed: int) -> FitSummary:
        x = np.concatenate([read_array(e.shard, e.indices) for e in manifest.entries])[:, 0]
        (out_dir / "fit.json").write_text(json.dumps({"mean": float(x.mean()), "std": float(x.std())}))
        return FitSummary(hyperparameters={"estimator": "mle"}, parameter_count=2, weights_file="fit.json",
                          library_versions={"numpy": np.__version__}, compute={"items": float(len(x))})

    def load(self, config: GaussianConfig, model_dir: Path, card: ModelCard, real: RealDataCard) -> Generator:
        return GaussianGenerator(model_dir, card)

    def evaluate(self, config: GaussianConfig, generator: Generator, real: RealDataCard) -> dict[str, float]:
        assert isinstance(generator, GaussianGenerator)
        x = read_array(real.test[0])[:, 0]
        z = (x - generator.mean) / generator.std
        log_likelihood = float(np.mean(-0.5 * z**2 - np.log(generator.std) - 0.5 * np.log(2 * np.pi)))
        return {"test_log_likelihood": log_likelihood, "fitted_std": generator.std}

    def report_blocks(self, config: GaussianConfig, lineages: list[LineageView], out_dir: Path) -> list[ReportBlock]:
        rows = "".join(f"<tr><td>{view.name}</td><td>{len(view.iterations)}</td></tr>" for view in lineages)
        return [ReportBlock(title="Gaussian lineages", html=f"<table class='gaussian'>{rows}</table>")]
