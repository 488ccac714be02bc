"""The linreg modality: prepare a real problem, fit OLS/ridge on a manifest, evaluate, generate."""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np

from collapse.contracts import (
    Contract,
    DatasetManifest,
    FitSummary,
    RealDataCard,
    ShardRef,
)
from collapse.modality import Modality
from collapse.seeds import rng_for
from collapse.store import (
    ArtefactError,
    atomic_path,
    read_array,
    read_json,
    read_model,
    save_npy,
    write_array_shard,
    write_json,
)
from collapse_linreg.config import PRESETS, LinregConfig
from collapse_linreg.data import (
    coordinate_scales,
    cycled_design,
    draw_problem,
    pack_rows,
    synthetic_rows,
    unpack_rows,
)
from collapse_linreg.estimator import solve, test_error

ROW_FORMAT = "npy-rows[x|y]"


class LinregTruth(Contract):
    """The data-generating process, kept beside the real data (``real/truth.json``)."""

    w_star: list[float]
    cov_diag: list[float]
    sigma: float


class LinregModality(Modality):
    name = "linreg"
    config_model = LinregConfig
    presets = PRESETS
    primary_metric = "test_error"
    has_figures = True

    def real_items(self, config: LinregConfig) -> int:
        return config.samples

    def prepare(
        self, config: LinregConfig, out_dir: Path, pool_items: int, data_seed: int
    ) -> RealDataCard:
        problem = draw_problem(
            data_seed, config.dim, pool_items, config.sigma, config.cov_decay, config.test_items
        )
        train = write_array_shard(
            out_dir / "train.npy", pack_rows(problem.x, problem.y), origin="real", produced_by=0,
            format=ROW_FORMAT,
        )
        test = write_array_shard(
            out_dir / "test.npy", pack_rows(problem.x_test, problem.y_test), origin="real",
            produced_by=0, format=ROW_FORMAT,
        )
        truth = LinregTruth(
            w_star=problem.w_star.tolist(), cov_diag=problem.cov_diag.tolist(), sigma=config.sigma
        )
        write_json(out_dir / "truth.json", truth)
        return RealDataCard(
            modality=self.name,
            train=[train],
            test=[test],
            initial_items=config.samples,
            data_seed=data_seed,
            description=(
                f"x ~ N(0, diag({config.cov_decay}^i)), d={config.dim}, y = x·w* + N(0, "
                f"{config.sigma}²); rows [0, {config.samples}) are the fixed design; "
                f"test rows noiseless"
            ),
        )

    def fit(
        self,
        config: LinregConfig,
        manifest: DatasetManifest,
        real: RealDataCard,
        out_dir: Path,
        seed: int,
    ) -> FitSummary:
        xtx = np.zeros((config.dim, config.dim))
        xty = np.zeros(config.dim)
        for entry in manifest.entries:
            x, y = unpack_rows(read_array(entry.shard, entry.indices))
            if x.shape[1] != config.dim:
                raise ArtefactError(
                    f"shard {entry.shard.path} has dimension {x.shape[1]}, config says {config.dim}"
                )
            xtx += x.T @ x
            xty += x.T @ y
        w_hat = solve(xtx, xty, manifest.items, config.ridge)  # (d,)
        weights = out_dir / "weights.npy"
        with atomic_path(weights) as temporary:
            save_npy(temporary, w_hat)
        return FitSummary(
            hyperparameters={
                "estimator": "ridge" if config.ridge else "ols",
                "ridge": config.ridge,
                "dim": config.dim,
            },
            parameter_count=config.dim,
            weights_file="weights.npy",
            library_versions={"numpy": np.__version__, "python": platform.python_version()},
        )

    def _truth(self, real: RealDataCard) -> LinregTruth:
        return read_json(Path(real.test[0].path).parent / "truth.json", LinregTruth)

    def evaluate(self, config: LinregConfig, model_dir: Path, real: RealDataCard) -> dict[str, float]:
        w_hat = np.load(read_model(model_dir)[1], allow_pickle=False)
        truth = self._truth(real)
        x_test, y_test = unpack_rows(read_array(real.test[0]))
        error = test_error(w_hat, np.asarray(truth.w_star), np.asarray(truth.cov_diag))
        return {
            "test_error": float(error),
            "test_mse": float(np.mean((x_test @ w_hat - y_test) ** 2)),
            "weight_norm": float(np.linalg.norm(w_hat)),
        }

    def generate(
        self,
        config: LinregConfig,
        model_dir: Path,
        real: RealDataCard,
        items: int,
        out_dir: Path,
        produced_by: int,
        seed: int,
    ) -> ShardRef:
        w_hat = np.load(read_model(model_dir)[1], allow_pickle=False)
        design, _ = unpack_rows(read_array(real.train[0])[: config.samples])
        rng = rng_for(seed, "linreg", "generate", produced_by)
        scales = coordinate_scales(config.dim, config.cov_decay) if config.fresh_design else None
        x, y = synthetic_rows(rng, w_hat, design, items, config.sigma, scales)
        x = cycled_design(design, items) if x is None else x
        return write_array_shard(
            out_dir / "shard.npy", pack_rows(x, y), origin="synthetic", produced_by=produced_by,
            format=ROW_FORMAT,
        )

    def figures(self, config: LinregConfig, out_dir: Path) -> list[Path]:
        from collapse_linreg.figures import write_figures

        return write_figures(config.figures, out_dir)

    def add_commands(self, parser: argparse.ArgumentParser) -> None:
        from collapse_linreg.cli import add_commands

        add_commands(parser)
