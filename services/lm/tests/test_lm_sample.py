"""Samplers: seeded, batch-independent, distributed as softmax(logits / T), stopping at EOS."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from collapse.seeds import derive_seed
from collapse_lm.bench_sampling import TinyLm, build_fixed_logits_lm, build_test_lm
from collapse_lm.sample import (
    GumbelNoiseProcessor,
    HFSampler,
    NaiveSampler,
    SamplingSettings,
    make_sampler,
    sample_seed,
    vllm_installed,
)

VOCAB = 300
SPECIAL = 3  # <|bos|>, <|eos|>, <|pad|> = 0, 1, 2


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread (and are not slowed down by a busy machine's spin-waits)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyLm:
    """A random tiny GPT-2 with peaked, context-dependent logits (large init scale)."""
    return build_test_lm(tmp_path_factory.mktemp("tiny-lm"), vocab_size=VOCAB, initializer_range=0.3)


def _fixed_logits() -> np.ndarray:
    logits = np.random.default_rng(7).normal(0.0, 2.0, VOCAB)  # (V,)
    logits[:SPECIAL] = -30.0  # no BOS / EOS / PAD: every step is an independent draw
    return logits


@pytest.fixture(scope="module")
def fixed(tmp_path_factory: pytest.TempPathFactory) -> TinyLm:
    """A GPT-2 whose next-token logits are _fixed_logits() after every prefix."""
    return build_fixed_logits_lm(tmp_path_factory.mktemp("fixed-lm"), _fixed_logits())


@pytest.fixture(scope="module")
def eos_heavy(tmp_path_factory: pytest.TempPathFactory) -> TinyLm:
    """Fixed logits with P(EOS) = 0.1 at every step."""
    logits = np.zeros(VOCAB)
    logits[[0, 2]] = -30.0
    logits[1] = np.log(0.1 / 0.9 * (VOCAB - 3))  # (V - 3) tokens at logit 0 share 0.9
    return build_fixed_logits_lm(tmp_path_factory.mktemp("eos-lm"), logits)


def _hf(lm: TinyLm, **settings: float) -> HFSampler:
    return HFSampler(lm.model_dir, SamplingSettings(**settings), bos_id=lm.bos_id, eos_id=lm.eos_id,
                     pad_id=lm.pad_id)


def _naive(lm: TinyLm, **settings: float) -> NaiveSampler:
    return NaiveSampler(lm.model_dir, SamplingSettings(**settings), bos_id=lm.bos_id, eos_id=lm.eos_id,
                        pad_id=lm.pad_id)


def _seeds(count: int, iteration: int = 1) -> list[int]:
    return [sample_seed(11, iteration, i) for i in range(count)]


def _softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits / temperature
    p = np.exp(z - z.max())
    return np.asarray(p / p.sum())


def _check_distribution(samples: list[list[int]], expected: np.ndarray) -> None:
    """Pooled token frequencies match ``expected``: max abs error and a chi-square bound."""
    tokens = np.concatenate([np.asarray(s) for s in samples])
    n = tokens.size
    observed = np.bincount(tokens, minlength=expected.size) / n
    # each frequency is within 5 standard errors (plus 3 draws, for cells too rare for the normal approximation)
    tolerance = 5 * np.sqrt(expected * (1 - expected) / n) + 3 / n
    worst = np.max(np.abs(observed - expected) - tolerance)
    assert worst <= 0, f"frequency off by {worst:.4f} beyond 5 s.e. ({n} draws)"
    # chi-square over cells with >= 5 expected draws, the rest pooled; df + 6 sd is p < ~1e-6
    big = expected * n >= 5
    exp_cells = np.append(expected[big] * n, expected[~big].sum() * n)
    obs_cells = np.append(observed[big] * n, observed[~big].sum() * n)
    keep = exp_cells > 0
    chi2 = float(np.sum((obs_cells[keep] - exp_cells[keep]) ** 2 / exp_cells[keep]))
    df = int(keep.sum()) - 1
    assert chi2 < df + 6 * np.sqrt(2 * df), f"chi-square {chi2:.1f} with {df} degrees of freedom"


# ---------------------------------------------------------------------------------------------
# Settings and seeds
# ---------------------------------------------------------------------------------------------


def test_settings_validate() -> None:
    settings = SamplingSettings(max_new_tokens=10, batch_size=4)
    assert (settings.temperature, settings.top_p, settings.top_k) == (1.0, 1.0, 0)
    for bad in ({"temperature": 0.0}, {"top_p": 0.0}, {"top_p": 1.5}, {"top_k": -1}, {"max_new_tokens": 0},
                {"batch_size": 0}, {"temprature": 0.3}):
        with pytest.raises(ValidationError):
            SamplingSettings(**bad)


def test_sample_seed_is_derived_and_distinct() -> None:
    assert sample_seed(3, 2, 5) == derive_seed(3, "lm", "sample", 2, 5)
    seeds = {sample_seed(3, iteration, index) for iteration in range(4) for index in range(50)}
    assert len(seeds) == 200
    assert all(0 <= s < 2**63 for s in seeds)


# ---------------------------------------------------------------------------------------------
# Reproducibility
# ---------------------------------------------------------------------------------------------


def test_hf_same_seeds_same_samples(tiny: TinyLm) -> None:
    seeds = _seeds(12)
    first = _hf(tiny, max_new_tokens=20, batch_size=5).generate(seeds)
    again = _hf(tiny, max_new_tokens=20, batch_size=5).generate(seeds)
    assert first == again
    other = _hf(tiny, max_new_tokens=20, batch_size=5).generate(_seeds(12, iteration=2))
    assert all(a != b for a, b in zip(first, other, strict=True))
    assert len(set(map(tuple, first))) == len(first)  # different seeds, different samples


def test_hf_batch_size_and_composition_independent(tiny: TinyLm) -> None:
    seeds = _seeds(10)
    reference = _hf(tiny, max_new_tokens=16, batch_size=1).generate(seeds)
    for batch_size in (3, 10):
        assert _hf(tiny, max_new_tokens=16, batch_size=batch_size).generate(seeds) == reference
    # the same seeds in another order and mixed with others
    shuffled = [seeds[i] for i in (7, 2, 9)] + _seeds(5, iteration=3)
    out = _hf(tiny, max_new_tokens=16, batch_size=8).generate(shuffled)
    assert out[:3] == [reference[7], reference[2], reference[9]]


def test_hf_matches_naive(tiny: TinyLm) -> None:
    seeds = _seeds(6)
    for settings in ({"max_new_tokens": 24, "batch_size": 4},
                     {"max_new_tokens": 24, "batch_size": 4, "temperature": 0.3, "top_k": 20, "top_p": 0.9}):
        assert _hf(tiny, **settings).generate(seeds) == _naive(tiny, **settings).generate(seeds)


def test_hf_matches_naive_with_eos(eos_heavy: TinyLm) -> None:
    seeds = _seeds(16)
    hf = _hf(eos_heavy, max_new_tokens=30, batch_size=16).generate(seeds)
    assert hf == _naive(eos_heavy, max_new_tokens=30, batch_size=16).generate(seeds)
    assert any(s[-1] == eos_heavy.eos_id for s in hf) and len({len(s) for s in hf}) > 1


# ---------------------------------------------------------------------------------------------
# Distribution
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_gumbel_sampler_matches_softmax(fixed: TinyLm, temperature: float) -> None:
    samples = _hf(fixed, temperature=temperature, max_new_tokens=10, batch_size=256).generate(_seeds(2000))
    assert all(len(s) == 10 for s in samples)
    _check_distribution(samples, _softmax(_fixed_logits(), temperature))


def test_first_token_matches_model_softmax(tiny: TinyLm) -> None:
    """On a real (context-dependent) model: the first token is distributed as softmax(logits(BOS))."""
    sampler = _hf(tiny, max_new_tokens=1, batch_size=512)
    with torch.no_grad():
        logits = sampler.model(torch.tensor([[tiny.bos_id]])).logits[0, -1].double().numpy()  # (V,)
    _check_distribution(sampler.generate(_seeds(3000)), _softmax(logits, 1.0))


def test_low_temperature_is_sharper(fixed: TinyLm) -> None:
    seeds = _seeds(300)
    hot = np.concatenate(_hf(fixed, max_new_tokens=10, batch_size=300).generate(seeds))
    cold = np.concatenate(_hf(fixed, temperature=0.3, max_new_tokens=10, batch_size=300).generate(seeds))

    def entropy(tokens: np.ndarray) -> float:
        p = np.bincount(tokens, minlength=VOCAB) / tokens.size
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    assert entropy(cold) < entropy(hot) - 1.0
    assert len(set(cold.tolist())) < len(set(hot.tolist()))
    top = int(np.argmax(_fixed_logits()))
    assert np.mean(cold == top) > np.mean(hot == top)


def test_top_k_restricts_support_and_renormalises(fixed: TinyLm) -> None:
    logits = _fixed_logits()
    samples = _hf(fixed, top_k=5, max_new_tokens=10, batch_size=256).generate(_seeds(600))
    top5 = np.argsort(logits)[-5:]
    assert set(np.concatenate(samples).tolist()) == set(top5.tolist())
    expected = np.zeros(VOCAB)
    expected[top5] = _softmax(logits[top5], 1.0)
    _check_distribution(samples, expected)


def test_top_p_restricts_support(fixed: TinyLm) -> None:
    probs = _softmax(_fixed_logits(), 1.0)
    order = np.argsort(probs)[::-1]
    nucleus_size = int(np.searchsorted(np.cumsum(probs[order]), 0.6) + 1)  # smallest set with mass >= 0.6
    nucleus = set(order[:nucleus_size].tolist())
    samples = _hf(fixed, top_p=0.6, max_new_tokens=10, batch_size=256).generate(_seeds(400))
    assert set(np.concatenate(samples).tolist()) == nucleus


# ---------------------------------------------------------------------------------------------
# Stopping
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["hf", "naive"])
def test_stops_at_eos_or_max_new_tokens(eos_heavy: TinyLm, backend: str) -> None:
    max_new = 30
    make = _hf if backend == "hf" else _naive
    count = 200 if backend == "hf" else 100
    samples = make(eos_heavy, max_new_tokens=max_new, batch_size=64).generate(_seeds(count))
    eos = eos_heavy.eos_id
    for sample in samples:
        assert eos_heavy.bos_id not in sample and eos_heavy.pad_id not in sample
        assert eos not in sample[:-1]  # nothing after an EOS
        assert sample[-1] == eos or len(sample) == max_new
    ended = Counter(s[-1] == eos for s in samples)
    assert ended[True] > 0.85 * count  # P(no EOS in 30 steps) = 0.9**30 ≈ 4 %
    expected_mean = (1 - 0.9**max_new) / 0.1  # truncated geometric, sd of the mean ≈ 7.5 / sqrt(count)
    assert abs(np.mean([len(s) for s in samples]) - expected_mean) < 4 * 7.5 / np.sqrt(count)


def test_max_new_tokens_is_respected(tiny: TinyLm) -> None:
    samples = _hf(tiny, max_new_tokens=7, batch_size=8).generate(_seeds(8))
    assert all(1 <= len(s) <= 7 for s in samples)


# ---------------------------------------------------------------------------------------------
# Errors and the factory
# ---------------------------------------------------------------------------------------------


def test_context_length_and_ids_checked(tiny: TinyLm) -> None:
    with pytest.raises(ValueError, match="context length 128"):
        _hf(tiny, max_new_tokens=128, batch_size=2)
    with pytest.raises(ValueError, match="eos_id=999"):
        HFSampler(tiny.model_dir, SamplingSettings(max_new_tokens=4), bos_id=0, eos_id=999, pad_id=2)
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        _hf(TinyLm(Path("/nonexistent"), Path("/nonexistent"), 0, 1, 2, VOCAB), max_new_tokens=4)


def test_gumbel_processor_rejects_wrong_batch() -> None:
    processor = GumbelNoiseProcessor([1, 2])
    with pytest.raises(ValueError, match="built for 2 rows"):
        processor(torch.zeros(3, 1, dtype=torch.long), torch.zeros(3, 5))  # type: ignore[arg-type]


def test_make_sampler(tiny: TinyLm, tmp_path: Path) -> None:
    settings = SamplingSettings(max_new_tokens=5, batch_size=4)
    ids: dict[str, Any] = {"bos_id": tiny.bos_id, "eos_id": tiny.eos_id, "pad_id": tiny.pad_id}
    assert isinstance(make_sampler("hf", tiny.model_dir, settings, **ids), HFSampler)
    assert isinstance(make_sampler("naive", tiny.model_dir, settings, **ids), NaiveSampler)
    with pytest.raises(ValueError, match="unknown sampling backend"):
        make_sampler("beam", tiny.model_dir, settings, **ids)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tokenizer_dir"):
        make_sampler("vllm", tiny.model_dir, settings, **ids)


@pytest.mark.skipif(vllm_installed(), reason="vLLM is installed here")
def test_vllm_missing_names_its_environment(tiny: TinyLm, tmp_path: Path) -> None:
    settings = SamplingSettings(max_new_tokens=5, batch_size=4)
    with pytest.raises(ImportError, match="nox -s vllm"):
        make_sampler("vllm", tiny.model_dir, settings, bos_id=0, eos_id=1, pad_id=2,
                     tokenizer_dir=tiny.tokenizer_dir, run_dir=tmp_path)
