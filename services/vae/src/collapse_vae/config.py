"""VAE configuration and its scale presets (smoke / default / paper)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from collapse.contracts import Contract

CELEBA_DEFAULT_ATTRIBUTES = ("Male", "Eyeglasses", "Smiling")


class VaeData(Contract):
    """Where the real images come from, and how many of them each split uses."""

    source: Literal["fashion_mnist", "celeba"] = "fashion_mnist"
    path: str | None = Field(
        default=None,
        description=(
            "fashion_mnist: a folder holding the four *-ubyte.gz idx files (else the Debian "
            "package's /usr/share/datasets/fashion-mnist, else the lab's own apt fetch); "
            "celeba: the torchvision root that holds celeba/"
        ),
    )
    cache_dir: str = Field(default=".cache/collapse-vae", description="where fetched data is kept")
    train_items: int = Field(ge=1, description="T: real training images of iteration 1")
    reserve_items: int = Field(
        default=0, ge=0, description="real training images beyond T for fresh-data policies"
    )
    test_items: int | None = Field(
        default=None, ge=1, description="real test images used by evaluate (None: the whole test split)"
    )
    resolution: int | None = Field(
        default=None, ge=8, le=256,
        description="side of the stored images (None: 28 for Fashion-MNIST, 64 for CelebA)",
    )
    crop: int = Field(default=148, ge=8, description="CelebA: centre crop side before resizing")
    attributes: list[str] = Field(
        default_factory=lambda: list(CELEBA_DEFAULT_ATTRIBUTES),
        min_length=1, max_length=6,
        description="CelebA: binary attributes whose 2^k combinations are the metric's classes",
    )
    verify_checksums: bool = Field(
        default=True, description="CelebA: check torchvision's md5 of the annotation files"
    )
    workers: int = Field(default=0, ge=0, le=64, description="CelebA: image decoding processes")

    @property
    def side(self) -> int:
        if self.resolution is not None:
            return self.resolution
        return 28 if self.source == "fashion_mnist" else 64

    @model_validator(mode="after")
    def _fashion_is_28(self) -> VaeData:
        if self.source == "fashion_mnist" and self.resolution not in (None, 28):
            raise ValueError("data.resolution: Fashion-MNIST images are 28×28; leave it unset or 28")
        return self


class VaeModelConfig(Contract):
    """The App. E network (see collapse_vae.model); smaller widths for CPU presets."""

    hidden: list[int] = Field(default_factory=lambda: [32, 64, 128, 256, 512], min_length=1,
                              max_length=7, description="encoder channels, one stride-2 layer each")
    latent: int = Field(default=128, ge=1, le=4096)
    likelihood: Literal["bernoulli", "gaussian"] = "bernoulli"
    gaussian_sigma: float = Field(default=0.1, gt=0, le=10, description="σ for likelihood gaussian")


class VaeTrain(Contract):
    epochs: int = Field(ge=1, le=10_000, description="passes over the iteration's training set")
    batch_size: int = Field(default=64, ge=2, le=65_536)
    learning_rate: float = Field(default=1e-3, gt=0, le=1)
    threads: int = Field(default=2, ge=1, le=256, description="torch CPU threads (results depend on it)")
    device: Literal["cpu", "cuda"] = "cpu"


class VaeClassifier(Contract):
    """The metric's classifier, trained once in prepare on the real training split only."""

    hidden: list[int] = Field(default_factory=lambda: [32, 64, 128], min_length=1, max_length=6)
    train_items: int | None = Field(
        default=None, ge=1, description="real training images it learns from (None: the whole split)"
    )
    epochs: int = Field(default=3, ge=1, le=1000)
    batch_size: int = Field(default=128, ge=2)
    learning_rate: float = Field(default=2e-3, gt=0, le=1)


class VaeEval(Contract):
    samples: int = Field(default=2000, ge=2, description="generated images for class metrics and Fréchet")
    batch_size: int = Field(default=500, ge=1)


class VaeSampling(Contract):
    temperature: float = Field(
        default=1.0, gt=0, le=10, description="z ~ N(0, t²I); 1 is the prior (the paper)"
    )


class VaeConfig(Contract):
    data: VaeData
    model: VaeModelConfig = VaeModelConfig()
    train: VaeTrain
    classifier: VaeClassifier = VaeClassifier()
    eval: VaeEval = VaeEval()
    sampling: VaeSampling = VaeSampling()


PRESETS: dict[str, dict[str, Any]] = {
    # Tests: a few seconds per fit on 2 CPU cores.
    "smoke": {
        "data": {"train_items": 512, "reserve_items": 128, "test_items": 256},
        "model": {"hidden": [8, 16, 32], "latent": 8},
        "train": {"epochs": 2, "batch_size": 64, "learning_rate": 2e-3, "threads": 1},
        "classifier": {"hidden": [8, 16, 32], "train_items": 4000, "epochs": 2, "batch_size": 32,
                       "learning_rate": 1e-2},
        "eval": {"samples": 256, "batch_size": 256},
    },
    # A newcomer's CPU run: Fashion-MNIST, replace + accumulate × 5 iterations in ≈4–6 min
    # on 2 CPU cores (prepare, which trains the metric classifier once, ≈2–4 min more). The
    # App. E design at a quarter of its width and four layers (99k parameters); one thread:
    # on 2 shared cores a second OpenMP thread is slower, not faster, for a network this small.
    "default": {
        "data": {"train_items": 2000, "reserve_items": 1000},
        "model": {"hidden": [8, 16, 32, 64], "latent": 16},
        "train": {"epochs": 8, "batch_size": 32, "learning_rate": 2e-3, "threads": 1},
        "classifier": {"hidden": [16, 32, 64], "epochs": 2},
        "eval": {"samples": 2000, "batch_size": 500},
    },
    # The paper (App. E): CelebA 64×64, 32..512 channels, 128-d latent, 100 epochs, all
    # 162,770 official training images (≈163k generated per iteration). GPU.
    "paper": {
        "data": {"source": "celeba", "train_items": 162_770,
                 "reserve_items": 0, "resolution": 64, "workers": 8},
        "model": {"hidden": [32, 64, 128, 256, 512], "latent": 128},
        "train": {"epochs": 100, "batch_size": 64, "learning_rate": 1e-3, "threads": 8,
                  "device": "cuda"},
        "classifier": {"hidden": [32, 64, 128, 256], "epochs": 5, "batch_size": 256},
        "eval": {"samples": 10_000, "batch_size": 1000},
    },
}
