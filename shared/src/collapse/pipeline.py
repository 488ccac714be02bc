"""The DVC stage graph, generated from params.yaml: topology only.

The graph says which stages exist (lineages, iterations, shared iteration-1 models, one
iteration-1 model per (modality, seed)) and which outputs feed which stage. Every value that
params determine (T, pool sizes, sampling settings, …) is read by the stages at run time, so
`dvc exp run -S key=value` just works for any value; a change of topology (a lineage added, a
seed or `iterations` changed) is caught by the ``check`` stage, which every other stage
depends on, before any work.

Why stages are cut this way:

* ``check`` validates params.yaml and writes, per modality and step, the config values that
  step reads (``runs/config/<m>/<step>.json``) and each lineage's policy and seed. Stages
  depend on those small files, not on params keys, so a sampling temperature re-runs the
  generate and evaluate stages but no prepare and no fit; the files are rewritten only when
  their values change, so the check itself never causes a re-run.
* Two stages per (lineage, iteration): ``fit`` (builds the manifest from the policy, then fits)
  and ``evaluate-generate`` (loads model n once, scores it on real test data, samples the items
  the policy asks for). The dataset, model, metrics and samples of every iteration are separate
  DVC outputs, a crash resumes at the failed stage, and a sampling change re-runs no fit. Every
  stage is a process start-up plus DVC bookkeeping (~0.5 s on 2 cores); a third stage per
  iteration would cost 50 % more for a 100-iteration lineage, and evaluation-only changes
  (rare) re-sample byte-identical items, which stops the cascade there.
* Each (lineage, iteration) has its own ``pipelines/<lineage>/iter_<n>/dvc.yaml``: DVC
  rewrites a stage file's whole lock after every stage, so the cost of a stage grows with the
  size of its file; small files keep it flat however long a lineage is.
* An accumulating manifest depends on the previous manifest plus the newest samples (the
  manifest records every synthetic shard it could draw from), never on all n sample folders.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import yaml

from collapse import layout
from collapse.contracts import LineageSpec
from collapse.modality import Modality, load_modality
from collapse.params import LabParams

SHARED = "shared/src/collapse"
SHARED_STEP_CODE = {
    "check": [f"{SHARED}/params.py", f"{SHARED}/contracts.py", f"{SHARED}/modality.py"],
    "prepare": [],
    "fit": [f"{SHARED}/policy.py", f"{SHARED}/seeds.py"],
    "evaluate": [],
    "generate": [f"{SHARED}/seeds.py"],
    "figures": [],
    "report": [f"{SHARED}/report.py"],
}
HEADER = (
    "# Generated from params.yaml by `collapse pipeline write` — do not edit by hand.\n"
    "# After changing lineages, their seeds or iteration counts, run it again.\n"
)


def _module_path(name: str, root: Path) -> str | None:
    """The file (or package directory) of module ``name``, relative to ``root``; None if outside."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return None
    origin = Path(spec.origin)
    path = origin.parent if origin.name == "__init__.py" else origin
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:  # installed elsewhere (not editable): nothing in the project to track
        return None


def code_deps(service: Modality, step: str, root: Path) -> list[str]:
    """Files ``step`` runs: the service's modules for that step (or its package) + shared ones."""
    modules = service.step_modules.get(step)
    if modules is None:
        modules = (type(service).__module__.split(".")[0],)
    paths = [p for name in modules if (p := _module_path(name, root)) is not None]
    return sorted(set(paths)) + [p for p in SHARED_STEP_CODE.get(step, []) if (root / p).exists()]


def steps_of(service: Modality) -> list[str]:
    return ["prepare", "fit", "evaluate", "generate", *(["figures"] if service.has_figures else [])]


def _stage(cmd: list[str], deps: list[str], outs: list[str], wdir: str | None = None,
           metrics: list[str] | None = None) -> dict[str, Any]:
    stage: dict[str, Any] = {}
    if wdir:
        stage["wdir"] = wdir
    stage["cmd"] = " ".join(cmd)
    stage["deps"] = deps
    if outs:
        stage["outs"] = outs
    if metrics:
        stage["metrics"] = metrics
    return stage


def _first_stages(m: str, seed: int, code: dict[str, list[str]]) -> dict[str, Any]:
    here, real = layout.first_dir(m, seed), layout.real_dir(m)
    fit_cfg, eval_cfg = layout.step_config(m, "fit"), layout.step_config(m, "evaluate")
    return {
        f"{m}.iter1.seed{seed}.fit": _stage(
            ["collapse fit --modality", m, "--seed", str(seed), "--iteration 1 --real", real,
             "--config", fit_cfg, "--manifest-out", f"{here}/manifest.json", "--out", f"{here}/model"],
            [real, fit_cfg, *code["fit"]], [f"{here}/manifest.json", f"{here}/model"]),
        f"{m}.iter1.seed{seed}.evaluate": _stage(
            ["collapse evaluate --model", f"{here}/model", "--real", real, "--config", eval_cfg,
             "--out", f"{here}/eval.json"],
            [f"{here}/model", real, eval_cfg, *code["evaluate"]], [], metrics=[f"{here}/eval.json"]),
    }


def _iteration_stages(spec: LineageSpec, n: int, code: dict[str, list[str]]) -> dict[str, Any]:
    """Iteration n of a lineage: ``fit`` + ``evaluate-generate`` (n >= 2); ``generate`` (n = 1,
    whose model is the seed's shared iteration 1); ``evaluate`` alone if the policy samples nothing."""
    m, real = spec.modality, layout.real_dir(spec.modality)
    wdir = layout.relative_root(layout.pipeline_file(spec.name, n))
    spec_file = layout.lineage_config(spec.name)
    fit_cfg, eval_cfg = layout.step_config(m, "fit"), layout.step_config(m, "evaluate")
    gen_cfg = layout.step_config(m, "generate")
    paths = layout.iteration_paths(spec, n)
    samples = spec.policy.synthetic != "none"
    stages: dict[str, Any] = {}
    if n >= 2:
        previous = layout.iteration_paths(spec, n - 1)
        inputs = ["--samples", previous.samples] if samples else []
        if spec.policy.synthetic == "all" and n >= 3:
            inputs += ["--previous", previous.manifest]
        stages["fit"] = _stage(
            ["collapse fit --lineage", spec_file, "--iteration", str(n), "--real", real, *inputs,
             "--config", fit_cfg, "--manifest-out", paths.manifest, "--out", paths.model],
            [real, *inputs[1::2], spec_file, fit_cfg, *code["fit"]], [paths.manifest, paths.model], wdir)
        if not samples:
            stages["evaluate"] = _stage(
                ["collapse evaluate --model", paths.model, "--real", real, "--config", eval_cfg, "--out", paths.eval],
                [paths.model, real, eval_cfg, *code["evaluate"]], [], wdir, metrics=[paths.eval])
            return stages
        # one process scores model n and samples from it: the model is loaded once
        stages["evaluate-generate"] = _stage(
            ["collapse generate --lineage", spec_file, "--iteration", str(n), "--model", paths.model,
             "--real", real, "--config", gen_cfg, "--out", paths.samples, "--evaluate-config", eval_cfg,
             "--evaluate-out", paths.eval],
            [paths.model, real, spec_file, gen_cfg, eval_cfg, *sorted(set(code["generate"]) | set(code["evaluate"]))],
            [paths.samples], wdir, metrics=[paths.eval])
    elif samples:
        stages["generate"] = _stage(
            ["collapse generate --lineage", spec_file, "--iteration", "1", "--model", paths.model, "--real", real,
             "--config", gen_cfg, "--out", paths.samples],
            [paths.model, real, spec_file, gen_cfg, *code["generate"]], [paths.samples], wdir)
    return stages


def topology(params: LabParams) -> dict[str, Any]:
    """What the graph is made of; the check stage writes it (it changes with topology only)."""
    return {
        "modalities": {
            m: {"seeds": params.seeds_of(m),
                "lineages": {s.name: {"iterations": s.iterations, "synthetic": s.policy.synthetic,
                                      "seed": s.seed} for s in params.lineages_of(m)}}
            for m in params.active_modalities()
        }
    }


def build_pipelines(params: LabParams, root: str | Path = ".") -> dict[str, dict[str, Any]]:
    """File path → content of every generated DVC stage file."""
    base = Path(root)
    files: dict[str, dict[str, Any]] = {}
    modalities = params.active_modalities()
    services = {m: load_modality(m) for m in modalities}
    check_outs = [layout.TOPOLOGY]
    for m in modalities:
        check_outs += [layout.step_config(m, step) for step in steps_of(services[m])]
    check_outs += [layout.lineage_config(name) for name in params.lineages]
    check_code = sorted({p for m in modalities for p in code_deps(services[m], "check", base)})
    stages: dict[str, Any] = {
        "check": {
            "cmd": f"collapse check --params {layout.PARAMS} --out {layout.CONFIG}",
            "deps": check_code,
            "params": [{layout.PARAMS: None}],
            "outs": check_outs,
            # never restored from DVC's run-cache: it must look at the graph every time (a topology
            # change whose params were seen before would otherwise pass unchecked)
            "always_changed": True,
        }
    }
    plots: list[dict[str, Any]] = []
    report_deps: list[str] = []
    for m in modalities:
        service = services[m]
        code = {step: code_deps(service, step, base) for step in ("prepare", "fit", "evaluate", "generate")}
        real, prepare_cfg = layout.real_dir(m), layout.step_config(m, "prepare")
        stages[f"{m}.prepare"] = _stage(
            ["collapse prepare --modality", m, "--config", prepare_cfg, "--out", real],
            [prepare_cfg, *code["prepare"]], [real])
        for seed in params.seeds_of(m):
            stages.update(_first_stages(m, seed, code))
        if service.has_figures:
            figures_cfg, figures = layout.step_config(m, "figures"), f"{layout.REPORTS}/{m}/figures"
            stages[f"{m}.figures"] = _stage(
                ["collapse figures --modality", m, "--config", figures_cfg, "--out", figures],
                [figures_cfg, *code_deps(service, "figures", base)], [figures])
            report_deps.append(figures)
        curves: dict[str, str] = {}
        for spec in params.lineages_of(m):
            for n in range(1, spec.iterations + 1):
                iteration = _iteration_stages(spec, n, code)
                if iteration:
                    files[layout.pipeline_file(spec.name, n)] = {"stages": iteration}
                paths = layout.iteration_paths(spec, n)
                report_deps += [paths.manifest, paths.model, paths.eval]
                if spec.policy.synthetic != "none":
                    report_deps.append(paths.samples)
            curves[f"{layout.REPORTS}/{m}/curves/{spec.name}.json"] = service.primary_metric
        plots.append({f"{m}: {service.primary_metric} per iteration": {"x": "iteration", "y": curves}})
    report_code = sorted({p for m in modalities for p in code_deps(services[m], "report", base)})
    stages["report"] = {
        "cmd": f"collapse report --params {layout.PARAMS} --out {layout.REPORTS}",
        "deps": sorted(set(report_deps)) + [layout.lineage_config(n) for n in params.lineages]
        + sorted({layout.step_config(m, step) for m in modalities for step in steps_of(services[m])})
        + report_code,
        "outs": [f"{layout.REPORTS}/index.html",
                 *[f"{layout.REPORTS}/{m}/{part}" for m in modalities for part in ("lineages", "curves", "views")]],
    }
    files["dvc.yaml"] = {"stages": stages, "plots": plots}
    return files


def render(params: LabParams, root: str | Path = ".") -> dict[str, str]:
    """File path (relative to the project root) → text."""
    return {path: HEADER + yaml.safe_dump(content, sort_keys=False, width=100)
            for path, content in build_pipelines(params, root).items()}


def _existing_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in (root / layout.PIPELINES).glob("*/iter_*/dvc.yaml")}


def out_of_sync(params: LabParams, root: str | Path = ".") -> str | None:
    """None if the stage files are what params.yaml generates, else one line saying what to do."""
    base = Path(root)
    wanted = render(params, base)
    stale = sorted(_existing_files(base) - set(wanted))
    differ = sorted(p for p, text in wanted.items()
                    if not (base / p).is_file() or (base / p).read_text() != text)
    if not stale and not differ:
        return None
    changed = sorted({p.split("/")[1] if p.startswith(layout.PIPELINES) else p for p in differ + stale})
    return (
        f"the stage graph no longer matches {layout.PARAMS} (a lineage, seed or iteration count "
        f"changed: {', '.join(changed)}): run `collapse pipeline write` and then the same command "
        "again, or run the ablation as `collapse exp run -S key=value` (it regenerates the graph)"
    )


def write(params: LabParams, root: str | Path = ".") -> list[str]:
    """Write every stage file; remove the ones (and their locks) no longer in params.yaml."""
    from collapse.store import atomic_write_bytes

    base = Path(root)
    wanted = render(params, base)
    for stale in _existing_files(base) - set(wanted):
        for name in ("dvc.yaml", "dvc.lock"):
            path = (base / stale).with_name(name)
            if path.exists():
                path.unlink()
        for folder in ((base / stale).parent, (base / stale).parent.parent):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    for name, text in wanted.items():
        atomic_write_bytes(base / name, text.encode())
    return sorted(wanted)


def topology_digest(params: LabParams) -> str:
    return hashlib.sha256(json.dumps(topology(params), sort_keys=True).encode()).hexdigest()
