"""The lm part of the report: what each iteration's model writes, lineages side by side."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

from collapse.modality import LineageView, ReportBlock

EXCERPT_CHARACTERS = 360
_HEADER = re.compile(r"^--- sample (\d+) ---$", re.MULTILINE)


def first_stories(text: str, count: int) -> list[str]:
    """The first ``count`` stories of a ``stories.txt`` (as the generate stage writes it)."""
    parts = _HEADER.split(text)  # ["", "0", story, "1", story, …]
    return [parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)][:count]


def _excerpt(story: str) -> str:
    return story if len(story) <= EXCERPT_CHARACTERS else story[:EXCERPT_CHARACTERS].rsplit(" ", 1)[0] + " …"


def story_excerpts(lineages: Sequence[LineageView], per_cell: int = 1) -> ReportBlock:
    """A table: one row per iteration, one column per lineage, the model's first story(ies)."""
    iterations = max((len(view.iterations) for view in lineages), default=0)
    head = "".join(f"<th>{html.escape(v.name)} ({html.escape(v.policy)})</th>" for v in lineages)
    rows = []
    for n in range(1, iterations + 1):
        cells = []
        for view in lineages:
            step = next((it for it in view.iterations if it.iteration == n), None)
            stories_file = step.samples / "stories.txt" if step and step.samples else None
            if stories_file is None or not stories_file.is_file():
                cells.append("<td class='story'>—</td>")
                continue
            shown = first_stories(stories_file.read_text(encoding="utf-8"), per_cell)
            cells.append("<td class='story'>" + "<hr>".join(html.escape(_excerpt(s)) for s in shown) + "</td>")
        rows.append(f"<tr><th>model {n}</th>{''.join(cells)}</tr>")
    table = f"<table class='samples'><tr><th></th>{head}</tr>{''.join(rows)}</table>"
    return ReportBlock(
        title="What each model writes (first sample of every iteration)",
        html="<p>Sample 0 of each model's generated set (the data the next iteration may train on).</p>"
        + table,
    )
