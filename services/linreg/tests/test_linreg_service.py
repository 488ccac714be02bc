"""The linreg modality through the interface: prepare → fit → load → evaluate / sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from collapse.contracts import LineageSpec
from collapse.modality import load_modality
from collapse.policy import first_manifest, items_to_generate
from collapse.store import ArtefactError, read_array, read_model, write_model_card
from collapse_linreg.data import draw_problem
from collapse_linreg.service import LinregGenerator, LinregModality


@pytest.fixture
def linreg() -> LinregModality:
    service = load_modality("linreg")
    assert isinstance(service, LinregModality)
    return service


def fitted_model(linreg: LinregModality, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Prepare smoke-scale real data and fit model 1, as the fit stage does."""
    config = linreg.config("smoke")
    real = linreg.prepare(config, tmp_path / "real", data_seed=3)
    manifest = first_manifest("linreg", 3, real.train, real.initial_items)
    summary = linreg.fit(config, manifest, real, tmp_path / "model", seed=3)
    write_model_card(tmp_path / "model", summary, modality="linreg", lineage=None, iteration=1,
                     manifest_sha256="0" * 64, train_items=manifest.items, seed=3)
    return config, real, tmp_path / "model"


def test_one_iteration_through_the_interface(linreg: LinregModality, tmp_path: Path) -> None:
    config, real, model = fitted_model(linreg, tmp_path)
    assert real.initial_items == config.samples and real.train[0].items == config.samples
    assert real.train[1].items == config.reserve_items and real.root == (tmp_path / "real").as_posix()
    generator = linreg.load(config, model, read_model(model), real)
    metrics = linreg.evaluate(config, generator, real)
    # noiseless test points: the empirical MSE estimates the Σ-norm error
    assert metrics["test_error"] > 0
    assert abs(metrics["test_mse"] - metrics["test_error"]) < 0.5 * metrics["test_error"]
    lineage = LineageSpec(name="l", modality="linreg", policy="replace", seed=3, iterations=2)
    items = items_to_generate(lineage.policy, 1, real.initial_items)
    shard = generator.write([generator.sample(0, items, 3)], tmp_path / "a", 1)
    again = generator.write([generator.sample(0, items, 3)], tmp_path / "b", 1)
    other = generator.write([generator.sample(0, items, 4)], tmp_path / "c", 1)
    assert shard.sha256 == again.sha256 != other.sha256
    rows, real_rows = read_array(shard), read_array(real.train[0])
    assert np.array_equal(rows[:, :-1], real_rows[:, :-1])  # the fixed design is reused
    assert shard.origin == "synthetic" and shard.produced_by == 1


@pytest.mark.parametrize("fresh_design", [False, True])
def test_items_do_not_depend_on_how_they_are_requested(linreg: LinregModality, tmp_path: Path,
                                                       fresh_design: bool) -> None:
    config, real, model = fitted_model(linreg, tmp_path)
    config = config.model_copy(update={"fresh_design": fresh_design})
    generator = LinregGenerator(config, model, read_model(model), real)
    whole = generator.sample(0, 50, 7)
    assert np.array_equal(np.concatenate([generator.sample(0, 13, 7), generator.sample(13, 50, 7)]), whole)
    assert np.array_equal(generator.sample(20, 30, 7), whole[20:30])


def test_prepared_pool_is_the_problem_draw(linreg: LinregModality, tmp_path: Path) -> None:
    """Base shard = the first T rows, reserve = the next rows of the same prefix-stable draw."""
    config = linreg.config("smoke", {"reserve_items": 7})
    real = linreg.prepare(config, tmp_path / "a", data_seed=1)
    problem = draw_problem(1, config.dim, config.samples + 40, config.sigma, config.cov_decay, 5)
    rows = np.concatenate([read_array(real.train[0]), read_array(real.train[1])])
    assert np.array_equal(rows[:, :-1], problem.x[: config.samples + 7])
    assert np.array_equal(rows[:, -1], problem.y[: config.samples + 7])


def test_tampered_weights_are_refused(linreg: LinregModality, tmp_path: Path) -> None:
    _, _, model = fitted_model(linreg, tmp_path)
    (model / "weights.npy").write_bytes(b"garbage")
    with pytest.raises(ArtefactError, match=r"weights.npy is corrupted.*dvc checkout --force"):
        read_model(model)
