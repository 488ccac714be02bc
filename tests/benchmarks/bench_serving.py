"""Serving benchmark: each endpoint over loopback HTTP against the same call made in-process.

For every endpoint of the linreg, lm and vae services, at smoke model size: requests per second
and p50/p95 latency of sequential requests through ``bentoml serve`` (one keep-alive connection),
the same numbers for the service method called in this process (same request, same validation,
same model code), and the HTTP overhead ratio (HTTP p50 / in-process p50). Then lm ``generate``
and vae ``sample`` with n=16 in one request against 16 requests of n=1 (stream indices 0..15, so
the same documents / images, which is checked; the vae images are also checked against the
pipeline's shard), over HTTP and in-process.

    python tests/benchmarks/bench_serving.py [--project DIR] [--requests 40] [--lm-requests 12]
                                             [--vae-requests 30]

Without ``--project`` it first trains a smoke copy of the project in a temporary directory (a few
minutes); pass a directory trained by ``python tests/serving/smoke.py DIR`` to skip that.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the serving helpers

from serving.servers import Server, start_server
from serving.smoke import build_smoke_lab, lineages, linreg_dim

TEXTS = ["Once upon a time there was a little rabbit who lived in the wood.", "The end of the story."]
MODALITIES = ("linreg", "lm", "vae")
BATCH = 16  # items in one request of the batched-against-single comparison
Summary = tuple[float, float, float]  # (requests/s, p50 ms, p95 ms)


def timed(call: Callable[[], Any], repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return seconds


def summary(seconds: list[float]) -> Summary:
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
    if modality == "lm":
        from collapse_lm.serving import LmService

        return LmService()
    from collapse_vae.serving import VaeService

    return VaeService()


def vae_shard(lab: Path, iteration: int = 2) -> np.ndarray:
    """The images the generate stage of the replace vae lineage wrote for ``iteration`` (N, [C,] H, W) uint8."""
    shard = lab / "runs/vae" / lineages(lab, "vae")["replace"] / f"iter_{iteration}/samples/shard.npy"
    return np.load(shard, allow_pickle=False)


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
    if modality == "lm":
        return [
            ("lm models", "/models", {}),
            ("lm generate (n=1, 48 tokens)", "/generate", {"n": 1}),
            ("lm generate (n=4, 48 tokens)", "/generate", {"n": 4}),
            ("lm generate (prompt, n=1)", "/generate", {"n": 1, "prompt": "Once upon a time"}),
            ("lm score (2 texts)", "/score", {"texts": TEXTS}),
        ]
    image = vae_shard(lab)[5]  # a real image of the models' stored shape
    side = "×".join(str(n) for n in image.shape)
    return [
        ("vae models", "/models", {}),
        ("vae sample (n=1)", "/sample", {"n": 1}),
        ("vae sample (n=16)", "/sample", {"n": 16}),
        ("vae sample (n=256)", "/sample", {"n": 256}),
        ("vae sample (other model, n=16)", "/sample", {"n": 16, "lineage": lineages(lab, "vae")["accumulate"],
                                                       "iteration": 1}),
        (f"vae reconstruct (1 image {side})", "/reconstruct", {"image": image.tolist()}),
    ]


def batch_field(modality: str) -> tuple[str, str, str] | None:
    """(route, answer field holding one list entry per item, what an item is) of the batch comparison."""
    return {"lm": ("/generate", "tokens", "documents"), "vae": ("/sample", "images", "images")}.get(modality)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, help="a smoke-trained project (default: train one now)")
    parser.add_argument("--requests", type=int, default=40, help="timed requests per linreg endpoint")
    parser.add_argument("--lm-requests", type=int, default=12, help="timed requests per lm endpoint")
    parser.add_argument("--vae-requests", type=int, default=30, help="timed requests per vae endpoint")
    args = parser.parse_args()
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    scratch = tempfile.TemporaryDirectory(prefix="bench-serving-")
    lab = (args.project or build_smoke_lab(Path(scratch.name) / "lab")).resolve()
    rows: list[tuple[str, Summary, Summary]] = []
    batch_rows: list[tuple[str, str, float, float]] = []
    repeats_of = {"linreg": args.requests, "lm": args.lm_requests, "vae": args.vae_requests}
    for modality in MODALITIES:
        repeats = repeats_of[modality]
        server: Server = start_server(lab, modality, Path(scratch.name) / f"{modality}.log",
                                      lineage=lineages(lab, modality)["replace"], iteration="2")
        try:
            service = service_instance(modality, lab)
            with httpx.Client(base_url=server.url, timeout=600) as client:
                for label, route, body in cases(modality, lab):
                    over_http = timed(http_call(client, route, body), repeats)
                    method = getattr(service, route.strip("/"))
                    in_process = timed(functools.partial(method, **body), repeats)
                    rows.append((label, summary(over_http), summary(in_process)))
                batched = batch_field(modality)
                if batched is not None:
                    route, field, _ = batched
                    expected = vae_shard(lab)[:BATCH].tolist() if modality == "vae" else None
                    batch_rows.extend((modality, where, together, apart) for where, together, apart
                                      in batch_comparison(client, service, route, field, expected))
        finally:
            server.stop()
    print_tables(rows, batch_rows, lab)
    scratch.cleanup()


def batch_comparison(client: httpx.Client, service: Any, route: str, field: str,
                     expected: list[Any] | None = None) -> list[tuple[str, float, float]]:
    """(where, seconds for n=16 in one request, seconds for 16 requests of n=1) of ``route``.

    Both ways must give the same items (``field`` of the answer, one entry per item), and those must
    equal ``expected`` (items 0..15 of the stream) when it is given."""
    out = []
    batched_http = http_call(client, route, {"n": BATCH, "start": 0})
    singles_http = [http_call(client, route, {"n": 1, "start": i}) for i in range(BATCH)]
    batched_http()  # warm-up
    started = time.perf_counter()
    together = batched_http()
    one_request = time.perf_counter() - started
    started = time.perf_counter()
    apart = [call() for call in singles_http]
    sixteen = time.perf_counter() - started
    if together[field] != [answer[field][0] for answer in apart]:
        raise AssertionError(f"{route}: n={BATCH} in one request differs from {BATCH} requests of n=1")
    if expected is not None and together[field] != expected:
        raise AssertionError(f"{route}: n={BATCH} over HTTP differs from the pipeline's items 0..{BATCH - 1}")
    out.append(("HTTP", one_request, sixteen))
    method = getattr(service, route.strip("/"))
    started = time.perf_counter()
    together_local = getattr(method(n=BATCH, start=0), field)
    one_call = time.perf_counter() - started
    started = time.perf_counter()
    apart_local = [getattr(method(n=1, start=i), field) for i in range(BATCH)]
    sixteen_calls = time.perf_counter() - started
    if together_local != [answer[0] for answer in apart_local]:
        raise AssertionError(f"in-process {route}: n={BATCH} differs from {BATCH} calls of n=1")
    if together_local != together[field]:
        raise AssertionError(f"{route}: n={BATCH} in-process differs from n={BATCH} over HTTP")
    out.append(("in-process", one_call, sixteen_calls))
    return out


def print_tables(rows: list[tuple[str, Summary, Summary]], batch_rows: list[tuple[str, str, float, float]],
                 lab: Path) -> None:
    import torch

    print(f"\nserving benchmark — smoke models in {lab}; {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}; sequential requests, one keep-alive connection")
    width = max(31, *(len(label) for label, _, _ in rows))
    head = (f"{'endpoint':{width}} {'HTTP req/s':>10} {'p50 ms':>8} {'p95 ms':>8} │ {'in-proc/s':>10} "
            f"{'p50 ms':>8} {'p95 ms':>8} │ {'HTTP/in-proc p50':>16}")
    print(head)
    print("─" * len(head))
    for label, (rate, p50, p95), (local_rate, local_p50, local_p95) in rows:
        print(f"{label:{width}} {rate:10.1f} {p50:8.2f} {p95:8.2f} │ {local_rate:10.1f} {local_p50:8.2f} "
              f"{local_p95:8.2f} │ {p50 / local_p50:16.2f}")
    for modality in dict.fromkeys(modality for modality, *_ in batch_rows):
        batched = batch_field(modality)
        assert batched is not None
        route, _, items = batched
        print(f"\n{modality} {route.strip('/')}: {BATCH} {items} in one request (n={BATCH}) vs {BATCH} requests "
              f"of n=1 (same {items})")
        print(f"{'where':12} {f'n={BATCH} s':>8} {f'{BATCH} × n=1 s':>11} {'speed-up':>9}")
        for _, where, together, apart in (row for row in batch_rows if row[0] == modality):
            print(f"{where:12} {together:8.2f} {apart:11.2f} {apart / together:9.2f}")


if __name__ == "__main__":
    main()
