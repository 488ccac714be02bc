"""dvc.yaml, generated from params.yaml: one stage per (lineage, iteration, step).

DVC interpolation has no arithmetic and a lineage's dependencies depend on its policy
(replace reads only the newest samples, accumulate all of them), so the stage graph is written
by ``collapse pipeline write`` and checked by ``collapse pipeline check`` (and by the report
stage and the tests). Every path lives here and is passed to the stage commands as arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from collapse.contracts import LineageSpec
from collapse.modality import load_modality
from collapse.params import LabParams
from collapse.policy import real_items_needed

PARAMS = "params.yaml"
STEPS = ("manifest", "fit", "evaluate", "generate")
SHARED_CODE = "shared/src/collapse"


def real_dir(modality: str, runs: str = "runs") -> str:
    return f"{runs}/{modality}/real"


def iteration_dir(lineage: LineageSpec, iteration: int, runs: str = "runs") -> str:
    return f"{runs}/{lineage.modality}/{lineage.name}/iter_{iteration}"


def stage_name(lineage: LineageSpec, iteration: int, step: str) -> str:
    return f"{lineage.name}.iter{iteration}.{step}"


def _service_code(modality: str) -> str:
    return f"services/{modality}/src"


def _synthetic_inputs(lineage: LineageSpec, iteration: int) -> list[int]:
    """Which models' samples the manifest of ``iteration`` may read (from the policy)."""
    if iteration == 1 or lineage.policy.synthetic == "none":
        return []
    if lineage.policy.synthetic == "latest":
        return [iteration - 1]
    return list(range(1, iteration))


def _lineage_stages(lineage: LineageSpec) -> dict[str, Any]:
    m, key = lineage.modality, f"lineages.{lineage.name}"
    real = real_dir(m)
    config_params = [f"{m}.scale", f"{m}.config"]
    stages: dict[str, Any] = {}
    for n in range(1, lineage.iterations + 1):
        here = iteration_dir(lineage, n)
        samples = [f"{iteration_dir(lineage, i)}/samples" for i in _synthetic_inputs(lineage, n)]
        base = f"collapse {{step}} --params {PARAMS} --lineage {lineage.name}"
        stages[stage_name(lineage, n, "manifest")] = {
            "cmd": base.format(step="manifest")
            + f" --iteration {n} --real {real}"
            + "".join(f" --samples {s}" for s in samples)
            + f" --out {here}/manifest.json",
            "deps": [real, *samples, f"{SHARED_CODE}/policy.py"],
            "params": [f"{key}.policy", f"{key}.seed"],
            "outs": [f"{here}/manifest.json"],
        }
        stages[stage_name(lineage, n, "fit")] = {
            "cmd": base.format(step="fit")
            + f" --manifest {here}/manifest.json --real {real} --out {here}/model",
            "deps": [f"{here}/manifest.json", real, _service_code(m)],
            "params": [*config_params, f"{key}.seed"],
            "outs": [f"{here}/model"],
        }
        stages[stage_name(lineage, n, "evaluate")] = {
            "cmd": base.format(step="evaluate")
            + f" --model {here}/model --real {real} --out {here}/eval.json",
            "deps": [f"{here}/model", real, _service_code(m)],
            "params": config_params,
            "metrics": [{f"{here}/eval.json": {"cache": False}}],
        }
        if lineage.policy.synthetic != "none":
            stages[stage_name(lineage, n, "generate")] = {
                "cmd": base.format(step="generate")
                + f" --iteration {n} --model {here}/model --real {real} --out {here}/samples",
                "deps": [f"{here}/model", real, _service_code(m)],
                "params": [*config_params, f"{key}.policy", f"{key}.seed"],
                "outs": [f"{here}/samples"],
            }
    return stages


def build_dvc_yaml(params: LabParams) -> dict[str, Any]:
    stages: dict[str, Any] = {}
    plots: list[dict[str, Any]] = []
    eval_files: list[str] = []
    figure_dirs: list[str] = []
    for m, section in params.modalities.items():
        lineages = params.lineages_of(m)
        if not lineages:
            continue
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
        figures = f"reports/{m}/figures"
        stages[f"{m}.figures"] = {
            "cmd": f"collapse figures --params {PARAMS} --modality {m} --out {figures}",
            "deps": [_service_code(m), SHARED_CODE],
            "params": config_params,
            "outs": [figures],
        }
        figure_dirs.append(figures)
        for spec in lineages:
            stages.update(_lineage_stages(spec))
            eval_files += [
                f"{iteration_dir(spec, n)}/eval.json" for n in range(1, spec.iterations + 1)
            ]
        plots.append(
            {
                f"{m}: {service.primary_metric} per iteration": {
                    "x": "iteration",
                    "y": {f"reports/{m}/curves/{spec.name}.json": service.primary_metric
                          for spec in lineages},
                }
            }
        )
    stages["report"] = {
        "cmd": f"collapse report --params {PARAMS} --runs runs --out reports",
        "deps": [*eval_files, *figure_dirs, f"{SHARED_CODE}/report.py"],
        "params": ["lineages"],
        "outs": ["reports/index.html", *[f"reports/{m}/curves" for m in params.modalities
                                          if params.lineages_of(m)],
                 *[f"reports/{m}/lineages.png" for m in params.modalities
                   if params.lineages_of(m)]],
    }
    return {"stages": stages, "plots": plots}


HEADER = (
    "# Generated from params.yaml by `collapse pipeline write` — do not edit by hand.\n"
    "# After changing lineages or iteration counts in params.yaml, run it again.\n"
)


def render(params: LabParams) -> str:
    return HEADER + yaml.safe_dump(build_dvc_yaml(params), sort_keys=False, width=100)


def out_of_sync(params: LabParams, path: str | Path = "dvc.yaml") -> str | None:
    """None if ``path`` is what params.yaml generates, else a message saying how to fix it."""
    file = Path(path)
    if not file.is_file() or file.read_text() != render(params):
        return f"{file} is out of sync with params.yaml: run `collapse pipeline write`"
    return None
