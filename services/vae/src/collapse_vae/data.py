"""Real images: Fashion-MNIST (embedded default, from Debian's dataset-fashion-mnist) and CelebA.

Fashion-MNIST is looked for, in order, in ``data.path``, in the Debian package's install
location, and in the lab's cache; when it is nowhere, the lab fetches the .deb itself with
``apt-get download`` (no root needed) and unpacks it with ``dpkg-deb -x`` into the cache. The
.deb and the four files are checked against pinned sha256 hashes before any use.

CelebA is read through torchvision from a local root (never downloaded), centre-cropped and
resized to 64×64 as in the paper's App. E, with its official train/test partition.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


class DataError(RuntimeError):
    """Real data is missing or not what it should be; the message says how to fix it."""


# --- Fashion-MNIST ------------------------------------------------------------------------------

FASHION_PACKAGE = "dataset-fashion-mnist"
FASHION_VERSION = "0.0~git20200523.55506a9-1"
FASHION_DEB = f"{FASHION_PACKAGE}_{FASHION_VERSION.replace(':', '%3a')}_all.deb"
FASHION_DEB_SHA256 = "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0"
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_IN_DEB = Path("usr/share/datasets/fashion-mnist")
FASHION_FILES = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
_APT_TIMEOUT_S = 600


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fashion_hint(cache_dir: Path) -> str:
    files = ", ".join(FASHION_FILES)
    return (
        f"Fashion-MNIST needs the four idx files {files}. Install the Debian package "
        f"(`apt-get install {FASHION_PACKAGE}`, files in {FASHION_SYSTEM_DIR}), or put the four "
        f"files in a folder and set `vae.config.data.path` to it (e.g. `dvc exp run -S "
        f"'vae.config={{data: {{path: /my/fashion-mnist}}}}'`), or unpack {FASHION_DEB} "
        f"(sha256 {FASHION_DEB_SHA256}) into {cache_dir} with `dpkg-deb -x`"
    )


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in FASHION_FILES)


def verify_fashion_files(folder: Path) -> Path:
    """``folder`` after checking each of the four files against its pinned sha256."""
    missing = [name for name in FASHION_FILES if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{folder} lacks {', '.join(missing)}. " + _fashion_hint(folder))
    for name, expected in FASHION_FILES.items():
        actual = sha256_of(folder / name)
        if actual != expected:
            raise DataError(
                f"{folder / name} has sha256 {actual}, expected {expected} (Fashion-MNIST from "
                f"{FASHION_PACKAGE} {FASHION_VERSION}): the file is corrupted or a different "
                "release; delete it so that it is fetched again, or point data.path at a good copy"
            )
    return folder


def verify_deb(deb: Path) -> Path:
    actual = sha256_of(deb)
    if actual != FASHION_DEB_SHA256:
        raise DataError(
            f"{deb} has sha256 {actual}, expected {FASHION_DEB_SHA256} ({FASHION_PACKAGE} "
            f"{FASHION_VERSION}); delete it so that the lab fetches it again with "
            f"`apt-get download {FASHION_PACKAGE}={FASHION_VERSION}`"
        )
    return deb


def _apt_download(staging: Path, cache_dir: Path) -> Path:
    """``apt-get download`` the pinned .deb into ``staging`` (``apt-get update`` first if root
    and the package lists do not know it)."""
    apt = shutil.which("apt-get")
    if apt is None or shutil.which("dpkg-deb") is None:
        raise DataError("Fashion-MNIST is not installed and this host has no apt-get/dpkg-deb to "
                        "fetch it. " + _fashion_hint(cache_dir))
    command = [apt, "download", f"{FASHION_PACKAGE}={FASHION_VERSION}"]

    def attempt() -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(command, cwd=staging, capture_output=True, text=True,
                                  timeout=_APT_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise DataError(f"`{' '.join(command[1:])}` failed: {error}. " + _fashion_hint(cache_dir)) from error

    result = attempt()
    unknown = result.returncode != 0 and ("Unable to locate" in result.stderr
                                          or "Can't select" in result.stderr)
    if unknown and hasattr(os, "geteuid") and os.geteuid() == 0:
        print(f"apt does not know {FASHION_PACKAGE}; running `apt-get update` (as root)")
        update = subprocess.run([apt, "update"], capture_output=True, text=True,
                                timeout=_APT_TIMEOUT_S, check=False)
        if update.returncode != 0:
            raise DataError(f"`apt-get update` failed:\n{update.stderr[-2000:]}\n" + _fashion_hint(cache_dir))
        result = attempt()
    elif unknown:
        raise DataError(
            f"apt's package lists do not know {FASHION_PACKAGE}={FASHION_VERSION} and this user is "
            "not root: run `sudo apt-get update` (Debian bookworm or later has the package) and "
            "retry. " + _fashion_hint(cache_dir)
        )
    debs = sorted(staging.glob("*.deb"))
    if result.returncode != 0 or not debs:
        output = (result.stderr or result.stdout).strip()[-2000:]
        raise DataError(f"`apt-get download {FASHION_PACKAGE}={FASHION_VERSION}` failed "
                        f"(exit status {result.returncode}):\n{output}\n" + _fashion_hint(cache_dir))
    return debs[0]


def fetch_fashion_mnist(cache_dir: Path) -> Path:
    """The cached, verified Fashion-MNIST folder, fetched with apt and unpacked if absent.

    A .deb already in ``cache_dir`` is reused (after its hash check); the unpacked folder only
    replaces the final one once all four files verified, so a bad download never sits there.
    """
    cache_dir = Path(cache_dir).resolve()
    final = cache_dir / FASHION_IN_DEB
    if _complete(final):
        return verify_fashion_files(final)
    cache_dir.mkdir(parents=True, exist_ok=True)
    deb = cache_dir / FASHION_DEB
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=cache_dir) as scratch:
        staging = Path(scratch)
        if not deb.is_file():
            staging.chmod(0o755)  # apt's unprivileged download user may then write here
            print(f"fetching {FASHION_PACKAGE} {FASHION_VERSION} with apt-get download into {cache_dir}")
            downloaded = _apt_download(staging, cache_dir)
            verify_deb(downloaded)
            os.replace(downloaded, deb)
        verify_deb(deb)
        unpacked = staging / "root"
        result = subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], capture_output=True,
                                text=True, check=False)
        if result.returncode != 0:
            raise DataError(f"`dpkg-deb -x {deb}` failed:\n{result.stderr[-2000:]}\n" + _fashion_hint(cache_dir))
        verify_fashion_files(unpacked / FASHION_IN_DEB)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            shutil.rmtree(final)
        os.replace(unpacked / FASHION_IN_DEB, final)
    return verify_fashion_files(final)


def fashion_mnist_dir(path: str | None, cache_dir: str) -> Path:
    """Where the verified Fashion-MNIST files are (``path``, the system package, or the cache)."""
    if path is not None:
        folder = Path(path)
        if not _complete(folder):
            missing = [name for name in FASHION_FILES if not (folder / name).is_file()]
            raise DataError(f"data.path {folder} lacks {', '.join(missing)}. " + _fashion_hint(Path(cache_dir)))
        return verify_fashion_files(folder)
    if _complete(FASHION_SYSTEM_DIR):
        return verify_fashion_files(FASHION_SYSTEM_DIR)
    return fetch_fashion_mnist(Path(cache_dir))


def read_idx(path: Path) -> np.ndarray:
    """An idx file (gzip): uint8 images (N, rows, cols) or labels (N,)."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    magic = int.from_bytes(raw[0:4], "big")
    if magic == 2051:  # images: magic, n, rows, cols, then n·rows·cols bytes
        n, rows, cols = (int.from_bytes(raw[i : i + 4], "big") for i in (4, 8, 12))
        data = np.frombuffer(raw, dtype=np.uint8, offset=16)
        shape: tuple[int, ...] = (n, rows, cols)
    elif magic == 2049:  # labels: magic, n, then n bytes
        n = int.from_bytes(raw[4:8], "big")
        data = np.frombuffer(raw, dtype=np.uint8, offset=8)
        shape = (n,)
    else:
        raise DataError(f"{path} is not an idx image/label file (magic {magic})")
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path} holds {data.size} values, its header says {shape}")
    return data.reshape(shape).copy()


@dataclass(frozen=True)
class Split:
    """uint8 images (N, H, W) or (N, C, H, W) with integer class labels (N,)."""

    images: np.ndarray
    labels: np.ndarray


def load_fashion_mnist(folder: Path) -> tuple[Split, Split]:
    """(official train split, official test split)."""
    train = Split(read_idx(folder / "train-images-idx3-ubyte.gz"),
                  read_idx(folder / "train-labels-idx1-ubyte.gz").astype(np.int64))
    test = Split(read_idx(folder / "t10k-images-idx3-ubyte.gz"),
                 read_idx(folder / "t10k-labels-idx1-ubyte.gz").astype(np.int64))
    return train, test


# --- CelebA -------------------------------------------------------------------------------------

CELEBA_FOLDER = "celeba"
CELEBA_IMAGES = "img_align_celeba"
CELEBA_ANNOTATIONS = ("list_eval_partition.txt", "list_attr_celeba.txt", "identity_CelebA.txt",
                      "list_bbox_celeba.txt", "list_landmarks_align_celeba.txt")


def celeba_hint(root: Path | None) -> str:
    where = f"{root}/{CELEBA_FOLDER}" if root is not None else f"<root>/{CELEBA_FOLDER}"
    return (
        f"CelebA is read from a local torchvision root, never downloaded: put the aligned & cropped "
        f"images in {where}/{CELEBA_IMAGES}/ (unzipped img_align_celeba.zip: 000001.jpg …) and the "
        f"annotation files {', '.join(CELEBA_ANNOTATIONS)} in {where}/, then set "
        "`vae.config.data.path` to the root (the folder that holds celeba/)"
    )


def check_celeba(root: Path) -> None:
    """Name exactly which expected CelebA files are absent (before torchvision says less)."""
    base = root / CELEBA_FOLDER
    missing = [str(base / name) for name in CELEBA_ANNOTATIONS if not (base / name).is_file()]
    if not (base / CELEBA_IMAGES).is_dir():
        missing.insert(0, f"{base / CELEBA_IMAGES}/ (folder of .jpg images)")
    if missing:
        raise DataError(f"CelebA files missing: {'; '.join(missing)}. " + celeba_hint(root))


def _celeba_dataset(root: Path, split: str, verify_checksums: bool, transform: object) -> object:
    from collapse_vae.celeba import LocalCelebA

    try:
        return LocalCelebA(root, split, transform, verify_checksums=verify_checksums)
    except RuntimeError as error:
        raise DataError(
            f"torchvision could not open CelebA at {root}: {error}. The annotation files must be "
            "the official ones (their md5 is checked; set vae.config.data.verify_checksums: false "
            "for a re-packed copy). " + celeba_hint(root)
        ) from error


def celeba_class(attributes: np.ndarray) -> np.ndarray:
    """(N, k) 0/1 attributes → class index Σ_j a_j 2^j, in [0, 2^k)."""
    return (attributes.astype(np.int64) << np.arange(attributes.shape[1], dtype=np.int64)).sum(1)


def load_celeba(root: Path, split: str, positions: Sequence[int] | None, *, crop: int, side: int,
                attributes: Sequence[str], verify_checksums: bool, workers: int) -> Split:
    """Images ``positions`` of the official ``split`` (all if None): uint8 (N, 3, side, side)
    after a centre crop of ``crop`` pixels and an antialiased resize; labels from ``attributes``."""
    import torch
    from torchvision import transforms  # type: ignore[import-untyped]

    check_celeba(root)
    transform = transforms.Compose([transforms.CenterCrop(crop), transforms.Resize(side, antialias=True),
                                    transforms.PILToTensor()])
    dataset = _celeba_dataset(root, split, verify_checksums, transform)
    names = list(dataset.attr_names)  # type: ignore[attr-defined]
    unknown = [name for name in attributes if name not in names]
    if unknown:
        raise DataError(f"data.attributes {unknown} are not CelebA attributes; allowed: {', '.join(names)}")
    columns = [names.index(name) for name in attributes]
    chosen = list(range(len(dataset))) if positions is None else list(positions)  # type: ignore[arg-type]
    if chosen and max(chosen) >= len(dataset):  # type: ignore[arg-type]
        raise DataError(f"CelebA {split} split has {len(dataset)} images, {max(chosen) + 1} needed")  # type: ignore[arg-type]
    subset: torch.utils.data.Dataset[Any] = torch.utils.data.Subset(dataset, chosen)  # type: ignore[arg-type]
    loader = torch.utils.data.DataLoader(subset, batch_size=256, shuffle=False, num_workers=workers)
    images = np.zeros((len(chosen), 3, side, side), dtype=np.uint8)
    attrs = np.zeros((len(chosen), len(columns)), dtype=np.int64)
    offset = 0
    for batch, target in loader:  # batch (B, 3, side, side) uint8, target (B, 40) 0/1
        images[offset : offset + len(batch)] = batch.numpy()
        attrs[offset : offset + len(batch)] = target[:, columns].numpy()
        offset += len(batch)
    return Split(images, celeba_class(attrs))


def celeba_split_size(root: Path, split: str) -> int:
    """Images in the official ``split`` (from list_eval_partition.txt; no image is opened)."""
    check_celeba(root)
    code = {"train": "0", "valid": "1", "test": "2"}[split]
    lines = (root / CELEBA_FOLDER / "list_eval_partition.txt").read_text().split("\n")
    return sum(1 for line in lines if line.split()[1:2] == [code])
