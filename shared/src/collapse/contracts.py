"""Pydantic contracts: every artefact one step writes and another reads is one of these.

They are serialised as JSON next to the binary they describe (``shard.json`` beside
``shard.npy``, ``card.json`` inside ``model/``, ``manifest.json``, ``eval.json``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SHA256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
SCHEMA_VERSION = 2  # of every artefact written to disk; bump (and migrate in store.read_json) on change
LINEAGE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


class Contract(BaseModel):
    """Base of every contract: unknown fields are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Artefact(Contract):
    """A contract written to disk; it carries the schema version that wrote it."""

    schema_version: int = SCHEMA_VERSION


# ---------------------------------------------------------------------------------------------
# Data policy
# ---------------------------------------------------------------------------------------------


class PolicySpec(Contract):
    """The one general data policy; named regimes are presets of it.

    Sizes are fractions of T, the number of real training items used at iteration 1, so a
    policy means the same thing at every scale. Iteration 1 is always the first T real items.
    For iteration n >= 2 the pool is

    * real: the initial T items if ``keep_real``; plus ``fresh_real * T`` new real items that
      arrive at each iteration 2..n (all of them if ``keep_real``, else only the newest batch);
    * synthetic: nothing (``none``), the shard made by model n-1 (``latest``) or the shards made
      by models 1..n-1 (``all``);
    * optionally a uniform subsample (without replacement) of ``subsample * T`` items of that pool.

    Model n generates ``generate * T`` items, times (n+1) if ``generate_grows`` (so that the
    replace-style dataset of iteration n+1 matches the accumulated size (n+1)·T).
    """

    name: str = "custom"
    keep_real: bool
    synthetic: Literal["none", "latest", "all"]
    generate: float = Field(default=1.0, gt=0, le=1000)
    generate_grows: bool = False
    fresh_real: float = Field(default=0.0, ge=0, le=1000)
    subsample: float | None = Field(default=None, gt=0, le=1000)

    @model_validator(mode="after")
    def _selects_something(self) -> PolicySpec:
        if not self.keep_real and self.synthetic == "none" and self.fresh_real == 0:
            raise ValueError(
                "policy selects no data for iterations >= 2: set keep_real: true, "
                "synthetic: latest|all, or fresh_real > 0"
            )
        return self


REGIMES: dict[str, PolicySpec] = {
    "replace": PolicySpec(name="replace", keep_real=False, synthetic="latest"),
    "accumulate": PolicySpec(name="accumulate", keep_real=True, synthetic="all"),
    "replace_multiple": PolicySpec(
        name="replace_multiple", keep_real=False, synthetic="latest", generate_grows=True
    ),
    "accumulate_subsample": PolicySpec(
        name="accumulate_subsample", keep_real=True, synthetic="all", subsample=1.0
    ),
    "accumulate_fresh": PolicySpec(
        name="accumulate_fresh", keep_real=True, synthetic="all", fresh_real=0.1
    ),
}


def resolve_policy(value: str | dict[str, Any] | PolicySpec) -> PolicySpec:
    """A regime name, or a dict written in params.yaml (optionally ``base: <regime>`` + changes)."""
    if isinstance(value, PolicySpec):
        return value
    if isinstance(value, str):
        if value not in REGIMES:
            raise ValueError(
                f"unknown regime {value!r}; allowed: {', '.join(REGIMES)} "
                "or a mapping with keep_real/synthetic/… (see PolicySpec)"
            )
        return REGIMES[value]
    if isinstance(value, dict):
        fields = dict(value)
        base = fields.pop("base", None)
        if base is not None:
            fields = resolve_policy(base).model_dump() | {"name": f"{base}+custom"} | fields
        return PolicySpec.model_validate(fields)
    raise ValueError(f"policy must be a regime name or a mapping, got {type(value).__name__}")


class LineageSpec(Contract):
    """(modality, policy, seed) → iterations 1..N. Written under ``lineages:`` in params.yaml."""

    name: str
    modality: str
    policy: PolicySpec
    seed: int = Field(default=0, ge=0, lt=2**63, strict=True)
    iterations: int = Field(ge=1, le=10_000, strict=True)

    @field_validator("name")
    @classmethod
    def _name_is_path_safe(cls, value: str) -> str:
        if not LINEAGE_NAME.match(value):
            raise ValueError(
                f"lineage name {value!r} must start with a letter and contain only letters, "
                "digits, '-' and '_'"
            )
        return value

    @field_validator("policy", mode="before")
    @classmethod
    def _policy_by_name(cls, value: Any) -> PolicySpec:
        return resolve_policy(value)


# ---------------------------------------------------------------------------------------------
# Data on disk
# ---------------------------------------------------------------------------------------------


class ShardRef(Artefact):
    """An immutable file of items with its content hash and provenance."""

    path: str
    sha256: SHA256
    items: int = Field(ge=0)
    origin: Literal["real", "synthetic"]
    produced_by: int = Field(ge=0, description="0 for real data, n for items made by model n")
    format: str = Field(description="how the modality stores items, e.g. 'npy-rows'")

    @model_validator(mode="after")
    def _origin_matches_producer(self) -> ShardRef:
        if (self.origin == "real") != (self.produced_by == 0):
            raise ValueError("produced_by must be 0 exactly when origin is 'real'")
        return self


class ManifestEntry(Contract):
    """One shard of a manifest: all its items (``indices`` None) or a sorted selection."""

    shard: ShardRef
    indices: list[int] | None = None

    @property
    def items(self) -> int:
        return self.shard.items if self.indices is None else len(self.indices)

    @model_validator(mode="after")
    def _indices_in_range(self) -> ManifestEntry:
        if self.indices is not None and self.indices:
            if self.indices[0] < 0 or self.indices[-1] >= self.shard.items:
                raise ValueError(f"indices out of range for shard {self.shard.path}")
            if any(b <= a for a, b in zip(self.indices, self.indices[1:], strict=False)):
                raise ValueError("indices must be strictly increasing")
        return self


class DatasetManifest(Artefact):
    """The training set of one iteration: a list of shard selections (no data is copied).

    Iteration 1 (the first T real items) is the same for every lineage of a seed, so its
    manifest names no lineage and no policy. ``synthetic_pool`` lists every synthetic shard the
    policy could draw from at this iteration (before any subsampling), so the next iteration's
    manifest is built from this one plus the newest samples: a stage reads O(1) inputs however
    long the lineage is.
    """

    modality: str
    lineage: str | None = Field(description="None for iteration 1, shared by the seed's lineages")
    iteration: int = Field(ge=1)
    policy: PolicySpec | None
    seed: int
    entries: list[ManifestEntry]
    synthetic_pool: list[ShardRef] = Field(default_factory=list)

    @property
    def items(self) -> int:
        return sum(entry.items for entry in self.entries)

    def provenance(self) -> dict[int, int]:
        """How many items came from each producer (0 = real, n = model n)."""
        counts: dict[int, int] = {}
        for entry in self.entries:
            counts[entry.shard.produced_by] = counts.get(entry.shard.produced_by, 0) + entry.items
        return dict(sorted(counts.items()))


class RealDataCard(Artefact):
    """What ``prepare`` made: real train pool + real test shards of one modality.

    The pool's layout depends on the modality's config only, never on which lineages exist:
    shard 0 holds the T items of iteration 1, later shards the reserve that fresh-data policies
    draw from, in a prefix-stable order.
    """

    modality: str
    root: str = Field(description="the directory holding this card and its shards")
    train: list[ShardRef]
    test: list[ShardRef]
    initial_items: int = Field(ge=1, description="T: real items used at iteration 1")
    data_seed: int
    description: str = ""


class FitSummary(Contract):
    """What a service reports after fitting; shared/ wraps it into the :class:`ModelCard`.

    Everything here is a deterministic function of the inputs: run timings (wall seconds,
    tokens/s) are printed, never stored, so identical fits give byte-identical model folders.
    """

    hyperparameters: dict[str, Any]
    parameter_count: int = Field(ge=0)
    weights_file: str = Field(description="file name inside the model directory")
    library_versions: dict[str, str]
    compute: dict[str, float] = Field(
        default_factory=dict,
        description="work the fit did: items, optimizer_steps, tokens/images seen, epochs",
    )


class ModelCard(Artefact):
    """What was trained, on what, with which hyper-parameters; sits in ``model/card.json``.

    ``files`` holds the sha256 of every other file of the model folder (weights, configs,
    tokenizer, logs): an edit to any of them is caught when the model is opened.
    """

    modality: str
    lineage: str | None = Field(description="None for iteration 1, shared by the seed's lineages")
    iteration: int = Field(ge=1)
    manifest_sha256: SHA256
    train_items: int
    hyperparameters: dict[str, Any]
    parameter_count: int
    weights_file: str
    files: dict[str, SHA256]
    seed: int
    library_versions: dict[str, str]
    compute: dict[str, float] = Field(default_factory=dict)

    @property
    def weights_sha256(self) -> str:
        return self.files[self.weights_file]


class EvalReport(Artefact):
    """Metrics of model n on real test data; sits in ``eval.json`` (a DVC metrics file)."""

    modality: str
    lineage: str | None = Field(description="None for iteration 1, shared by the seed's lineages")
    iteration: int = Field(ge=1)
    metrics: dict[str, float]
    model_card_sha256: SHA256
    test_shards: list[SHA256]
