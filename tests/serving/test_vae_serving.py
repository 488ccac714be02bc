"""The vae BentoML service over real HTTP, on smoke-trained models."""

from __future__ import annotations

import base64
import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serving.helpers import assert_bad, assert_model_info, burst, ok
from serving.servers import Server
from serving.smoke import lineages

pytestmark = pytest.mark.slow


def shard_images(lab: Path, lineage: str, iteration: int) -> np.ndarray:
    return np.load(lab / "runs/vae" / lineage / f"iter_{iteration}/samples/shard.npy", allow_pickle=False)


def image_shape(lab: Path) -> list[int]:
    """[H, W] (grey) or [C, H, W] of the lab's vae models (what one stored image holds)."""
    shard = shard_images(lab, lineages(lab, "vae")["replace"], 1)
    return list(shard.shape[1:])


def png_array(encoded: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))))


def test_models_lists_the_lineages(vae_server: Server, smoke_lab: Path) -> None:
    names = lineages(smoke_lab, "vae")
    listing = ok(vae_server.url, "/models")
    assert listing["modality"] == "vae"
    assert listing["default"]["lineage"] == names["replace"] and listing["default"]["iteration"] == 2
    assert {item["name"]: item["trained"] for item in listing["lineages"]} == {
        names["replace"]: [1, 2], names["accumulate"]: [1, 2]}


@pytest.mark.parametrize("policy", ["replace", "accumulate"])
@pytest.mark.parametrize("iteration", [1, 2])
def test_sample_is_the_pipelines_shard(vae_server: Server, smoke_lab: Path, policy: str, iteration: int) -> None:
    """Images i..j asked for over HTTP are items i..j of the shard the generate stage wrote, to the bit,
    whichever way the range is split into requests."""
    lineage = lineages(smoke_lab, "vae")[policy]
    shard = shard_images(smoke_lab, lineage, iteration)
    i, j = 3, 40
    for splits in ((i, 20, j), (i, 4, 31, j)):  # two batch splits of i..j
        parts = []
        for start, stop in itertools.pairwise(splits):
            answer = ok(vae_server.url, "/sample", {"lineage": lineage, "iteration": iteration, "start": start,
                                                    "n": stop - start})
            assert answer["seed"] == 0 and answer["start"] == start and answer["shape"] == list(shard.shape[1:])
            assert_model_info(answer["model"], smoke_lab, lineage, iteration, "vae")
            images = np.asarray(answer["images"], dtype=np.uint8)
            assert images.shape == (stop - start, *shard.shape[1:])
            grid = png_array(answer["png"])
            height, width = shard.shape[-2:]
            assert grid[:height, :width].tolist() == images[0].tolist()  # grey: the first tile is image 0
            parts.append(images)
        assert np.concatenate(parts).tobytes() == shard[i:j].tobytes()
    other = ok(vae_server.url, "/sample", {"lineage": lineage, "iteration": iteration, "n": 4, "seed": 7})
    assert other["seed"] == 7 and np.asarray(other["images"], dtype=np.uint8).tobytes() != shard[:4].tobytes()


def test_reconstruct_is_the_generators(vae_server: Server, smoke_lab: Path) -> None:
    shard = shard_images(smoke_lab, lineages(smoke_lab, "vae")["replace"], 2)
    answer = ok(vae_server.url, "/reconstruct", {"image": shard[5].tolist()})
    assert answer["shape"] == list(shard.shape[1:])
    out = np.asarray(answer["image"])
    assert out.shape == shard.shape[1:] and out.min() >= 0 and out.max() <= 255
    assert png_array(answer["png"]).tolist() == out.tolist()
    again = ok(vae_server.url, "/reconstruct", {"image": shard[5].tolist()})
    assert again["image"] == answer["image"]  # deterministic (posterior mean)
    assert_model_info(answer["model"], smoke_lab, lineages(smoke_lab, "vae")["replace"], 2, "vae")
    first = ok(vae_server.url, "/reconstruct", {"image": shard[5].tolist(), "iteration": 1})
    assert first["model"]["iteration"] == 1


def _image(shape: list[int], value: object = 0, at: tuple[int, ...] | None = None) -> object:
    image = np.zeros(shape, dtype=np.int64).tolist()
    if at is not None:
        row = image
        for index in at[:-1]:
            row = row[index]
        row[at[-1]] = value
    return image


BAD = [  # (route, body or raw bytes, field the message must name, status); "IMAGE:<kind>" filled in per lab
    ("/sample", {"n": 0}, "n", 400),
    ("/sample", {"n": 10_000}, "n", 400),
    ("/sample", {"n": 257}, "n", 400),
    ("/sample", {"n": "3"}, "n", 400),
    ("/sample", {"n": 2.5}, "n", 400),
    ("/sample", {"n": True}, "n", 400),
    ("/sample", {"start": -1}, "start", 400),
    ("/sample", {"start": "0"}, "start", 400),
    ("/sample", {"seed": -5}, "seed", 400),
    ("/sample", {"seed": 2**64}, "seed", 400),
    ("/sample", {"samples": 3}, "samples", 400),
    ("/sample", {"iteration": 0}, "iteration", 400),
    ("/sample", {"iteration": 3}, "iteration", 404),
    ("/sample", {"lineage": "vae-nope"}, "lineage", 404),
    ("/sample", [1, 2], None, 400),
    ("/sample", b'{"n": 3,', None, 400),
    ("/sample", b"\xff\xfe", None, 400),
    ("/reconstruct", {}, "image", 400),
    ("/reconstruct", {"image": "IMAGE:small"}, "image", 400),
    ("/reconstruct", {"image": "IMAGE:ragged"}, "image", 400),
    ("/reconstruct", {"image": "IMAGE:300"}, "image", 400),
    ("/reconstruct", {"image": "IMAGE:-1"}, "image", 400),
    ("/reconstruct", {"image": "IMAGE:float"}, "image", 400),
    ("/reconstruct", {"image": "IMAGE:string"}, "image", 400),
    ("/reconstruct", {"image": [1, 2, 3]}, "image", 400),
    ("/reconstruct", {"image": []}, "image", 400),
    ("/reconstruct", {"image": "IMAGE:batch"}, "image", 400),
    ("/reconstruct", b'{"image": [[1, 2], [3', None, 400),
]


def image_for(body: object, shape: list[int]) -> object:
    if not (isinstance(body, dict) and isinstance(body.get("image"), str)):
        return body
    kind = body["image"].split(":", 1)[1]
    corner = tuple(0 for _ in shape)
    image: object = {
        "small": _image([side - 1 for side in shape]),
        "ragged": [[0] * shape[-1]] * (shape[-2] - 1) + [[0] * (shape[-1] - 1)],
        "300": _image(shape, 300, corner),
        "-1": _image(shape, -1, corner),
        "float": _image(shape, 0.5, corner),
        "string": _image(shape, "7", corner),
        "batch": [_image(shape)] * 2,
    }[kind]
    return {**body, "image": image}


@pytest.mark.parametrize(("route", "body", "field", "status"), BAD,
                         ids=[f"{r}-{i}" for i, (r, *_rest) in enumerate(BAD)])
def test_bad_input_is_a_4xx_naming_the_field(vae_server: Server, smoke_lab: Path, route: str, body: object,
                                             field: str | None, status: int) -> None:
    raw = body if isinstance(body, bytes) else None
    assert_bad(vae_server.url, route, None if raw else image_for(body, image_shape(smoke_lab)), field, raw=raw,
               status=status)
    assert len(ok(vae_server.url, "/sample", {"n": 2})["images"]) == 2  # and the next valid request is answered


def test_concurrent_burst(vae_server: Server, smoke_lab: Path) -> None:
    names = lineages(smoke_lab, "vae")
    shape = image_shape(smoke_lab)
    requests: list[tuple[str, dict[str, object]]] = []
    for i in range(50):
        if i % 10 == 9:
            requests.append(("/sample", {"n": 0}))
        elif i % 3 == 0:
            requests.append(("/reconstruct", {"image": _image(shape, 200, tuple(0 for _ in shape))}))
        else:
            requests.append(("/sample", {"n": 3, "start": i, "lineage": names["replace" if i % 2 else "accumulate"]}))
    answers = burst(vae_server.url, requests, parallel=8)
    for (route, body), answer in zip(requests, answers, strict=True):
        if body.get("n") == 0:
            assert answer.status_code == 400, answer.text
        else:
            assert answer.status_code == 200, f"{route} {body}: {answer.text}"
    sampled = [json.loads(answer.text) for (route, body), answer in zip(requests, answers, strict=True)
               if route == "/sample" and body.get("n")]
    assert {s["model"]["policy"] for s in sampled} == {"replace", "accumulate"}
    for s in sampled:  # every answer is its lineage's stream, whatever ran beside it
        shard = shard_images(smoke_lab, s["model"]["lineage"], 2)
        assert np.asarray(s["images"], dtype=np.uint8).tobytes() == shard[s["start"] : s["start"] + 3].tobytes()
