"""The vae section of the lab report: samples per iteration (paper Fig. 7), test-set
reconstructions (Fig. 12), and the single-mode curves (class entropy, top class, Fréchet).

matplotlib is imported here only, inside the functions, so serving never needs it.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from collapse.contracts import DatasetManifest, EvalReport, RealDataCard
from collapse.modality import LineageView, ReportBlock
from collapse.seeds import derive_seed
from collapse.store import read_array, read_json, read_model

if TYPE_CHECKING:
    from collapse_vae.config import VaeConfig
    from collapse_vae.service import VaeModality

SHOW = 8  # images per row in the sample and reconstruction figures
PNG_METADATA = {"Software": None}
CURVES = (("class_entropy", "class entropy of samples (nats)"),
          ("top_class_share", "share of the most frequent class"),
          ("frechet", "Fréchet distance to real test (classifier features)"))


def mosaic(images: np.ndarray, columns: int) -> np.ndarray:
    """uint8 (N, H, W) or (N, C, H, W) → one (rows·H, columns·W[, C]) picture, 1-px gaps."""
    x = images if images.ndim == 4 else images[:, None]
    n, c, h, w = x.shape
    rows = max(1, -(-n // columns))
    canvas = np.full((c, rows * (h + 1) - 1, columns * (w + 1) - 1), 255, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, columns)
        canvas[:, r * (h + 1) : r * (h + 1) + h, k * (w + 1) : k * (w + 1) + w] = x[i]
    return canvas[0] if c == 1 else canvas.transpose(1, 2, 0)


def _real_card(lineages: Sequence[LineageView]) -> RealDataCard | None:
    """The real-data card, found through a manifest that reads real shards (iteration 1's)."""
    for lineage in lineages:
        for view in lineage.iterations:
            if not view.manifest.is_file():
                continue
            manifest = read_json(view.manifest, DatasetManifest)
            for entry in manifest.entries:
                if entry.shard.origin == "real":
                    card = Path(entry.shard.path).parent / "real.json"
                    if card.is_file():
                        return read_json(card, RealDataCard)
    return None


def _models(service: VaeModality, config: VaeConfig, lineage: LineageView, real: RealDataCard) -> list[tuple[int, Any]]:
    out = []
    for view in lineage.iterations:
        if (view.model / "card.json").is_file():
            card = read_model(view.model)
            out.append((view.iteration, service.load(config, view.model, card, real)))
    return out


def _save(figure: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    from collapse.store import atomic_path

    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110, metadata=PNG_METADATA)
    plt.close(figure)
    return path


def _picture_grid(rows: list[tuple[str, list[np.ndarray | None]]], columns: list[str], title: str) -> Any:
    """A figure of len(rows) × len(columns) pictures; ``rows`` = (label, pictures per column)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(rows), len(columns), squeeze=False,
                                figsize=(3.2 * len(columns), 0.55 * len(rows) + 0.6))
    for r, (label, pictures) in enumerate(rows):
        for c in range(len(columns)):
            axis = axes[r][c]
            picture = pictures[c]
            if picture is not None:
                axis.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=255,
                            interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            for spine in axis.spines.values():
                spine.set_visible(False)
            if c == 0:
                axis.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
            if r == 0:
                axis.set_title(columns[c], fontsize=8)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure


def _metric_rows(lineage: LineageView) -> dict[int, dict[str, float]]:
    return {view.iteration: read_json(view.eval, EvalReport).metrics
            for view in lineage.iterations if view.eval.is_file()}


def report_blocks(service: VaeModality, config: VaeConfig, lineages: Sequence[LineageView],
                  out_dir: Path) -> list[ReportBlock]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from collapse_vae.service import REAL_INFO, VaeRealInfo

    if not lineages:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    blocks: list[ReportBlock] = []
    real = _real_card(lineages)
    names = [f"{lineage.name} ({lineage.policy})" for lineage in lineages]
    iterations = sorted({view.iteration for lineage in lineages for view in lineage.iterations})

    if real is not None:
        models = {lineage.name: dict(_models(service, config, lineage, real)) for lineage in lineages}
        # Samples of every model from one fixed report seed (the same z per iteration and regime).
        seed = derive_seed("report", "vae", "samples")
        rows: list[tuple[str, list[np.ndarray | None]]] = []
        for n in iterations:
            pictures = [mosaic(models[lin.name][n].sample(0, 2 * SHOW, seed), SHOW)
                        if n in models[lin.name] else None for lin in lineages]
            rows.append((f"model {n}", pictures))
        samples_png = _save(_picture_grid(rows, names, "samples z ~ N(0, I) → decoder, per iteration"),
                            out_dir / "samples.png")
        # Reconstructions of the first real test images (the originals on top).
        test = read_array(real.test[0])[:SHOW]
        rows = [("real test", [mosaic(test, SHOW) for _ in lineages])]
        for n in iterations:
            rows.append((f"model {n}", [mosaic(models[lin.name][n].reconstruct(test), SHOW)
                                        if n in models[lin.name] else None for lin in lineages]))
        recon_png = _save(_picture_grid(rows, names, "reconstructions of real test images (decoder at μ(x))"),
                          out_dir / "reconstructions.png")
        blocks.append(ReportBlock(
            title="Samples per iteration (paper Fig. 7)",
            html="<p>Each row is one model; columns are lineages side by side (replace beside "
                 "accumulate). Every model decodes the same prior draws.</p>",
            images=[samples_png]))
        blocks.append(ReportBlock(title="Reconstructions of real test images (paper Fig. 12)",
                                  images=[recon_png]))

    info_path = Path(real.root) / REAL_INFO if real is not None else None
    info = read_json(info_path, VaeRealInfo) if info_path is not None and info_path.is_file() else None
    metrics = {lineage.name: _metric_rows(lineage) for lineage in lineages}
    if any(metrics.values()):
        figure, axes = plt.subplots(1, len(CURVES), figsize=(4.2 * len(CURVES), 3.4), squeeze=False)
        for axis, (key, label) in zip(axes[0], CURVES, strict=True):
            for lineage, name in zip(lineages, names, strict=True):
                rows_of = metrics[lineage.name]
                xs = sorted(n for n in rows_of if key in rows_of[n])
                axis.plot(xs, [rows_of[n][key] for n in xs], marker="o", label=name)
            reference = {"class_entropy": "class_entropy_test", "frechet": "frechet_train_vs_test"}.get(key)
            if info is not None and reference in info.reference:
                axis.axhline(info.reference[reference], color="grey", linestyle="--", linewidth=0.8,
                             label="real data")
            if key == "class_entropy" and info is not None:
                axis.axhline(float(np.log(len(info.classes))), color="grey", linestyle=":",
                             linewidth=0.8, label="uniform")
            axis.set_xlabel("model-fitting iteration")
            axis.set_title(label, fontsize=9)
            axis.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        figure.tight_layout()
        curves_png = _save(figure, out_dir / "single_mode.png")
        keys = ("test_neg_elbo", "test_recon", "test_kl", "class_entropy", "top_class_share", "frechet")
        body = ""
        for lineage, name in zip(lineages, names, strict=True):
            for n, row in sorted(metrics[lineage.name].items()):
                cells = "".join(f"<td>{row[k]:.4g}</td>" if k in row else "<td></td>" for k in keys)
                body += f"<tr><td>{html.escape(name)}</td><td>{n}</td>{cells}</tr>"
        header = "".join(f"<th>{k}</th>" for k in keys)
        note = ""
        if info is not None:
            note = (f"<p>Metric classifier ({len(info.classes)} classes, trained on real training "
                    f"images only): test accuracy {info.classifier_test_accuracy:.3f}; real test images "
                    f"score class entropy {info.reference['class_entropy_test']:.3f} nats (uniform "
                    f"{np.log(len(info.classes)):.3f}); Fréchet(real train T, real test) = "
                    f"{info.reference['frechet_train_vs_test']:.3g}.</p>")
        blocks.append(ReportBlock(
            title="Single mode: class entropy, top class, Fréchet distance",
            html=(note + "<p>Negative ELBO and its parts in nats per image on real test data; "
                  "class entropy in nats.</p>"
                  f"<table><tr><th>lineage</th><th>iteration</th>{header}</tr>{body}</table>"),
            images=[curves_png]))
    return blocks
