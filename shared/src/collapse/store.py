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

from collapse.contracts import SCHEMA_VERSION, FitSummary, ModelCard, ShardRef

M = TypeVar("M", bound=BaseModel)


class ArtefactError(RuntimeError):
    """A file the lab needs is missing, corrupted or not what it claims to be."""


def recovery(path: str | Path) -> str:
    """The commands that make a damaged DVC output whole again (both tested)."""
    return (f"restore it from the DVC cache with `dvc checkout --force {Path(path).as_posix()}`, then "
            "`dvc repro` (it re-creates whatever else is missing; without a cached copy it re-runs the stage)")


class ShardIntegrityError(ArtefactError):
    def __init__(self, path: str, expected: str, actual: str, what: str = "shard") -> None:
        super().__init__(
            f"{what} {path} is corrupted: expected sha256 {expected}, found {actual}; "
            + recovery(Path(path).parent)
        )
        self.path, self.expected, self.actual = path, expected, actual


def umask() -> int:
    """The process's umask, read when needed (never at import: a forked command has its own)."""
    current = os.umask(0)
    os.umask(current)
    return current


def file_mode() -> int:
    """What open() would give: files stay readable by other users (mkstemp alone makes 0600)."""
    return 0o666 & ~umask()


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
    os.chmod(temporary, file_mode())  # mkstemp makes 0600
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
    """Load a contract, with an error that names the file and what is wrong with it.

    Artefacts carry ``schema_version``; one written by another version of the lab stops here
    with the file, its version and the version this lab reads.
    """
    file = Path(path)
    if not file.is_file():
        raise ArtefactError(
            f"{file} does not exist: run the stage that writes it (`dvc repro`) or fix the path"
        )
    data = file.read_bytes()
    if "schema_version" in model.model_fields:
        try:
            raw = json.loads(data)
        except ValueError as error:
            raise ArtefactError(f"{file} is not valid JSON ({error}); {recovery(file)}") from None
        version = raw.get("schema_version", 1) if isinstance(raw, dict) else None
        if version != SCHEMA_VERSION:
            raise ArtefactError(
                f"{file} was written with artefact schema {version}; this lab (collapse-lab-shared "
                f"{_lab_version()}) reads schema {SCHEMA_VERSION}. Re-create it with `dvc repro` "
                "(or read it with the lab version that wrote it)"
            )
    try:
        return model.model_validate_json(data)
    except ValidationError as error:
        raise ArtefactError(f"{file} is not a valid {model.__name__}:\n{error}") from error


def _lab_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("collapse-lab-shared")
    except PackageNotFoundError:
        return "unknown"


def verify(ref: ShardRef) -> Path:
    """The shard's path, after checking it exists and its content hash is the recorded one."""
    path = Path(ref.path)
    if not path.is_file():
        raise ArtefactError(
            f"shard {ref.path} is missing (expected sha256 {ref.sha256}); {recovery(path.parent)}"
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


CARD = "card.json"


def _model_files(directory: Path) -> list[str]:
    """Every file of a model folder except its card, as sorted relative POSIX paths."""
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                  if p.is_file() and p.name != CARD)


def read_model(model_dir: str | Path) -> ModelCard:
    """The card of ``model_dir``, after checking every file of the folder against it (once).

    A file the card does not list (e.g. a pickled ``pytorch_model.bin`` dropped in) is refused
    too: the folder must hold exactly what the fit stage wrote.
    """
    directory = Path(model_dir)
    card = read_json(directory / CARD, ModelCard)
    present = _model_files(directory)
    missing = sorted(set(card.files) - set(present))
    if missing:
        raise ArtefactError(f"{directory}: {', '.join(missing)} missing; {recovery(directory)}")
    unknown = sorted(set(present) - set(card.files))
    if unknown:
        raise ArtefactError(
            f"{directory} holds files its card does not list ({', '.join(unknown)}); the lab "
            f"loads only what its fit stage wrote: remove them, or {recovery(directory)}"
        )
    for name, expected in card.files.items():
        actual = sha256_file(directory / name)
        if actual != expected:
            raise ShardIntegrityError(str(directory / name), expected, actual, what="model file")
    return card


def write_model_card(
    model_dir: str | Path,
    summary: FitSummary,
    *,
    modality: str,
    lineage: str | None,
    iteration: int,
    manifest_sha256: str,
    train_items: int,
    seed: int,
) -> ModelCard:
    """Wrap a service's :class:`FitSummary` into ``model_dir/card.json`` (written last)."""
    directory = Path(model_dir)
    if not (directory / summary.weights_file).is_file():
        raise ArtefactError(f"the fit wrote no {summary.weights_file} in {directory}")
    card = ModelCard(
        modality=modality,
        lineage=lineage,
        iteration=iteration,
        manifest_sha256=manifest_sha256,
        train_items=train_items,
        hyperparameters=summary.hyperparameters,
        parameter_count=summary.parameter_count,
        weights_file=summary.weights_file,
        files={name: sha256_file(directory / name) for name in _model_files(directory)},
        seed=seed,
        library_versions=summary.library_versions,
        compute=summary.compute,
    )
    write_json(directory / CARD, card)
    return card
