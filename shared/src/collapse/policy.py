"""The data policy, written once: which items train model n, and how many model n generates.

Pure functions of (policy, iteration, available shards, T, seed). They work on anything that
looks like a shard (``items``, ``origin``, ``produced_by``), so the DVC stages (ShardRef on
disk) and in-memory simulators (e.g. linreg's batched one) share exactly this logic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np

from collapse.contracts import DatasetManifest, LineageSpec, ManifestEntry, PolicySpec, ShardRef
from collapse.seeds import rng_for


class PolicyError(ValueError):
    """The shards at hand cannot make the training set the policy asks for."""


class ShardLike(Protocol):
    @property
    def items(self) -> int: ...
    @property
    def origin(self) -> str: ...
    @property
    def produced_by(self) -> int: ...


S = TypeVar("S", bound=ShardLike)


@dataclass(frozen=True)
class Selection(Generic[S]):
    """All items of ``shard`` (``indices`` None) or the sorted positions ``indices``."""

    shard: S
    indices: np.ndarray | None = None  # (k,) int64, strictly increasing

    @property
    def items(self) -> int:
        return self.shard.items if self.indices is None else len(self.indices)


def fraction_of(fraction: float, real_items: int) -> int:
    return round(fraction * real_items)


def items_to_generate(policy: PolicySpec, iteration: int, real_items: int) -> int:
    """How many items model ``iteration`` must generate for the next training set."""
    if policy.synthetic == "none":
        return 0
    per_iteration = fraction_of(policy.generate, real_items)
    return per_iteration * (iteration + 1) if policy.generate_grows else per_iteration


def real_items_needed(policy: PolicySpec, iterations: int, real_items: int) -> int:
    """Size of the real pool a lineage of ``iterations`` iterations draws from."""
    return real_items + fraction_of(policy.fresh_real, real_items) * (iterations - 1)


def synthetic_inputs(policy: PolicySpec, iteration: int) -> list[int]:
    """Which models' samples the training set of ``iteration`` reads (1-based producers)."""
    if iteration == 1 or policy.synthetic == "none":
        return []
    return [iteration - 1] if policy.synthetic == "latest" else list(range(1, iteration))


def _take_range(shards: Sequence[S], start: int, stop: int) -> list[Selection[S]]:
    """Items [start, stop) of the concatenation of ``shards``."""
    selections: list[Selection[S]] = []
    offset = 0
    for shard in shards:
        lo, hi = max(start, offset), min(stop, offset + shard.items)
        if lo < hi:
            whole = lo == offset and hi == offset + shard.items
            indices = None if whole else np.arange(lo - offset, hi - offset, dtype=np.int64)
            selections.append(Selection(shard, indices))
        offset += shard.items
    if offset < stop:
        raise PolicyError(
            f"the real pool has {offset} items but the policy needs {stop}; prepare more real "
            "data (regenerate dvc.yaml with `collapse pipeline write` after changing fresh_real)"
        )
    return selections


def _real_part(policy: PolicySpec, iteration: int, real: Sequence[S], t: int) -> list[Selection[S]]:
    fresh = fraction_of(policy.fresh_real, t)
    if iteration == 1:
        return _take_range(real, 0, t)
    newest_start = t + fresh * (iteration - 2)
    if policy.keep_real:
        return _take_range(real, 0, newest_start + fresh)
    return _take_range(real, newest_start, newest_start + fresh) if fresh else []


def _synthetic_part(
    policy: PolicySpec, iteration: int, synthetic: Sequence[S], t: int
) -> list[Selection[S]]:
    by_producer = {shard.produced_by: shard for shard in synthetic}
    selections: list[Selection[S]] = []
    for producer in synthetic_inputs(policy, iteration):
        shard = by_producer.get(producer)
        if shard is None:
            raise PolicyError(
                f"iteration {iteration} needs the samples of model {producer}, which were not "
                f"given (have: {sorted(by_producer) or 'none'})"
            )
        expected = items_to_generate(policy, producer, t)
        if shard.items != expected:
            raise PolicyError(
                f"samples of model {producer} hold {shard.items} items; this policy makes "
                f"{expected} — they belong to another policy or scale"
            )
        selections.append(Selection(shard))
    return selections


def _subsample(
    pool: list[Selection[S]], size: int, iteration: int, seed: int
) -> list[Selection[S]]:
    total = sum(selection.items for selection in pool)
    if size > total:
        raise PolicyError(f"cannot subsample {size} items from a pool of {total}")
    rng = rng_for(seed, "policy", "subsample", iteration)
    picks = np.sort(rng.choice(total, size=size, replace=False))  # (size,) global positions
    bounds = np.cumsum([0] + [selection.items for selection in pool])
    out: list[Selection[S]] = []
    cuts = np.searchsorted(picks, bounds)  # picks[cuts[i]:cuts[i+1]] fall in selection i
    for i, selection in enumerate(pool):
        local = picks[cuts[i] : cuts[i + 1]] - bounds[i]
        if len(local):
            indices = local if selection.indices is None else selection.indices[local]
            out.append(Selection(selection.shard, indices.astype(np.int64)))
    return out


def compose(
    policy: PolicySpec,
    iteration: int,
    real: Sequence[S],
    synthetic: Sequence[S],
    real_items: int,
    seed: int,
) -> list[Selection[S]]:
    """The training set of ``iteration`` as selections of real and synthetic shards."""
    if iteration < 1:
        raise PolicyError(f"iterations are 1-based, got {iteration}")
    if real_items < 1:
        raise PolicyError(f"T (real items at iteration 1) must be >= 1, got {real_items}")
    pool = _real_part(policy, iteration, real, real_items)
    if iteration > 1:
        pool += _synthetic_part(policy, iteration, synthetic, real_items)
        if policy.subsample is not None:
            pool = _subsample(pool, fraction_of(policy.subsample, real_items), iteration, seed)
    return pool


def _entries(selections: Sequence[Selection[ShardRef]]) -> list[ManifestEntry]:
    return [
        ManifestEntry(shard=s.shard, indices=None if s.indices is None else s.indices.tolist())
        for s in selections
    ]


def first_manifest(modality: str, seed: int, real: Sequence[ShardRef], real_items: int) -> DatasetManifest:
    """Iteration 1: the first T real items, the same for every lineage of ``seed``."""
    return DatasetManifest(
        modality=modality, lineage=None, iteration=1, policy=None, seed=seed,
        entries=_entries(_take_range(real, 0, real_items)),
    )


def build_manifest(
    lineage: LineageSpec,
    iteration: int,
    real: Sequence[ShardRef],
    synthetic: Sequence[ShardRef],
    real_items: int,
) -> DatasetManifest:
    """:func:`compose` for shards on disk, as the contract the fit stage reads.

    ``synthetic`` are the shards the policy may draw from at ``iteration`` (recorded in the
    manifest, so the next iteration needs only this manifest and the newest samples).
    """
    if iteration == 1:
        return first_manifest(lineage.modality, lineage.seed, real, real_items)
    selections = compose(lineage.policy, iteration, real, synthetic, real_items, lineage.seed)
    wanted = set(synthetic_inputs(lineage.policy, iteration))
    return DatasetManifest(
        modality=lineage.modality,
        lineage=lineage.name,
        iteration=iteration,
        policy=lineage.policy,
        seed=lineage.seed,
        entries=_entries(selections),
        synthetic_pool=[shard for shard in synthetic if shard.produced_by in wanted],
    )
