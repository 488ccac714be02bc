"""Shards and JSON artefacts on disk: written once, atomically, content-hashed, verified on read."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from collapse.contracts import FitSummary, ModelCard, ShardRef

M = TypeVar("M", bound=BaseModel)


class ArtefactError(RuntimeError):
    """A file the lab needs is missing, corrupted or not what it claims to be."""


class ShardIntegrityError(ArtefactError):
    def __init__(self, path: str, expected: str, actual: str) -> None:
        super().__init__(
            f"shard {path} is corrupted: expected sha256 {expected}, found {actual}. "
            "Re-create it (`dvc repro` re-runs the stage that wrote it; `dvc checkout` restores "
            "it from the DVC cache)"
        )
        self.path, self.expected, self.actual = path, expected, actual


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the body succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def write_json(path: str | Path, model: BaseModel) -> None:
    atomic_write_bytes(path, (model.model_dump_json(indent=2) + "\n").encode())


def write_plain_json(path: str | Path, data: object) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str | Path, model: type[M]) -> M:
    """Load a contract, with an error that names the file and what is wrong with it."""
    file = Path(path)
    if not file.is_file():
        raise ArtefactError(
            f"{file} does not exist: run the stage that writes it (`dvc repro`) or fix the path"
        )
    try:
        return model.model_validate_json(file.read_bytes())
    except ValidationError as error:
        raise ArtefactError(f"{file} is not a valid {model.__name__}:\n{error}") from error


def verify(ref: ShardRef) -> Path:
    """The shard's path, after checking it exists and its content hash is the recorded one."""
    path = Path(ref.path)
    if not path.is_file():
        raise ArtefactError(
            f"shard {ref.path} is missing (expected sha256 {ref.sha256}); `dvc repro` re-creates "
            "it, `dvc checkout` restores it from the DVC cache"
        )
    actual = sha256_file(path)
    if actual != ref.sha256:
        raise ShardIntegrityError(ref.path, ref.sha256, actual)
    return path


def write_shard(
    path: str | Path,
    write: Callable[[Path], None],
    *,
    items: int,
    origin: Literal["real", "synthetic"],
    produced_by: int,
    format: str,
) -> ShardRef:
    """Write a shard with ``write(tmp_path)``, rename it into place, hash it, add its sidecar.

    ``<path>`` holds the data and ``<path>.json`` (suffix replaced) the :class:`ShardRef`.
    """
    target = Path(path)
    with atomic_path(target) as temporary:
        write(temporary)
        digest = sha256_file(temporary)
    ref = ShardRef(
        path=target.as_posix(),
        sha256=digest,
        items=items,
        origin=origin,
        produced_by=produced_by,
        format=format,
    )
    write_json(target.with_suffix(".json"), ref)
    return ref


def save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` to exactly ``path`` (no pickles; the bytes depend only on the array)."""
    with open(path, "wb") as handle:
        np.save(handle, np.ascontiguousarray(array), allow_pickle=False)


def write_array_shard(
    path: str | Path,
    rows: np.ndarray,
    *,
    origin: Literal["real", "synthetic"],
    produced_by: int,
    format: str = "npy-rows",
) -> ShardRef:
    """A shard whose items are the rows of ``rows`` (first axis)."""
    return write_shard(
        path,
        lambda temporary: save_npy(temporary, rows),
        items=int(rows.shape[0]),
        origin=origin,
        produced_by=produced_by,
        format=format,
    )


def read_array(ref: ShardRef, indices: list[int] | None = None) -> np.ndarray:
    """The rows of a verified array shard (all, or the selected ``indices``)."""
    path = verify(ref)
    try:
        rows = np.load(path, allow_pickle=False)
    except ValueError as error:
        raise ArtefactError(f"shard {ref.path} is not a readable .npy file: {error}") from error
    if rows.shape[0] != ref.items:
        raise ArtefactError(f"shard {ref.path} has {rows.shape[0]} rows, its ref says {ref.items}")
    return rows if indices is None else rows[np.asarray(indices, dtype=np.int64)]


def read_shard_ref(directory: str | Path, name: str = "shard") -> ShardRef:
    return read_json(Path(directory) / f"{name}.json", ShardRef)


def read_model(model_dir: str | Path) -> tuple[ModelCard, Path]:
    """The model card in ``model_dir`` and its weights file, checked against the card's hash."""
    directory = Path(model_dir)
    card = read_json(directory / "card.json", ModelCard)
    weights = directory / card.weights_file
    if not weights.is_file():
        raise ArtefactError(f"{weights} is missing; re-run the fit stage (`dvc repro`)")
    actual = sha256_file(weights)
    if actual != card.weights_sha256:
        raise ArtefactError(
            f"{weights} is corrupted: expected sha256 {card.weights_sha256}, found {actual}; "
            "re-run the fit stage (`dvc repro`) or `dvc checkout`"
        )
    return card, weights


def write_model_card(
    model_dir: str | Path,
    summary: FitSummary,
    *,
    modality: str,
    lineage: str,
    iteration: int,
    manifest_sha256: str,
    train_items: int,
    seed: int,
) -> ModelCard:
    """Wrap a service's :class:`FitSummary` into ``model_dir/card.json`` (written last)."""
    directory = Path(model_dir)
    card = ModelCard(
        modality=modality,
        lineage=lineage,
        iteration=iteration,
        manifest_sha256=manifest_sha256,
        train_items=train_items,
        hyperparameters=summary.hyperparameters,
        parameter_count=summary.parameter_count,
        weights_file=summary.weights_file,
        weights_sha256=sha256_file(directory / summary.weights_file),
        seed=seed,
        library_versions=summary.library_versions,
    )
    write_json(directory / "card.json", card)
    return card
