"""The vae modality: real images → a fresh App. E VAE per iteration → images from the prior.

Paper Sec. 3.3 / App. E (CelebA 64×64, 100 epochs, 163k generated images per iteration); the
default scale runs the same loop on Fashion-MNIST with a narrower network so that it fits a
laptop CPU. Metrics on real test data: the negative ELBO (with its reconstruction and KL
parts), and "single mode" numbers from a classifier trained once on real training images.

Cost of the paper scale (an estimate: no GPU was available to measure it). The App. E
network at 64×64×3 has 6,365,315 parameters and costs ≈71M multiply-adds (≈0.14 GFLOP) per
image forward, ≈0.43 GFLOP per training image with the backward pass. One replace iteration
(162,770 images × 100 epochs, ≈254k Adam steps of 64) is ≈7e15 FLOP: ≈15–30 min on one
H100-class GPU (at batch 64 the step is bound by kernel launches, ≈2–4 ms, more than by
FLOPs), and accumulate's iteration n costs n times that (n·163k images), so replace +
accumulate × 5 iterations ≈ 19 replace-iterations ≈ 5–10 GPU-hours. Accumulate's iteration 5
holds 5 × 163k uint8 images (≈10 GB) in host memory. On a CPU the same network trains at
≈30–70 images/s per core (``python -m collapse_vae.bench``): ≈3–6 core-days per iteration.
Generating 163k images is one decoder pass each: about a minute on a GPU.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from collapse.contracts import (
    Contract,
    DatasetManifest,
    FitSummary,
    ModelCard,
    RealDataCard,
    ShardRef,
)
from collapse.modality import ConfigError, Generator, LineageView, Modality, ReportBlock
from collapse.seeds import derive_seed, rng_for
from collapse.store import (
    ArtefactError,
    atomic_path,
    read_array,
    read_json,
    sha256_file,
    write_array_shard,
    write_json,
    write_plain_json,
)
from collapse_vae.config import PRESETS, VaeConfig

if TYPE_CHECKING:
    import torch

IMAGE_FORMAT = "npy-uint8-images"  # (N, H, W) grey or (N, C, H, W) colour, uint8
LABEL_FORMAT = "npy-int64-labels"
WEIGHTS = "model.safetensors"
MODEL_CONFIG = "config.json"
TRAIN_LOG = "train_log.jsonl"  # the shared report draws its training-curve figure from this name
REAL_INFO = "vae_real.json"
CLASSIFIER_DIR = "classifier"
TEST_STATS = "test_features.safetensors"
SAMPLE_BLOCK = 256  # items decoded together: always the aligned block [kB, (k+1)B)
FASHION_SPLIT = (60_000, 10_000)

_SERVICE = "collapse_vae.service"
_MODEL = "collapse_vae.model"


class VaeRealInfo(Contract):
    """What prepare adds beside the real shards (``vae_real.json``): labels and the metric's
    classifier, with the hashes that tie them to this real-data folder."""

    source: str
    image_shape: list[int]
    classes: list[str]
    train_labels: ShardRef
    test_labels: ShardRef
    classifier_files: dict[str, str]  # file name in classifier/ → sha256
    classifier_test_accuracy: float
    reference: dict[str, float]  # the metrics of real images (what a perfect model would score)


def _library_versions() -> dict[str, str]:
    import safetensors
    import torch

    return {"torch": torch.__version__, "safetensors": safetensors.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def _device(config: VaeConfig) -> str:
    import torch

    if config.train.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("vae.config.train.device is 'cuda' but torch sees no GPU; set it to 'cpu'")
    return config.train.device


class VaeModality(Modality):
    name = "vae"
    config_model = VaeConfig
    presets = PRESETS
    primary_metric = "test_neg_elbo"
    lower_is_better = True
    step_config = {  # noqa: RUF012
        "prepare": ("data", "classifier"),
        "fit": ("model", "train"),
        "evaluate": ("eval", "sampling", "train.device", "train.threads"),
        "generate": ("sampling", "train.device", "train.threads"),
    }
    step_modules = {  # noqa: RUF012
        "check": ("collapse_vae.config",),
        "prepare": (_SERVICE, "collapse_vae.data", "collapse_vae.celeba", "collapse_vae.classifier", _MODEL),
        "fit": (_SERVICE, _MODEL, "collapse_vae.train"),
        "evaluate": (_SERVICE, _MODEL, "collapse_vae.train", "collapse_vae.classifier"),
        "generate": (_SERVICE, _MODEL),
        "report": ("collapse_vae.report",),
    }
    paper_note = ("Paper Sec. 3.3 / Fig. 6–7 (CelebA): replace's test error rises quickly and its "
                  "samples end in a single mode; accumulate's rises much more slowly and keeps the "
                  "major axes of variation. The paper gives curves, no table, so no numbers are shown.")

    # --- sizes and checks -------------------------------------------------------------------

    def real_items(self, config: VaeConfig) -> int:
        return config.data.train_items

    def real_pool_items(self, config: VaeConfig) -> int:
        return config.data.train_items + config.data.reserve_items

    def validate(self, config: VaeConfig) -> None:
        data = config.data
        pool = self.real_pool_items(config)
        if data.source == "fashion_mnist":
            train_size, test_size = FASHION_SPLIT
            if pool > train_size:
                raise ConfigError(f"vae.config.data: train_items + reserve_items = {pool} exceeds "
                                  f"Fashion-MNIST's {train_size} training images")
            if data.test_items is not None and data.test_items > test_size:
                raise ConfigError(f"vae.config.data.test_items {data.test_items} exceeds "
                                  f"Fashion-MNIST's {test_size} test images")
        elif not data.path:
            from collapse_vae.data import celeba_hint

            raise ConfigError("vae.config.data.path is required for source 'celeba'. " + celeba_hint(None))
        side = data.side
        if 2 ** len(config.classifier.hidden) > side:
            raise ConfigError(f"vae.config.classifier.hidden has {len(config.classifier.hidden)} "
                              f"pooling blocks, too many for {side}×{side} images")
        if data.train_items < 2:
            raise ConfigError("vae.config.data.train_items must be >= 2 (BatchNorm needs batches of 2)")

    # --- real data --------------------------------------------------------------------------

    def prepare(self, config: VaeConfig, out_dir: Path, data_seed: int) -> RealDataCard:
        from collapse_vae.data import FASHION_CLASSES, Split

        self.validate(config)
        data = config.data
        t, pool = data.train_items, self.real_pool_items(config)
        if data.source == "fashion_mnist":
            train_split, test_split = self._fashion(config)
            train_order = rng_for(data_seed, "vae", "train-order").permutation(len(train_split.labels))
            test_order = rng_for(data_seed, "vae", "test-order").permutation(len(test_split.labels))
            test_order = test_order[: data.test_items]
            classifier_n = min(config.classifier.train_items or len(train_order), len(train_order))
            train = Split(train_split.images[train_order[: max(pool, classifier_n)]],
                          train_split.labels[train_order[: max(pool, classifier_n)]])
            test = Split(test_split.images[test_order], test_split.labels[test_order])
            classes = list(FASHION_CLASSES)
            description = "Fashion-MNIST (Debian dataset-fashion-mnist), 28×28 grey, official split"
        else:
            train, test, classes = self._celeba(config, data_seed)
            classifier_n = min(config.classifier.train_items or len(train.labels), len(train.labels))
            description = (f"CelebA aligned, centre crop {data.crop} → {data.side}×{data.side}, "
                           f"official split; metric classes = {'×'.join(data.attributes)}")
        if len(train.labels) < pool:
            raise ConfigError(f"the real training split has {len(train.labels)} images; the pool "
                              f"needs {pool} (data.train_items + data.reserve_items)")
        shards = [write_array_shard(out_dir / "train.npy", train.images[:t], origin="real",
                                    produced_by=0, format=IMAGE_FORMAT)]
        if pool > t:
            shards.append(write_array_shard(out_dir / "reserve.npy", train.images[t:pool],
                                            origin="real", produced_by=0, format=IMAGE_FORMAT))
        test_ref = write_array_shard(out_dir / "test.npy", test.images, origin="real",
                                     produced_by=0, format=IMAGE_FORMAT)
        labels = {
            name: write_array_shard(out_dir / "labels" / f"{name}.npy", array.astype(np.int64),
                                    origin="real", produced_by=0, format=LABEL_FORMAT)
            for name, array in (("train", train.labels[:pool]), ("test", test.labels))
        }
        info = self._prepare_classifier(config, out_dir, train, test, classifier_n, classes,
                                        data_seed, labels)
        write_json(out_dir / REAL_INFO, info)
        print(f"metric classifier: test accuracy {info.classifier_test_accuracy:.3f}; real "
              f"reference {info.reference}")
        return RealDataCard(
            modality=self.name, root=out_dir.as_posix(), train=shards, test=[test_ref],
            initial_items=t, data_seed=data_seed,
            description=(f"{description}; train.npy holds T = {t} images (a seeded shuffle of the "
                         f"training split), reserve.npy {pool - t} more, test.npy {len(test.labels)} "
                         "test images (never trained on); labels/ feed the metric classifier only"),
        )

    @staticmethod
    def _fashion(config: VaeConfig) -> tuple[Any, Any]:
        from collapse_vae.data import DataError, fashion_mnist_dir, load_fashion_mnist

        try:
            return load_fashion_mnist(fashion_mnist_dir(config.data.path, config.data.cache_dir))
        except DataError as error:
            raise ArtefactError(str(error)) from None

    @staticmethod
    def _celeba(config: VaeConfig, data_seed: int) -> tuple[Any, Any, list[str]]:
        from collapse_vae.data import DataError, celeba_split_size, load_celeba

        data = config.data
        root = Path(str(data.path))
        try:
            n_train = celeba_split_size(root, "train")
            n_test = celeba_split_size(root, "test")
            pool = data.train_items + data.reserve_items
            wanted = max(pool, config.classifier.train_items or n_train)
            train_order = rng_for(data_seed, "vae", "train-order").permutation(n_train)[:wanted]
            test_order = rng_for(data_seed, "vae", "test-order").permutation(n_test)[: data.test_items]
            def read(split: str, positions: list[int]) -> Any:
                return load_celeba(root, split, positions, crop=data.crop, side=data.side,
                                   attributes=data.attributes, verify_checksums=data.verify_checksums,
                                   workers=data.workers)

            train, test = read("train", train_order.tolist()), read("test", test_order.tolist())
        except DataError as error:
            raise ArtefactError(str(error)) from None
        k = len(data.attributes)
        classes = ["+".join(a for j, a in enumerate(data.attributes) if c >> j & 1) or "none"
                   for c in range(2**k)]
        return train, test, classes

    def _prepare_classifier(self, config: VaeConfig, out_dir: Path, train: Any, test: Any,
                            classifier_n: int, classes: list[str], data_seed: int,
                            labels: dict[str, ShardRef]) -> VaeRealInfo:
        import torch
        from safetensors.torch import save_file

        from collapse_vae.classifier import (
            ClassifierArch,
            class_histogram_metrics,
            feature_stats,
            frechet_distance,
            predict,
            save_classifier,
            train_classifier,
        )
        from collapse_vae.train import torch_threads

        shape = list(train.images.shape[1:])
        channels, (h, w) = (1 if len(shape) == 2 else shape[0]), shape[-2:]
        arch = ClassifierArch(channels, h, w, len(classes), tuple(config.classifier.hidden))
        settings = config.classifier
        folder = out_dir / CLASSIFIER_DIR
        device = _device(config)
        with torch_threads(config.train.threads):
            model = train_classifier(
                arch, train.images[:classifier_n], train.labels[:classifier_n], epochs=settings.epochs,
                batch_size=settings.batch_size, learning_rate=settings.learning_rate,
                seed=derive_seed(data_seed, "vae", "classifier"), device=device)
            test_classes, test_features = predict(model, test.images, device=device)
            t = config.data.train_items
            train_classes, train_features = predict(model, train.images[:t], device=device)
        model.cpu()
        accuracy = float((test_classes == test.labels).mean())
        mean, cov = feature_stats(test_features)
        reference = {
            "class_entropy_test": class_histogram_metrics(test_classes, len(classes))["class_entropy"],
            "class_entropy_train": class_histogram_metrics(train_classes, len(classes))["class_entropy"],
            "frechet_train_vs_test": frechet_distance(*feature_stats(train_features), mean, cov),
        }
        save_classifier(model, folder, {"classes": classes, "trained_on": classifier_n,
                                        "test_accuracy": accuracy})
        with atomic_path(folder / TEST_STATS) as temporary:
            save_file({"mean": torch.from_numpy(mean), "cov": torch.from_numpy(cov)}, str(temporary))
        files = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}
        return VaeRealInfo(source=config.data.source, image_shape=shape, classes=classes,
                           train_labels=labels["train"], test_labels=labels["test"],
                           classifier_files=files, classifier_test_accuracy=accuracy,
                           reference=reference)

    # --- fit --------------------------------------------------------------------------------

    def fit(self, config: VaeConfig, manifest: DatasetManifest, real: RealDataCard, out_dir: Path,
            seed: int) -> FitSummary:
        import torch
        from safetensors.torch import save_file

        from collapse_vae.model import ConvVae, VaeArch, parameter_count
        from collapse_vae.train import fit_model, torch_threads

        parts = [read_array(entry.shard, entry.indices) for entry in manifest.entries]
        shapes = {part.shape[1:] for part in parts}
        if len(shapes) != 1 or any(part.dtype != np.uint8 for part in parts):
            raise ArtefactError(f"manifest of iteration {manifest.iteration} mixes image shapes/dtypes "
                                f"{sorted(shapes)}: its shards belong to different configs")
        images = torch.from_numpy(np.concatenate(parts))  # (N, [C,] H, W) uint8
        shape = images.shape[1:]
        arch = VaeArch(image_channels=1 if len(shape) == 2 else shape[0], height=shape[-2],
                       width=shape[-1], hidden=tuple(config.model.hidden), latent=config.model.latent,
                       likelihood=config.model.likelihood, gaussian_sigma=config.model.gaussian_sigma)
        train = config.train
        device = _device(config)
        started = time.perf_counter()
        with torch_threads(train.threads):
            torch.manual_seed(derive_seed(seed, "vae", "init", manifest.iteration))
            model = ConvVae(arch)
            result = fit_model(model, images, epochs=train.epochs, batch_size=train.batch_size,
                               learning_rate=train.learning_rate,
                               seed=derive_seed(seed, "vae", "fit", manifest.iteration), device=device,
                               log_path=out_dir / TRAIN_LOG,
                               label=f"{manifest.lineage or 'shared'} iteration {manifest.iteration}")
        took = time.perf_counter() - started  # printed, never written: files stay deterministic
        print(f"vae fit: {len(images)} images × {train.epochs} epochs, {result.steps} steps in {took:.1f} s "
              f"({result.images_seen / max(took, 1e-9):.0f} images/s, {train.threads} thread(s), {device})")
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        with atomic_path(out_dir / WEIGHTS) as temporary:
            save_file(tensors, str(temporary))
        hyper = {"arch": arch.to_dict(), "train": train.model_dump(mode="json"),
                 "final": result.log[-1] if result.log else {}}
        write_plain_json(out_dir / MODEL_CONFIG, hyper)
        return FitSummary(
            hyperparameters=hyper,
            parameter_count=parameter_count(model),
            weights_file=WEIGHTS,
            library_versions=_library_versions(),
            compute={"items": float(len(images)), "optimizer_steps": float(result.steps),
                     "images_seen": float(result.images_seen), "epochs": float(train.epochs)},
        )

    # --- load / evaluate --------------------------------------------------------------------

    def load(self, config: VaeConfig, model_dir: Path, card: ModelCard, real: RealDataCard) -> VaeGenerator:
        return VaeGenerator(config, model_dir, card)

    def evaluate(self, config: VaeConfig, generator: Generator, real: RealDataCard) -> dict[str, float]:
        import torch

        from collapse_vae.classifier import class_histogram_metrics, feature_stats, frechet_distance, predict
        from collapse_vae.train import score, torch_threads

        assert isinstance(generator, VaeGenerator)
        card = generator.card
        test = torch.from_numpy(read_array(real.test[0]))  # (N, [C,] H, W) uint8
        classifier, info, (mean, cov) = load_metric_classifier(real)
        with torch_threads(config.train.threads):
            metrics = score(generator.model, test, batch_size=config.eval.batch_size,
                            seed=derive_seed(card.seed, "vae", "elbo", card.iteration),
                            device=generator.device)
            samples = generator.sample(0, config.eval.samples, derive_seed(card.seed, "vae", "eval"))
            classes, features = predict(classifier, samples, config.eval.batch_size, generator.device)
        metrics |= class_histogram_metrics(classes, len(info.classes))
        metrics["frechet"] = frechet_distance(*feature_stats(features), mean, cov)
        return metrics

    # --- report -----------------------------------------------------------------------------

    def learning_curve(self, model_dir: Path) -> list[dict[str, float]]:
        log = Path(model_dir) / TRAIN_LOG
        if not log.is_file():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]

    def report_blocks(self, config: VaeConfig, lineages: Sequence[LineageView], out_dir: Path) -> list[ReportBlock]:
        from collapse_vae.report import report_blocks

        return report_blocks(self, config, lineages, out_dir)


def load_metric_classifier(real: RealDataCard) -> tuple[Any, VaeRealInfo, tuple[np.ndarray, np.ndarray]]:
    """The classifier prepare trained, its info and the real test feature stats (hash-checked)."""
    from safetensors.torch import load_file

    from collapse_vae.classifier import load_classifier

    root = Path(real.root)
    info = read_json(root / REAL_INFO, VaeRealInfo)
    folder = root / CLASSIFIER_DIR
    for name, expected in info.classifier_files.items():
        path = folder / name
        if not path.is_file() or sha256_file(path) != expected:
            raise ArtefactError(f"{path} is missing or corrupted (expected sha256 {expected}); re-run "
                                "the vae prepare stage (`dvc repro`)")
    model, _ = load_classifier(folder)
    stats = load_file(str(folder / TEST_STATS))
    return model, info, (stats["mean"].numpy(), stats["cov"].numpy())


class VaeGenerator(Generator):
    """Model n in memory: z ~ N(0, t²I) per item → decoder mean → uint8 image."""

    chunk_items = 4096  # a multiple of SAMPLE_BLOCK, so the generate stage decodes no item twice

    def __init__(self, config: VaeConfig, model_dir: Path, card: ModelCard) -> None:
        from safetensors.torch import load_file

        from collapse_vae.model import ConvVae, VaeArch

        self.card = card
        self.config = config
        meta = json.loads((Path(model_dir) / MODEL_CONFIG).read_text())
        self.arch = VaeArch.from_dict(meta["arch"])
        self.device = _device(config)
        self.model = ConvVae(self.arch)
        self.model.load_state_dict(load_file(str(Path(model_dir) / card.weights_file)))
        self.model.to(self.device).eval()

    def sample(self, start: int, stop: int, seed: int, options: Mapping[str, Any] | None = None) -> np.ndarray:
        """uint8 images (stop − start, [C,] H, W): items [start, stop) of the stream of ``seed``."""
        unknown = sorted(set(options or {}) - {"temperature"})
        if unknown:
            raise ValueError(f"vae sampling options are temperature only, got {unknown}")
        temperature = float((options or {}).get("temperature", self.config.sampling.temperature))
        return decode_items(self.model, start, stop, seed, self.card.iteration, temperature, self.device)

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """uint8 images → decoder mean at the posterior mean μ(x), as uint8 (same shape)."""
        import torch

        from collapse_vae.model import as_unit, quantise

        with torch.no_grad():
            x = as_unit(torch.from_numpy(np.ascontiguousarray(images))).to(self.device)
            mu, _ = self.model.encode(x)
            return quantise(self.model.mean_image(self.model.decode(mu))).cpu().numpy()

    def write(self, items: Iterable[np.ndarray], out_dir: Path, produced_by: int) -> ShardRef:
        parts = list(items)
        rows = np.concatenate(parts) if parts else np.zeros((0, *self.arch.image_shape), dtype=np.uint8)
        return write_array_shard(out_dir / "shard.npy", rows.astype(np.uint8, copy=False),
                                 origin="synthetic", produced_by=produced_by, format=IMAGE_FORMAT)


def item_latents(latent: int, start: int, stop: int, seed: int, iteration: int) -> torch.Tensor:
    """z of items [start, stop) as a (stop − start, latent) tensor: item i is drawn from its own
    generator seeded with derive_seed(seed, "vae", "sample", iteration, i)."""
    import torch

    out = torch.empty(stop - start, latent)
    for i in range(start, stop):
        g = torch.Generator().manual_seed(derive_seed(seed, "vae", "sample", iteration, i))
        out[i - start] = torch.randn(latent, generator=g)
    return out


def decode_items(model: Any, start: int, stop: int, seed: int, iteration: int, temperature: float = 1.0,
                 device: str = "cpu") -> np.ndarray:
    """Items [start, stop) of model ``iteration``'s stream of ``seed``: z ~ N(0, t²I) → decoder
    mean → uint8, shape (stop − start, [C,] H, W).

    Items are decoded in aligned blocks [kB, (k+1)B) (B = SAMPLE_BLOCK), so an item's pixels
    never depend on which other items a call asked for, not even through a kernel whose
    rounding depends on the batch size.
    """
    import torch

    from collapse_vae.model import quantise

    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0 <= start <= stop:
        raise ValueError(f"need 0 <= start <= stop, got {start}, {stop}")
    arch = model.arch
    parts = []
    with torch.no_grad():
        for block in range(start // SAMPLE_BLOCK, -(-stop // SAMPLE_BLOCK)):
            lo, hi = block * SAMPLE_BLOCK, (block + 1) * SAMPLE_BLOCK
            z = item_latents(arch.latent, lo, hi, seed, iteration).to(device) * temperature  # (B, latent)
            images = quantise(model.mean_image(model.decode(z))).cpu().numpy()  # (B, [C,] H, W)
            parts.append(images[max(start, lo) - lo : min(stop, hi) - lo])
    return np.concatenate(parts) if parts else np.zeros((0, *arch.image_shape), dtype=np.uint8)
