"""Paper-style figures from the batched simulator: Fig. 2 (linear axes) and Fig. 9 (log axes)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from collapse.contracts import REGIMES
from collapse.plotting import pyplot, save_figure
from collapse.store import write_plain_json
from collapse_linreg.config import FigureSweep, LinregConfig
from collapse_linreg.simulate import simulate
from collapse_linreg.theory import expected_error

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLOURS = {"replace": "tab:red", "accumulate": "tab:blue", "replace_multiple": "tab:orange",
           "accumulate_subsample": "tab:green", "accumulate_fresh": "tab:purple"}


def run_sweep(sweep: FigureSweep) -> list[dict[str, object]]:
    """One record per (T, regime): mean/SEM over seeds and the closed form per iteration."""
    seeds = [sweep.seed + k for k in range(sweep.seeds)]
    records = []
    grid = [(t, regime) for t in sweep.samples for regime in sweep.regimes]
    for t, regime in tqdm(grid, desc="linreg sweep"):
        config = LinregConfig(dim=sweep.dim, samples=t, sigma=sweep.sigma, figures=sweep)
        result = simulate(config, REGIMES[regime], sweep.iterations_log, seeds)
        records.append({
            "samples": t, "regime": regime,
            "mean": result.mean.tolist(), "sem": result.sem.tolist(),
            "analytic": expected_error(REGIMES[regime], sweep.iterations_log, sweep.dim, t,
                                       sweep.sigma),
        })
    return records


def _plot(sweep: FigureSweep, records: list[dict[str, object]], iterations: int, log: bool) -> Figure:
    panels = len(sweep.samples)
    plt = pyplot()
    figure, axes = plt.subplots(1, panels, figsize=(3.6 * panels, 3.4), squeeze=False)
    for axis, t in zip(axes[0], sweep.samples, strict=True):
        for record in (r for r in records if r["samples"] == t):
            regime = str(record["regime"])
            n = np.arange(1, iterations + 1)
            mean = np.asarray(record["mean"])[:iterations]
            sem = np.asarray(record["sem"])[:iterations]
            colour = COLOURS.get(regime, "black")
            axis.plot(n, mean, color=colour, label=regime)
            axis.fill_between(n, mean - sem, mean + sem, color=colour, alpha=0.25)
            if record["analytic"] is not None:
                analytic = np.asarray(record["analytic"])[:iterations]
                axis.plot(n, analytic, color=colour, linestyle="--", linewidth=1)
        if log:
            axis.set_xscale("log")
            axis.set_yscale("log")
        axis.set_title(f"T = {t}, d = {sweep.dim}, σ² = {sweep.sigma ** 2:g}", fontsize=9)
        axis.set_xlabel("model-fitting iteration")
        axis.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("test error ‖ŵ − w*‖²_Σ")
    axes[0][-1].legend(fontsize=7, title="mean ± SEM; -- theory", title_fontsize=7)
    figure.tight_layout()
    return figure


def write_figures(sweep: FigureSweep, out_dir: Path) -> list[Path]:
    records = run_sweep(sweep)
    write_plain_json(out_dir / "sweep.json", records)
    return [
        save_figure(_plot(sweep, records, sweep.iterations_linear, log=False), out_dir / "fig2_linear.png"),
        save_figure(_plot(sweep, records, sweep.iterations_log, log=True), out_dir / "fig9_log.png"),
    ]
