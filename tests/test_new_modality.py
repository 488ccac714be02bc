"""The lab is closed for new modalities: a throwaway one (tests/gaussian) registered through an
entry point runs through the real DVC pipeline and the report with no edit to shared/."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from collapse.contracts import DatasetManifest, EvalReport
from conftest import run, smoke_params


def _register(site: Path, source: Path) -> dict[str, str]:
    """An installed distribution, as pip would leave it: dist-info with an entry point."""
    info = site / "collapse_gaussian-0.0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: collapse-gaussian\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text("[collapse.modalities]\ngaussian = collapse_gaussian:GaussianModality\n")
    return {"PYTHONPATH": os.pathsep.join([str(site), str(source)])}


def test_a_new_modality_runs_through_pipeline_and_report(project_copy: Path, tmp_path: Path) -> None:
    lab = project_copy
    env = _register(tmp_path / "site", lab / "tests" / "gaussian")
    params = yaml.safe_load((lab / "params.yaml").read_text())
    params["gaussian"] = {"scale": "smoke", "data_seed": 0}
    params["lineages"]["gaussian-replace"] = {"modality": "gaussian", "policy": "replace", "seed": 0,
                                              "iterations": 4}
    params["lineages"]["gaussian-accumulate"] = {"modality": "gaussian", "policy": "accumulate", "seed": 0,
                                                 "iterations": 4}
    (lab / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    smoke_params(lab, 4, lineages=("gaussian-replace", "gaussian-accumulate"), env=env)
    run("dvc", "repro", cwd=lab, env=env)

    evals = ["runs/gaussian/first/seed_0/eval.json",
             *[f"runs/gaussian/gaussian-replace/iter_{n}/eval.json" for n in range(2, 5)]]
    replace = [EvalReport.model_validate_json((lab / path).read_text()) for path in evals]
    assert [r.iteration for r in replace] == [1, 2, 3, 4]
    manifest = DatasetManifest.model_validate_json(
        (lab / "runs/gaussian/gaussian-accumulate/iter_4/manifest.json").read_text())
    assert manifest.provenance() == {0: 20, 1: 20, 2: 20, 3: 20}
    page = (lab / "reports/index.html").read_text()
    assert "gaussian-replace" in page and "gaussian-accumulate" in page
    assert "higher is better" in page and "lower is better" not in page  # lower_is_better honoured
    assert "class='gaussian'" in page  # the modality's own report section
    assert (lab / "reports/gaussian/lineages/metric.png").read_bytes()[:4] == b"\x89PNG"
