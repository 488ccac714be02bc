"""The linreg modality: prepare a real problem, fit OLS/ridge on a manifest, evaluate, generate."""

from __future__ import annotations

import argparse
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from collapse.contracts import (
    Contract,
    DatasetManifest,
    FitSummary,
    ModelCard,
    RealDataCard,
    ShardRef,
)
from collapse.modality import Generator, Modality
from collapse.store import (
    ArtefactError,
    atomic_path,
    read_array,
    read_json,
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
_CODE = ("collapse_linreg.service", "collapse_linreg.data", "collapse_linreg.estimator")


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
    step_config = {  # noqa: RUF012
        "prepare": ("dim", "samples", "sigma", "cov_decay", "test_items", "reserve_items"),
        "fit": ("dim", "ridge"),
        "evaluate": (),
        "generate": ("dim", "samples", "sigma", "cov_decay", "fresh_design"),
        "figures": ("figures",),
    }
    step_modules = {  # noqa: RUF012
        "check": ("collapse_linreg.config",),
        "prepare": _CODE, "fit": _CODE, "evaluate": _CODE, "generate": _CODE,
        "figures": ("collapse_linreg.figures", "collapse_linreg.simulate", "collapse_linreg.theory",
                    "collapse_linreg.data", "collapse_linreg.estimator"),
        "report": ("collapse_linreg.service",),
    }
    paper_note = ("Paper Sec. 2 / Collapse-or-Thrive sweep: d = 10, σ² = 1; first-iteration error "
                  "for T = 100 (the default T) is 0.112.")
    paper_numbers = {  # noqa: RUF012
        "replace": [("paper, T = 100, d = 10 (iteration 1)", {1: 0.112})],
        "accumulate": [("paper, T = 100, d = 10 (iteration 1)", {1: 0.112})],
    }

    def real_items(self, config: LinregConfig) -> int:
        return config.samples

    def real_pool_items(self, config: LinregConfig) -> int:
        return config.samples + config.reserve_items

    def prepare(self, config: LinregConfig, out_dir: Path, data_seed: int) -> RealDataCard:
        t = config.samples
        problem = draw_problem(
            data_seed, config.dim, t + config.reserve_items, config.sigma, config.cov_decay,
            config.test_items,
        )
        train = [write_array_shard(out_dir / "train.npy", pack_rows(problem.x[:t], problem.y[:t]),
                                   origin="real", produced_by=0, format=ROW_FORMAT)]
        if config.reserve_items:
            train.append(write_array_shard(
                out_dir / "reserve.npy", pack_rows(problem.x[t:], problem.y[t:]), origin="real",
                produced_by=0, format=ROW_FORMAT))
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
            root=out_dir.as_posix(),
            train=train,
            test=[test],
            initial_items=t,
            data_seed=data_seed,
            description=(
                f"x ~ N(0, diag({config.cov_decay}^i)), d={config.dim}, y = x·w* + N(0, "
                f"{config.sigma}²); train.npy holds the fixed design (T = {t} rows), reserve.npy "
                f"{config.reserve_items} more real rows for fresh-data policies; test rows noiseless"
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
            compute={"items": float(manifest.items), "epochs": 1.0},
        )

    def load(self, config: LinregConfig, model_dir: Path, card: ModelCard,
             real: RealDataCard) -> LinregGenerator:
        return LinregGenerator(config, model_dir, card, real)

    def evaluate(self, config: LinregConfig, generator: Generator, real: RealDataCard) -> dict[str, float]:
        assert isinstance(generator, LinregGenerator)
        w_hat = generator.w_hat
        truth = read_json(Path(real.root) / "truth.json", LinregTruth)
        x_test, y_test = unpack_rows(read_array(real.test[0]))
        error = test_error(w_hat, np.asarray(truth.w_star), np.asarray(truth.cov_diag))
        return {
            "test_error": float(error),
            "test_mse": float(np.mean((x_test @ w_hat - y_test) ** 2)),
            "weight_norm": float(np.linalg.norm(w_hat)),
        }

    def reference_curve(self, config: LinregConfig, policy: Any, iterations: int) -> list[float] | None:
        from collapse_linreg.theory import expected_error

        return expected_error(policy, iterations, config.dim, config.samples, config.sigma, config.ridge,
                              config.fresh_design)

    def figures(self, config: LinregConfig, out_dir: Path) -> list[Path]:
        from collapse_linreg.figures import write_figures

        return write_figures(config.figures, out_dir)

    def add_commands(self, parser: argparse.ArgumentParser) -> None:
        from collapse_linreg.cli import add_commands

        add_commands(parser)


class LinregGenerator(Generator):
    """ŵ of one iteration: rows (x, y = x·ŵ + σε) on the fixed design (or fresh x)."""

    chunk_items = 1 << 40  # one call: row r's noise is position r of one stream

    def __init__(self, config: LinregConfig, model_dir: Path, card: ModelCard, real: RealDataCard) -> None:
        self.card = card
        self.config = config
        self.w_hat = np.load(model_dir / card.weights_file, allow_pickle=False)  # (d,)
        if self.w_hat.shape != (config.dim,):
            raise ArtefactError(f"{model_dir} holds weights of shape {self.w_hat.shape}, config dim {config.dim}")
        self.design, _ = unpack_rows(read_array(real.train[0])[: config.samples])  # (T, d)
        self.scales = coordinate_scales(config.dim, config.cov_decay) if config.fresh_design else None

    def sample(self, start: int, stop: int, seed: int, options: Mapping[str, Any] | None = None) -> np.ndarray:
        """(stop - start, d + 1) rows [x | y] of model n's stream under ``seed``."""
        if options:
            raise ValueError(f"linreg sampling takes no options, got {sorted(options)}")
        if not 0 <= start <= stop:
            raise ValueError(f"need 0 <= start <= stop, got {start}, {stop}")
        x, y = synthetic_rows(seed, self.card.iteration, self.w_hat, self.design, start, stop,
                              self.config.sigma, self.scales)
        x = cycled_design(self.design, start, stop) if x is None else x
        return pack_rows(x, y)

    def write(self, items: Iterable[np.ndarray], out_dir: Path, produced_by: int) -> ShardRef:
        parts = list(items)
        rows = np.concatenate(parts) if parts else np.zeros((0, self.config.dim + 1))
        return write_array_shard(out_dir / "shard.npy", rows, origin="synthetic",
                                 produced_by=produced_by, format=ROW_FORMAT)
