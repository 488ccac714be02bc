"""The interface every modality service implements, and discovery of installed services.

A service registers its class under the entry-point group ``collapse.modalities``; shared/
never imports a service. Services know nothing about policies: they prepare real data, fit a
manifest, evaluate on real test data and generate k items.
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from collapse.contracts import DatasetManifest, FitSummary, RealDataCard, ShardRef

ENTRY_POINT_GROUP = "collapse.modalities"
SCALES = ("smoke", "default", "paper")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names it and what is allowed."""


class Modality(ABC):
    """One generative-model family. Instances are stateless; all state lives on disk."""

    name: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]
    presets: ClassVar[dict[str, dict[str, Any]]]  # scale → config fields
    primary_metric: ClassVar[str]  # the metric plotted per iteration in reports
    lower_is_better: ClassVar[bool] = True
    has_figures: ClassVar[bool] = False  # True when :meth:`figures` draws something

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
                f"{'.'.join(str(p) for p in item['loc']) or '(config)'}: {item['msg']}"
                for item in error.errors()
            )
            raise ConfigError(f"{self.name} config (scale {scale}) is invalid: {problems}") from None

    @abstractmethod
    def real_items(self, config: Any) -> int:
        """T: how many real training items iteration 1 uses."""

    @abstractmethod
    def prepare(
        self, config: Any, out_dir: Path, pool_items: int, data_seed: int
    ) -> RealDataCard:
        """Write real train shard(s) holding ``pool_items`` items and real test shard(s)."""

    @abstractmethod
    def fit(
        self, config: Any, manifest: DatasetManifest, real: RealDataCard, out_dir: Path, seed: int
    ) -> FitSummary:
        """Train a fresh model on the manifest's items; write its files into ``out_dir``."""

    @abstractmethod
    def evaluate(self, config: Any, model_dir: Path, real: RealDataCard) -> dict[str, float]:
        """Metrics of the model in ``model_dir`` on the real test data."""

    @abstractmethod
    def generate(
        self,
        config: Any,
        model_dir: Path,
        real: RealDataCard,
        items: int,
        out_dir: Path,
        produced_by: int,
        seed: int,
    ) -> ShardRef:
        """Write ``items`` generated items as ``out_dir/shard.*`` plus ``out_dir/shard.json``."""

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
