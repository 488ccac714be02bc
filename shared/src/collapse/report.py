"""The lab's own report: per-lineage metric curves (JSON for `dvc plots`, PNG) and an HTML index.

`dvc plots show` needs a CDN for its HTML, so figures are rendered here with matplotlib.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from collapse import pipeline
from collapse.contracts import EvalReport
from collapse.modality import load_modality
from collapse.params import LabParams
from collapse.store import (
    atomic_path,
    atomic_write_bytes,
    read_json,
    read_shard_ref,
    write_plain_json,
)

PNG_METADATA = {"Software": None}  # keep PNG bytes independent of the matplotlib build


def save_figure(figure: Figure, path: Path) -> Path:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110, metadata=PNG_METADATA)
    plt.close(figure)
    return path


def lineage_curves(params: LabParams, modality: str, runs: Path) -> dict[str, list[dict[str, float]]]:
    """lineage → [{iteration, metric…}] for the evaluated iterations."""
    curves: dict[str, list[dict[str, float]]] = {}
    for spec in params.lineages_of(modality):
        rows = []
        for n in range(1, spec.iterations + 1):
            path = Path(pipeline.iteration_dir(spec, n, str(runs))) / "eval.json"
            if path.is_file():
                rows.append({"iteration": n, **read_json(path, EvalReport).metrics})
        curves[spec.name] = rows
    return curves


def _training_logs(spec_iterations: list[tuple[int, Path]]) -> list[tuple[int, list[dict[str, float]]]]:
    """(iteration, log rows) of every model dir that kept a ``train_log.jsonl``."""
    logs = []
    for n, model_dir in spec_iterations:
        log = model_dir / "train_log.jsonl"
        if log.is_file():
            logs.append((n, [json.loads(line) for line in log.read_text().splitlines() if line.strip()]))
    return logs


def _training_figure(params: LabParams, modality: str, runs: Path) -> Figure | None:
    """Per-step training loss of every iteration's model, one panel per lineage (paper Fig. 4)."""
    lineages = params.lineages_of(modality)
    logs = {
        spec.name: _training_logs([
            (n, Path(pipeline.iteration_dir(spec, n, str(runs))) / "model")
            for n in range(1, spec.iterations + 1)
        ])
        for spec in lineages
    }
    if not any(logs.values()):
        return None
    figure, axes = plt.subplots(1, len(lineages), figsize=(4.2 * len(lineages), 3.4), squeeze=False)
    colours = plt.get_cmap("viridis")
    for axis, spec in zip(axes[0], lineages, strict=True):
        for n, rows in logs[spec.name]:
            steps = [r["step"] for r in rows if "loss" in r]
            axis.plot(steps, [r["loss"] for r in rows if "loss" in r], linewidth=0.8,
                      color=colours((n - 1) / max(1, spec.iterations - 1)), label=f"model {n}")
        axis.set_title(f"{spec.name} ({spec.policy.name})", fontsize=9)
        axis.set_xlabel("optimizer step")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("training loss")
    axes[0][-1].legend(fontsize=6)
    figure.tight_layout()
    return figure


def write_report(params: LabParams, runs: Path, out: Path) -> Path:
    sections: list[str] = []
    for modality in params.modalities:
        lineages = params.lineages_of(modality)
        if not lineages:
            continue
        metric = load_modality(modality).primary_metric
        curves = lineage_curves(params, modality, runs)
        here = out / modality / "lineages"
        for name, rows in curves.items():
            write_plain_json(here / "curves" / f"{name}.json", rows)
        figure, axis = plt.subplots(figsize=(7, 4.2))
        for spec in lineages:
            rows = curves[spec.name]
            axis.plot([r["iteration"] for r in rows], [r[metric] for r in rows], marker="o",
                      label=f"{spec.name} ({spec.policy.name}, seed {spec.seed})")
        axis.set_xlabel("model-fitting iteration")
        axis.set_ylabel(metric)
        axis.set_title(f"{modality}: {metric} of each lineage's model on real test data")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
        images = [save_figure(figure, here / "metric.png")]
        training = _training_figure(params, modality, runs)
        if training is not None:
            images.append(save_figure(training, here / "training_curves.png"))
        images += sorted((out / modality / "figures").glob("*.png"))

        iterations = max(spec.iterations for spec in lineages)
        header = "".join(f"<th>{n}</th>" for n in range(1, iterations + 1))
        body = ""
        for spec in lineages:
            values = {int(r["iteration"]): r[metric] for r in curves[spec.name]}
            cells = "".join(
                f"<td>{values[n]:.4g}</td>" if n in values else "<td></td>"
                for n in range(1, iterations + 1)
            )
            last_samples = Path(pipeline.iteration_dir(spec, spec.iterations, str(runs))) / "samples"
            made = (
                f"{read_shard_ref(last_samples).items}"
                if (last_samples / "shard.json").is_file() else "—"
            )
            body += (
                f"<tr><td>{html.escape(spec.name)}</td><td>{html.escape(spec.policy.name)}</td>"
                f"{cells}<td>{made}</td></tr>"
            )
        sections.append(
            f"<h2>{html.escape(modality)}</h2>"
            f"<p>{html.escape(metric)} per iteration (lower is better)</p>"
            f"<table><tr><th>lineage</th><th>policy</th>{header}"
            "<th>items generated by the last model</th></tr>"
            f"{body}</table>"
            + "".join(
                f'<img src="{image.relative_to(out).as_posix()}" alt="{html.escape(image.stem)}">'
                for image in images
            )
        )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>collapse-lab report</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}img{max-width:100%;"
        "display:block;margin:1em 0}</style></head><body><h1>collapse-lab report</h1>"
        + "".join(sections)
        + "</body></html>\n"
    )
    index = out / "index.html"
    atomic_write_bytes(index, page.encode())
    return index
