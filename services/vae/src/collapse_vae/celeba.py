"""torchvision's CelebA reader, with the md5 check of the annotation files made optional.

A module of its own (not a class inside a function) so that DataLoader workers started with
``spawn`` can unpickle the dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torchvision.datasets import CelebA  # type: ignore[import-untyped]


class LocalCelebA(CelebA):  # type: ignore[misc]
    """CelebA from a local root, never downloaded; ``verify_checksums=False`` checks presence only."""

    def __init__(self, root: Path, split: str, transform: Any, *, verify_checksums: bool) -> None:
        self.verify_checksums = verify_checksums  # read by _check_integrity during __init__
        super().__init__(str(root), split=split, target_type="attr", transform=transform, download=False)

    def _check_integrity(self) -> bool:
        return super()._check_integrity() if self.verify_checksums else True
