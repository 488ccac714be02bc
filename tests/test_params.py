"""params.yaml validation: every bad value is caught before any work, with a message naming it."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from collapse.modality import ConfigError
from collapse.overrides import apply_overrides
from collapse.params import parse_params, validate_all
from conftest import ROOT

BASE: dict[str, Any] = yaml.safe_load((ROOT / "params.yaml").read_text())


def _with(*settings: str) -> dict[str, Any]:
    return apply_overrides(copy.deepcopy(BASE), list(settings))


@pytest.mark.parametrize(("settings", "needles"), [
    (["+lmm={scale: smoke}"], ["unknown top-level section 'lmm'", "did you mean 'lm'"]),
    (["+lineage={}"], ["unknown top-level section 'lineage'", "did you mean 'lineages'"]),
    (["lineages.linreg-replace.seed='3'"], ["lineages.linreg-replace.seed", "integer"]),
    (["lineages.linreg-replace.seed=true"], ["lineages.linreg-replace.seed", "integer"]),
    (["lineages.linreg-replace.iterations=2.5"], ["lineages.linreg-replace.iterations"]),
    (["+lineages.linreg-replace.seeds=3"], ["lineages.linreg-replace.seeds", "did you mean 'seed'"]),
    (["+linreg.config.sigma=.inf"], ["linreg.config.sigma", "finite"]),
    (["+linreg.config.sigma=.nan"], ["linreg.config.sigma", "finite"]),
    (["+lm.config.model=gpt2-nonsense"], ["lm.config.model", "gpt2-nonsense", "gpt2-9m"]),
    (["linreg.scale=enormous"], ["unknown scale 'enormous'", "smoke, default, paper"]),
    (["+linreg.config.samples=5"], ["samples", "dim + 2"]),
    (["lineages.linreg-replace.policy=keep"], ["unknown regime 'keep'"]),
    (["lineages.lm-replace.modality=lmm"], ["lineages.lm-replace.modality", "did you mean 'lm'"]),
    (["linreg.data_seed=-1"], ["linreg.data_seed"]),
    (["+lineages.linreg-accumulate-fresh.policy.fresh_real=50"], ["linreg-accumulate-fresh", "reserve"]),
])
def test_bad_params_are_named(settings: list[str], needles: list[str]) -> None:
    raw = _with(*settings) if "fresh_real" not in settings[0] else _fresh_real_too_big()
    with pytest.raises(ConfigError) as caught:
        validate_all(parse_params(raw))
    message = str(caught.value)
    for needle in needles:
        assert needle in message, message
    assert message.count("\n") == 0  # one line


def _fresh_real_too_big() -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    raw["lineages"]["linreg-accumulate-fresh"]["policy"] = {"base": "accumulate_fresh", "fresh_real": 50.0}
    return raw


def test_the_committed_params_are_valid_and_serving_is_not_a_modality() -> None:
    raw = _with("+serving={port: 3001}")
    params = parse_params(raw)
    assert "serving" not in params.modalities and params.serving == {"port": 3001}
    assert set(validate_all(params)) == set(params.modalities)


@pytest.mark.parametrize(("settings", "message"), [
    (["missing.key=1"], "missing does not exist"),
    (["+linreg.scale=smoke"], "already exists"),
    (["linreg.scale"], "expected key=value"),
    (["~linreg.nothing"], "does not exist"),
])
def test_override_syntax_errors(settings: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _with(*settings)


def test_overrides_follow_dvc_semantics() -> None:
    raw = _with("+linreg.config.sigma=2.0", "++linreg.scale=smoke", "~lineages.lm-replace",
                "lineages.linreg-replace.seed=3")
    assert raw["linreg"]["config"] == {"sigma": 2.0} and raw["linreg"]["scale"] == "smoke"
    assert "lm-replace" not in raw["lineages"] and raw["lineages"]["linreg-replace"]["seed"] == 3
