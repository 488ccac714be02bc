"""Serving benchmark: each endpoint over loopback HTTP against the same call made in-process.

For every endpoint of the linreg and lm services, at smoke model size: requests per second and
p50/p95 latency of sequential requests through ``bentoml serve`` (one keep-alive connection),
the same numbers for the service method called in this process (same request, same validation,
same model code), and the HTTP overhead ratio (HTTP p50 / in-process p50). Then lm ``generate``
with n=16 in one request against 16 requests of n=1 (stream indices 0..15, so the same documents,
which is checked), over HTTP and in-process.

    python tests/benchmarks/bench_serving.py [--project DIR] [--requests 40] [--lm-requests 12]

Without ``--project`` it first trains a smoke copy of the project in a temporary directory (a few
minutes); pass a directory trained by ``python tests/serving/smoke.py DIR`` to skip that.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the serving helpers

from serving.servers import Server, start_server
from serving.smoke import build_smoke_lab, lineages, linreg_dim

TEXTS = ["Once upon a time there was a little rabbit who lived in the wood.", "The end of the story."]


def timed(call: Callable[[], Any], repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return seconds


def summary(seconds: list[float]) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p95 ms)."""
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return len(seconds) / sum(seconds), statistics.median(ordered) * 1e3, p95 * 1e3


def http_call(client: httpx.Client, route: str, body: dict[str, Any]) -> Callable[[], Any]:
    def call() -> Any:
        response = client.post(route, json=body)
        if response.status_code != 200:
            raise RuntimeError(f"{route} {body} → {response.status_code}: {response.text}")
        return response.json()

    return call


def service_instance(modality: str, lab: Path) -> Any:
    """The BentoML service class instantiated in this process (what a worker holds)."""
    os.environ["COLLAPSE_PROJECT"] = str(lab)
    os.environ["COLLAPSE_LINEAGE"] = lineages(lab, modality)["replace"]
    os.environ["COLLAPSE_ITERATION"] = "2"
    if modality == "linreg":
        from collapse_linreg.serving import LinregService

        return LinregService()
    from collapse_lm.serving import LmService

    return LmService()


def cases(modality: str, lab: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, route, body) of each endpoint measured."""
    if modality == "linreg":
        row = [0.5] * linreg_dim(lab)
        return [
            ("linreg models", "/models", {}),
            ("linreg predict (4 rows)", "/predict", {"x": [row] * 4}),
            ("linreg predict (1000 rows)", "/predict", {"x": [row] * 1000}),
            ("linreg sample (n=24)", "/sample", {"n": 24}),
            ("linreg sample (n=1000)", "/sample", {"n": 1000}),
            ("linreg sample (other model)", "/sample", {"n": 24, "lineage": lineages(lab, "linreg")["accumulate"],
                                                        "iteration": 1}),
        ]
    return [
        ("lm models", "/models", {}),
        ("lm generate (n=1, 48 tokens)", "/generate", {"n": 1}),
        ("lm generate (n=4, 48 tokens)", "/generate", {"n": 4}),
        ("lm generate (prompt, n=1)", "/generate", {"n": 1, "prompt": "Once upon a time"}),
        ("lm score (2 texts)", "/score", {"texts": TEXTS}),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, help="a smoke-trained project (default: train one now)")
    parser.add_argument("--requests", type=int, default=40, help="timed requests per linreg endpoint")
    parser.add_argument("--lm-requests", type=int, default=12, help="timed requests per lm endpoint")
    args = parser.parse_args()
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    scratch = tempfile.TemporaryDirectory(prefix="bench-serving-")
    lab = (args.project or build_smoke_lab(Path(scratch.name) / "lab")).resolve()
    rows: list[tuple[str, tuple[float, float, float], tuple[float, float, float]]] = []
    batch_rows: list[tuple[str, float, float]] = []
    for modality in ("linreg", "lm"):
        repeats = args.requests if modality == "linreg" else args.lm_requests
        server: Server = start_server(lab, modality, Path(scratch.name) / f"{modality}.log",
                                      lineage=lineages(lab, modality)["replace"], iteration="2")
        try:
            service = service_instance(modality, lab)
            with httpx.Client(base_url=server.url, timeout=600) as client:
                for label, route, body in cases(modality, lab):
                    over_http = timed(http_call(client, route, body), repeats)
                    method = getattr(service, route.strip("/"))
                    in_process = timed(lambda method=method, body=body: method(**body), repeats)
                    rows.append((label, summary(over_http), summary(in_process)))
                if modality == "lm":
                    batch_rows.extend(batch_comparison(client, service))
        finally:
            server.stop()
    print_tables(rows, batch_rows, lab)
    scratch.cleanup()


def batch_comparison(client: httpx.Client, service: Any) -> list[tuple[str, float, float]]:
    """(where, seconds for n=16 in one request, seconds for 16 requests of n=1)."""
    out = []
    batched_http = http_call(client, "/generate", {"n": 16, "start": 0})
    singles_http = [http_call(client, "/generate", {"n": 1, "start": i}) for i in range(16)]
    batched_http()  # warm-up
    started = time.perf_counter()
    together = batched_http()
    one_request = time.perf_counter() - started
    started = time.perf_counter()
    apart = [call() for call in singles_http]
    sixteen = time.perf_counter() - started
    if together["tokens"] != [answer["tokens"][0] for answer in apart]:
        raise AssertionError("n=16 in one request differs from 16 requests of n=1")
    out.append(("HTTP", one_request, sixteen))
    started = time.perf_counter()
    together_local = service.generate(n=16, start=0)
    one_call = time.perf_counter() - started
    started = time.perf_counter()
    apart_local = [service.generate(n=1, start=i) for i in range(16)]
    sixteen_calls = time.perf_counter() - started
    if together_local.tokens != [answer.tokens[0] for answer in apart_local]:
        raise AssertionError("in-process: n=16 differs from 16 calls of n=1")
    out.append(("in-process", one_call, sixteen_calls))
    return out


def print_tables(rows: list[tuple[str, tuple[float, float, float], tuple[float, float, float]]],
                 batch_rows: list[tuple[str, float, float]], lab: Path) -> None:
    import torch

    print(f"\nserving benchmark — smoke models in {lab}; {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}; sequential requests, one keep-alive connection")
    head = (f"{'endpoint':31} {'HTTP req/s':>10} {'p50 ms':>8} {'p95 ms':>8} │ {'in-proc/s':>10} {'p50 ms':>8} "
            f"{'p95 ms':>8} │ {'HTTP/in-proc p50':>16}")
    print(head)
    print("─" * len(head))
    for label, (rate, p50, p95), (local_rate, local_p50, local_p95) in rows:
        print(f"{label:31} {rate:10.1f} {p50:8.2f} {p95:8.2f} │ {local_rate:10.1f} {local_p50:8.2f} "
              f"{local_p95:8.2f} │ {p50 / local_p50:16.2f}")
    print("\nlm generate: 16 documents in one request (n=16) vs 16 requests of n=1 (same documents)")
    print(f"{'where':12} {'n=16 s':>8} {'16 × n=1 s':>11} {'speed-up':>9}")
    for where, together, apart in batch_rows:
        print(f"{where:12} {together:8.2f} {apart:11.2f} {apart / together:9.2f}")


if __name__ == "__main__":
    main()
