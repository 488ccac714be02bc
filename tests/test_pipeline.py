"""The real DVC pipeline end to end, at smoke scale, in a temporary copy of the project."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from collapse import layout
from collapse.contracts import DatasetManifest, EvalReport, ModelCard
from collapse.modality import load_modality
from collapse.params import load_params, parse_params
from collapse.pipeline import out_of_sync, render
from collapse_linreg.simulate import simulate
from conftest import ROOT, run, smoke_params

ITERATIONS = 3


def test_committed_pipeline_is_in_sync_with_params() -> None:
    assert out_of_sync(load_params(ROOT / "params.yaml"), ROOT) is None
    run("collapse", "pipeline", "check")


def _stages(path: str) -> dict[str, dict[str, list[str]]]:
    return yaml.safe_load((ROOT / path).read_text())["stages"]


def test_stage_inputs_follow_the_policy_and_stay_constant_in_size() -> None:
    samples = re.compile(r"iter_(\d+)/(samples|manifest)")

    def inputs(lineage: str, n: int) -> list[str]:
        deps = _stages(layout.pipeline_file(lineage, n))["fit"]["deps"]
        return sorted(f"{m.group(2)} {m.group(1)}" for d in deps if (m := samples.search(d)))

    assert inputs("linreg-replace", 5) == ["samples 4"]
    # accumulate: the previous manifest records every earlier shard, so 2 inputs at any n
    assert inputs("linreg-accumulate", 5) == ["manifest 4", "samples 4"]
    assert inputs("linreg-accumulate", 10) == ["manifest 9", "samples 9"]
    # iteration 1 is trained once per (modality, seed), in dvc.yaml; a lineage only samples from it
    assert set(_stages(layout.pipeline_file("linreg-replace", 1))) == {"generate"}
    assert set(_stages(layout.pipeline_file("linreg-replace", 2))) == {"fit", "evaluate-generate"}
    top = _stages("dvc.yaml")
    assert "linreg.iter1.seed0.fit" in top and "lm.iter1.seed0.fit" in top


def test_no_fit_or_generate_depends_on_benchmark_figure_report_or_serving_code() -> None:
    """Editing such a module re-runs no fit and no generate: those stages do not list it (the
    smoke test below edits report.py and sees only the report re-run)."""
    side_code = re.compile(r"/(bench\w*|figures|report|plotting|serving\w*|cli|soak)\.py$")
    files = [ROOT / "dvc.yaml", *sorted(ROOT.glob("pipelines/*/*/dvc.yaml"))]
    checked = 0
    for path in files:
        for name, stage in _stages(str(path.relative_to(ROOT))).items():
            if any(step in name for step in ("fit", "evaluate", "generate", "prepare")):
                assert not [d for d in stage["deps"] if side_code.search(d)], (path, name)
                checked += 1
    assert checked > 100
    top = _stages("dvc.yaml")
    assert "services/linreg/src/collapse_linreg/figures.py" in top["linreg.figures"]["deps"]
    assert "shared/src/collapse/report.py" in top["report"]["deps"]


def test_graph_holds_topology_only() -> None:
    """Values (T, fractions, temperatures, presets) never appear in the generated graph."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    before = render(parse_params(raw), ROOT)
    raw["linreg"]["config"] = {"samples": 200, "sigma": 2.0}
    raw["lm"]["config"] = {"data": {"fraction": 0.2}, "sampling": {"temperature": 0.3},
                           "model": "llama2-micro", "train": {"epochs": 3}}
    raw["lm"]["scale"] = "smoke"
    assert render(parse_params(raw), ROOT) == before
    raw["lineages"]["linreg-replace"]["seed"] = 3  # a new seed needs its own iteration-1 stages
    assert render(parse_params(raw), ROOT) != before


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture
def smoke_lab(project_copy: Path) -> Path:
    smoke_params(project_copy, ITERATIONS, lineages=("linreg-replace", "linreg-accumulate",
                                                     "linreg-accumulate-fresh", "linreg-replace-multiple",
                                                     "linreg-accumulate-subsample", "lm-replace",
                                                     "lm-accumulate"))
    return project_copy


def test_smoke_pipeline_end_to_end(smoke_lab: Path) -> None:
    lab = smoke_lab
    first = run("dvc", "repro", cwd=lab)
    lineages = load_params(lab / "params.yaml").lineages
    stage_files = [lab / "dvc.yaml", *sorted((lab / "pipelines").glob("*/iter_*/dvc.yaml"))]
    every_stage = sum(len(yaml.safe_load(f.read_text())["stages"]) for f in stage_files)
    assert len(_ran(first.stdout)) == every_stage
    # iteration 1 is fitted once per modality (one seed), however many lineages read it
    assert sum("iter1" in s and s.endswith(".fit") for s in _ran(first.stdout)) == 2

    # every iteration's dataset, model, metrics and samples, and the figures
    for name, spec in lineages.items():
        metric = load_modality(spec.modality).primary_metric
        for n in range(1, ITERATIONS + 1):
            paths = layout.iteration_paths(spec, n)
            manifest = DatasetManifest.model_validate_json((lab / paths.manifest).read_text())
            assert manifest.iteration == n and manifest.lineage == (name if n > 1 else None)
            assert ModelCard.model_validate_json((lab / paths.model / "card.json").read_text()).iteration == n
            assert EvalReport.model_validate_json((lab / paths.eval).read_text()).metrics[metric] > 0
            assert (lab / paths.samples / "shard.npy").is_file()
    for figure in ("figures/fig2_linear.png", "figures/fig9_log.png", "lineages/metric.png"):
        assert (lab / "reports/linreg" / figure).read_bytes()[:4] == b"\x89PNG"
    page = (lab / "reports/index.html").read_text()
    assert all(name in page for name in lineages)
    # each compute table: iteration, training items (once), the service's compute facts, the metric
    heads = re.findall(r"<tr><th>iteration</th><th>training items</th>(.*?)</tr>", page)
    assert heads and all("<th>items</th>" not in head for head in heads), heads
    metrics = json.loads(run("dvc", "metrics", "show", "--json", cwd=lab).stdout)
    assert metrics  # DVC sees the per-iteration metrics

    # lm: checkpoints load with transformers, samples are readable, token ids fit the tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm_model = lab / "runs/lm/lm-accumulate/iter_2/model"
    vocabulary = len(AutoTokenizer.from_pretrained(lm_model))
    assert AutoModelForCausalLM.from_pretrained(lm_model).config.vocab_size == vocabulary
    for n in range(1, ITERATIONS + 1):
        shard = np.load(lab / f"runs/lm/lm-replace/iter_{n}/samples/shard.npy")
        assert shard.dtype == np.uint16 and int(shard.max()) < vocabulary
        assert "--- sample 0" in (lab / f"runs/lm/lm-replace/iter_{n}/samples/stories.txt").read_text()
    assert (lab / "reports/lm/lineages/training_curves.png").read_bytes()[:4] == b"\x89PNG"

    # the lineage through DVC is replicate `seed` of the batched simulator
    config = load_modality("linreg").config("smoke")
    for name in ("linreg-accumulate", "linreg-replace-multiple", "linreg-accumulate-subsample",
                 "linreg-accumulate-fresh"):
        spec = lineages[name]
        simulated = simulate(config, spec.policy, ITERATIONS, [spec.seed])
        for n in range(1, ITERATIONS + 1):
            weights = np.load(lab / layout.iteration_paths(spec, n).model / "weights.npy")
            assert np.max(np.abs(weights - simulated.weights[n - 1, 0])) < 1e-10

    # nothing to do the second time (the check always looks at the graph; its outputs stay the same)
    assert _ran(run("dvc", "repro", cwd=lab).stdout) == {"check"}
    # the README's "running things" commands
    assert _ran(run("dvc", "repro", "pipelines/linreg-replace/iter_3/dvc.yaml", cwd=lab).stdout) == {"check"}
    assert _ran(run("dvc", "repro", "-s", "pipelines/linreg-replace/iter_3/dvc.yaml:fit", cwd=lab).stdout) == set()
    assert "linreg-replace" in run("collapse", "lineages", cwd=lab).stdout

    # the cache holds one object per distinct file: accumulate stores every shard once
    outputs = [p for folder in ("runs", "reports") for p in (lab / folder).rglob("*")
               if p.is_file() and p.name != ".gitignore"]
    distinct = {p.read_bytes() for p in outputs}
    cached = [p for p in (lab / ".dvc/cache/files").rglob("*") if p.is_file() and not p.name.endswith(".dir")]
    assert len(cached) == len(distinct)

    # files are written with ordinary permissions
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in (lab / "runs/linreg/real").iterdir())

    # dvc dag shows the iteration chain of a lineage
    dot = run("dvc", "dag", "--dot", cwd=lab).stdout
    chain = r"linreg-accumulate/iter_1/dvc\.yaml:generate.*->.*linreg-accumulate/iter_2/dvc\.yaml:fit"
    assert re.search(chain, dot)

    # an editing of report code re-runs the report only
    report_code = lab / "shared/src/collapse/report.py"
    report_code.write_text(report_code.read_text() + "\n# edited\n")
    assert _ran(run("dvc", "repro", cwd=lab).stdout) == {"check", "report"}
