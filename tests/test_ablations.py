"""Every documented ablation, run for real with `dvc exp run -S` (or `collapse exp run -S` for a
change of topology) on a small smoke graph, checking which stages it re-ran (slow tier)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from collapse.contracts import EvalReport
from conftest import ROOT, reset_lab, run

pytestmark = pytest.mark.slow

ITERATIONS = 2


def _ran(output: str) -> set[str]:
    """Stages brought up to date: run, or restored from DVC's run-cache (same inputs seen before,
    e.g. model 1 trained for 3 epochs by an earlier ablation: the runs are byte-identical)."""
    return set(re.findall(r"Running stage '([^']+)'", output)) | set(
        re.findall(r"Stage '([^']+)' is cached - skipping run", output))


def _all(ran: set[str], needle: str) -> set[str]:
    return {stage for stage in ran if needle in stage}


@pytest.fixture
def lab(slow_lab: Path) -> Path:
    return slow_lab


def _exp(lab: Path, *settings: str, tool: str = "dvc", name: str | None = None) -> set[str]:
    args = [a for s in settings for a in ("-S", s)] + (["-n", name] if name else [])
    command = ["dvc", "exp", "run", *args] if tool == "dvc" else ["collapse", "exp", "run", *args]
    result = run(*command, cwd=lab)
    ran = _ran(result.stdout)
    print(f"{' '.join(command)} re-ran {len(ran)} stages: {sorted(ran)}")
    return ran


LM_FIRST = {"lm.iter1.seed0.fit", "lm.iter1.seed0.evaluate"}


# (the command as README.md writes it, the expectation)
ABLATIONS: list[tuple[str, str]] = [
    ("dvc exp run -S +linreg.config.samples=200", "linreg-all"),
    ("dvc exp run -S +linreg.config.sigma=2.0", "linreg-all"),
    ("dvc exp run -S +linreg.config.cov_decay=0.9 -S +linreg.config.ridge=0.1", "linreg-all"),
    ("dvc exp run -S linreg.scale=default", "linreg-all"),
    ("dvc exp run -S +lm.config.sampling.temperature=0.3", "lm-sampling"),
    ("dvc exp run -S +lm.config.data.fraction=0.2", "lm-all"),
    ("dvc exp run -S +lm.config.train.epochs=3", "lm-fits"),
    ("dvc exp run -S +lm.config.first_iteration_epochs=3", "lm-fits"),
    ("dvc exp run -S +lm.config.model=llama2-12m", "lm-fits"),
    ("collapse exp run -S lineages.linreg-replace.seed=3", "one-lineage"),
]


@pytest.mark.parametrize(("command", "expect"), ABLATIONS, ids=[a[0].split(" -S ", 1)[1] for a in ABLATIONS])
def test_ablation(lab: Path, command: str, expect: str) -> None:
    reset_lab(lab)
    tool = command.split(maxsplit=1)[0]
    settings = re.findall(r"-S (\S+)", command)
    ran = _exp(lab, *settings, tool=tool)
    assert "check" in ran
    linreg, lm = _all(ran, "linreg"), _all(ran, "lm")
    if expect == "linreg-all":
        assert not lm and "linreg.prepare" in ran and "linreg.iter1.seed0.fit" in ran
        assert {f"pipelines/linreg-accumulate/iter_{ITERATIONS}/dvc.yaml:fit", "report"} <= ran
    elif expect == "lm-all":
        assert not linreg and "lm.prepare" in ran and LM_FIRST <= ran
    elif expect == "lm-fits":  # training changes: no tokenizer / real data, every fit
        assert not linreg and "lm.prepare" not in ran and LM_FIRST <= ran
        assert f"pipelines/lm-replace/iter_{ITERATIONS}/dvc.yaml:fit" in ran
    elif expect == "lm-sampling":  # sampling changes: no prepare, no iteration-1 fit
        assert not linreg and "lm.prepare" not in ran and "lm.iter1.seed0.fit" not in ran
        assert {"lm.iter1.seed0.evaluate", "pipelines/lm-replace/iter_1/dvc.yaml:generate",
                "pipelines/lm-accumulate/iter_2/dvc.yaml:fit"} <= ran
    elif expect == "one-lineage":  # only that lineage (and its seed's iteration 1), nothing else
        assert not lm and not _all(ran, "linreg-accumulate")
        assert {"linreg.iter1.seed3.fit", "pipelines/linreg-replace/iter_2/dvc.yaml:fit"} <= ran
        assert "linreg.prepare" not in ran


def test_sigma_ablation_scales_the_first_error_by_four(lab: Path) -> None:
    """Same design, same noise draws: ŵ − w* = σ·(XᵀX)⁻¹XᵀE, so doubling σ gives 4× the error."""
    reset_lab(lab)
    path = lab / "runs/linreg/first/seed_0/eval.json"
    before = EvalReport.model_validate_json(path.read_text()).metrics["test_error"]
    _exp(lab, "+linreg.config.sigma=2.0")
    after = EvalReport.model_validate_json(path.read_text()).metrics["test_error"]
    assert after / before == pytest.approx(4.0, rel=1e-9)
    # the README's comparison commands see the experiment
    assert "linreg.config.sigma" in run("dvc", "params", "diff", cwd=lab).stdout
    assert "test_error" in run("dvc", "metrics", "diff", cwd=lab).stdout
    assert run("dvc", "exp", "show", "--no-pager", cwd=lab).returncode == 0


def test_topology_change_through_dvc_stops_before_any_work(lab: Path) -> None:
    reset_lab(lab)
    result = run("dvc", "exp", "run", "-S", "lineages.linreg-replace.seed=3", cwd=lab, check=False)
    assert result.returncode != 0
    assert _ran(result.stdout) == {"check"}
    assert "collapse pipeline write" in result.stdout + result.stderr
    assert "collapse exp run" in result.stdout + result.stderr
    # README: DVC leaves the edited value behind; `git show HEAD:params.yaml > params.yaml` undoes it
    committed = run("git", "show", "HEAD:params.yaml", cwd=lab).stdout
    assert (lab / "params.yaml").read_text() != committed
    (lab / "params.yaml").write_text(committed)
    assert run("collapse", "pipeline", "check", cwd=lab).returncode == 0


def test_adding_a_lineage_reruns_no_stage_of_the_others(lab: Path) -> None:
    reset_lab(lab)
    ran = _exp(lab, "+lineages.linreg-more={modality: linreg, policy: replace_multiple, seed: 0, iterations: 2}",
               tool="collapse", name="more")
    assert ran - {"check", "report"} == {"pipelines/linreg-more/iter_1/dvc.yaml:generate",
                                         "pipelines/linreg-more/iter_2/dvc.yaml:fit",
                                         "pipelines/linreg-more/iter_2/dvc.yaml:evaluate-generate"}
    # saved as a named experiment (`dvc exp save`) holding the new lineage and its metrics
    shown = json.loads(run("dvc", "exp", "show", "--json", cwd=lab).stdout)
    saved = [e for baseline in shown for e in baseline.get("experiments") or [] if e.get("name") == "more"]
    assert len(saved) == 1
    data = saved[0]["revs"][0]["data"]
    assert "linreg-more" in data["params"]["params.yaml"]["data"]["lineages"]
    assert any("linreg-more/iter_2/eval.json" in path for path in data["metrics"])


def test_every_readme_ablation_is_tested() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = {" ".join(line.split("#")[0].split()) for line in readme.splitlines()
                  if re.match(r"\s*(dvc|collapse) exp run -S", line)}
    tested = {command for command, _ in ABLATIONS}
    assert documented and documented <= tested, documented - tested
