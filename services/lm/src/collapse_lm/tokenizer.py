"""The byte-level BPE tokenizer of a language-model lineage: train, save, load, encode documents.

The tokenizer is trained once, on the real training documents only, and shared by every model of
the lineage. It is lossless (byte-level, no normalisation, no added prefix space): for any text,
``decode(encode(text)) == text``. It adds no special tokens by itself; :func:`encode_documents`
frames each document as ``[BOS] + ids + [EOS]``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast

from collapse.store import ArtefactError

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
SPECIAL_TOKENS: tuple[str, ...] = (BOS, EOS, PAD)  # ids 0, 1, 2
MAX_VOCAB_SIZE = 65535  # token ids are stored as uint16
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)  # the byte alphabet and the special tokens
PROGRESS_MIN_DOCS = 20_000  # show a progress bar when encoding at least this many documents


def _byte_level_bpe() -> Tokenizer:
    """An untrained byte-level BPE: GPT-2 style pre-tokenisation, no normaliser, no post-processor."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def train_tokenizer(docs: Iterable[str], vocab_size: int, out_dir: Path) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of ``vocab_size`` tokens on ``docs`` and save it to ``out_dir``.

    Special tokens take ids 0-2 (:data:`BOS`, :data:`EOS`, :data:`PAD`), then the 256 byte
    symbols, then the merges. The same documents give byte-identical files (BPE training in
    ``tokenizers`` breaks ties between equally frequent pairs deterministically, whatever the
    number of threads). ``out_dir`` is replaced atomically: the tokenizer is saved into a
    temporary directory beside it and renamed onto it, so a reader never sees half a tokenizer.
    """
    if not MIN_VOCAB_SIZE <= vocab_size <= MAX_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size must be between {MIN_VOCAB_SIZE} (bytes + special tokens) and {MAX_VOCAB_SIZE} "
            f"(token ids are stored as uint16), got {vocab_size}"
        )
    backend = _byte_level_bpe()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(docs, trainer=trainer)
    tokenizer = _wrap(backend)
    _save_atomically(tokenizer, Path(out_dir))
    return tokenizer


def _wrap(backend: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        clean_up_tokenization_spaces=False,  # would change " ." into "." on decode
        model_max_length=1 << 30,  # documents are cut into blocks later; no length warnings here
    )


def _save_atomically(tokenizer: PreTrainedTokenizerFast, out_dir: Path) -> None:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the tokenizer is an ordinary artefact
    retired: Path | None = None
    try:
        tokenizer.save_pretrained(staging)
        if out_dir.exists():  # a directory cannot be renamed onto a non-empty one: move it aside first
            retired = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
            os.replace(out_dir, retired / out_dir.name)
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)


def load_tokenizer(directory: Path) -> PreTrainedTokenizerFast:
    """The tokenizer saved by :func:`train_tokenizer` in ``directory``."""
    directory = Path(directory)
    if not (directory / "tokenizer.json").is_file():
        raise ArtefactError(
            f"no tokenizer in {directory} (tokenizer.json is missing): run the prepare stage that trains "
            "it (`dvc repro`) or fix the path"
        )
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(directory))
    if tokenizer.bos_token != BOS or tokenizer.eos_token != EOS or tokenizer.pad_token != PAD:
        raise ArtefactError(
            f"tokenizer in {directory} has special tokens bos={tokenizer.bos_token!r}, eos={tokenizer.eos_token!r}, "
            f"pad={tokenizer.pad_token!r}; expected {BOS!r}, {EOS!r}, {PAD!r}: re-train it with train_tokenizer"
        )
    return tokenizer


def encode_documents(
    tokenizer: PreTrainedTokenizerFast, docs: Sequence[str], batch_size: int = 1000
) -> list[np.ndarray]:
    """Each document as a uint16 array ``[bos] + ids + [eos]`` (shape ``(len(ids) + 2,)``)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(tokenizer) > MAX_VOCAB_SIZE + 1:
        raise ValueError(
            f"tokenizer has {len(tokenizer)} tokens; ids must fit in uint16 (at most {MAX_VOCAB_SIZE + 1} tokens)"
        )
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is None or eos is None:
        raise ValueError("tokenizer has no bos/eos token: use one made by train_tokenizer")
    encoded: list[np.ndarray] = []
    batches = range(0, len(docs), batch_size)
    for start in tqdm(batches, desc="tokenizing", unit="batch", disable=len(docs) < PROGRESS_MIN_DOCS):
        batch = list(docs[start : start + batch_size])
        # split_special_tokens: a literal "<|bos|>" inside a text is ordinary text, never a BOS id
        ids = tokenizer(batch, add_special_tokens=False, split_special_tokens=True, return_attention_mask=False)[
            "input_ids"
        ]
        for row in ids:
            document = np.empty(len(row) + 2, dtype=np.uint16)  # (n + 2,)
            document[0], document[-1] = bos, eos
            document[1:-1] = row
            encoded.append(document)
    return encoded
