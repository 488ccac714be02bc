"""The lab's own report: per-lineage metric curves (JSON for `dvc plots`, PNG) and an HTML index.

`dvc plots show` needs a CDN for its HTML, so figures are rendered here with matplotlib.
"""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from collapse import pipeline  # noqa: E402
from collapse.contracts import EvalReport  # noqa: E402
from collapse.modality import load_modality  # noqa: E402
from collapse.params import LabParams  # noqa: E402
from collapse.store import atomic_path, atomic_write_bytes, read_json, write_plain_json  # noqa: E402

PNG_METADATA = {"Software": None}  # keep PNG bytes independent of the matplotlib build


def save_figure(figure: plt.Figure, path: Path) -> Path:
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


def write_report(params: LabParams, runs: Path, out: Path) -> Path:
    sections: list[str] = []
    for modality in params.modalities:
        lineages = params.lineages_of(modality)
        if not lineages:
            continue
        metric = load_modality(modality).primary_metric
        curves = lineage_curves(params, modality, runs)
        for name, rows in curves.items():
            write_plain_json(out / modality / "curves" / f"{name}.json", rows)
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
        save_figure(figure, out / modality / "lineages.png")

        images = sorted((out / modality / "figures").glob("*.png"))
        iterations = max(spec.iterations for spec in lineages)
        header = "".join(f"<th>{n}</th>" for n in range(1, iterations + 1))
        body = ""
        for spec in lineages:
            values = {int(r["iteration"]): r[metric] for r in curves[spec.name]}
            cells = "".join(
                f"<td>{values[n]:.4g}</td>" if n in values else "<td></td>"
                for n in range(1, iterations + 1)
            )
            body += f"<tr><td>{html.escape(spec.name)}</td><td>{html.escape(spec.policy.name)}</td>{cells}</tr>"
        sections.append(
            f"<h2>{html.escape(modality)}</h2>"
            f"<p>{html.escape(metric)} per iteration (lower is better)</p>"
            f"<table><tr><th>lineage</th><th>policy</th>{header}</tr>{body}</table>"
            f'<img src="{modality}/lineages.png" alt="lineage curves">'
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
