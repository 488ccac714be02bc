"""Property tests of the one data policy, for every named regime and custom ones."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collapse.contracts import REGIMES, PolicySpec
from collapse.policy import (
    PolicyError,
    compose,
    items_to_generate,
    real_items_needed,
    synthetic_inputs,
)


@dataclass(frozen=True)
class Shard:
    items: int
    origin: str
    produced_by: int


def shards_for(policy: PolicySpec, iteration: int, t: int, real_chunks: int = 1) -> tuple[list[Shard], list[Shard]]:
    """A real pool (split into ``real_chunks`` shards) and every sample set made so far."""
    pool = real_items_needed(policy, iteration, t)
    sizes = [len(part) for part in np.array_split(np.arange(pool), real_chunks)]
    real = [Shard(size, "real", 0) for size in sizes]
    synthetic = [Shard(items_to_generate(policy, m, t), "synthetic", m) for m in range(1, iteration)]
    return real, synthetic


def expected_size(policy: PolicySpec, n: int, t: int) -> int:
    if n == 1:
        return t
    if policy.subsample is not None:
        return round(policy.subsample * t)
    fresh = round(policy.fresh_real * t)
    real = (t + fresh * (n - 1)) if policy.keep_real else fresh
    synthetic = sum(items_to_generate(policy, m, t) for m in synthetic_inputs(policy, n))
    return real + synthetic


regimes = st.sampled_from(sorted(REGIMES))
custom = st.builds(
    PolicySpec,
    keep_real=st.just(True),
    synthetic=st.sampled_from(["none", "latest", "all"]),
    generate=st.sampled_from([0.5, 1.0, 2.0]),
    generate_grows=st.booleans(),
    fresh_real=st.sampled_from([0.0, 0.1, 1.0]),
    subsample=st.sampled_from([None, 0.5, 1.0]),
)


@settings(max_examples=150, deadline=None)
@given(regime=regimes, n=st.integers(1, 12), t=st.integers(1, 60), seed=st.integers(0, 2**40),
       chunks=st.integers(1, 3))
def test_sizes_and_provenance_of_named_regimes(regime: str, n: int, t: int, seed: int, chunks: int) -> None:
    policy = REGIMES[regime]
    real, synthetic = shards_for(policy, n, t, chunks)
    selections = compose(policy, n, real, synthetic, t, seed)
    assert sum(s.items for s in selections) == expected_size(policy, n, t)
    producers = {s.shard.produced_by for s in selections}
    if n == 1:
        assert producers == {0}
    elif regime in {"replace", "replace_multiple"}:
        assert producers == {n - 1}
        assert selections[0].items == (n * t if regime == "replace_multiple" else t)
    elif regime in {"accumulate", "accumulate_fresh"}:
        assert producers == set(range(0, n))
        per_producer = {p: sum(s.items for s in selections if s.shard.produced_by == p) for p in producers}
        assert per_producer[0] == real_items_needed(policy, n, t)
        assert all(per_producer[p] == t for p in range(1, n))
    else:  # accumulate_subsample: a subsample of real + models 1..n-1, nothing newer
        assert producers <= set(range(0, n))
    for s in selections:  # indices are valid, sorted, unique positions in their shard
        if s.indices is not None:
            assert np.all(np.diff(s.indices) > 0)
            assert s.indices[0] >= 0 and s.indices[-1] < s.shard.items


@settings(max_examples=100, deadline=None)
@given(policy=custom, n=st.integers(1, 8), t=st.integers(2, 40), seed=st.integers(0, 2**40))
def test_sizes_of_custom_policies(policy: PolicySpec, n: int, t: int, seed: int) -> None:
    real, synthetic = shards_for(policy, n, t)
    assert sum(s.items for s in compose(policy, n, real, synthetic, t, seed)) == expected_size(policy, n, t)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 10), t=st.integers(5, 50), seed=st.integers(0, 2**40))
def test_subsample_is_a_function_of_the_seed(n: int, t: int, seed: int) -> None:
    policy = REGIMES["accumulate_subsample"]
    real, synthetic = shards_for(policy, n, t)

    def picks(s: int) -> list[tuple[int, list[int]]]:
        chosen = compose(policy, n, real, synthetic, t, s)
        return [(c.shard.produced_by, [] if c.indices is None else c.indices.tolist()) for c in chosen]

    assert picks(seed) == picks(seed)
    assert picks(seed) != picks(seed + 1)  # P(two uniform draws of t from >= 2t agree) ≈ 0


def test_subsample_is_uniform_over_the_pool() -> None:
    """Over many seeds every pooled item is picked with probability T/(n·T) = 1/n."""
    policy, n, t = REGIMES["accumulate_subsample"], 4, 20
    real, synthetic = shards_for(policy, n, t)
    counts = np.zeros(n)
    trials = 400
    for seed in range(trials):
        for s in compose(policy, n, real, synthetic, t, seed):
            counts[s.shard.produced_by] += s.items
    share = counts / (trials * t)  # each producer holds 1/n of the pool
    assert np.allclose(share, 1 / n, atol=0.02)


def test_generation_counts() -> None:
    assert [items_to_generate(REGIMES["replace"], n, 10) for n in (1, 5)] == [10, 10]
    assert [items_to_generate(REGIMES["replace_multiple"], n, 10) for n in (1, 5)] == [20, 60]
    none = PolicySpec(keep_real=True, synthetic="none")
    assert items_to_generate(none, 3, 10) == 0


def test_missing_or_foreign_samples_are_named() -> None:
    policy = REGIMES["accumulate"]
    real, synthetic = shards_for(policy, 4, 10)
    with pytest.raises(PolicyError, match="needs the samples of model 2"):
        compose(policy, 4, real, [s for s in synthetic if s.produced_by != 2], 10, 0)
    wrong = [Shard(7, "synthetic", 1)]
    with pytest.raises(PolicyError, match="hold 7 items; this policy makes 10"):
        compose(REGIMES["replace"], 2, real, wrong, 10, 0)
    with pytest.raises(PolicyError, match="real pool has 10 items but the policy needs 12"):
        compose(REGIMES["accumulate_fresh"], 3, real, synthetic, 10, 0)
