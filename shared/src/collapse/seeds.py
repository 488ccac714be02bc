"""Seed derivation: every random draw in the lab comes from a lineage seed plus a purpose."""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(*parts: object) -> int:
    """A 63-bit seed that depends only on ``parts`` (e.g. lineage seed, "generate", iteration)."""
    key = "/".join(str(part) for part in parts).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


def rng_for(*parts: object) -> np.random.Generator:
    """A fresh numpy Generator seeded by :func:`derive_seed` of ``parts``."""
    return np.random.default_rng(derive_seed(*parts))
