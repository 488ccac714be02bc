"""The real `collapse` command: bad input gives a message naming what is wrong, exit != 0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run


def test_simulate_prints_the_contracted_json() -> None:
    result = run("collapse", "linreg", "simulate", "--regime", "accumulate", "--dim", "3",
                 "--samples", "12", "--sigma", "0.5", "--iterations", "4", "--seeds", "8",
                 "--seed", "3", "--json")
    payload = json.loads(result.stdout)
    assert set(payload) == {"iterations", "mean", "sem", "analytic"}
    assert payload["iterations"] == [1, 2, 3, 4]
    assert len(payload["mean"]) == len(payload["sem"]) == len(payload["analytic"]) == 4
    one_fit = 0.25 * 3 / (12 - 3 - 1)
    assert abs(payload["analytic"][1] - one_fit * 1.25) < 1e-12
    again = run("collapse", "linreg", "simulate", "--regime", "accumulate", "--dim", "3",
                "--samples", "12", "--sigma", "0.5", "--iterations", "4", "--seeds", "8",
                "--seed", "3", "--json")
    assert again.stdout == result.stdout


def test_simulate_without_closed_form_gives_null() -> None:
    result = run("collapse", "linreg", "simulate", "--regime", "replace", "--dim", "2",
                 "--samples", "10", "--sigma", "1", "--iterations", "2", "--seeds", "3",
                 "--ridge", "0.1", "--cov-decay", "0.5", "--json")
    assert json.loads(result.stdout)["analytic"] is None


def _fails(*args: str, cwd: Path | None = None) -> str:
    result = run(*args, check=False, **({"cwd": cwd} if cwd else {}))
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr


def test_bad_regime_names_argument_and_allowed_values() -> None:
    error = _fails("collapse", "linreg", "simulate", "--regime", "keep", "--dim", "2",
                   "--samples", "10", "--sigma", "1", "--iterations", "2", "--seeds", "3")
    assert "--regime" in error and "replace" in error and "accumulate_subsample" in error


def test_too_few_samples_is_explained() -> None:
    error = _fails("collapse", "linreg", "simulate", "--regime", "replace", "--dim", "10",
                   "--samples", "11", "--sigma", "1", "--iterations", "2", "--seeds", "3")
    assert "dim + 2 = 12" in error


def test_bad_numbers_name_the_argument() -> None:
    error = _fails("collapse", "linreg", "simulate", "--regime", "replace", "--dim", "2",
                   "--samples", "10", "--sigma", "1", "--iterations", "0", "--seeds", "3")
    assert "--iterations" in error and ">= 1" in error
    error = _fails("collapse", "linreg", "simulate", "--regime", "replace", "--dim", "2",
                   "--samples", "10", "--sigma", "-1", "--iterations", "2", "--seeds", "3")
    assert "sigma" in error
    error = _fails("collapse", "linreg", "simulate", "--regime", "replace", "--dim", "2",
                   "--samples", "10", "--sigma", "1", "--iterations", "2", "--seeds", "1")
    assert "--seeds" in error


def test_unknown_lineage_and_missing_artefacts(tmp_path: Path) -> None:
    error = _fails("collapse", "fit", "--lineage", str(tmp_path / "nope.json"), "--iteration", "2",
                   "--real", "r", "--manifest-out", "m.json", "--out", str(tmp_path / "model"))
    assert "real.json does not exist" in error
    error = _fails("collapse", "fit", "--modality", "linreg", "--seed", "0", "--iteration", "1",
                   "--real", str(tmp_path / "nowhere"), "--manifest-out", str(tmp_path / "m.json"),
                   "--out", str(tmp_path / "model"))
    assert "real.json does not exist" in error
    assert not (tmp_path / "m.json").exists()


def test_bad_params_file(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("linreg: {scale: enormous}\nlineages: {}\n")
    error = _fails("collapse", "prepare", "--modality", "linreg", "--out", "real", cwd=tmp_path)
    assert "unknown scale 'enormous'" in error and "smoke, default, paper" in error
    error = _fails("collapse", "prepare", "--modality", "audio", "--out", "r")
    assert "--modality" in error and "linreg" in error and "lm" in error


@pytest.mark.parametrize(("value", "needle"), [
    ("inf", "finite"), ("nan", "finite"), ("1e300", "<= 1000000"), ("abc", "expected a number"),
])
def test_simulate_rejects_non_finite_and_huge_numbers(value: str, needle: str) -> None:
    error = _fails("collapse", "linreg", "simulate", "--regime", "replace", "--dim", "2",
                   "--samples", "10", "--sigma", value, "--iterations", "2", "--seeds", "3", "--json")
    assert "--sigma" in error and needle in error


def test_lineages_lists_status() -> None:
    rows = json.loads(run("collapse", "lineages", "--json", "--runs", "/nonexistent").stdout)
    assert {row["policy"] for row in rows} >= {"replace", "accumulate"}
    assert all(row["status"] == "not run" for row in rows)


def test_lm_describe_counts_parameters_of_the_instantiated_model() -> None:
    payload = json.loads(run("collapse", "lm", "describe", "--preset", "gpt2-9m", "--json").stdout)
    assert payload["preset"] == "gpt2-9m" and payload["parameters"] == 8_890_880
    assert payload["n_layer"] == 8 and payload["n_embd"] == 256
    error = _fails("collapse", "lm", "describe", "--preset", "gpt5", "--json")
    assert "--preset" in error and "llama2-126m" in error


def test_module_entry_point() -> None:
    import sys

    result = run(sys.executable, "-m", "collapse", "lineages", "--json", "--runs", "/nonexistent")
    assert json.loads(result.stdout)


BAD_INPUTS = [
    (["check", "--params", "nope.yaml"], "nope.yaml does not exist"),
    (["prepare", "--modality", "linreg", "--params", "nope.yaml", "--out", "x"], "nope.yaml does not exist"),
    (["prepare", "--modality", "linreg"], "--out"),
    (["fit", "--modality", "linreg", "--seed", "-1", "--iteration", "1", "--real", "r", "--manifest-out", "m",
      "--out", "o"], "--seed"),
    (["fit", "--modality", "linreg", "--seed", "0", "--iteration", "zero", "--real", "r", "--manifest-out", "m",
      "--out", "o"], "--iteration"),
    (["fit", "--seed", "0", "--iteration", "1", "--real", "r", "--manifest-out", "m", "--out", "o"], "--lineage"),
    (["evaluate", "--model", "/nonexistent/model", "--real", "r", "--out", "e.json"], "card.json does not exist"),
    (["generate", "--lineage", "/nonexistent.json", "--iteration", "1", "--model", "m", "--real", "r",
      "--out", "s"], "nonexistent.json does not exist"),
    (["generate", "--lineage", "l.json", "--iteration", "-2", "--model", "m", "--real", "r", "--out", "s"],
     "--iteration"),
    (["figures", "--modality", "nothing", "--out", "f"], "--modality"),
    (["report", "--params", "nope.yaml"], "nope.yaml does not exist"),
    (["lineages", "--params", "nope.yaml"], "nope.yaml does not exist"),
    (["pipeline", "rewrite"], "action"),
    (["exp", "run", "-S", "lineages.nothing.seed=3"], "lineages.nothing does not exist"),
    (["exp", "run", "-S", "linreg.scale"], "expected key=value"),
    (["linreg", "simulate", "--regime", "replace", "--dim", "0", "--samples", "10", "--sigma", "1",
      "--iterations", "2", "--seeds", "3"], "--dim"),
    (["linreg", "simulate", "--regime", "replace", "--dim", "2", "--samples", "10", "--sigma", "1",
      "--iterations", "2", "--seeds", "3", "--ridge", "-inf"], "--ridge"),
    (["linreg", "simulate", "--regime", "replace", "--dim", "2", "--samples", "10", "--sigma", "1",
      "--iterations", "2", "--seeds", "3", "--cov-decay", "1.5"], "--cov-decay"),
    (["lm", "describe", "--preset", "gpt2-9m", "--vocab-size", "many"], "--vocab-size"),
]


@pytest.mark.parametrize(("args", "needle"), BAD_INPUTS, ids=[" ".join(a[:2]) for a, _ in BAD_INPUTS])
def test_every_command_rejects_bad_input_by_name(args: list[str], needle: str) -> None:
    error = _fails("collapse", *args)
    assert needle in error, error
    assert "internal error" not in error
