"""``-S key=value`` edits of a params mapping, with `dvc exp run -S`'s (Hydra's) meaning:

* ``key=value``  change an existing key (an error if it does not exist);
* ``+key=value`` add a new key (an error if it exists);
* ``++key=value`` add or change;
* ``~key``       delete a key.

Values are parsed as YAML (``3`` is an int, ``0.3`` a float, ``[1, 2]`` a list).
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from collapse.modality import ConfigError


def _parent(tree: dict[str, Any], dotted: str, create: bool) -> tuple[dict[str, Any], str]:
    *parents, leaf = dotted.split(".")
    node = tree
    for i, part in enumerate(parents):
        if part not in node or node[part] is None:
            if not create:
                raise ConfigError(f"-S {dotted}: {'.'.join(parents[: i + 1])} does not exist (use +{dotted}=… to add)")
            node[part] = {}
        if not isinstance(node[part], dict):
            raise ConfigError(f"-S {dotted}: {'.'.join(parents[: i + 1])} is not a mapping")
        node = node[part]
    return node, leaf


def apply_overrides(raw: dict[str, Any], settings: list[str]) -> dict[str, Any]:
    """A copy of ``raw`` with every ``-S`` setting applied, in order."""
    tree = copy.deepcopy(raw)
    for setting in settings:
        if setting.startswith("~"):
            node, leaf = _parent(tree, setting[1:], create=False)
            if leaf not in node:
                raise ConfigError(f"-S {setting}: {setting[1:]} does not exist")
            del node[leaf]
            continue
        if "=" not in setting:
            raise ConfigError(f"-S {setting}: expected key=value, +key=value, ++key=value or ~key")
        key, text = setting.split("=", 1)
        mode = "force" if key.startswith("++") else "add" if key.startswith("+") else "change"
        key = key.lstrip("+")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"-S {setting}: the value is not valid YAML ({error})") from None
        node, leaf = _parent(tree, key, create=mode != "change")
        if mode == "change" and leaf not in node:
            raise ConfigError(f"-S {setting}: {key} does not exist (use +{key}=… to add it)")
        if mode == "add" and leaf in node:
            raise ConfigError(f"-S {setting}: {key} already exists (drop the + to change it)")
        node[leaf] = value
    return tree
