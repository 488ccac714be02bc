"""The vae service at smoke scale: model shapes, data sources, sampling, metrics, a roundtrip."""

from __future__ import annotations

import gzip
import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from collapse.contracts import LineageSpec, RealDataCard
from collapse.modality import ConfigError, IterationView, LineageView, load_modality
from collapse.policy import build_manifest, first_manifest, items_to_generate
from collapse.store import (
    ArtefactError,
    ShardIntegrityError,
    read_model,
    sha256_file,
    write_json,
    write_model_card,
)
from collapse_vae import data as vae_data
from collapse_vae.classifier import class_histogram_metrics, frechet_distance, predict
from collapse_vae.model import ConvVae, VaeArch, parameter_count
from collapse_vae.service import VaeModality, load_metric_classifier

SERVICE = VaeModality()


# --- the App. E network ------------------------------------------------------------------------


def _conv(c_in: int, c_out: int) -> int:  # 4×4 kernel, no bias (BatchNorm follows)
    return c_in * c_out * 16


def _bn(c: int) -> int:  # BatchNorm weight + bias
    return 2 * c


def _linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def test_app_e_shapes_and_parameter_count_64x64_rgb() -> None:
    model = ConvVae(VaeArch(image_channels=3, height=64, width=64))  # App. E defaults
    x = torch.rand(2, 3, 64, 64)
    h = model.encoder(x)
    assert h.shape == (2, 512, 2, 2)  # five stride-2 convs: 64 → 2
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (2, 128)
    logits, _, _ = model(x, torch.zeros(2, 128))
    assert logits.shape == (2, 3, 64, 64)
    encoder = (_conv(3, 32) + _bn(32) + _conv(32, 64) + _bn(64) + _conv(64, 128) + _bn(128)
               + _conv(128, 256) + _bn(256) + _conv(256, 512) + _bn(512))
    flat = 512 * 2 * 2
    heads = 2 * _linear(flat, 128)  # the "2 MLP layers": μ and log σ²
    decoder = (_linear(128, flat) + _conv(512, 256) + _bn(256) + _conv(256, 128) + _bn(128)
               + _conv(128, 64) + _bn(64) + _conv(64, 32) + _bn(32) + _conv(32, 3) + 3)
    assert encoder + heads + decoder == 6_365_315  # the arithmetic above, done by hand
    assert parameter_count(model) == 6_365_315


def test_app_e_on_28x28_grey_pads_to_32() -> None:
    arch = VaeArch(image_channels=1, height=28, width=28)
    model = ConvVae(arch)
    assert arch.padded == (32, 32) and arch.bottom == (1, 1)
    x = torch.rand(3, 1, 28, 28)
    assert model.encoder(model._pad(x)).shape == (3, 512, 1, 1)
    logits, mu, _ = model(x, torch.zeros(3, 128))
    assert logits.shape == (3, 1, 28, 28) and mu.shape == (3, 128)
    expected = (_conv(1, 32) + _bn(32) + _conv(32, 64) + _bn(64) + _conv(64, 128) + _bn(128)
                + _conv(128, 256) + _bn(256) + _conv(256, 512) + _bn(512)
                + 2 * _linear(512, 128) + _linear(128, 512)
                + _conv(512, 256) + _bn(256) + _conv(256, 128) + _bn(128) + _conv(128, 64) + _bn(64)
                + _conv(64, 32) + _bn(32) + _conv(32, 1) + 1)
    assert parameter_count(model) == expected == 5_771_905


def test_fewer_layers_other_sizes() -> None:
    model = ConvVae(VaeArch(image_channels=3, height=20, width=36, hidden=(8, 16, 32), latent=4))
    logits, mu, _ = model(torch.rand(2, 3, 20, 36), torch.zeros(2, 4))
    assert model.arch.padded == (24, 40) and logits.shape == (2, 3, 20, 36) and mu.shape == (2, 4)


# --- Fashion-MNIST source ----------------------------------------------------------------------


def test_wrong_hash_deb_is_refused(tmp_path: Path) -> None:
    (tmp_path / vae_data.FASHION_DEB).write_bytes(b"not the package")
    with pytest.raises(vae_data.DataError, match=vae_data.FASHION_DEB_SHA256):
        vae_data.fetch_fashion_mnist(tmp_path)
    assert not (tmp_path / vae_data.FASHION_IN_DEB).exists()  # nothing unpacked


def test_wrong_idx_file_is_refused_and_missing_ones_named(tmp_path: Path) -> None:
    with pytest.raises(vae_data.DataError) as missing:
        vae_data.fashion_mnist_dir(str(tmp_path), str(tmp_path / "cache"))
    for name in vae_data.FASHION_FILES:
        assert name in str(missing.value)
    assert "data.path" in str(missing.value)
    for name in vae_data.FASHION_FILES:
        (tmp_path / name).write_bytes(gzip.compress(b"\0" * 16))
    with pytest.raises(vae_data.DataError, match="expected"):
        vae_data.fashion_mnist_dir(str(tmp_path), str(tmp_path / "cache"))


def test_read_idx_roundtrip(tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = (2051).to_bytes(4, "big") + b"".join(v.to_bytes(4, "big") for v in (2, 3, 4))
    (tmp_path / "i.gz").write_bytes(gzip.compress(header + images.tobytes()))
    (tmp_path / "l.gz").write_bytes(gzip.compress((2049).to_bytes(4, "big") + (2).to_bytes(4, "big") + b"\x07\x01"))
    assert np.array_equal(vae_data.read_idx(tmp_path / "i.gz"), images)
    assert vae_data.read_idx(tmp_path / "l.gz").tolist() == [7, 1]


# --- CelebA source -----------------------------------------------------------------------------

ATTRS = ["Eyeglasses", "Male", "No_Beard", "Smiling"]


def _tiny_celeba(root: Path, n: int = 6) -> dict[str, list[int]]:
    """A CelebA-shaped folder as torchvision reads it: n 178×218 JPEGs + the five annotation files."""
    from PIL import Image

    base = root / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    partition = [0, 0, 0, 0, 2, 2][:n]
    attrs = rng.integers(0, 2, size=(n, len(ATTRS)))
    for name in names:
        Image.fromarray(rng.integers(0, 256, size=(218, 178, 3), dtype=np.uint8)).save(base / "img_align_celeba" / name)
    (base / "list_eval_partition.txt").write_text("".join(f"{a} {p}\n" for a, p in zip(names, partition, strict=True)))
    (base / "list_attr_celeba.txt").write_text(
        f"{n}\n{' '.join(ATTRS)}\n"
        + "".join(f"{a} " + " ".join(" 1" if v else "-1" for v in row) + "\n"
                  for a, row in zip(names, attrs, strict=True)))
    (base / "identity_CelebA.txt").write_text("".join(f"{a} {i}\n" for i, a in enumerate(names)))
    (base / "list_bbox_celeba.txt").write_text(
        f"{n}\nimage_id x_1 y_1 width height\n" + "".join(f"{a} 1 2 3 4\n" for a in names))
    (base / "list_landmarks_align_celeba.txt").write_text(
        f"{n}\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
        "rightmouth_x rightmouth_y\n"
        + "".join(f"{a} " + " ".join(["1"] * 10) + "\n" for a in names))
    return {"train": [i for i, p in enumerate(partition) if p == 0],
            "test": [i for i, p in enumerate(partition) if p == 2], "attrs": attrs.tolist()}


def test_missing_celeba_names_the_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.path is required"):
        SERVICE.validate(SERVICE.config("paper"))
    config = SERVICE.config("smoke", {"data": {"source": "celeba", "path": str(tmp_path), "resolution": 64}})
    with pytest.raises(ArtefactError) as error:
        SERVICE.prepare(config, tmp_path / "real", 0)
    message = str(error.value)
    for expected in ("img_align_celeba", "list_eval_partition.txt", "list_attr_celeba.txt",
                     str(tmp_path / "celeba"), "vae.config.data.path"):
        assert expected in message


def test_celeba_loader_on_a_tiny_folder(tmp_path: Path) -> None:
    layout = _tiny_celeba(tmp_path)
    assert vae_data.celeba_split_size(tmp_path, "train") == 4
    split = vae_data.load_celeba(tmp_path, "train", [2, 0], crop=148, side=64, attributes=["Male", "Smiling"],
                                 verify_checksums=False, workers=0)
    assert split.images.shape == (2, 3, 64, 64) and split.images.dtype == np.uint8
    male, smiling = ATTRS.index("Male"), ATTRS.index("Smiling")
    expected = [layout["attrs"][i][male] + 2 * layout["attrs"][i][smiling] for i in (2, 0)]
    assert split.labels.tolist() == expected
    with pytest.raises(vae_data.DataError, match="md5"):  # the official annotation files are md5-checked
        vae_data.load_celeba(tmp_path, "test", None, crop=148, side=64, attributes=["Male"],
                             verify_checksums=True, workers=0)
    config = SERVICE.config("smoke", {
        "data": {"source": "celeba", "path": str(tmp_path), "resolution": 32, "crop": 148, "train_items": 3,
                 "reserve_items": 1, "verify_checksums": False, "attributes": ["Male", "Smiling"]},
        "classifier": {"hidden": [4], "train_items": None, "epochs": 1, "batch_size": 2}})
    card = SERVICE.prepare(config, tmp_path / "real", 0)
    assert [s.items for s in card.train] == [3, 1] and card.test[0].items == 2
    assert np.load(card.test[0].path).shape == (2, 3, 32, 32)


# --- smoke roundtrip on Fashion-MNIST -----------------------------------------------------------


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    try:
        vae_data.fashion_mnist_dir(None, SERVICE.config("smoke").data.cache_dir)
    except vae_data.DataError as error:
        pytest.skip(f"Fashion-MNIST unavailable here: {error}")
    root = tmp_path_factory.mktemp("vae")
    config = SERVICE.config("smoke")
    real = SERVICE.prepare(config, root / "real", 0)
    write_json(root / "real" / "real.json", real)
    manifest = first_manifest("vae", 0, real.train, real.initial_items)
    folder = root / "first"
    model_dir = _fit(config, manifest, real, folder)
    return {"root": root, "config": config, "real": real, "folder": folder, "model": model_dir}


def _fit(config, manifest, real, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "manifest.json", manifest)
    model_dir = folder / "model"
    model_dir.mkdir()
    summary = SERVICE.fit(config, manifest, real, model_dir, manifest.seed)
    write_model_card(model_dir, summary, modality="vae", lineage=manifest.lineage, iteration=manifest.iteration,
                     manifest_sha256=sha256_file(folder / "manifest.json"), train_items=manifest.items,
                     seed=manifest.seed)
    return model_dir


def _generator(smoke: dict[str, object]):
    model = smoke["model"]
    return SERVICE.load(smoke["config"], model, read_model(model), smoke["real"])


def test_entry_point_and_presets() -> None:
    assert isinstance(load_modality("vae"), VaeModality)
    for scale in ("smoke", "default"):
        SERVICE.validate(SERVICE.config(scale))
    paper = SERVICE.config("paper", {"data": {"path": "/somewhere"}})
    assert paper.data.side == 64 and paper.model.hidden == [32, 64, 128, 256, 512] and paper.train.epochs == 100
    assert SERVICE.step_values(SERVICE.config("smoke"), "generate") == {
        "sampling": {"temperature": 1.0}, "train.device": "cpu", "train.threads": 1}


def test_sampling_is_seeded_and_independent_of_the_batch_split(smoke: dict[str, object]) -> None:
    generator = _generator(smoke)
    whole = generator.sample(0, 10, seed=7)
    assert whole.shape == (10, 28, 28) and whole.dtype == np.uint8
    assert np.array_equal(generator.sample(3, 7, seed=7), whole[3:7])
    assert np.array_equal(generator.sample(0, 10, seed=7), whole)
    assert not np.array_equal(generator.sample(0, 10, seed=8), whole)
    across = generator.sample(250, 262, seed=7)  # crosses a decoding block
    assert np.array_equal(across, generator.sample(0, 300, seed=7)[250:262])
    assert generator.sample(5, 5, seed=7).shape == (0, 28, 28)
    with pytest.raises(ValueError, match="temperature"):
        generator.sample(0, 2, seed=7, options={"top_k": 3})
    cold = generator.sample(0, 4, seed=7, options={"temperature": 0.5})
    assert cold.shape == (4, 28, 28) and not np.array_equal(cold, whole[:4])


def test_classifier_metric_uniform_on_real_single_image_zero(smoke: dict[str, object]) -> None:
    real: RealDataCard = smoke["real"]
    classifier, info, (mean, cov) = load_metric_classifier(real)
    test = np.load(real.test[0].path)
    classes, features = predict(classifier, test)
    on_real = class_histogram_metrics(classes, 10)
    assert on_real["class_entropy"] > 0.9 * math.log(10), on_real
    assert on_real["top_class_share"] < 0.25
    single, single_features = predict(classifier, np.repeat(test[:1], 200, axis=0))
    on_one = class_histogram_metrics(single, 10)
    assert on_one["class_entropy"] < 1e-6 and on_one["top_class_share"] == 1.0
    real_fd = frechet_distance(features.mean(0), np.cov(features, rowvar=False), mean, cov)
    one_fd = frechet_distance(single_features.mean(0), np.cov(single_features, rowvar=False), mean, cov)
    assert real_fd < 1e-6 < one_fd  # the stored stats are those of the real test images
    assert info.classifier_test_accuracy > 0.5


def test_fit_load_sample_evaluate_roundtrip(smoke: dict[str, object], tmp_path: Path) -> None:
    config, real, model_dir = smoke["config"], smoke["real"], smoke["model"]
    card = read_model(model_dir)
    assert card.parameter_count > 0 and card.compute["optimizer_steps"] == 2 * 8
    assert card.compute["images_seen"] == 2 * 512 and card.compute["items"] == 512
    assert sorted(card.files) == ["config.json", "model.safetensors", "train_log.jsonl"]
    curve = SERVICE.learning_curve(model_dir)
    assert [r["step"] for r in curve] == [8, 16] and all(math.isfinite(r["loss"]) for r in curve)
    # Identical inputs → byte-identical model folder (no timings are written).
    again = _fit(config, first_manifest("vae", 0, real.train, real.initial_items), real, tmp_path / "again")
    for name in card.files:
        assert (again / name).read_bytes() == (model_dir / name).read_bytes(), name
    generator = _generator(smoke)
    metrics = SERVICE.evaluate(config, generator, real)
    assert set(metrics) == {"test_neg_elbo", "test_recon", "test_kl", "class_entropy", "top_class_share", "frechet"}
    assert all(math.isfinite(v) for v in metrics.values())
    assert metrics["test_neg_elbo"] == pytest.approx(metrics["test_recon"] + metrics["test_kl"])
    assert 0 <= metrics["class_entropy"] <= math.log(10) + 1e-9 and metrics["frechet"] >= 0
    assert SERVICE.evaluate(config, generator, real) == metrics  # evaluation is seeded

    # Iteration 2 of an accumulate lineage reads the real shard and model 1's samples.
    spec = LineageSpec(name="vae-acc", modality="vae", policy="accumulate", seed=0, iterations=2)
    count = items_to_generate(spec.policy, 1, real.initial_items)
    shard = generator.write((generator.sample(s, min(count, s + 200), 0) for s in range(0, count, 200)),
                            tmp_path / "samples", 1)
    assert shard.items == 512 and shard.origin == "synthetic"
    assert np.array_equal(np.load(shard.path), generator.sample(0, count, 0))
    manifest = build_manifest(spec, 2, real.train, [shard], real.initial_items)
    model_2 = _fit(config, manifest, real, tmp_path / "iter_2")
    assert read_model(model_2).compute["items"] == 1024

    # The report section renders from the files alone.
    views = [IterationView(1, smoke["folder"] / "manifest.json", model_dir, tmp_path / "none.json", None),
             IterationView(2, tmp_path / "iter_2" / "manifest.json", model_2, tmp_path / "none.json", None)]
    blocks = SERVICE.report_blocks(config, [LineageView("vae-acc", "accumulate", 0, views)], tmp_path / "report")
    images = [image for block in blocks for image in block.images]
    assert {p.name for p in images} == {"samples.png", "reconstructions.png"}
    assert all(p.stat().st_size > 0 for p in images)


def test_corrupted_image_shard_is_detected(smoke: dict[str, object], tmp_path: Path) -> None:
    real: RealDataCard = smoke["real"]
    copy = tmp_path / "train.npy"
    data = bytearray(Path(real.train[0].path).read_bytes())
    data[-1] ^= 0xFF
    copy.write_bytes(bytes(data))
    bad = real.train[0].model_copy(update={"path": copy.as_posix()})
    manifest = first_manifest("vae", 0, [bad], real.initial_items)
    (tmp_path / "model").mkdir()
    with pytest.raises(ShardIntegrityError, match="corrupted"):
        SERVICE.fit(smoke["config"], manifest, real, tmp_path / "model", 0)
    assert hashlib.sha256(bytes(data)).hexdigest() != real.train[0].sha256
