"""params.yaml: one section per installed modality (scale, data seed, config overrides),
``lineages``, and sections that belong to the lab rather than to a modality (``serving``).

Everything is validated before any work: unknown top-level sections and near-miss keys get a
"did you mean", numbers must be finite, seeds and counts must be integers (not ``'3'`` or
``true``), and each modality's config is resolved from its preset and checked by the service.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from collapse.contracts import Contract, LineageSpec
from collapse.modality import ConfigError, Modality, installed_modalities, load_modality

LINEAGES = "lineages"
# Top-level sections that are not modalities, with what they hold.
LAB_SECTIONS = {LINEAGES: "the lineages to run", "serving": "BentoML serving settings"}


class ModalityParams(Contract):
    scale: str = "default"
    data_seed: int = Field(default=0, ge=0, lt=2**63, strict=True)
    config: dict[str, Any] = Field(default_factory=dict)


class LabParams(Contract):
    modalities: dict[str, ModalityParams]
    lineages: dict[str, LineageSpec]
    serving: dict[str, Any] = Field(default_factory=dict)

    def lineage(self, name: str) -> LineageSpec:
        if name not in self.lineages:
            raise ConfigError(
                f"unknown lineage {name!r}{_did_you_mean(name, self.lineages)}; params.yaml "
                f"defines: {', '.join(self.lineages) or 'none'}"
            )
        return self.lineages[name]

    def modality(self, name: str) -> ModalityParams:
        if name not in self.modalities:
            raise ConfigError(f"params.yaml has no section {name!r} (scale, data_seed, config)")
        return self.modalities[name]

    def config(self, name: str, service: Modality | None = None) -> Any:
        section = self.modality(name)
        return (service or load_modality(name)).config(section.scale, section.config)

    def lineages_of(self, modality: str) -> list[LineageSpec]:
        return [spec for spec in self.lineages.values() if spec.modality == modality]

    def active_modalities(self) -> list[str]:
        """Modalities that at least one lineage uses, in params order."""
        return [m for m in self.modalities if self.lineages_of(m)]

    def seeds_of(self, modality: str) -> list[int]:
        """The distinct lineage seeds of ``modality``: one shared iteration 1 each."""
        return sorted({spec.seed for spec in self.lineages_of(modality)})


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _non_finite(value: Any, path: str) -> str | None:
    """The dotted path of the first inf/NaN inside ``value``, if any."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, dict):
        for key, item in value.items():
            found = _non_finite(item, f"{path}.{key}" if path else str(key))
            if found:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _non_finite(item, f"{path}[{i}]")
            if found:
                return found
    return None


def _describe(error: ValidationError, prefix: str, model: type[BaseModel]) -> str:
    """One line per problem, naming the key; an unknown key gets a "did you mean"."""
    lines = []
    for item in error.errors():
        where = prefix + ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            key = str(item["loc"][-1])
            lines.append(f"{where}: unknown key{_did_you_mean(key, model.model_fields)}; allowed: "
                         f"{', '.join(model.model_fields)}")
        else:
            lines.append(f"{where}: {item['msg']}")
    return "; ".join(lines)


def parse_params(raw: Any, source: str = "params.yaml") -> LabParams:
    """Validate a loaded params mapping (see :func:`load_params`)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must be a mapping at the top level")
    bad = _non_finite(raw, "")
    if bad:
        raise ConfigError(f"{source}: {bad} is not a finite number (inf/NaN are not allowed)")
    installed = installed_modalities()
    raw = dict(raw)
    unknown = [key for key in raw if key not in LAB_SECTIONS and key not in installed]
    if unknown:
        key = unknown[0]
        known = [*installed, *LAB_SECTIONS]
        raise ConfigError(
            f"{source}: unknown top-level section {key!r}{_did_you_mean(key, known)}; allowed: "
            f"installed modalities ({', '.join(installed) or 'none'}) and "
            + ", ".join(f"{name} ({what})" for name, what in LAB_SECTIONS.items())
        )
    raw_lineages = raw.pop(LINEAGES, None) or {}
    serving = raw.pop("serving", None) or {}
    if not isinstance(raw_lineages, dict):
        raise ConfigError(f"{source}: {LINEAGES} must be a mapping of lineage name → spec")
    modalities: dict[str, ModalityParams] = {}
    for key, value in raw.items():
        try:
            modalities[key] = ModalityParams.model_validate(value or {})
        except ValidationError as error:
            raise ConfigError(f"{source}: {_describe(error, key + '.', ModalityParams)}") from None
    lineages: dict[str, LineageSpec] = {}
    for name, value in raw_lineages.items():
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: lineages.{name} must be a mapping")
        try:
            lineages[name] = LineageSpec.model_validate({"name": name, **value})
        except ValidationError as error:
            raise ConfigError(f"{source}: {_describe(error, f'lineages.{name}.', LineageSpec)}") from None
        if lineages[name].modality not in modalities:
            modality = lineages[name].modality
            hint = (f"add a top-level section {modality}: with at least a scale"
                    if modality in installed else
                    f"installed modalities: {', '.join(installed)}{_did_you_mean(modality, installed)}")
            raise ConfigError(
                f"{source}: lineages.{name}.modality is {modality!r} but there is no top-level "
                f"section for it; {hint}"
            )
    return LabParams(modalities=modalities, lineages=lineages, serving=serving)


def load_params(path: str | Path = "params.yaml") -> LabParams:
    """Parse and validate params.yaml; errors name the key path and what is allowed."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{file} does not exist; run from the project root or pass --params")
    try:
        raw = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{file} is not valid YAML: {error}") from None
    return parse_params(raw, str(file))


def validate_all(params: LabParams) -> dict[str, Any]:
    """Resolve and check every modality's config (presets, model names, pool sizes).

    Returns modality → resolved config. Raises :class:`ConfigError` naming the first problem.
    """
    from collapse.policy import real_items_needed

    configs: dict[str, Any] = {}
    for name in params.modalities:
        service = load_modality(name)
        config = params.config(name, service)
        service.validate(config)
        configs[name] = config
        t = service.real_items(config)
        pool = service.real_pool_items(config)
        for spec in params.lineages_of(name):
            needed = real_items_needed(spec.policy, spec.iterations, t)
            if pool is not None and needed > pool:
                raise ConfigError(
                    f"lineages.{spec.name} needs {needed} real training items (T = {t}, "
                    f"fresh_real {spec.policy.fresh_real} for {spec.iterations} iterations) but "
                    f"{name} prepares {pool}: enlarge its reserve in {name}.config or shorten "
                    "the lineage"
                )
    return configs
