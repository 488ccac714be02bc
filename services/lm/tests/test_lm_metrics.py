"""Metrics: cross entropy against a manual computation, sample statistics on hand-worked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from collapse_lm.metrics import (
    cross_entropy,
    distinct_n,
    eos_fraction,
    mean_length,
    real_unigram_counts,
    sample_metrics,
    unigram_kl,
)

SAMPLES = [[5, 6, 7, 5], [5, 6]]  # EOS = 6 in these examples


# ---------------------------------------------------------------------------------------------
# Sample statistics
# ---------------------------------------------------------------------------------------------


def test_distinct_n_by_hand() -> None:
    # unigrams 5 6 7 5 | 5 6: 3 unique of 6
    assert distinct_n(SAMPLES, 1) == pytest.approx(3 / 6)
    # bigrams (5,6) (6,7) (7,5) | (5,6): 3 unique of 4; none across the sample boundary
    assert distinct_n(SAMPLES, 2) == pytest.approx(3 / 4)
    # trigrams (5,6,7) (6,7,5): both unique; the second sample has none
    assert distinct_n(SAMPLES, 3) == pytest.approx(1.0)
    assert distinct_n([[1, 2]], 3) == 0.0
    with pytest.raises(ValueError, match="n must be"):
        distinct_n(SAMPLES, 0)


def test_length_and_eos_fraction_by_hand() -> None:
    assert mean_length(SAMPLES) == pytest.approx(3.0)
    assert eos_fraction(SAMPLES, eos_id=6) == pytest.approx(0.5)
    assert eos_fraction([*SAMPLES, []], eos_id=6) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="at least one sample"):
        mean_length([])


def test_real_unigram_counts() -> None:
    windows = [np.array([0, 1, 1, 3], dtype=np.int64), np.array([3, 3, 2, 1], dtype=np.int64)]
    assert real_unigram_counts(windows, 5).tolist() == [1, 3, 1, 3, 0]
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        real_unigram_counts(windows, 3)


def test_unigram_kl_by_hand() -> None:
    real = np.array([2, 1, 0])
    # same counts as the real data: zero
    assert unigram_kl([[0, 0, 1]], real, 3) == pytest.approx(0.0, abs=1e-12)
    # generated counts [0, 0, 2]; smoothed P_real = [3, 2, 1] / 6, P_gen = [1, 1, 3] / 5
    expected = (3 / 6) * math.log((3 / 6) / (1 / 5)) + (2 / 6) * math.log((2 / 6) / (1 / 5)) \
        + (1 / 6) * math.log((1 / 6) / (3 / 5))
    assert unigram_kl([[2, 2]], real, 3) == pytest.approx(expected)
    # the direction: expectation under P_real (the reverse KL differs)
    reverse = (1 / 5) * math.log((1 / 5) / (3 / 6)) + (1 / 5) * math.log((1 / 5) / (2 / 6)) \
        + (3 / 5) * math.log((3 / 5) / (1 / 6))
    assert not math.isclose(expected, reverse, rel_tol=1e-3)
    # alpha 0.5: P_real = [2.5, 1.5, 0.5] / 4.5, P_gen = [0.5, 0.5, 2.5] / 3.5
    p, q = np.array([2.5, 1.5, 0.5]) / 4.5, np.array([0.5, 0.5, 2.5]) / 3.5
    assert unigram_kl([[2, 2]], real, 3, alpha=0.5) == pytest.approx(float(np.sum(p * np.log(p / q))))
    # ignoring id 2 leaves P_real = [3, 2] / 5 and P_gen = [1, 1] / 2
    p, q = np.array([3, 2]) / 5, np.array([1, 1]) / 2
    assert unigram_kl([[2, 2]], real, 3, ignore_ids=[2]) == pytest.approx(float(np.sum(p * np.log(p / q))))
    with pytest.raises(ValueError, match="shape"):
        unigram_kl([[0]], np.array([1, 2]), 3)
    with pytest.raises(ValueError, match="alpha"):
        unigram_kl([[0]], real, 3, alpha=0.0)


def test_sample_metrics_keys_and_values() -> None:
    real = real_unigram_counts([np.array([5, 6, 7, 5, 5, 6])], 8)
    metrics = sample_metrics(SAMPLES, real, 8, eos_id=6)
    assert list(metrics) == ["distinct_1", "distinct_2", "distinct_3", "mean_length", "eos_fraction", "unigram_kl"]
    assert metrics["distinct_2"] == pytest.approx(0.75)
    assert metrics["eos_fraction"] == pytest.approx(0.5)
    assert metrics["unigram_kl"] == pytest.approx(0.0, abs=1e-12)  # samples have the real unigram counts
    assert all(isinstance(value, float) for value in metrics.values())


# ---------------------------------------------------------------------------------------------
# Cross entropy
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=2, n_positions=32, initializer_range=0.2)
    return GPT2LMHeadModel(config)


def _windows(count: int, block: int, vocab: int = 50) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, vocab, size=block + 1, dtype=np.int64) for _ in range(count)]


def _manual_cross_entropy(model: GPT2LMHeadModel, windows: list[np.ndarray]) -> float:
    """Sum of -log softmax(logits)[next token], token by token, window by window."""
    nats, tokens = 0.0, 0
    with torch.no_grad():
        for window in windows:
            logits = model(torch.tensor(window[None, :-1])).logits[0].double()  # (block, V)
            log_probs = logits - torch.logsumexp(logits, dim=-1, keepdim=True)  # (block, V)
            for position, target in enumerate(window[1:]):
                nats -= float(log_probs[position, int(target)])
                tokens += 1
    return nats / tokens


def test_cross_entropy_matches_manual(model: GPT2LMHeadModel) -> None:
    model.train(False)
    windows = _windows(7, block=12)
    expected = _manual_cross_entropy(model, windows)
    result = cross_entropy(model, windows, batch_size=3, progress=False)
    assert set(result) == {"cross_entropy", "perplexity"}
    assert result["cross_entropy"] == pytest.approx(expected, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(expected), rel=1e-5)
    # max_windows: the first 6 windows only
    limited = cross_entropy(model, windows, batch_size=3, max_windows=6, progress=False)
    assert limited["cross_entropy"] == pytest.approx(_manual_cross_entropy(model, windows[:6]), rel=1e-5)


def test_cross_entropy_restores_training_mode(model: GPT2LMHeadModel) -> None:
    model.train()
    cross_entropy(model, _windows(2, block=8), batch_size=2, progress=False)
    assert model.training
    model.train(False)


def test_cross_entropy_of_uniform_model_is_log_vocab() -> None:
    class Uniform(torch.nn.Module):
        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            return torch.zeros(*inputs.shape, 11)  # (B, L, V)

    result = cross_entropy(Uniform(), _windows(4, block=5, vocab=11), batch_size=3, progress=False)
    assert result["cross_entropy"] == pytest.approx(math.log(11))
    assert result["perplexity"] == pytest.approx(11.0)


def test_cross_entropy_rejects_bad_windows(model: GPT2LMHeadModel) -> None:
    with pytest.raises(ValueError, match="at least one window"):
        cross_entropy(model, [], batch_size=2, progress=False)
    with pytest.raises(ValueError, match="one length"):
        cross_entropy(model, [np.arange(5), np.arange(6)], batch_size=2, progress=False)
