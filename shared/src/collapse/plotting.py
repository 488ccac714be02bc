"""matplotlib set-up shared by the report and the modalities' figures (lab tooling only)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from collapse.store import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PNG_METADATA = {"Software": None}  # keep PNG bytes independent of the matplotlib build


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure: Figure, path: Path) -> Path:
    """Write ``figure`` as a PNG atomically and close it."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110, metadata=PNG_METADATA)
    pyplot().close(figure)
    return path
