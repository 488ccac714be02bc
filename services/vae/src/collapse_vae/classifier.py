"""The "single mode" instrument: a small CNN trained once on real training images only.

Its predicted-class histogram over generated images gives ``class_entropy`` (in nats; ln 10 ≈
2.303 is uniform over Fashion-MNIST's 10 classes, 0 is a single class) and
``top_class_share``; its penultimate features (global average pool of the last conv block)
give a Fréchet distance between real test images and generated ones (FID-style, but in this
lab's own feature space, so comparable within the lab only).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from collapse_vae.model import as_unit

WEIGHTS = "classifier.safetensors"
CONFIG = "classifier.json"


@dataclass(frozen=True)
class ClassifierArch:
    image_channels: int
    height: int
    width: int
    classes: int
    hidden: tuple[int, ...]

    @property
    def features(self) -> int:
        return self.hidden[-1]


class SmallCnn(nn.Module):
    """[Conv3×3 → BatchNorm → ReLU → MaxPool2] per width, global average pool, linear head."""

    def __init__(self, arch: ClassifierArch) -> None:
        super().__init__()
        self.arch = arch
        widths = (arch.image_channels, *arch.hidden)
        self.blocks = nn.Sequential(*(
            nn.Sequential(nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(),
                          nn.MaxPool2d(2))
            for a, b in itertools.pairwise(widths)
        ))
        self.head = nn.Linear(arch.features, arch.classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) in [0, 1] → (B, features), the space of the Fréchet distance."""
        return self.blocks(x).mean(dim=(2, 3))  # (B, hidden[-1], h, w) → (B, hidden[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, classes) logits


def train_classifier(arch: ClassifierArch, images: np.ndarray, labels: np.ndarray, *, epochs: int,
                     batch_size: int, learning_rate: float, seed: int, device: str = "cpu") -> SmallCnn:
    torch.manual_seed(seed)
    model = SmallCnn(arch).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    x_all = torch.from_numpy(images)  # (N, [C,] H, W) uint8
    y_all = torch.from_numpy(labels.astype(np.int64))  # (N,)
    order = torch.Generator().manual_seed(seed)
    steps = epochs * math.ceil(len(x_all) / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, learning_rate, total_steps=steps)
    model.train()
    with tqdm(total=steps, desc="metric classifier", unit="step") as bar:
        for _ in range(epochs):
            permutation = torch.randperm(len(x_all), generator=order)
            for start in range(0, len(x_all), batch_size):
                idx = permutation[start : start + batch_size]
                if len(idx) < 2:  # BatchNorm needs two items
                    schedule.step()
                    continue
                loss = F.cross_entropy(model(as_unit(x_all[idx].to(device))), y_all[idx].to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                schedule.step()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return model.cpu().eval()


@torch.no_grad()
def predict(model: SmallCnn, images: np.ndarray | torch.Tensor, batch_size: int = 1000,
            device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(classes (N,), features (N, F) float64) of uint8 images."""
    model.to(device).eval()
    x_all = torch.as_tensor(images)
    classes, features = [], []
    for start in range(0, len(x_all), batch_size):
        f = model.features(as_unit(x_all[start : start + batch_size].to(device)))  # (B, F)
        classes.append(model.head(f).argmax(1).cpu().numpy())
        features.append(f.double().cpu().numpy())
    if not classes:
        return np.zeros(0, dtype=np.int64), np.zeros((0, model.arch.features))
    return np.concatenate(classes), np.concatenate(features)


def class_histogram_metrics(classes: np.ndarray, n_classes: int) -> dict[str, float]:
    """``class_entropy`` (nats) and ``top_class_share`` of the predicted classes."""
    counts = np.bincount(classes, minlength=n_classes).astype(np.float64)
    p = counts / max(1.0, counts.sum())
    nonzero = p[p > 0]
    return {"class_entropy": float(-(nonzero * np.log(nonzero)).sum() + 0.0),
            "top_class_share": float(p.max())}


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (F,), covariance (F, F)) in float64."""
    return features.mean(0), np.cov(features, rowvar=False)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2 (Σ1^½ Σ2 Σ1^½)^½): tr((Σ1Σ2)^½) via symmetric eigenvalues."""
    root1 = _sqrt_psd(cov1)
    middle = np.linalg.eigvalsh(root1 @ cov2 @ root1)  # eigenvalues of Σ1^½ Σ2 Σ1^½ (≥ 0)
    cross = np.sqrt(np.clip(middle, 0, None)).sum()
    return float(max(0.0, ((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * cross))


# --- files ---------------------------------------------------------------------------------------


def save_classifier(model: SmallCnn, folder: Path, extra: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    from collapse.store import atomic_path, write_plain_json

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS) as temporary:
        save_file(tensors, str(temporary))
    arch = asdict(model.arch) | {"hidden": list(model.arch.hidden)}
    write_plain_json(folder / CONFIG, {"arch": arch, **extra})


def load_classifier(folder: Path) -> tuple[SmallCnn, dict[str, Any]]:
    from safetensors.torch import load_file

    meta = json.loads((folder / CONFIG).read_text())
    arch = ClassifierArch(**{**meta["arch"], "hidden": tuple(meta["arch"]["hidden"])})
    model = SmallCnn(arch)
    model.load_state_dict(load_file(str(folder / WEIGHTS)))
    return model.eval(), meta
