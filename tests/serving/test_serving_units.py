"""Fast checks of the serving pieces that need no trained model and no server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic import ValidationError

from collapse.modality import ConfigError
from collapse.params import parse_params
from collapse.serving import ModelNotFound, ServingError, finite_rows, http_errors, serving_params
from collapse.serving_page import Control, PageSpec, page_app, render_page

PARAMS = {"linreg": {"scale": "smoke"},
          "lineages": {"a": {"modality": "linreg", "policy": "replace", "iterations": 2}}}


def test_serving_section_is_validated() -> None:
    assert serving_params(parse_params(PARAMS)).cache_models == 4
    chosen = serving_params(parse_params({**PARAMS, "serving": {"cache_models": 2,
                                                                  "linreg": {"lineage": "a", "iteration": 2}}}))
    assert (chosen.cache_models, chosen.models["linreg"].lineage, chosen.models["linreg"].iteration) == (2, "a", 2)
    for serving, named in (({"cache_model": 1}, "serving.cache_model"), ({"cache_models": "3"}, "serving.cache_models"),
                           ({"cache_models": 65}, "serving.cache_models"),
                           ({"linreg": {"lineag": "a"}}, "serving.linreg.lineag"),
                           ({"linreg": {"iteration": "last"}}, "serving.linreg.iteration")):
        with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
            serving_params(parse_params({**PARAMS, "serving": serving}))


def test_request_models_are_strict_and_bounded() -> None:
    from collapse_linreg.serving import PredictRequest, SampleRequest
    from collapse_lm.serving import GenerateRequest, ScoreRequest

    assert SampleRequest().n == 8 and GenerateRequest().prompt is None
    for model, body in ((SampleRequest, {"n": "3"}), (SampleRequest, {"n": True}), (SampleRequest, {"m": 1}),
                        (PredictRequest, {"x": [[float("inf")]]}), (PredictRequest, {"x": []}),
                        (GenerateRequest, {"temperature": float("nan")}), (GenerateRequest, {"top_p": 0}),
                        (ScoreRequest, {"texts": []})):
        with pytest.raises(ValidationError):
            model.model_validate(body)
    schema = GenerateRequest.model_json_schema()
    assert all(field.get("description") for field in schema["properties"].values())  # OpenAPI docs every field
    for model in (SampleRequest, PredictRequest, ScoreRequest):
        assert all(field.get("description") for field in model.model_json_schema()["properties"].values())


def test_errors_become_4xx_naming_the_field() -> None:
    from bentoml.exceptions import InvalidArgument, NotFound

    from collapse_lm.serving import GenerateRequest

    with pytest.raises(InvalidArgument, match=r"x\[1\]: has 2 values"), http_errors():
        finite_rows([[1.0, 2.0, 3.0], [1.0, 2.0]], 3, "x")
    with pytest.raises(NotFound, match="lineage: no such"), http_errors():
        raise ModelNotFound("lineage", "no such")
    with pytest.raises(InvalidArgument, match="temperature"), http_errors():
        GenerateRequest.model_validate({"temperature": -1})
    assert ServingError("n", "too big").status == 400


SPEC = PageSpec(title="t </script><b>", endpoint="/sample", render="table",
                controls=[Control(name="n", label="rows", kind="int", default=3, min=1, max=9)])


def test_page_is_one_self_contained_document() -> None:
    page = render_page(SPEC)
    assert page.count("</script>") == 2  # the spec's own "</script>" is escaped inside the JSON
    assert "t &lt;/script&gt;&lt;b&gt;" in page and "http://" not in page and "https://" not in page
    embedded = page.split('<script type="application/json" id="spec">')[1].split("</script>")[0]
    assert json.loads(embedded)["controls"][0]["name"] == "n"


def _call(app: Any, method: str) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app({"type": "http", "method": method, "path": "/"}, receive, send))
    return sent[0]["status"], dict(sent[0]["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def test_page_app_answers_get_and_head_only() -> None:
    app = page_app(SPEC)
    status, headers, body = _call(app, "GET")
    assert status == 200 and headers[b"content-type"].startswith(b"text/html") and body.startswith(b"<!doctype")
    assert int(headers[b"content-length"]) == len(body)
    assert _call(app, "HEAD")[2] == b""
    assert _call(app, "POST")[0] == 405
