"""Where every artefact lives, written once: the graph generator puts these paths into the
DVC stage files (which pass them to the stage commands), the report and `collapse lineages`
read them back.

```
runs/config/topology.json                  the check stage's output (changes with topology only)
runs/config/<m>/<step>.json                config values each step reads (resolved from presets)
runs/config/lineages/<lineage>.json        a lineage's resolved policy and seed
runs/<m>/real/                             real train pool + test shards (+ real.json)
runs/<m>/first/seed_<s>/                   iteration 1, shared by every lineage of seed s
runs/<m>/<lineage>/iter_<n>/               iterations n >= 2 (+ iteration 1's samples)
pipelines/<lineage>/iter_<n>/dvc.yaml      one small stage file per (lineage, iteration)
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from collapse.contracts import LineageSpec

PARAMS = "params.yaml"
RUNS = "runs"
REPORTS = "reports"
PIPELINES = "pipelines"
CONFIG = f"{RUNS}/config"
TOPOLOGY = f"{CONFIG}/topology.json"


def step_config(modality: str, step: str) -> str:
    return f"{CONFIG}/{modality}/{step}.json"


def lineage_config(name: str) -> str:
    return f"{CONFIG}/lineages/{name}.json"


def real_dir(modality: str, runs: str = RUNS) -> str:
    return f"{runs}/{modality}/real"


def first_dir(modality: str, seed: int, runs: str = RUNS) -> str:
    return f"{runs}/{modality}/first/seed_{seed}"


def lineage_dir(lineage: LineageSpec, runs: str = RUNS) -> str:
    return f"{runs}/{lineage.modality}/{lineage.name}"


def pipeline_file(lineage_name: str, iteration: int) -> str:
    return f"{PIPELINES}/{lineage_name}/iter_{iteration}/dvc.yaml"


@dataclass(frozen=True)
class IterationPaths:
    """The artefacts of iteration n of a lineage; iteration 1's live in the seed's shared dir."""

    manifest: str
    model: str
    eval: str
    samples: str


def iteration_paths(lineage: LineageSpec, iteration: int, runs: str = RUNS) -> IterationPaths:
    own = f"{lineage_dir(lineage, runs)}/iter_{iteration}"
    trained = first_dir(lineage.modality, lineage.seed, runs) if iteration == 1 else own
    return IterationPaths(
        manifest=f"{trained}/manifest.json",
        model=f"{trained}/model",
        eval=f"{trained}/eval.json",
        samples=f"{own}/samples",
    )


def relative_root(pipeline_path: str) -> str:
    """The ``wdir`` that takes a stage file back to the project root."""
    return "/".join(".." for _ in PurePosixPath(pipeline_path).parent.parts)
