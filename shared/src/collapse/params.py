"""params.yaml: one section per modality (scale, data seed, config overrides) + ``lineages``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from collapse.contracts import Contract, LineageSpec
from collapse.modality import ConfigError, Modality, load_modality


class ModalityParams(Contract):
    scale: str = "default"
    data_seed: int = Field(default=0, ge=0)
    config: dict[str, Any] = Field(default_factory=dict)


class LabParams(Contract):
    modalities: dict[str, ModalityParams]
    lineages: dict[str, LineageSpec]

    def lineage(self, name: str) -> LineageSpec:
        if name not in self.lineages:
            raise ConfigError(
                f"unknown lineage {name!r}; params.yaml defines: {', '.join(self.lineages)}"
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


def _describe(error: ValidationError, prefix: str) -> str:
    return "; ".join(
        f"{prefix}{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in error.errors()
    )


def load_params(path: str | Path = "params.yaml") -> LabParams:
    """Parse and validate params.yaml; errors name the key path and what is allowed."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{file} does not exist; run from the project root or pass --params")
    try:
        raw = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{file} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{file} must be a mapping at the top level")
    raw_lineages = raw.pop("lineages", None) or {}
    modalities: dict[str, ModalityParams] = {}
    for key, value in raw.items():
        try:
            modalities[key] = ModalityParams.model_validate(value or {})
        except ValidationError as error:
            raise ConfigError(f"{file}: {_describe(error, key + '.')}") from None
    lineages: dict[str, LineageSpec] = {}
    for name, value in raw_lineages.items():
        if not isinstance(value, dict):
            raise ConfigError(f"{file}: lineages.{name} must be a mapping")
        try:
            lineages[name] = LineageSpec.model_validate({"name": name, **value})
        except ValidationError as error:
            raise ConfigError(f"{file}: {_describe(error, f'lineages.{name}.')}") from None
        if lineages[name].modality not in modalities:
            raise ConfigError(
                f"{file}: lineages.{name}.modality is {lineages[name].modality!r} but there is no "
                f"top-level section for it (have: {', '.join(modalities) or 'none'})"
            )
    return LabParams(modalities=modalities, lineages=lineages)
