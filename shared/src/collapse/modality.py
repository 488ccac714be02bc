"""The interface every modality service implements, and discovery of installed services.

A service registers its class under the entry-point group ``collapse.modalities``; shared/
never imports a service. Services know nothing about policies: they prepare real data, fit a
manifest, load a trained model as a :class:`Generator` (the one code path the generate stage
and the BentoML endpoints share), evaluate it on real test data, and describe their own part
of the report.

This module is part of the light core: it imports neither DVC nor matplotlib, so a serving
image can load a model with only pydantic, numpy and the service's own libraries.
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from collapse.contracts import DatasetManifest, FitSummary, ModelCard, RealDataCard, ShardRef

ENTRY_POINT_GROUP = "collapse.modalities"
STEPS = ("prepare", "fit", "evaluate", "generate")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names it and what is allowed."""


class Generator(ABC):
    """A trained model loaded once, drawing items in memory.

    Item ``i`` of the stream of ``seed`` depends only on (model, seed, i): a request for items
    ``start..stop`` returns the same items as positions ``start..stop`` of the shard the
    generate stage wrote with the lineage's seed, whatever the batch size.
    """

    card: ModelCard

    @abstractmethod
    def sample(self, start: int, stop: int, seed: int, options: Mapping[str, Any] | None = None) -> Any:
        """Items ``[start, stop)`` of the stream of ``seed`` (modality-specific batch object).

        ``options`` are modality sampling settings (e.g. temperature) that replace the
        configured ones for this call only.
        """

    @abstractmethod
    def write(self, items: Any, out_dir: Path, produced_by: int) -> ShardRef:
        """Write ``items`` as ``out_dir/shard.*`` + ``out_dir/shard.json`` (+ readable extras)."""


@dataclass(frozen=True)
class IterationView:
    """What the report knows of one iteration of one lineage (paths may not exist yet)."""

    iteration: int
    manifest: Path
    model: Path
    eval: Path
    samples: Path | None


@dataclass(frozen=True)
class LineageView:
    name: str
    policy: str
    seed: int
    iterations: list[IterationView]


@dataclass
class ReportBlock:
    """One piece of a modality's report section: a heading, HTML text and/or PNG figures."""

    title: str
    html: str = ""
    images: list[Path] = field(default_factory=list)


class Modality(ABC):
    """One generative-model family. Instances are stateless; all state lives on disk."""

    name: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]
    presets: ClassVar[dict[str, dict[str, Any]]]  # scale → config fields
    primary_metric: ClassVar[str]  # the metric plotted per iteration in reports
    lower_is_better: ClassVar[bool] = True
    has_figures: ClassVar[bool] = False  # True when :meth:`figures` draws something
    # Which config fields (dotted paths) each step reads: a stage re-runs only when those change.
    step_config: ClassVar[dict[str, tuple[str, ...]]] = {}
    # Which modules (dotted names) each step runs: a stage re-runs only when those files change.
    # A step not listed depends on the whole service package.
    step_modules: ClassVar[dict[str, tuple[str, ...]]] = {}
    # Published numbers to show beside the lab's, as (label, {iteration: value}) per policy name.
    paper_numbers: ClassVar[dict[str, list[tuple[str, dict[int, float]]]]] = {}
    paper_note: ClassVar[str] = ""

    def config(self, scale: str, overrides: dict[str, Any] | None = None) -> Any:
        """The preset of ``scale`` with ``overrides`` applied, validated."""
        if scale not in self.presets:
            raise ConfigError(
                f"unknown scale {scale!r} for modality {self.name}; allowed: "
                f"{', '.join(self.presets)}"
            )
        fields = _deep_merge(self.presets[scale], overrides or {})
        try:
            return self.config_model.model_validate(fields)
        except ValidationError as error:
            problems = "; ".join(
                f"{self.name}.config.{'.'.join(str(p) for p in item['loc'])}: {item['msg']}"
                if item["loc"] else f"{self.name}.config: {item['msg']}"
                for item in error.errors()
            )
            raise ConfigError(f"{self.name} config (scale {scale}) is invalid: {problems}") from None

    def step_values(self, config: BaseModel, step: str) -> dict[str, Any]:
        """The config values ``step`` reads (all of them when the service does not say)."""
        dumped = config.model_dump(mode="json")
        paths = self.step_config.get(step)
        if paths is None:
            return dumped
        values: dict[str, Any] = {}
        for path in paths:
            value: Any = dumped
            for part in path.split("."):
                value = value[part]
            values[path] = value
        return values

    # --- data and training ----------------------------------------------------------------

    @abstractmethod
    def real_items(self, config: Any) -> int:
        """T: how many real training items iteration 1 uses."""

    def real_pool_items(self, config: Any) -> int | None:
        """Real training items ``prepare`` will write (T + reserve); None if only known then."""
        return None

    def validate(self, config: Any) -> None:  # noqa: B027 (optional hook)
        """Checks beyond the config model that need no data (e.g. a model name exists)."""

    @abstractmethod
    def prepare(self, config: Any, out_dir: Path, data_seed: int) -> RealDataCard:
        """Write the real train pool (T items first, then the reserve) and real test shards.

        The layout may depend on ``config`` only, never on which lineages exist.
        """

    @abstractmethod
    def fit(
        self, config: Any, manifest: DatasetManifest, real: RealDataCard, out_dir: Path, seed: int
    ) -> FitSummary:
        """Train a fresh model on the manifest's items; write its files into ``out_dir``.

        Every file written must be a deterministic function of the inputs (no timings).
        """

    @abstractmethod
    def load(self, config: Any, model_dir: Path, card: ModelCard, real: RealDataCard) -> Generator:
        """The model in ``model_dir`` (already verified against ``card``) ready to sample."""

    @abstractmethod
    def evaluate(self, config: Any, generator: Generator, real: RealDataCard) -> dict[str, float]:
        """Metrics of the loaded model on the real test data (finite floats)."""

    # --- report ---------------------------------------------------------------------------

    def learning_curve(self, model_dir: Path) -> list[dict[str, float]]:
        """Per-step training records ({"step", "loss", …}) the fit kept; none by default."""
        return []

    def reference_curve(self, config: Any, policy: Any, iterations: int) -> list[float] | None:
        """The expected primary metric per iteration where theory gives it (drawn dashed)."""
        return None

    def report_blocks(self, config: Any, lineages: Sequence[LineageView], out_dir: Path) -> list[ReportBlock]:
        """The modality's own report views (samples, extra curves); figures go in ``out_dir``."""
        return []

    def figures(self, config: Any, out_dir: Path) -> list[Path]:
        """Modality-specific report figures (e.g. theory vs simulation); none by default."""
        return []

    def add_commands(self, parser: argparse.ArgumentParser) -> None:
        """Extra ``collapse <modality> …`` sub-commands; the parser's ``func`` runs them."""
        def show_help(_args: argparse.Namespace) -> int:
            parser.print_help()
            return 0

        parser.set_defaults(func=show_help)


def _deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}


def installed_modalities() -> list[str]:
    return sorted(_entry_points())


@cache
def load_modality(name: str) -> Modality:
    """The installed service called ``name``; an error lists the installed ones."""
    points = _entry_points()
    if name not in points:
        installed = ", ".join(sorted(points)) or "none"
        raise ConfigError(
            f"modality {name!r} is not installed (installed: {installed}); install its service, "
            f"e.g. `pip install -e services/{name}`"
        )
    cls = points[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Modality)):
        raise ConfigError(f"entry point {name!r} does not name a collapse.modality.Modality class")
    return cls()
