from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from collapse.contracts import (
    REGIMES,
    DatasetManifest,
    LineageSpec,
    ManifestEntry,
    PolicySpec,
    ShardRef,
    resolve_policy,
)
from collapse.modality import ConfigError, load_modality
from collapse.params import load_params

HASH = "ab" * 32


def test_named_regimes_are_presets_of_one_spec() -> None:
    assert set(REGIMES) == {
        "replace", "accumulate", "replace_multiple", "accumulate_subsample", "accumulate_fresh"
    }
    assert all(isinstance(spec, PolicySpec) for spec in REGIMES.values())
    assert resolve_policy("accumulate") is REGIMES["accumulate"]


def test_custom_policy_from_params_without_code() -> None:
    custom = resolve_policy({"name": "half", "keep_real": True, "synthetic": "latest",
                             "subsample": 0.5})
    assert (custom.keep_real, custom.synthetic, custom.subsample) == (True, "latest", 0.5)
    derived = resolve_policy({"base": "accumulate", "fresh_real": 0.25})
    assert derived.name == "accumulate+custom" and derived.fresh_real == 0.25
    assert derived.synthetic == "all"


def test_unknown_regime_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="allowed: replace, accumulate, replace_multiple"):
        resolve_policy("acumulate")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"keep_real": False, "synthetic": "none"}, "selects no data"),
        ({"keep_real": True, "synthetic": "some"}, "synthetic"),
        ({"keep_real": True, "synthetic": "all", "subsample": 0}, "subsample"),
        ({"keep_real": True, "synthetic": "all", "colour": 1}, "colour"),
    ],
)
def test_invalid_policy_names_the_field(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PolicySpec.model_validate(fields)


def test_lineage_name_must_be_path_safe() -> None:
    with pytest.raises(ValidationError, match="lineage name"):
        LineageSpec(name="../x", modality="linreg", policy="replace", iterations=2)


def test_shard_ref_origin_and_producer_agree() -> None:
    ShardRef(path="a", sha256=HASH, items=3, origin="real", produced_by=0, format="f")
    with pytest.raises(ValidationError, match="produced_by"):
        ShardRef(path="a", sha256=HASH, items=3, origin="synthetic", produced_by=0, format="f")
    with pytest.raises(ValidationError, match="sha256"):
        ShardRef(path="a", sha256="xyz", items=3, origin="real", produced_by=0, format="f")


def test_manifest_entries_and_provenance() -> None:
    real = ShardRef(path="r", sha256=HASH, items=10, origin="real", produced_by=0, format="f")
    synth = ShardRef(path="s", sha256=HASH, items=10, origin="synthetic", produced_by=2, format="f")
    manifest = DatasetManifest(
        modality="linreg", lineage="x", iteration=3, policy=REGIMES["accumulate"], seed=0,
        entries=[ManifestEntry(shard=real), ManifestEntry(shard=synth, indices=[1, 4])],
    )
    assert manifest.items == 12 and manifest.provenance() == {0: 10, 2: 2}
    assert DatasetManifest.model_validate_json(manifest.model_dump_json()) == manifest
    with pytest.raises(ValidationError, match="out of range"):
        ManifestEntry(shard=real, indices=[3, 10])
    with pytest.raises(ValidationError, match="increasing"):
        ManifestEntry(shard=real, indices=[3, 3])


def test_params_errors_name_the_key(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("linreg: {scale: default}\nlineages:\n  a: {modality: linreg, policy: x, iterations: 2}\n")
    with pytest.raises(ConfigError, match=r"lineages\.a\.policy.*unknown regime 'x'"):
        load_params(params)
    params.write_text("linreg: {scale: default}\nlineages:\n  a: {modality: lm, policy: replace, iterations: 2}\n")
    with pytest.raises(ConfigError, match="lineages.a.modality is 'lm'"):
        load_params(params)
    with pytest.raises(ConfigError, match="does not exist"):
        load_params(tmp_path / "missing.yaml")


def test_scale_presets_and_overrides() -> None:
    linreg = load_modality("linreg")
    assert set(linreg.presets) == {"smoke", "default", "paper"}
    assert linreg.config("default", {"samples": 200}).samples == 200
    with pytest.raises(ConfigError, match="unknown scale 'huge'.*smoke, default, paper"):
        linreg.config("huge")
    with pytest.raises(ConfigError, match="samples"):
        linreg.config("default", {"samples": 5})
    with pytest.raises(ConfigError, match="colour"):
        linreg.config("default", {"colour": 1})
    with pytest.raises(ConfigError, match="not installed.*installed: linreg"):
        load_modality("audio")
