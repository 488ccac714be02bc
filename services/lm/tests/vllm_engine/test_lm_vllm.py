"""The real vLLM engine on a tiny saved GPT-2 (run in the vLLM environment only).

    /work/vllm-venv/bin/python -m pytest services/lm/tests/vllm_engine      # or: nox -s vllm

One engine serves the whole module (starting one takes seconds); the model's next-token logits
are fixed (see ``build_fixed_logits_lm``), so what vLLM samples can be checked exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from collapse_lm.bench_sampling import TinyLm, build_fixed_logits_lm
from collapse_lm.sample import SamplingSettings, VllmSampler, sample_seed, vllm_installed

if not vllm_installed():  # not importorskip: this very folder is importable as a namespace package "vllm"
    pytest.skip("vLLM lives in its own environment: `nox -s vllm`", allow_module_level=True)

pytestmark = pytest.mark.vllm

VOCAB = 300
MAX_NEW = 24
P_EOS = 0.1


def _logits() -> np.ndarray:
    logits = np.random.default_rng(5).normal(0.0, 1.5, VOCAB)  # (V,)
    logits[[0, 2]] = -30.0  # never BOS or PAD
    others = np.exp(np.delete(logits, 1)).sum()
    logits[1] = np.log(P_EOS / (1 - P_EOS) * others)  # P(EOS) = 0.1 at every step
    return logits


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> TinyLm:
    return build_fixed_logits_lm(tmp_path_factory.mktemp("vllm-lm"), _logits())


@pytest.fixture(scope="module")
def sampler(lm: TinyLm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmSampler]:
    settings = SamplingSettings(max_new_tokens=MAX_NEW, batch_size=64)
    yield VllmSampler(lm.model_dir, lm.tokenizer_dir, settings, bos_id=lm.bos_id, eos_id=lm.eos_id,
                      run_dir=tmp_path_factory.mktemp("vllm-run"))


def _seeds(count: int, iteration: int = 1) -> list[int]:
    return [sample_seed(21, iteration, i) for i in range(count)]


def test_same_seeds_same_samples(sampler: VllmSampler) -> None:
    seeds = _seeds(40)
    first = sampler.generate(seeds)
    assert sampler.generate(seeds) == first
    # each sample depends on its own seed only: a subset in another order gives the same samples
    assert sampler.generate([seeds[5], seeds[0], *_seeds(3, iteration=9)])[:2] == [first[5], first[0]]


def test_different_seeds_different_samples(sampler: VllmSampler) -> None:
    first = sampler.generate(_seeds(40))
    other = sampler.generate(_seeds(40, iteration=2))
    assert sum(a != b for a, b in zip(first, other, strict=True)) >= 35
    assert len({tuple(s) for s in first}) >= 35


def test_eos_and_max_length_respected(sampler: VllmSampler, lm: TinyLm) -> None:
    samples = sampler.generate(_seeds(300))
    for sample in samples:
        assert 1 <= len(sample) <= MAX_NEW
        assert lm.bos_id not in sample and lm.pad_id not in sample
        assert lm.eos_id not in sample[:-1]
        assert sample[-1] == lm.eos_id or len(sample) == MAX_NEW
    ended = np.mean([s[-1] == lm.eos_id for s in samples])
    assert 0.85 < ended < 0.97  # 1 - 0.9**24 = 0.92
    expected_mean = (1 - (1 - P_EOS) ** MAX_NEW) / P_EOS
    assert abs(np.mean([len(s) for s in samples]) - expected_mean) < 1.5


def test_tokens_follow_the_softmax(sampler: VllmSampler, lm: TinyLm) -> None:
    samples = sampler.generate(_seeds(600, iteration=3))
    tokens = np.concatenate([np.asarray(s) for s in samples])
    observed = np.bincount(tokens, minlength=VOCAB) / tokens.size
    z = _logits()
    expected = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    tolerance = 5 * np.sqrt(expected * (1 - expected) / tokens.size) + 3 / tokens.size
    assert np.all(np.abs(observed - expected) <= tolerance)


def test_low_temperature_is_sharper(sampler: VllmSampler) -> None:
    seeds = _seeds(200, iteration=4)
    hot = np.concatenate(sampler.generate(seeds))
    original = sampler.settings
    try:
        sampler.settings = original.model_copy(update={"temperature": 0.3})
        cold = np.concatenate(sampler.generate(seeds))
    finally:
        sampler.settings = original
    top = int(np.argmax(_logits()))
    assert np.mean(cold == top) > np.mean(hot == top) + 0.1
    assert len(set(cold.tolist())) < len(set(hot.tolist()))


def test_top_k_restricts_support(sampler: VllmSampler, lm: TinyLm) -> None:
    original = sampler.settings
    try:
        sampler.settings = original.model_copy(update={"top_k": 4})
        tokens = set(np.concatenate(sampler.generate(_seeds(100, iteration=5))).tolist())
    finally:
        sampler.settings = original
    assert tokens <= set(np.argsort(_logits())[-4:].tolist())


def test_empty_prompt_rejected(sampler: VllmSampler) -> None:
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        sampler.generate_from([[0], []], [1, 2])
    with pytest.raises(ValueError, match="one seed per prompt"):
        sampler.generate_from([[0]], [1, 2])


def test_missing_model_dir_is_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        VllmSampler(tmp_path / "none", tmp_path, SamplingSettings(max_new_tokens=4), bos_id=0, eos_id=1,
                    run_dir=tmp_path)
