"""The linreg modality through the interface: prepare → fit → evaluate → generate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from collapse.contracts import LineageSpec
from collapse.modality import load_modality
from collapse.policy import build_manifest, items_to_generate
from collapse.store import ArtefactError, read_array, write_model_card
from collapse_linreg.service import LinregModality


@pytest.fixture
def linreg() -> LinregModality:
    service = load_modality("linreg")
    assert isinstance(service, LinregModality)
    return service


def fitted_model(linreg: LinregModality, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Prepare smoke-scale real data and fit model 1 of a replace lineage, as the CLI does."""
    config = linreg.config("smoke")
    real = linreg.prepare(config, tmp_path / "real", pool_items=config.samples, data_seed=3)
    lineage = LineageSpec(name="l", modality="linreg", policy="replace", seed=3, iterations=2)
    manifest = build_manifest(lineage, 1, real.train, [], real.initial_items)
    summary = linreg.fit(config, manifest, real, tmp_path / "model", seed=3)
    write_model_card(tmp_path / "model", summary, modality="linreg", lineage="l", iteration=1,
                     manifest_sha256="0" * 64, train_items=manifest.items, seed=3)
    return config, real, tmp_path / "model", lineage


def test_one_iteration_through_the_interface(linreg: LinregModality, tmp_path: Path) -> None:
    config, real, model, lineage = fitted_model(linreg, tmp_path)
    assert real.initial_items == config.samples and real.train[0].items == config.samples
    metrics = linreg.evaluate(config, model, real)
    # noiseless test points: the empirical MSE estimates the Σ-norm error
    assert metrics["test_error"] > 0
    assert abs(metrics["test_mse"] - metrics["test_error"]) < 0.5 * metrics["test_error"]
    items = items_to_generate(lineage.policy, 1, real.initial_items)
    shard = linreg.generate(config, model, real, items, tmp_path / "a", 1, seed=3)
    again = linreg.generate(config, model, real, items, tmp_path / "b", 1, seed=3)
    other = linreg.generate(config, model, real, items, tmp_path / "c", 1, seed=4)
    assert shard.sha256 == again.sha256 != other.sha256
    rows, real_rows = read_array(shard), read_array(real.train[0])
    assert np.array_equal(rows[:, :-1], real_rows[:, :-1])  # the fixed design is reused
    assert shard.origin == "synthetic" and shard.produced_by == 1


def test_prepare_pool_extends_the_initial_draw(linreg: LinregModality, tmp_path: Path) -> None:
    config = linreg.config("smoke")
    small = linreg.prepare(config, tmp_path / "a", config.samples, data_seed=1)
    large = linreg.prepare(config, tmp_path / "b", config.samples + 7, data_seed=1)
    assert np.array_equal(read_array(small.train[0]), read_array(large.train[0])[: config.samples])


def test_tampered_weights_are_refused(linreg: LinregModality, tmp_path: Path) -> None:
    config, real, model, _ = fitted_model(linreg, tmp_path)
    (model / "weights.npy").write_bytes(b"garbage")
    with pytest.raises(ArtefactError, match="weights.npy is corrupted"):
        linreg.evaluate(config, model, real)
