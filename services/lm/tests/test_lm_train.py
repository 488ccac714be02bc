"""The fit loop: it learns, it is reproducible, its schedule and log are right, DDP matches one process."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from collapse.contracts import REGIMES, DatasetManifest, ManifestEntry, ShardRef
from collapse.store import save_npy, write_json, write_shard
from collapse_lm.ddp import run_job
from collapse_lm.model import build_model
from collapse_lm.train import TrainSettings, evaluate, learning_rate_at, train

IDS = {"bos_id": 1, "eos_id": 2, "pad_id": 0}
VOCAB = 50


def pattern_windows(count: int, block: int, *, period: int = 7, seed: int = 0) -> list[np.ndarray]:
    """``count`` windows of a repeating token cycle (3, 4, …) at random phases: perfectly learnable."""
    cycle = np.arange(3, 3 + period, dtype=np.int64)
    stream = np.tile(cycle, block // period + 3)
    phases = np.random.default_rng(seed).integers(0, period, size=count)
    return [stream[phase : phase + block + 1].copy() for phase in phases]  # each (block + 1,)


def settings(**changes: object) -> TrainSettings:
    base = {"batch_size": 8, "block_size": 16, "learning_rate": 3e-3, "warmup_steps": 3, "seed": 5}
    return TrainSettings.model_validate(base | changes)


def read_log(path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def fit(tmp_path: Path, name: str, preset: str = "gpt2-micro", **changes: object) -> tuple[dict, list[dict]]:
    model = build_model(preset, VOCAB, **IDS, seed=11)
    log = tmp_path / f"{name}.jsonl"
    summary = train(model, pattern_windows(96, 16), settings(**changes), eval_windows=pattern_windows(16, 16, seed=1),
                    log_path=log, progress=False)
    return summary, read_log(log)


@pytest.mark.parametrize("preset", ["gpt2-micro", "llama2-micro"])
def test_training_on_a_pattern_reduces_the_loss(preset: str, tmp_path: Path) -> None:
    summary, log = fit(tmp_path, "fit", preset, epochs=3)
    assert summary["steps"] == 36 and summary["steps_per_epoch"] == 12
    assert log[0]["loss"] > 3.0  # about ln(50) at the start
    assert summary["final_train_loss"] < 0.5 * log[0]["loss"]
    assert summary["final_eval_loss"] < 0.5 * log[0]["loss"]
    assert summary["tokens"] == 36 * 8 * 16 and summary["tokens_per_second"] > 0


def test_same_seed_same_losses_other_seed_other_order(tmp_path: Path) -> None:
    _, first = fit(tmp_path, "a", epochs=2)
    _, second = fit(tmp_path, "b", epochs=2)
    _, other = fit(tmp_path, "c", epochs=2, seed=6)
    assert [r["loss"] for r in first] == [r["loss"] for r in second]
    assert [r.get("eval_loss") for r in first] == [r.get("eval_loss") for r in second]
    assert [r["loss"] for r in first] != [r["loss"] for r in other]


def test_log_lines_are_the_loss_curve(tmp_path: Path) -> None:
    summary, log = fit(tmp_path, "curve", epochs=2, eval_every=5)
    assert [r["step"] for r in log] == list(range(1, 25))
    assert [r["epoch"] for r in log] == [1] * 12 + [2] * 12
    assert [r["tokens"] for r in log] == [step * 8 * 16 for step in range(1, 25)]
    assert {"step", "epoch", "lr", "loss", "tokens", "grad_norm"} <= set(log[0])
    assert [r["step"] for r in log if "eval_loss" in r] == [5, 10, 15, 20, 24]
    assert log[-1]["eval_loss"] == summary["final_eval_loss"]
    assert summary["final_train_loss"] == pytest.approx(np.mean([r["loss"] for r in log[-20:]]))


def test_learning_rate_warms_up_then_decays_to_the_floor(tmp_path: Path) -> None:
    config = settings(warmup_steps=4, learning_rate=1e-2, min_lr_ratio=0.1)
    rates = [learning_rate_at(step, 20, config) for step in range(20)]
    assert rates[:4] == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2])  # linear warm-up to the peak
    assert all(a > b for a, b in itertools.pairwise(rates[3:]))  # then strictly down
    assert rates[-1] == pytest.approx(1e-3)  # the cosine floor at the last step
    assert rates[11] == pytest.approx(1e-3 + 0.5 * 9e-3, rel=0.05)  # halfway: half-way between peak and floor
    _, log = fit(tmp_path, "lr", epochs=2, warmup_steps=4, learning_rate=1e-2)
    assert [r["lr"] for r in log] == pytest.approx([learning_rate_at(s, 24, settings(warmup_steps=4,
                                                                                     learning_rate=1e-2))
                                                     for s in range(24)])


def test_gradient_accumulation_matches_the_full_batch(tmp_path: Path) -> None:
    _, full = fit(tmp_path, "full")
    _, accumulated = fit(tmp_path, "micro", micro_batch_size=2)
    assert np.allclose([r["loss"] for r in full], [r["loss"] for r in accumulated], atol=1e-5)


def test_fractional_epochs_and_checks(tmp_path: Path) -> None:
    summary, _ = fit(tmp_path, "half", epochs=0.5)
    assert summary["steps"] == 6
    model = build_model("gpt2-micro", VOCAB, **IDS, seed=0)
    with pytest.raises(ValueError, match="cannot fill one batch"):
        train(model, pattern_windows(4, 16), settings(), progress=False)
    with pytest.raises(ValueError, match="block_size 8"):
        train(model, pattern_windows(16, 16), settings(block_size=8), progress=False)
    with pytest.raises(ValueError, match="outside the model vocabulary"):
        train(model, [w + 100 for w in pattern_windows(16, 16)], settings(), progress=False)
    with pytest.raises(ValueError, match="extra"):
        TrainSettings.model_validate({"batch_sise": 3})
    assert evaluate(model, pattern_windows(5, 16), settings()) > 0


def test_training_leaves_the_global_rng_alone_and_records_its_settings(tmp_path: Path) -> None:
    model = build_model("gpt2-micro", VOCAB, **IDS, seed=0)
    before = torch.random.get_rng_state()
    train(model, pattern_windows(16, 16), settings(), progress=False)
    assert torch.equal(before, torch.random.get_rng_state())
    assert model.config.collapse_train["batch_size"] == 8


# ---------------------------------------------------------------------------------------------
# Data parallel: a real 2-process gloo run against one process
# ---------------------------------------------------------------------------------------------


def token_shard(path: Path, documents: int, seed: int) -> ShardRef:
    """A token shard of ``documents`` pattern documents [BOS, cycle…, EOS] of random lengths."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(documents):
        start, length = rng.integers(0, 7), rng.integers(10, 60)
        docs.append(np.concatenate([[IDS["bos_id"]], 3 + (start + np.arange(length)) % 7, [IDS["eos_id"]]]))
    tokens = np.concatenate(docs).astype(np.uint16)  # (tokens,)
    return write_shard(path, lambda temporary: save_npy(temporary, tokens), items=documents, origin="real",
                       produced_by=0, format="npy-uint16-docs")


def test_two_process_ddp_matches_one_process(tmp_path: Path) -> None:
    train_ref = token_shard(tmp_path / "data" / "train.npy", 90, seed=0)
    valid_ref = token_shard(tmp_path / "data" / "valid.npy", 20, seed=1)
    manifest = DatasetManifest(modality="lm", lineage="ddp", iteration=1, policy=REGIMES["replace"], seed=0,
                               entries=[ManifestEntry(shard=train_ref)])
    write_json(tmp_path / "manifest.json", manifest)
    job = {
        **IDS, "preset": "gpt2-micro", "vocab_size": VOCAB, "model_seed": 3,
        "settings": settings(batch_size=8, block_size=32, epochs=3, eval_every=4, eval_batches=2,
                             learning_rate=1e-2).model_dump(),
        "train_manifest": str(tmp_path / "manifest.json"),
        "valid_entries": [ManifestEntry(shard=valid_ref).model_dump()],
    }
    runs = {}
    for name in ("single", "ddp"):
        runs[name] = {"out_dir": str(tmp_path / name / "hf"), "log_path": str(tmp_path / name / "log.jsonl"),
                      "summary_path": str(tmp_path / name / "summary.json")}
    single = run_job(job | runs["single"], progress=False)
    (tmp_path / "job.json").write_text(json.dumps(job | runs["ddp"]))
    # `python -m torch.distributed.run` is torchrun, without relying on its console script
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "collapse_lm.ddp",
               "--job", str(tmp_path / "job.json"), "--no-progress"]
    result = subprocess.run(command, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    ddp = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert ddp["world_size"] == 2 and single["world_size"] == 1
    assert ddp["steps"] == single["steps"] > 10
    one, two = read_log(tmp_path / "single" / "log.jsonl"), read_log(tmp_path / "ddp" / "log.jsonl")
    differences = [abs(a["loss"] - b["loss"]) for a, b in zip(one, two, strict=True)]
    print(f"DDP vs single process: {len(one)} steps, max |loss difference| {max(differences):.2e}")
    assert max(differences) < 1e-4, differences
    assert [r.get("eval_loss") is None for r in one] == [r.get("eval_loss") is None for r in two]
    assert ddp["final_eval_loss"] == pytest.approx(single["final_eval_loss"], abs=1e-4)
    assert one[-1]["loss"] < 0.5 * one[0]["loss"]
    assert (tmp_path / "ddp" / "hf" / "model.safetensors").is_file()
