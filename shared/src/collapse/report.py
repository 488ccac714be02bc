"""The lab's own report (``reports/index.html``): self-contained, opens from disk, no network.

Per modality: the primary metric per iteration for every lineage on one figure (lineages that
differ only by seed as mean ± SEM, theory dashed where the modality knows it, the paper's
numbers beside the lab's, labelled with the scale that ran), learning curves of every
iteration's fit, the compute each iteration spent beside its metric, the lineage made visible
(training-set size, shards, origin, short hashes), the modality's own views (samples), the
run's parameters and library versions. Nothing here names a modality: each contributes
through :class:`collapse.modality.Modality`.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from collapse import layout
from collapse.contracts import DatasetManifest, EvalReport, LineageSpec, ModelCard
from collapse.modality import IterationView, LineageView, Modality, ReportBlock, load_modality
from collapse.params import LabParams
from collapse.plotting import pyplot, save_figure
from collapse.store import atomic_write_bytes, read_json, write_plain_json

LIBRARIES = ("collapse-lab-shared", "numpy", "pydantic", "dvc", "torch", "transformers", "torchvision",
             "bentoml", "matplotlib")
STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1300px;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right;
font-size:13px}th{background:#f4f4f4}img{max-width:100%;display:block;margin:1em 0}
td.story{text-align:left;vertical-align:top;font-size:12px;max-width:420px}
code,pre{font-size:12px;background:#f7f7f7}pre{padding:.5em;overflow:auto}.note{color:#555;font-size:13px}
details{margin:.4em 0}summary{cursor:pointer}"""


def _read(path: Path, model: Any) -> Any:
    return read_json(path, model) if path.is_file() else None


def lineage_view(spec: LineageSpec, runs: Path) -> LineageView:
    steps = []
    for n in range(1, spec.iterations + 1):
        paths = layout.iteration_paths(spec, n, str(runs))
        samples = Path(paths.samples) if spec.policy.synthetic != "none" else None
        steps.append(IterationView(n, Path(paths.manifest), Path(paths.model), Path(paths.eval), samples))
    return LineageView(spec.name, spec.policy.name, spec.seed, steps)


def _metric_rows(view: LineageView) -> dict[int, dict[str, float]]:
    rows = {}
    for step in view.iterations:
        report = _read(step.eval, EvalReport)
        if report is not None:
            rows[step.iteration] = report.metrics
    return rows


def _groups(specs: Sequence[LineageSpec]) -> dict[str, list[LineageSpec]]:
    """Lineages that differ only by seed: same policy and iteration count."""
    groups: dict[str, list[LineageSpec]] = {}
    for spec in specs:
        key = f"{spec.policy.model_dump_json()}|{spec.iterations}"
        groups.setdefault(key, []).append(spec)
    return groups


def _metric_figure(service: Modality, config: Any, scale: str, specs: Sequence[LineageSpec],
                   metrics: dict[str, dict[int, dict[str, float]]], out: Path) -> Path:
    plt = pyplot()
    metric = service.primary_metric
    figure, axis = plt.subplots(figsize=(7.5, 4.4))
    colours = plt.get_cmap("tab10")
    top = 1
    for k, group in enumerate(_groups(specs).values()):
        colour = colours(k % 10)
        policy = group[0].policy
        iterations = group[0].iterations
        done = [n for n in range(1, iterations + 1) if all(n in metrics[s.name] for s in group)]
        if not done:
            continue
        top = max(top, done[-1])
        values = np.array([[metrics[s.name][n][metric] for n in done] for s in group])  # (seeds, N)
        mean = values.mean(axis=0)
        label = f"{policy.name}" + (f" (mean ± SEM, {len(group)} seeds)" if len(group) > 1
                                    else f" ({group[0].name}, seed {group[0].seed})")
        axis.plot(done, mean, marker="o", color=colour, label=label)
        if len(group) > 1:
            sem = values.std(axis=0, ddof=1) / np.sqrt(len(group))
            axis.fill_between(done, mean - sem, mean + sem, color=colour, alpha=0.25)
        theory = service.reference_curve(config, policy, done[-1])
        if theory is not None:
            axis.plot(done, [theory[n - 1] for n in done], linestyle="--", color=colour, linewidth=1,
                      label=f"{policy.name}: theory")
        for label_text, numbers in service.paper_numbers.get(policy.name, []):
            shown = sorted(n for n in numbers if n <= max(done[-1], 1))
            if shown:
                axis.plot(shown, [numbers[n] for n in shown], linestyle="none", marker="x", markersize=8,
                          color=colour, label=f"{label_text} [paper scale]")
    axis.set_xticks(range(1, top + 1))
    axis.set_xlabel("model-fitting iteration")
    better = "lower" if service.lower_is_better else "higher"
    axis.set_ylabel(f"{metric} ({better} is better)")
    axis.set_title(f"{service.name}: {metric} on real test data — lab run at scale '{scale}'", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    return save_figure(figure, out)


def _learning_figure(service: Modality, views: Sequence[LineageView], out: Path) -> Path | None:
    curves = {v.name: [(s.iteration, service.learning_curve(s.model)) for s in v.iterations if s.model.is_dir()]
              for v in views}
    if not any(rows for pairs in curves.values() for _, rows in pairs):
        return None
    plt = pyplot()
    figure, axes = plt.subplots(1, len(views), figsize=(4.2 * len(views), 3.4), squeeze=False)
    colours = plt.get_cmap("viridis")
    for axis, view in zip(axes[0], views, strict=True):
        count = max(1, len(view.iterations) - 1)
        for n, rows in curves[view.name]:
            points = [(r["step"], r["loss"]) for r in rows if "loss" in r and "step" in r]
            if points:
                axis.plot(*zip(*points, strict=True), linewidth=0.8, color=colours((n - 1) / count),
                          label=f"model {n}")
        axis.set_title(f"{view.name} ({view.policy})", fontsize=9)
        axis.set_xlabel("optimizer step")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("training loss")
    axes[0][-1].legend(fontsize=6)
    figure.suptitle(f"{service.name}: learning curve of every iteration's fit (paper Fig. 4)", fontsize=10)
    figure.tight_layout()
    return save_figure(figure, out)


def _short(sha: str) -> str:
    return sha[:10]


def _compute_table(service: Modality, view: LineageView, metrics: dict[int, dict[str, float]]) -> str:
    cards = {s.iteration: _read(s.model / "card.json", ModelCard) for s in view.iterations}
    # compute["items"] is the training-set size, already the second column
    keys = sorted({k for card in cards.values() if card for k in card.compute if k != "items"})
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = ""
    for n, card in cards.items():
        if card is None:
            continue
        value = metrics.get(n, {}).get(service.primary_metric)
        cells = "".join(f"<td>{card.compute.get(k, float('nan')):,.0f}</td>" for k in keys)
        body += (f"<tr><td>{n}</td><td>{card.train_items:,}</td>{cells}"
                 f"<td>{'' if value is None else f'{value:.4g}'}</td></tr>")
    return (f"<table><tr><th>iteration</th><th>training items</th>{head}"
            f"<th>{html.escape(service.primary_metric)}</th></tr>{body}</table>")


def _provenance(view: LineageView) -> str:
    parts = []
    for step in view.iterations:
        manifest = _read(step.manifest, DatasetManifest)
        card = _read(step.model / "card.json", ModelCard)
        if manifest is None:
            continue
        shards = "".join(
            f"<tr><td>{'real' if e.shard.origin == 'real' else f'model {e.shard.produced_by}'}</td>"
            f"<td>{e.items:,}{'' if e.indices is None else f' of {e.shard.items:,}'}</td>"
            f"<td><code>{_short(e.shard.sha256)}</code></td><td style='text-align:left'>"
            f"<code>{html.escape(e.shard.path)}</code></td></tr>"
            for e in manifest.entries)
        model = f", model <code>{_short(card.weights_sha256)}</code>" if card else ""
        shared = " (shared by every lineage of this seed)" if manifest.lineage is None else ""
        parts.append(
            f"<details><summary>iteration {step.iteration}: {manifest.items:,} items from "
            f"{len(manifest.entries)} shard(s){shared}{model}</summary><table><tr><th>origin</th>"
            f"<th>items</th><th>sha256</th><th>path</th></tr>{shards}</table></details>")
    return "".join(parts)


def _paper_table(service: Modality, specs: Sequence[LineageSpec], metrics: dict[str, dict[int, dict[str, float]]],
                 scale: str) -> str:
    rows = ""
    for spec in specs:
        for label, numbers in service.paper_numbers.get(spec.policy.name, []):
            for n, value in sorted(numbers.items()):
                lab = metrics[spec.name].get(n, {}).get(service.primary_metric)
                rows += (f"<tr><td>{html.escape(spec.name)}</td><td>{n}</td><td>{value:.4g}</td>"
                         f"<td>{'' if lab is None else f'{lab:.4g}'}</td><td style='text-align:left'>"
                         f"{html.escape(label)}</td></tr>")
    if not rows:
        return ""
    return (f"<h3>The paper's numbers beside the lab's</h3><p class='note'>{html.escape(service.paper_note)} "
            f"The lab ran at scale <b>{html.escape(scale)}</b>.</p><table><tr><th>lineage</th>"
            f"<th>iteration</th><th>paper</th><th>lab ({html.escape(scale)})</th><th>paper setting</th></tr>"
            f"{rows}</table>")


def _img(path: Path, out: Path, alt: str) -> str:
    return f'<img src="{path.relative_to(out).as_posix()}" alt="{html.escape(alt)}">'


def _section(params: LabParams, modality: str, runs: Path, out: Path) -> str:
    service = load_modality(modality)
    section = params.modality(modality)
    config = service.config(section.scale, section.config)
    specs = params.lineages_of(modality)
    views = [lineage_view(spec, runs) for spec in specs]
    metrics = {view.name: _metric_rows(view) for view in views}
    here = out / modality / "lineages"
    for folder in ("lineages", "curves", "views"):  # DVC outputs: present even when empty
        (out / modality / folder).mkdir(parents=True, exist_ok=True)
    for view in views:  # for `dvc plots`
        write_plain_json(out / modality / "curves" / f"{view.name}.json",
                         [{"iteration": n, **m} for n, m in sorted(metrics[view.name].items())])
    parts = [f"<h2 id='{html.escape(modality)}'>{html.escape(modality)}</h2>"]
    better = "lower" if service.lower_is_better else "higher"
    parts.append(f"<p>{html.escape(service.primary_metric)} of each iteration's model on real test data "
                 f"({better} is better); scale <b>{html.escape(section.scale)}</b>.</p>")
    parts.append(_img(_metric_figure(service, config, section.scale, specs, metrics, here / "metric.png"),
                      out, f"{modality} metric per iteration"))
    iterations = max(spec.iterations for spec in specs)
    head = "".join(f"<th>{n}</th>" for n in range(1, iterations + 1))
    body = "".join(
        f"<tr><td style='text-align:left'>{html.escape(v.name)}</td><td>{html.escape(v.policy)}</td>"
        f"<td>{v.seed}</td>"
        + "".join(f"<td>{metrics[v.name][n][service.primary_metric]:.4g}</td>" if n in metrics[v.name]
                  else "<td></td>" for n in range(1, iterations + 1)) + "</tr>" for v in views)
    parts.append(f"<table><tr><th>lineage</th><th>policy</th><th>seed</th>{head}</tr>{body}</table>")
    parts.append(_paper_table(service, specs, metrics, section.scale))
    learning = _learning_figure(service, views, here / "training_curves.png")
    if learning is not None:
        parts.append("<h3>Learning curves</h3>" + _img(learning, out, f"{modality} learning curves"))
    parts.append("<h3>Compute per iteration</h3><p class='note'>Accumulating trains on n·T items: tell data "
                 "effects from compute effects by reading the work each fit did beside its metric.</p>")
    for view in views:
        parts.append(f"<h4>{html.escape(view.name)}</h4>" + _compute_table(service, view, metrics[view.name]))
    blocks: list[ReportBlock] = service.report_blocks(config, views, out / modality / "views")
    for block in blocks:
        parts.append(f"<h3>{html.escape(block.title)}</h3>{block.html}"
                     + "".join(_img(image, out, block.title) for image in block.images))
    figures = sorted((out / modality / "figures").glob("*.png"))
    if figures:
        parts.append("<h3>Figures</h3>" + "".join(_img(f, out, f.stem) for f in figures))
    parts.append("<h3>Lineages: what each training set is made of</h3><p class='note'>Each iteration's "
                 "dataset is a manifest of shard selections (what DVC versions); origin is real data or "
                 "the model that generated the shard.</p>")
    for view in views:
        parts.append(f"<h4>{html.escape(view.name)} ({html.escape(view.policy)}, seed {view.seed})</h4>"
                     + _provenance(view))
    return "".join(parts)


def _versions() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def write_report(params: LabParams, runs: Path, out: Path, params_file: Path) -> Path:
    modalities = params.active_modalities()
    sections = [_section(params, m, runs, out) for m in modalities]
    nav = " · ".join(f"<a href='#{m}'>{html.escape(m)}</a>" for m in modalities)
    versions = "".join(f"<tr><td style='text-align:left'>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
                       for k, v in _versions().items())
    params_text = params_file.read_text() if params_file.is_file() else json.dumps(params.model_dump(), indent=2)
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>collapse-lab report</title>"
        f"<style>{STYLE}</style></head><body><h1>collapse-lab report</h1>"
        "<p>Each lineage fits a fresh model per iteration to data its data policy assembles from real data "
        "and earlier models' samples; every number below is measured on real test data.</p>"
        f"<p>{nav}</p>" + "".join(sections)
        + "<h2 id='run'>This run</h2><h3>Parameters</h3><pre>" + html.escape(params_text) + "</pre>"
        + f"<h3>Library versions</h3><table>{versions}</table></body></html>\n"
    )
    index = out / "index.html"
    atomic_write_bytes(index, page.encode())
    return index
