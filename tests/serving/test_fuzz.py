"""Random request bodies (any JSON, near-miss fields, wrong shapes): never a 5xx, and the server goes on."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from serving.servers import Server

pytestmark = pytest.mark.slow

SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner,
                                                                                          max_size=4), max_leaves=20)
ROWS = st.lists(st.lists(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-5, 5) | st.text(max_size=2),
                         max_size=6), max_size=6)


def bodies(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Mostly objects over the endpoint's own fields (plus strangers), sometimes any JSON at all."""
    keyed = st.fixed_dictionaries({}, optional={name: strategy | JSON for name, strategy in fields.items()})
    strangers = st.dictionaries(st.text(max_size=8), JSON, max_size=2)
    objects = st.tuples(keyed, strangers).map(lambda pair: {**pair[1], **pair[0]})
    return objects | JSON


MODEL = {"lineage": st.sampled_from(["linreg-replace", "linreg-accumulate", "lm-replace", "lm-accumulate",
                                      "vae-replace", "vae-accumulate", "x"]),
         "iteration": st.integers(-1, 4)}
LINREG = {
    "/sample": {**MODEL, "n": st.integers(-2, 12_000), "start": st.integers(-2, 2_000_000),
                "seed": st.integers(-1, 2**64)},
    "/predict": {**MODEL, "x": ROWS},
    "/models": {},
}
LM = {  # valid bodies stay cheap: few tokens
    "/generate": {**MODEL, "n": st.integers(-1, 70), "start": st.integers(-1, 2**41),
                  "max_new_tokens": st.integers(-1, 6), "temperature": st.floats(allow_nan=True),
                  "top_p": st.floats(-0.5, 1.5), "top_k": st.integers(-2, 10), "prompt": st.text(max_size=30),
                  "seed": st.integers(-1, 2**64)},
    "/score": {**MODEL, "texts": st.lists(st.text(max_size=40), max_size=4)},
}




def nested(shape: list[int], values: st.SearchStrategy[Any], slack: int = 0) -> st.SearchStrategy[Any]:
    """Nested lists of ``shape`` (each side ± ``slack``) over ``values``."""
    strategy = values
    for side in reversed(shape):
        strategy = st.lists(strategy, min_size=max(0, side - slack), max_size=side + slack)
    return strategy


def images(shape: list[int]) -> st.SearchStrategy[Any]:
    """Valid images of the model's ``shape``, ones with one bad pixel, near-miss shapes, other nestings."""
    valid = nested(shape, st.integers(0, 255))

    @st.composite
    def one_bad_pixel(draw: Callable[[st.SearchStrategy[Any]], Any]) -> Any:
        image = draw(valid)
        where = [draw(st.integers(0, side - 1)) for side in shape]
        row = image
        for index in where[:-1]:
            row = row[index]
        row[where[-1]] = draw(SCALARS | st.lists(st.integers(0, 255), max_size=3))
        return image

    return (valid | one_bad_pixel() | nested(shape, st.integers(-2, 258), slack=1)
            | nested([1, *shape], st.integers(0, 255)) | nested([*shape[::-1], 2], st.integers(0, 255)) | ROWS)


def vae_routes(shape: list[int]) -> dict[str, dict[str, st.SearchStrategy[Any]]]:
    return {
        "/sample": {**MODEL, "n": st.integers(-2, 300), "start": st.integers(-2, 2**41),
                    "seed": st.integers(-1, 2**64)},
        "/reconstruct": {**MODEL, "image": images(shape)},
        "/models": {},
    }


VAE_MODEL = {"lineage": st.sampled_from(["vae-replace", "vae-accumulate"]), "iteration": st.integers(1, 2)}


def vae_near_valid(route: str, shape: list[int]) -> st.SearchStrategy[Any]:
    """Bodies with only the route's own fields, mostly in range (so the model code runs, not only validation)."""
    if route == "/reconstruct":
        return st.fixed_dictionaries({"image": images(shape)}, optional=VAE_MODEL)
    if route == "/sample":
        return st.fixed_dictionaries({}, optional={**VAE_MODEL, "n": st.integers(0, 64), "start": st.integers(0, 2**41),
                                                   "seed": st.integers(0, 2**64 - 1)})
    return st.just({})


def check(server: Server, route: str, body: Any) -> None:
    content = json.dumps(body, allow_nan=True).encode()
    response = httpx.post(server.url + route, content=content, headers={"Content-Type": "application/json"},
                          timeout=300)
    assert response.status_code < 500, f"{route} {content!r} → {response.status_code}: {response.text}"
    event(f"{server.modality} {route} → {response.status_code}")  # --hypothesis-show-statistics
    if route == "/generate" and response.status_code == 200:
        assert len(response.json()["texts"]) == body.get("n", 4)
    if route == "/sample" and server.modality == "vae" and response.status_code == 200:
        assert len(response.json()["images"]) == body.get("n", 16)
    if route == "/reconstruct" and response.status_code == 200:  # the answer has the image's shape
        image, shape = body["image"], []
        while isinstance(image, list):
            shape.append(len(image))
            image = image[0]
        assert response.json()["shape"] == shape


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_linreg_never_answers_5xx(linreg_server: Server, data: st.DataObject) -> None:
    route = data.draw(st.sampled_from(sorted(LINREG)))
    check(linreg_server, route, data.draw(bodies(LINREG[route])))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_lm_never_answers_5xx(lm_server: Server, data: st.DataObject) -> None:
    route = data.draw(st.sampled_from(sorted(LM)))
    body = data.draw(bodies(LM[route]))
    if route == "/generate" and isinstance(body, dict):
        body.setdefault("max_new_tokens", 4)  # keeps a valid request cheap; invalid ones stay invalid
    check(lm_server, route, body)


@pytest.fixture(scope="module")
def vae_shape(vae_server: Server) -> list[int]:
    """[H, W] or [C, H, W] of the served vae model's images."""
    shape = httpx.post(vae_server.url + "/sample", json={"n": 1}, timeout=120).json()["shape"]
    assert isinstance(shape, list)
    return shape


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(data=st.data())
def test_vae_never_answers_5xx(vae_server: Server, vae_shape: list[int], data: st.DataObject) -> None:
    routes = vae_routes(vae_shape)
    route = data.draw(st.sampled_from(sorted(routes)))
    near = data.draw(st.booleans())  # half the bodies reach the model code, half mostly validation
    body = data.draw(vae_near_valid(route, vae_shape) if near else bodies(routes[route]))
    check(vae_server, route, body)


def test_servers_still_answer(linreg_server: Server, lm_server: Server, vae_server: Server) -> None:
    assert httpx.post(linreg_server.url + "/sample", json={"n": 1}, timeout=60).status_code == 200
    assert httpx.post(lm_server.url + "/generate", json={"n": 1, "max_new_tokens": 2}, timeout=300).status_code == 200
    assert httpx.post(vae_server.url + "/sample", json={"n": 1}, timeout=120).status_code == 200
    image = httpx.post(vae_server.url + "/sample", json={"n": 1}, timeout=120).json()["images"][0]
    assert httpx.post(vae_server.url + "/reconstruct", json={"image": image}, timeout=120).status_code == 200
