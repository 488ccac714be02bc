"""Token shards on disk and memory-mapped views of them.

A token shard is one ``.npy`` file holding a 1-D ``uint16`` array: its documents concatenated,
each starting with the BOS id (and usually ending with EOS; a generated document cut at the
maximum length may lack it). ``ShardRef.items`` is the number of documents and
``ShardRef.format`` is :data:`TOKEN_FORMAT`.

Readers never load a shard into memory: :class:`TokenShard` memory-maps one shard and finds its
documents; :class:`TokenWindows` presents the documents a manifest selects, across shards, as one
virtual token stream cut into training windows, reading each window through the memory maps.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from collapse.contracts import ManifestEntry, ShardRef
from collapse.store import ArtefactError, verify, write_shard

TOKEN_FORMAT = "npy-uint16-docs"
TOKEN_DTYPE = np.dtype("<u2")
_SCAN_CHUNK = 1 << 20  # tokens examined at a time when looking for BOS ids (2 MiB of uint16)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _checked_document(index: int, doc: np.ndarray, bos_id: int) -> np.ndarray:
    """``doc`` as little-endian uint16, after checking it is a well-formed document."""
    array = np.asarray(doc)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"document {index} must be a non-empty 1-D array of token ids, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"document {index} must hold integer token ids, got dtype {array.dtype}")
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > np.iinfo(np.uint16).max:
        raise ValueError(f"document {index} has token ids in [{low}, {high}]; ids must be in [0, 65535] (uint16)")
    if int(array[0]) != bos_id:
        raise ValueError(f"document {index} starts with token {int(array[0])}, not the BOS id {bos_id}")
    inner = np.flatnonzero(array[1:] == bos_id)
    if inner.size:
        raise ValueError(
            f"document {index} contains the BOS id {bos_id} again at position {int(inner[0]) + 1}: BOS may only "
            "start a document (split it into several documents)"
        )
    return array.astype(TOKEN_DTYPE, copy=False)


def write_token_shard(
    path: Path,
    docs: Sequence[np.ndarray],
    *,
    bos_id: int,
    origin: Literal["real", "synthetic"],
    produced_by: int,
) -> ShardRef:
    """Write ``docs`` (each ``[bos, ...]``) as one token shard at ``path`` (+ its ``.json`` sidecar).

    The file is exactly what ``np.save(handle, np.concatenate(docs).astype("<u2"), allow_pickle=False)``
    writes, but documents are streamed after the header, so no second copy of the shard is made.
    """
    if not 0 <= bos_id <= np.iinfo(np.uint16).max:
        raise ValueError(f"bos_id must be a uint16 token id, got {bos_id}")
    checked = [_checked_document(index, doc, bos_id) for index, doc in enumerate(docs)]
    total = sum(int(doc.size) for doc in checked)

    def write(temporary: Path) -> None:
        header = {"descr": np.lib.format.dtype_to_descr(TOKEN_DTYPE), "fortran_order": False, "shape": (total,)}
        with open(temporary, "wb") as handle:
            np.lib.format.write_array_header_1_0(handle, header)  # what np.save writes for a 1-D uint16 array
            for doc in checked:
                handle.write(doc.tobytes())

    return write_shard(path, write, items=len(checked), origin=origin, produced_by=produced_by, format=TOKEN_FORMAT)


# ---------------------------------------------------------------------------------------------
# One shard
# ---------------------------------------------------------------------------------------------


def _open_tokens(path: Path) -> np.ndarray:
    try:
        tokens = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as error:
        raise ArtefactError(f"token shard {path} is not a readable .npy file: {error}") from error
    if tokens.ndim != 1 or tokens.dtype != TOKEN_DTYPE:
        raise ArtefactError(
            f"token shard {path} holds a {tokens.dtype} array of shape {tokens.shape}; expected 1-D uint16 "
            f"({TOKEN_FORMAT}): re-create it with write_token_shard"
        )
    return tokens


def _find_bos(tokens: np.ndarray, bos_id: int) -> np.ndarray:
    """(documents,) int64 positions of ``bos_id`` in ``tokens``, scanned chunk by chunk."""
    found = [
        np.flatnonzero(tokens[start : start + _SCAN_CHUNK] == bos_id) + start
        for start in range(0, tokens.shape[0], _SCAN_CHUNK)
    ]
    return np.concatenate(found).astype(np.int64) if found else np.zeros(0, dtype=np.int64)


class TokenShard:
    """A verified, memory-mapped token shard and the positions of its documents."""

    def __init__(self, ref: ShardRef, bos_id: int) -> None:
        if ref.format != TOKEN_FORMAT:
            raise ArtefactError(f"shard {ref.path} has format {ref.format!r}, not a token shard ({TOKEN_FORMAT!r})")
        self.ref = ref
        self.bos_id = bos_id
        self.path = verify(ref)
        self.tokens = _open_tokens(self.path)  # (tokens,) uint16, memory-mapped
        self.doc_starts = _find_bos(self.tokens, bos_id)  # (documents,) int64
        if self.tokens.shape[0] and (self.doc_starts.size == 0 or self.doc_starts[0] != 0):
            raise ArtefactError(f"token shard {ref.path} does not start with the BOS id {bos_id}: wrong tokenizer?")
        if self.doc_starts.size != ref.items:
            raise ArtefactError(
                f"token shard {ref.path} holds {self.doc_starts.size} documents (BOS id {bos_id}) but its ref "
                f"says {ref.items}: wrong tokenizer, or re-create the shard"
            )
        self.doc_ends = np.append(self.doc_starts[1:], self.tokens.shape[0])  # (documents,) int64

    def __len__(self) -> int:
        return int(self.doc_starts.size)

    @property
    def total_tokens(self) -> int:
        return int(self.tokens.shape[0])

    def document(self, i: int) -> np.ndarray:
        """(length,) uint16 tokens of document ``i`` (a view into the memory map)."""
        index = operator.index(i)
        count = len(self)
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError(f"document {i} out of range for shard {self.ref.path} with {count} documents")
        return self.tokens[self.doc_starts[index] : self.doc_ends[index]]

    def doc_bounds(self, indices: Sequence[int] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(starts, ends) int64 token positions of all documents, or of the selected ``indices``."""
        if indices is None:
            return self.doc_starts, self.doc_ends
        selected = np.asarray(indices, dtype=np.int64)  # (selected,)
        if selected.size and (selected.min() < 0 or selected.max() >= len(self)):
            raise IndexError(f"document indices out of range for shard {self.ref.path} with {len(self)} documents")
        return self.doc_starts[selected], self.doc_ends[selected]

    def __getstate__(self) -> dict[str, Any]:
        # a pickled memmap would carry the whole shard: send the path and reopen on the other side
        state = dict(self.__dict__)
        del state["tokens"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.tokens = _open_tokens(self.path)


# ---------------------------------------------------------------------------------------------
# Many shards: training windows
# ---------------------------------------------------------------------------------------------


class TokenWindows:
    """Non-overlapping ``block_size + 1``-token windows over the documents a manifest selects.

    The selected documents (all of an entry's shard when ``indices`` is None, else the listed
    ones in order) of all entries, in entry order, form one virtual stream; window ``i`` is
    ``stream[i * block_size : i * block_size + block_size + 1]`` (inputs and shifted targets of a
    block), and a last partial window is dropped. The stream is never materialised: it is kept as
    spans (shard, start, end) of consecutive documents and each window is copied out of the
    memory maps, with a binary search over the cumulative span lengths.
    """

    def __init__(self, entries: Sequence[ManifestEntry], bos_id: int, block_size: int) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.block_size = block_size
        self.bos_id = bos_id
        self.shards: list[TokenShard] = []
        opened: dict[tuple[str, str], int] = {}
        span_shard: list[np.ndarray] = []
        span_start: list[np.ndarray] = []
        span_end: list[np.ndarray] = []
        documents = 0
        for entry in entries:
            key = (entry.shard.path, entry.shard.sha256)
            if key not in opened:
                opened[key] = len(self.shards)
                self.shards.append(TokenShard(entry.shard, bos_id))
            number = opened[key]
            shard = self.shards[number]
            if entry.indices is None:
                starts = np.array([0], dtype=np.int64)
                ends = np.array([shard.total_tokens], dtype=np.int64)
                documents += len(shard)
            else:
                starts, ends = _merge_adjacent(*shard.doc_bounds(entry.indices))
                documents += len(entry.indices)
            keep = ends > starts  # (spans,) drop empty spans (an empty shard)
            span_shard.append(np.full(int(keep.sum()), number, dtype=np.int64))
            span_start.append(starts[keep])
            span_end.append(ends[keep])
        # (spans,) each: the stream is span 0, then span 1, …
        self._span_shard = np.concatenate(span_shard) if span_shard else np.zeros(0, dtype=np.int64)
        self._span_start = np.concatenate(span_start) if span_start else np.zeros(0, dtype=np.int64)
        lengths = (np.concatenate(span_end) if span_end else np.zeros(0, dtype=np.int64)) - self._span_start
        self._span_offset = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)  # (spans + 1,)
        self.total_tokens = int(self._span_offset[-1])
        self.documents = documents
        self._count = (self.total_tokens - 1) // block_size if self.total_tokens > block_size else 0

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i: int) -> np.ndarray:
        """(block_size + 1,) int64 tokens of window ``i``."""
        index = operator.index(i)
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError(
                f"window {i} out of range: there are {self._count} windows of {self.block_size + 1} tokens"
            )
        position = index * self.block_size
        window = np.empty(self.block_size + 1, dtype=np.int64)  # (block_size + 1,)
        span = int(np.searchsorted(self._span_offset, position, side="right")) - 1
        filled = 0
        while filled < window.shape[0]:
            offset = position + filled - int(self._span_offset[span])  # where we are inside the span
            available = int(self._span_offset[span + 1] - self._span_offset[span]) - offset
            take = min(available, window.shape[0] - filled)
            start = int(self._span_start[span]) + offset
            window[filled : filled + take] = self.shards[self._span_shard[span]].tokens[start : start + take]
            filled += take
            span += 1
        return window


def _merge_adjacent(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Join selected documents that follow each other in the shard into single (start, end) spans."""
    if starts.size == 0:
        return starts, ends
    breaks = np.flatnonzero(starts[1:] != ends[:-1]) + 1  # (spans - 1,) first document of each new span
    first = np.concatenate([[0], breaks])  # (spans,)
    last = np.concatenate([breaks - 1, [starts.size - 1]])  # (spans,)
    return starts[first].astype(np.int64), ends[last].astype(np.int64)
