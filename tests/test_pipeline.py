"""The real DVC pipeline end to end, at smoke scale, in a temporary copy of the project."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from collapse.contracts import DatasetManifest, EvalReport, ModelCard
from collapse.modality import load_modality
from collapse.params import load_params
from collapse.pipeline import out_of_sync
from collapse_linreg.simulate import simulate
from conftest import ROOT, run

ITERATIONS = 3


def test_committed_pipeline_is_in_sync_with_params() -> None:
    assert out_of_sync(load_params(ROOT / "params.yaml"), ROOT) is None
    run("collapse", "pipeline", "check")


def test_stage_dependencies_follow_the_policy() -> None:
    replace = yaml.safe_load((ROOT / "pipelines/linreg-replace/dvc.yaml").read_text())["stages"]
    accumulate = yaml.safe_load((ROOT / "pipelines/linreg-accumulate/dvc.yaml").read_text())["stages"]
    samples = re.compile(r"iter_(\d+)/samples")

    def sample_deps(stages: dict[str, dict[str, list[str]]], n: int) -> list[int]:
        return [int(m.group(1)) for d in stages[f"iter{n}.manifest"]["deps"] if (m := samples.search(d))]

    assert sample_deps(replace, 5) == [4]
    assert sample_deps(accumulate, 5) == [1, 2, 3, 4]
    assert replace["iter5.fit"]["params"] == ["linreg.scale", "linreg.config", "lineages.linreg-replace.seed"]


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture
def smoke_lab(project_copy: Path) -> Path:
    params_file = project_copy / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    for modality in ("linreg", "lm"):
        params[modality]["scale"] = "smoke"
    for lineage in params["lineages"].values():
        lineage["iterations"] = ITERATIONS
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    run("collapse", "pipeline", "write", cwd=project_copy)
    run("git", "init", "-q", cwd=project_copy)
    run("git", "add", "-A", cwd=project_copy)
    run("git", "commit", "-qm", "smoke", cwd=project_copy)
    return project_copy


def test_smoke_pipeline_end_to_end(smoke_lab: Path) -> None:
    lab = smoke_lab
    first = run("dvc", "repro", cwd=lab)
    lineages = load_params(lab / "params.yaml").lineages
    stage_files = [lab / "dvc.yaml", *sorted((lab / "pipelines").glob("*/dvc.yaml"))]
    every_stage = sum(len(yaml.safe_load(f.read_text())["stages"]) for f in stage_files)
    assert len(_ran(first.stdout)) == every_stage

    # every iteration's dataset, model, metrics and samples, and the figures
    for name, spec in lineages.items():
        metric = load_modality(spec.modality).primary_metric
        for n in range(1, ITERATIONS + 1):
            here = lab / "runs" / spec.modality / name / f"iter_{n}"
            manifest = DatasetManifest.model_validate_json((here / "manifest.json").read_text())
            assert manifest.iteration == n and manifest.lineage == name
            assert ModelCard.model_validate_json((here / "model/card.json").read_text()).iteration == n
            assert EvalReport.model_validate_json((here / "eval.json").read_text()).metrics[metric] > 0
            assert (here / "samples/shard.npy").is_file()
    for figure in ("figures/fig2_linear.png", "figures/fig9_log.png", "lineages/metric.png"):
        assert (lab / "reports/linreg" / figure).read_bytes()[:4] == b"\x89PNG"
    assert "linreg-accumulate" in (lab / "reports/index.html").read_text()
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

    # the lineage through DVC is replicate `seed` of the batched simulator, bit for bit-ish
    linreg = load_modality("linreg")
    config = linreg.config("smoke")
    for name in ("linreg-accumulate", "linreg-replace-multiple", "linreg-accumulate-subsample",
                 "linreg-accumulate-fresh"):
        spec = lineages[name]
        simulated = simulate(config, spec.policy, ITERATIONS, [spec.seed])
        for n in range(1, ITERATIONS + 1):
            weights = np.load(lab / "runs/linreg" / name / f"iter_{n}/model/weights.npy")
            assert np.max(np.abs(weights - simulated.weights[n - 1, 0])) < 1e-10

    # nothing to do the second time
    second = run("dvc", "repro", cwd=lab)
    assert _ran(second.stdout) == set()

    # accumulate stores every shard once: the cache holds one object per distinct file
    outputs = [
        p for folder in ("runs", "reports") for p in (lab / folder).rglob("*")
        if p.is_file() and p.name != ".gitignore"  # (the run-cache keeps eval.json too)
    ]
    distinct = {p.read_bytes() for p in outputs}
    cached = [p for p in (lab / ".dvc/cache/files").rglob("*")
              if p.is_file() and not p.name.endswith(".dir")]
    assert len(cached) == len(distinct)
    assert sum(p.stat().st_size for p in cached) == sum(len(b) for b in distinct)
    # replace and accumulate share iteration 1 (same real data, same seed)
    same = [lab / f"runs/linreg/linreg-{r}/iter_1/model/weights.npy" for r in ("replace", "accumulate")]
    assert same[0].read_bytes() == same[1].read_bytes()

    # changing one lineage's parameter re-runs only that lineage (and the report)
    params = yaml.safe_load((lab / "params.yaml").read_text())
    params["lineages"]["linreg-replace"]["seed"] = 5
    (lab / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = run("dvc", "repro", cwd=lab)
    ran = _ran(third.stdout)
    assert ran - {"report"} == {
        f"pipelines/linreg-replace/dvc.yaml:iter{n}.{step}"
        for n in range(1, ITERATIONS + 1) for step in ("manifest", "fit", "evaluate", "generate")
    }

    # dvc dag shows the iteration chain of a lineage
    dot = run("dvc", "dag", "--dot", cwd=lab).stdout
    chain = r"linreg-accumulate/dvc\.yaml:iter1\.generate.*->.*linreg-accumulate/dvc\.yaml:iter2\.manifest"
    assert re.search(chain, dot)

    # an ablation as a DVC experiment: doubling σ scales iteration 1's error by exactly 4
    # (same design, same noise draws: ŵ − w* = σ·(XᵀX)⁻¹XᵀE)
    before = EvalReport.model_validate_json(
        (lab / "runs/linreg/linreg-accumulate/iter_1/eval.json").read_text()).metrics["test_error"]
    run("git", "add", "-A", cwd=lab)
    run("git", "commit", "-qm", "seed 5", cwd=lab)
    run("dvc", "exp", "run", "-S", "+linreg.config.sigma=2.0", cwd=lab)  # "+": new key
    after = EvalReport.model_validate_json(
        (lab / "runs/linreg/linreg-accumulate/iter_1/eval.json").read_text()).metrics["test_error"]
    assert after / before == pytest.approx(4.0, rel=1e-9)
    shown = json.loads(run("dvc", "exp", "show", "--json", cwd=lab).stdout)
    assert "2.0" in json.dumps(shown)
