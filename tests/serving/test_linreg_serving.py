"""The linreg BentoML service over real HTTP, on smoke-trained models."""

from __future__ import annotations

import subprocess
from pathlib import Path

import bentoml
import numpy as np
import pytest

from collapse.modality import ConfigError
from collapse.serving import ModelNotTrained, ServedLab
from serving.helpers import assert_bad, assert_model_info, burst, ok, post
from serving.servers import Server, start_server
from serving.smoke import lineages, linreg_dim

pytestmark = pytest.mark.slow


def shard_rows(lab: Path, lineage: str, iteration: int) -> np.ndarray:
    return np.load(lab / "runs/linreg" / lineage / f"iter_{iteration}/samples/shard.npy", allow_pickle=False)


def test_client_lists_models_and_samples(linreg_server: Server, smoke_lab: Path) -> None:
    names = lineages(smoke_lab, "linreg")
    with bentoml.SyncHTTPClient(linreg_server.url) as client:
        listing = client.models()
        answer = client.sample(n=3, start=0)
        prediction = client.predict(x=[[0.5] * linreg_dim(smoke_lab)])
    assert listing["default"]["lineage"] == names["replace"] and listing["default"]["iteration"] == 2
    assert {item["name"]: item["trained"] for item in listing["lineages"]} == {
        names["replace"]: [1, 2], names["accumulate"]: [1, 2]}
    assert len(answer["x"]) == len(answer["y"]) == 3 and answer["seed"] == 0
    assert_model_info(answer["model"], smoke_lab, names["replace"], 2, "linreg")
    assert len(prediction["y_hat"]) == 1


@pytest.mark.parametrize("policy", ["replace", "accumulate"])
@pytest.mark.parametrize("iteration", [1, 2])
def test_sample_is_the_pipelines_shard(linreg_server: Server, smoke_lab: Path, policy: str, iteration: int) -> None:
    """Rows i..j asked for over HTTP are rows i..j of the shard the generate stage wrote, to the bit."""
    lineage = lineages(smoke_lab, "linreg")[policy]
    shard = shard_rows(smoke_lab, lineage, iteration)
    for start, stop in ((0, len(shard)), (3, 9), (len(shard) - 2, len(shard))):
        answer = ok(linreg_server.url, "/sample", {"lineage": lineage, "iteration": iteration, "start": start,
                                                   "n": stop - start})
        rows = np.column_stack([np.asarray(answer["x"], dtype=np.float64), np.asarray(answer["y"], dtype=np.float64)])
        assert rows.tobytes() == shard[start:stop].tobytes()
        assert_model_info(answer["model"], smoke_lab, lineage, iteration, "linreg")
    # beyond the shard, the stream goes on; another seed is another stream
    longer = ok(linreg_server.url, "/sample", {"lineage": lineage, "iteration": iteration, "n": len(shard) + 5})
    assert np.asarray(longer["y"])[: len(shard)].tobytes() == shard[:, -1].tobytes()
    other = ok(linreg_server.url, "/sample", {"lineage": lineage, "iteration": iteration, "n": 4, "seed": 7})
    assert other["seed"] == 7 and other["y"] != longer["y"][:4]


def test_predict_is_x_times_w_hat(linreg_server: Server, smoke_lab: Path) -> None:
    x = np.random.default_rng(0).normal(size=(5, linreg_dim(smoke_lab)))
    answer = ok(linreg_server.url, "/predict", {"x": x.tolist()})
    w_hat = np.load(smoke_lab / answer["model"]["model_dir"] / "weights.npy")
    expected = x @ w_hat
    assert np.asarray(answer["y_hat"]).tobytes() == expected.tobytes()


def test_requests_may_name_another_model(linreg_server: Server, smoke_lab: Path) -> None:
    names = lineages(smoke_lab, "linreg")
    first_replace = ok(linreg_server.url, "/sample", {"lineage": names["replace"], "iteration": 1, "n": 2})
    first_accumulate = ok(linreg_server.url, "/sample", {"lineage": names["accumulate"], "iteration": 1, "n": 2})
    assert first_replace["model"]["weights_sha256"] == first_accumulate["model"]["weights_sha256"]  # shared model 1
    assert first_replace["model"]["card_lineage"] is None
    latest = ok(linreg_server.url, "/sample", {"lineage": names["accumulate"], "n": 1})
    assert latest["model"]["iteration"] == 2 and latest["model"]["policy"] == "accumulate"


BAD = [  # (route, body or raw bytes, field the message must name, status)
    ("/sample", {"n": 0}, "n", 400),
    ("/sample", {"n": 10_001}, "n", 400),
    ("/sample", {"n": "3"}, "n", 400),
    ("/sample", {"n": 2.5}, "n", 400),
    ("/sample", {"n": True}, "n", 400),
    ("/sample", {"start": -1}, "start", 400),
    ("/sample", {"start": 10**12}, "start", 400),
    ("/sample", {"seed": -5}, "seed", 400),
    ("/sample", {"seed": 2**64}, "seed", 400),
    ("/sample", {"samples": 3}, "samples", 400),
    ("/sample", {"iteration": 0}, "iteration", 400),
    ("/sample", {"iteration": 3}, "iteration", 404),
    ("/sample", {"lineage": "linreg-nope"}, "lineage", 404),
    ("/sample", {"lineage": ""}, "lineage", 400),
    ("/sample", [1, 2], None, 400),
    ("/sample", b'{"n": 3,', None, 400),
    ("/sample", b"\xff\xfe", None, 400),
    ("/predict", {}, "x", 400),
    ("/predict", {"x": []}, "x", 400),
    ("/predict", {"x": ["SHORT"]}, "x[0]", 400),  # SHORT: d - 1 values, ROW: d values, d the model's
    ("/predict", {"x": ["ROW", [1.0]]}, "x[1]", 400),
    ("/predict", {"x": ["ROW", "ROW", "LONG"]}, "x[2]", 400),
    ("/predict", {"x": [[1.0, "a"]]}, "x", 400),
    ("/predict", {"x": [1.0, 2.0, 3.0, 4.0]}, "x", 400),
    ("/predict", {"x": [[]]}, "x", 400),
    ("/predict", b'{"x": [[1.0, 2.0, 3.0, NaN]]}', "x", 400),
    ("/predict", b'{"x": [[1.0, 2.0, 3.0, Infinity]]}', "x", 400),
    ("/predict", b'{"x": [[1.0, 2.0, 3.0, 1e999]]}', "x", 400),
    ("/predict", {"x": ["ROW"] * 10_001}, "x", 400),
]


def rows_for(body: object, d: int) -> object:
    """``body`` with the row markers of :data:`BAD` replaced by rows for a model of dimension ``d``."""
    widths = {"ROW": d, "SHORT": d - 1, "LONG": d + 1}
    if isinstance(body, dict) and isinstance(body.get("x"), list):
        return {**body, "x": [[0.5] * widths[row] if isinstance(row, str) and row in widths else row
                              for row in body["x"]]}
    return body


@pytest.mark.parametrize(("route", "body", "field", "status"), BAD,
                         ids=[f"{r}-{i}" for i, (r, *_rest) in enumerate(BAD)])
def test_bad_input_is_a_4xx_naming_the_field(linreg_server: Server, smoke_lab: Path, route: str, body: object,
                                             field: str | None, status: int) -> None:
    raw = body if isinstance(body, bytes) else None
    assert_bad(linreg_server.url, route, None if raw else rows_for(body, linreg_dim(smoke_lab)), field, raw=raw,
               status=status)
    assert len(ok(linreg_server.url, "/sample", {"n": 2})["y"]) == 2  # and the next valid request is answered


def test_wrong_content_type_and_method(linreg_server: Server) -> None:
    assert 400 <= post(linreg_server.url, "/sample", raw=b"n=3", content_type="text/plain").status_code < 500
    assert post(linreg_server.url, "/ui/", raw=b"{}").status_code == 405
    assert len(ok(linreg_server.url, "/sample", {"n": 1})["y"]) == 1


def test_concurrent_burst(linreg_server: Server, smoke_lab: Path) -> None:
    names = lineages(smoke_lab, "linreg")
    requests: list[tuple[str, dict[str, object]]] = []
    for i in range(50):
        if i % 5 == 4:
            requests.append(("/sample", {"n": 0}))  # bad ones mixed in stay 4xx
        elif i % 2:
            requests.append(("/predict", {"x": [[float(i)] * linreg_dim(smoke_lab)] * 4}))
        else:
            requests.append(("/sample", {"n": 5, "start": i, "lineage": names["replace" if i % 4 else "accumulate"]}))
    answers = burst(linreg_server.url, requests, parallel=8)
    shard = shard_rows(smoke_lab, names["replace"], 2)
    for (route, body), answer in zip(requests, answers, strict=True):
        if body.get("n") == 0:
            assert answer.status_code == 400
            continue
        assert answer.status_code == 200, answer.text
        if route == "/sample" and body.get("lineage") == names["replace"] and int(body["start"]) + 5 <= len(shard):
            start = int(body["start"])
            assert np.asarray(answer.json()["y"]).tobytes() == shard[start : start + 5, -1].tobytes()


def test_binds_loopback_only(linreg_server: Server) -> None:
    """The default host is 127.0.0.1: the port listens on loopback and nowhere else."""
    port = f"{linreg_server.port:04X}"
    listening = [line.split()[1] for table in ("/proc/net/tcp", "/proc/net/tcp6")
                 if Path(table).is_file() for line in Path(table).read_text().splitlines()[1:]
                 if line.split()[1].endswith(f":{port}") and line.split()[3] == "0A"]
    assert listening == ["0100007F:" + port], listening


def test_untrained_model_is_a_clear_startup_error(smoke_lab: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process: the error names the folder and the `dvc repro` command; over `bentoml serve` too."""
    project = _project(smoke_lab, tmp_path, (smoke_lab / "params.yaml").read_text().replace("iterations: 2",
                                                                                          "iterations: 3"))
    lineage = lineages(smoke_lab, "linreg")["replace"]
    monkeypatch.chdir(tmp_path)  # ServedLab moves into the project; the test's cwd comes back after
    with pytest.raises(ModelNotTrained) as raised:
        ServedLab("linreg", root=project, lineage=lineage, iteration=3)
    message = str(raised.value)
    assert f"runs/linreg/{lineage}/iter_3/model" in message
    assert f"dvc repro pipelines/{lineage}/iter_3/dvc.yaml" in message
    assert ServedLab("linreg", root=project, lineage=lineage).default_iteration == 2  # latest trained
    with pytest.raises(ConfigError, match="did you mean"):
        ServedLab("linreg", root=project, lineage=lineage + "x")
    with pytest.raises(ConfigError, match="iterations 1..3"):
        ServedLab("linreg", root=project, lineage=lineage, iteration=9)

    server = start_server(project, "linreg", tmp_path / "server.log", lineage=lineage, iteration="3", wait=False)
    try:
        server.process.wait(timeout=180)
    except subprocess.TimeoutExpired:
        server.stop()
        raise AssertionError(f"bentoml serve kept running with an untrained model:\n{server.output()}") from None
    finally:
        server.stop()
    assert server.process.returncode != 0
    assert f"dvc repro pipelines/{lineage}/iter_3/dvc.yaml" in server.output()


def _project(smoke_lab: Path, tmp_path: Path, params: str) -> Path:
    """A project dir with its own params.yaml over the smoke lab's trained runs/."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "params.yaml").write_text(params)
    (project / "runs").symlink_to(smoke_lab / "runs")
    return project


def test_other_models_are_cached_lru(smoke_lab: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    project = _project(smoke_lab, tmp_path, (smoke_lab / "params.yaml").read_text())
    names = lineages(smoke_lab, "linreg")
    lab = ServedLab("linreg", root=project, lineage=names["replace"], iteration=2, cache_models=1)
    start = lab.loaded_models()
    lab.open(names["accumulate"], 2)
    lab.open(names["replace"], 1)
    lab.open(names["accumulate"], 1)  # iteration 1 is one model for both lineages: no second load
    assert lab.loaded_models() == [*start, "runs/linreg/first/seed_0/model"]
    assert lab.open(None, None)[1] == lab.default_info  # the start-up model is never evicted
    assert lab.listing().loaded == lab.loaded_models()


def test_changed_params_stop_the_server_at_startup(smoke_lab: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A generate-step value edited since the pipeline ran: the served samples would differ, so refuse."""
    from collapse.serving import check_startup

    monkeypatch.chdir(tmp_path)
    params = (smoke_lab / "params.yaml").read_text().replace("  config: {}", "  config: {sigma: 3.0}", 1)
    project = _project(smoke_lab, tmp_path, params)
    monkeypatch.setenv("COLLAPSE_PROJECT", str(project))
    monkeypatch.delenv("COLLAPSE_LINEAGE", raising=False)
    monkeypatch.delenv("COLLAPSE_ITERATION", raising=False)
    with pytest.raises(ConfigError, match=r"run `dvc repro`"):
        check_startup("linreg")
    (project / "params.yaml").write_text((smoke_lab / "params.yaml").read_text())
    assert "serving lineage" in check_startup("linreg")


@pytest.mark.parametrize("modality", ["linreg", "lm"])
def test_openapi_describes_every_field(modality: str, request: pytest.FixtureRequest) -> None:
    import httpx

    server: Server = request.getfixturevalue(f"{modality}_server")
    spec = httpx.get(server.url + "/docs.json", timeout=30).json()
    schemas = spec["components"]["schemas"]
    routes = {"linreg": ["/predict", "/sample"], "lm": ["/generate", "/score"]}[modality]
    for route in routes:
        body = spec["paths"][route]["post"]["requestBody"]["content"]["application/json"]["schema"]
        body = schemas[body["$ref"].rsplit("/", 1)[-1]] if "$ref" in body else body
        assert body["properties"] and all(field.get("description") for field in body["properties"].values()), route
        assert {"400", "404"} <= set(spec["paths"][route]["post"]["responses"])
