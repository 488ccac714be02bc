"""Plain-HTTP helpers shared by the serving tests (raw requests: no client-side validation)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from collapse.store import sha256_file


def post(url: str, route: str, body: Any = None, *, raw: bytes | None = None, timeout: float = 120,
         content_type: str = "application/json") -> httpx.Response:
    content = raw if raw is not None else json.dumps(body if body is not None else {}).encode()
    return httpx.post(url + route, content=content, headers={"Content-Type": content_type}, timeout=timeout)


def ok(url: str, route: str, body: Any = None, timeout: float = 120) -> dict[str, Any]:
    response = post(url, route, body, timeout=timeout)
    assert response.status_code == 200, f"{route} {body} → {response.status_code}: {response.text}"
    data = response.json()
    assert isinstance(data, dict)
    return data


def assert_bad(url: str, route: str, body: Any, field: str | None, *, raw: bytes | None = None,
               status: int | None = None) -> None:
    """A 4xx whose message names ``field`` (when given), never a 5xx."""
    response = post(url, route, body, raw=raw)
    assert 400 <= response.status_code < 500, f"{route} {body or raw!r} → {response.status_code}: {response.text}"
    if status is not None:
        assert response.status_code == status, response.text
    if field is not None:
        assert field in response.text, f"{route} {body or raw!r}: {field!r} not named in {response.text}"


def assert_model_info(info: dict[str, Any], lab: Any, lineage: str, iteration: int, modality: str) -> None:
    """The response's model block names the model and matches its files on disk."""
    model_dir = lab / info["model_dir"]
    card = json.loads((model_dir / "card.json").read_text())
    assert (info["modality"], info["lineage"], info["iteration"]) == (modality, lineage, iteration)
    assert info["card_sha256"] == sha256_file(model_dir / "card.json")
    weights = card["weights_file"]
    assert info["weights_sha256"] == sha256_file(model_dir / weights) == card["files"][weights]
    assert card["iteration"] == iteration
    assert info["card_lineage"] == card["lineage"] == (None if iteration == 1 else lineage)


def burst(url: str, requests: list[tuple[str, dict[str, Any]]], parallel: int = 8) -> list[httpx.Response]:
    """All ``requests`` (route, body), ``parallel`` in flight at a time."""
    with httpx.Client(timeout=300) as client, ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(lambda item: client.post(url + item[0], json=item[1]), requests))
