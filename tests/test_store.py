from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from collapse.store import (
    ArtefactError,
    ShardIntegrityError,
    atomic_write_bytes,
    read_array,
    read_shard_ref,
    sha256_file,
    write_array_shard,
)


def test_shard_round_trip_with_sidecar(tmp_path: Path) -> None:
    rows = np.arange(12.0).reshape(4, 3)
    ref = write_array_shard(tmp_path / "s" / "shard.npy", rows, origin="synthetic", produced_by=3)
    assert ref.items == 4 and ref.sha256 == sha256_file(tmp_path / "s" / "shard.npy")
    assert read_shard_ref(tmp_path / "s") == ref
    assert np.array_equal(read_array(ref), rows)
    assert np.array_equal(read_array(ref, [1, 3]), rows[[1, 3]])
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["shard.json", "shard.npy"]


def test_same_items_give_the_same_bytes(tmp_path: Path) -> None:
    rows = np.random.default_rng(0).standard_normal((50, 4))
    a = write_array_shard(tmp_path / "a.npy", rows, origin="real", produced_by=0)
    b = write_array_shard(tmp_path / "b.npy", rows.copy(), origin="real", produced_by=0)
    assert a.sha256 == b.sha256


def test_corrupted_shard_names_file_and_both_hashes(tmp_path: Path) -> None:
    ref = write_array_shard(tmp_path / "shard.npy", np.ones((3, 2)), origin="real", produced_by=0)
    data = bytearray((tmp_path / "shard.npy").read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "shard.npy").write_bytes(bytes(data))
    with pytest.raises(ShardIntegrityError) as caught:
        read_array(ref)
    message = str(caught.value)
    assert ref.path in message and ref.sha256 in message
    assert sha256_file(tmp_path / "shard.npy") in message


def test_missing_shard_is_named(tmp_path: Path) -> None:
    ref = write_array_shard(tmp_path / "shard.npy", np.ones((3, 2)), origin="real", produced_by=0)
    (tmp_path / "shard.npy").unlink()
    with pytest.raises(ArtefactError, match=f"shard {ref.path} is missing"):
        read_array(ref)


def test_failed_write_leaves_the_old_file_and_no_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"old")

    def explode(_: Path) -> None:
        raise RuntimeError("disk full")

    from collapse.store import write_shard

    with pytest.raises(RuntimeError):
        write_shard(target, explode, items=1, origin="real", produced_by=0, format="x")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
