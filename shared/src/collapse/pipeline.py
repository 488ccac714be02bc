"""The DVC pipeline, generated from params.yaml: one stage per (lineage, iteration, step).

DVC interpolation has no arithmetic and a lineage's dependencies depend on its policy
(replace reads only the newest samples, accumulate all of them), so the stage graph is written
by ``collapse pipeline write`` and checked by ``collapse pipeline check`` (and by the report
stage and the tests). Every path lives here and is passed to the stage commands as arguments.

Layout: ``dvc.yaml`` holds the per-modality stages (prepare, figures) and the report, whose
dependencies pull in every lineage; each lineage's iteration chain is its own
``pipelines/<lineage>/dvc.yaml`` (``wdir`` = project root, so all paths read the same). DVC
rewrites a pipeline's whole lock file after every stage, so one 200-stage file costs O(stages²)
YAML work; a file per lineage keeps that linear in the number of lineages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from collapse.contracts import LineageSpec
from collapse.modality import load_modality
from collapse.params import LabParams
from collapse.policy import real_items_needed, synthetic_inputs

PARAMS = "params.yaml"
SHARED_CODE = "shared/src/collapse"
PIPELINES = "pipelines"
ROOT = "../.."  # wdir of the per-lineage pipelines


def real_dir(modality: str, runs: str = "runs") -> str:
    return f"{runs}/{modality}/real"


def iteration_dir(lineage: LineageSpec, iteration: int, runs: str = "runs") -> str:
    return f"{runs}/{lineage.modality}/{lineage.name}/iter_{iteration}"


def lineage_dvc_yaml(lineage_name: str) -> str:
    return f"{PIPELINES}/{lineage_name}/dvc.yaml"


def stage_name(iteration: int, step: str) -> str:
    return f"iter{iteration}.{step}"


def stage_address(lineage: LineageSpec, iteration: int, step: str) -> str:
    """What `dvc repro`/`dvc status` accept for one stage."""
    return f"{lineage_dvc_yaml(lineage.name)}:{stage_name(iteration, step)}"


def _service_code(modality: str) -> str:
    return f"services/{modality}/src"


def _lineage_stages(lineage: LineageSpec) -> dict[str, Any]:
    m, key = lineage.modality, f"lineages.{lineage.name}"
    real = real_dir(m)
    config_params = [f"{m}.scale", f"{m}.config"]
    stages: dict[str, Any] = {}
    for n in range(1, lineage.iterations + 1):
        here = iteration_dir(lineage, n)
        samples = [f"{iteration_dir(lineage, i)}/samples" for i in synthetic_inputs(lineage.policy, n)]
        base = f"collapse {{step}} --params {PARAMS} --lineage {lineage.name}"
        stages[stage_name(n, "manifest")] = {
            "wdir": ROOT,
            "cmd": base.format(step="manifest")
            + f" --iteration {n} --real {real}"
            + "".join(f" --samples {s}" for s in samples)
            + f" --out {here}/manifest.json",
            "deps": [real, *samples, f"{SHARED_CODE}/policy.py"],
            "params": [f"{key}.policy", f"{key}.seed"],
            "outs": [f"{here}/manifest.json"],
        }
        stages[stage_name(n, "fit")] = {
            "wdir": ROOT,
            "cmd": base.format(step="fit")
            + f" --manifest {here}/manifest.json --real {real} --out {here}/model",
            "deps": [f"{here}/manifest.json", real, _service_code(m)],
            "params": [*config_params, f"{key}.seed"],
            "outs": [f"{here}/model"],
        }
        stages[stage_name(n, "evaluate")] = {
            "wdir": ROOT,
            "cmd": base.format(step="evaluate")
            + f" --model {here}/model --real {real} --out {here}/eval.json",
            "deps": [f"{here}/model", real, _service_code(m)],
            "params": config_params,
            "metrics": [{f"{here}/eval.json": {"cache": False}}],
        }
        if lineage.policy.synthetic != "none":
            stages[stage_name(n, "generate")] = {
                "wdir": ROOT,
                "cmd": base.format(step="generate")
                + f" --iteration {n} --model {here}/model --real {real} --out {here}/samples",
                "deps": [f"{here}/model", real, _service_code(m)],
                "params": [*config_params, f"{key}.policy", f"{key}.seed"],
                "outs": [f"{here}/samples"],
            }
    return stages


def build_pipelines(params: LabParams) -> dict[str, dict[str, Any]]:
    """File path → content of every generated DVC pipeline file."""
    files: dict[str, dict[str, Any]] = {}
    stages: dict[str, Any] = {}
    plots: list[dict[str, Any]] = []
    eval_files: list[str] = []
    figure_dirs: list[str] = []
    reported: list[str] = []
    for m, section in params.modalities.items():
        lineages = params.lineages_of(m)
        if not lineages:
            continue
        reported.append(m)
        service = load_modality(m)
        t = service.real_items(service.config(section.scale, section.config))
        pool = max(real_items_needed(spec.policy, spec.iterations, t) for spec in lineages)
        config_params = [f"{m}.scale", f"{m}.config"]
        stages[f"{m}.prepare"] = {
            "cmd": f"collapse prepare --params {PARAMS} --modality {m} --pool-items {pool}"
            f" --out {real_dir(m)}",
            "deps": [_service_code(m)],
            "params": [*config_params, f"{m}.data_seed"],
            "outs": [real_dir(m)],
        }
        if service.has_figures:
            figures = f"reports/{m}/figures"
            stages[f"{m}.figures"] = {
                "cmd": f"collapse figures --params {PARAMS} --modality {m} --out {figures}",
                "deps": [_service_code(m), SHARED_CODE],
                "params": config_params,
                "outs": [figures],
            }
            figure_dirs.append(figures)
        for spec in lineages:
            files[lineage_dvc_yaml(spec.name)] = {"stages": _lineage_stages(spec)}
            eval_files += [
                f"{iteration_dir(spec, n)}/eval.json" for n in range(1, spec.iterations + 1)
            ]
            if spec.policy.synthetic != "none":  # the last model's samples: read by nothing else
                eval_files.append(f"{iteration_dir(spec, spec.iterations)}/samples")
        curves = {f"reports/{m}/lineages/curves/{spec.name}.json": service.primary_metric
                  for spec in lineages}
        plots.append({f"{m}: {service.primary_metric} per iteration": {"x": "iteration",
                                                                        "y": curves}})
    stages["report"] = {
        "cmd": f"collapse report --params {PARAMS} --runs runs --out reports",
        "deps": [*eval_files, *figure_dirs, f"{SHARED_CODE}/report.py"],
        "params": ["lineages"],
        "outs": [
            "reports/index.html",
            *[f"reports/{m}/lineages" for m in reported],
        ],
    }
    files["dvc.yaml"] = {"stages": stages, "plots": plots}
    return files


HEADER = (
    "# Generated from params.yaml by `collapse pipeline write` — do not edit by hand.\n"
    "# After changing lineages or iteration counts in params.yaml, run it again.\n"
)


def render(params: LabParams) -> dict[str, str]:
    """File path (relative to the project root) → text."""
    return {
        path: HEADER + yaml.safe_dump(content, sort_keys=False, width=100)
        for path, content in build_pipelines(params).items()
    }


def _existing_lineage_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in (root / PIPELINES).glob("*/dvc.yaml")}


def out_of_sync(params: LabParams, root: str | Path = ".") -> str | None:
    """None if the pipeline files are what params.yaml generates, else what is wrong."""
    base = Path(root)
    wanted = render(params)
    stale = sorted(_existing_lineage_files(base) - set(wanted))
    differ = [p for p, text in wanted.items()
              if not (base / p).is_file() or (base / p).read_text() != text]
    if not stale and not differ:
        return None
    listed = ", ".join(differ + [f"{p} (no such lineage)" for p in stale])
    return f"the DVC pipeline is out of sync with params.yaml ({listed}): run `collapse pipeline write`"


def write(params: LabParams, root: str | Path = ".") -> list[str]:
    """Write every pipeline file; remove lineage pipelines no longer in params.yaml."""
    from collapse.store import atomic_write_bytes

    base = Path(root)
    wanted = render(params)
    for stale in _existing_lineage_files(base) - set(wanted):
        (base / stale).unlink()
        lock = (base / stale).with_name("dvc.lock")
        if lock.exists():
            lock.unlink()
    for path, text in wanted.items():
        atomic_write_bytes(base / path, text.encode())
    return sorted(wanted)
