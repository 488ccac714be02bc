"""Soak: each modality's real ``bentoml serve`` under steady concurrent load, errors and memory growth.

For each modality it starts the service on a smoke-trained project (the lab's replace lineage,
iteration 2, as the serving tests do), warms it up — every endpoint once for every (lineage,
iteration) it will be asked about, then ``--warmup`` seconds of the same load as the soak — and
records the resident memory of the server's process tree (RSS of the ``bentoml serve`` process
and all its children, summed). Then ``--clients`` threads, each with its own keep-alive
connection, drive every endpoint of the service round-robin with valid requests for
``--seconds`` (requests alternate between the replace and accumulate lineages and iterations 1
and 2, and walk through stream indices). It reports per endpoint the requests, errors (anything
but a 200 with a well-formed answer) and latency, and per modality the RSS after warm-up, after
the soak, their growth and the peak during the soak. It exits 1 on any error or an RSS growth
above ``--max-growth`` percent (default 10).

    python tests/serving/soak.py [--seconds 120] [--clients 4] [--modalities linreg lm vae]
                                 [--project DIR] [--warmup S] [--max-growth 10] [--json FILE]

Without ``--project`` (or ``COLLAPSE_SERVING_LAB``) it first trains a smoke copy of the project in
a temporary directory (a few minutes); a directory trained by ``python tests/serving/smoke.py DIR``
skips that. ``nox -s soak`` runs it with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped, unused-ignore]  # no stubs installed

if __package__ in (None, ""):  # run as a script: the serving helpers live in tests/serving
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serving.servers import Server, start_server
from serving.smoke import MODALITIES, build_smoke_lab, lineages, linreg_dim

ENV_LAB = "COLLAPSE_SERVING_LAB"
MAX_GROWTH = 10.0  # percent
ITERATIONS = (1, 2)  # the smoke lab trains two iterations per lineage
TEXTS = ("Once upon a time there was a little rabbit who lived in the wood.",
         "The girl found a red ball under the tree and she was happy.", "The end of the story.")
PROMPTS = (None, "Once upon a time")

Body = Callable[[int], Any]  # request number (per endpoint) → JSON body
Check = Callable[[Any, Any], str | None]  # (body, answer) → what is wrong, or None


@dataclass(frozen=True)
class Endpoint:
    """One endpoint of a service and how to ask it valid questions."""

    method: str
    route: str
    body: Body | None = None  # POST only
    check: Check | None = None

    @property
    def name(self) -> str:
        return f"{self.method} {self.route}"


@dataclass
class EndpointReport:
    endpoint: str
    requests: int = 0
    errors: int = 0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    first_errors: list[str] = field(default_factory=list)


@dataclass
class ModalityReport:
    modality: str
    seconds: float
    clients: int
    warmup_requests: int
    rss_warm_mib: float
    rss_after_mib: float
    rss_peak_mib: float
    growth_percent: float
    endpoints: list[EndpointReport]
    processes: int

    @property
    def requests(self) -> int:
        return sum(e.requests for e in self.endpoints)

    @property
    def errors(self) -> int:
        return sum(e.errors for e in self.endpoints)

    def passed(self, max_growth: float = MAX_GROWTH) -> bool:
        return self.errors == 0 and self.growth_percent <= max_growth and all(e.requests for e in self.endpoints)


def tree_rss(pid: int) -> tuple[int, int]:
    """(summed RSS in bytes, process count) of ``pid`` and all its descendants."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    total = counted = 0
    for process in processes:
        try:
            total += process.memory_info().rss
            counted += 1
        except psutil.NoSuchProcess:  # a child that just ended
            continue
    return total, counted


def settled_rss(pid: int, samples: int = 5, gap: float = 0.4) -> tuple[int, int]:
    """The median of a few RSS readings of the tree (requests finished; allocators settle)."""
    readings = []
    for _ in range(samples):
        time.sleep(gap)
        readings.append(tree_rss(pid))
    return int(statistics.median(r[0] for r in readings)), max(r[1] for r in readings)


def _models(lab: Path, modality: str) -> list[dict[str, Any]]:
    names = lineages(lab, modality)
    return [{"lineage": names[policy], "iteration": iteration}
            for policy in ("replace", "accumulate") for iteration in ITERATIONS]


def _has(key: str, length: Callable[[Any], int] | None = None, *, also: tuple[str, ...] = ("model",)) -> Check:
    """The answer holds ``key`` (with ``length(body)`` items when given) and ``also``."""
    def check(body: Any, answer: Any) -> str | None:
        if not isinstance(answer, dict) or any(name not in answer for name in (key, *also)):
            return f"the answer lacks one of {[key, *also]}"
        if length is not None and len(answer[key]) != length(body):
            return f"{key} holds {len(answer[key])} items, asked for {length(body)}"
        return None
    return check


def endpoints(lab: Path, modality: str) -> list[Endpoint]:
    """Every endpoint of ``modality``'s service with valid requests cycling over the lab's models."""
    import numpy as np

    models = _models(lab, modality)

    def model(i: int) -> dict[str, Any]:
        return models[i % len(models)]

    common = [Endpoint("GET", "/ui/"), Endpoint("POST", "/models", lambda i: {}, _has("lineages", also=("default",)))]
    if modality == "linreg":
        rows = np.random.default_rng(0).standard_normal((8, linreg_dim(lab))).round(6).tolist()
        return [*common,
                Endpoint("POST", "/sample", lambda i: {**model(i), "n": 8, "start": 8 * i},
                         _has("x", lambda body: body["n"])),
                Endpoint("POST", "/predict", lambda i: {**model(i), "x": rows[: 1 + i % len(rows)]},
                         _has("y_hat", lambda body: len(body["x"])))]
    if modality == "lm":
        return [*common,
                Endpoint("POST", "/generate",
                         lambda i: {**model(i), "n": 2, "start": 2 * i, "max_new_tokens": 16,
                                    **({"prompt": PROMPTS[i % 2]} if PROMPTS[i % 2] else {})},
                         _has("texts", lambda body: body["n"])),
                Endpoint("POST", "/score", lambda i: {**model(i), "texts": list(TEXTS[: 1 + i % len(TEXTS)])},
                         _has("cross_entropy", lambda body: len(body["texts"])))]
    if modality == "vae":
        shard = np.load(lab / "runs/vae" / lineages(lab, "vae")["replace"] / "iter_1/samples/shard.npy",
                        allow_pickle=False)
        images = [image.tolist() for image in shard[:16]]
        return [*common,
                Endpoint("POST", "/sample", lambda i: {**model(i), "n": 16, "start": 16 * i},
                         _has("images", lambda body: body["n"])),
                Endpoint("POST", "/reconstruct", lambda i: {**model(i), "image": images[i % len(images)]},
                         _has("image"))]
    raise ValueError(f"no soak requests for modality {modality!r}")


@dataclass
class _Tally:
    seconds: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _ask(client: httpx.Client, endpoint: Endpoint, i: int) -> str | None:
    """One request; what went wrong, or None."""
    try:
        if endpoint.method == "GET":
            response = client.get(endpoint.route)
            if response.status_code != 200 or not response.text.startswith("<!doctype html>"):
                return f"{response.status_code}: {response.text[:200]}"
            return None
        body = endpoint.body(i) if endpoint.body else {}
        response = client.post(endpoint.route, json=body)
        if response.status_code != 200:
            return f"{response.status_code}: {response.text[:200]}"
        return endpoint.check(body, response.json()) if endpoint.check else None
    except (httpx.HTTPError, ValueError) as error:  # ValueError: an answer that is not JSON
        return f"{type(error).__name__}: {error}"


def drive(url: str, calls: Sequence[Endpoint], clients: int, seconds: float,
          on_tick: Callable[[], None] | None = None) -> dict[str, _Tally]:
    """``clients`` threads asking ``calls`` round-robin for ``seconds``; per endpoint, latencies and errors."""
    deadline = time.monotonic() + seconds
    tallies: list[dict[str, _Tally]] = [{c.name: _Tally() for c in calls} for _ in range(clients)]

    def client_loop(k: int) -> None:
        counts = dict.fromkeys(range(len(calls)), 0)
        with httpx.Client(base_url=url, timeout=300) as client:
            step = k  # clients start at different endpoints
            while time.monotonic() < deadline:
                which = step % len(calls)
                endpoint, i = calls[which], counts[which] * clients + k  # request numbers never repeat
                counts[which] += 1
                started = time.perf_counter()
                problem = _ask(client, endpoint, i)
                tally = tallies[k][endpoint.name]
                tally.seconds.append(time.perf_counter() - started)
                if problem is not None:
                    tally.errors.append(problem)
                step += 1

    threads = [threading.Thread(target=client_loop, args=(k,), name=f"soak-client-{k}") for k in range(clients)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        if on_tick is not None:
            on_tick()
        for thread in threads:
            thread.join(timeout=0.5)
    merged = {c.name: _Tally() for c in calls}
    for per_client in tallies:
        for name, tally in per_client.items():
            merged[name].seconds += tally.seconds
            merged[name].errors += tally.errors
    return merged


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def soak_server(server: Server, lab: Path, *, seconds: float, clients: int, warmup: float) -> ModalityReport:
    """Warm ``server`` up, record its tree's RSS, drive every endpoint for ``seconds``, record it again."""
    calls = endpoints(lab, server.modality)
    pid = server.process.pid
    warm_errors: list[str] = []
    with httpx.Client(base_url=server.url, timeout=300) as client:  # every endpoint × model, once
        for endpoint in calls:
            for i in range(len(_models(lab, server.modality))):
                problem = _ask(client, endpoint, i)
                if problem is not None:
                    warm_errors.append(f"{endpoint.name} (warm-up): {problem}")
    warm = drive(server.url, calls, clients, warmup)
    warm_errors += [f"{name} (warm-up): {e}" for name, tally in warm.items() for e in tally.errors]
    warmup_requests = sum(len(t.seconds) for t in warm.values()) + len(calls) * len(_models(lab, server.modality))
    before, _ = settled_rss(pid)
    peak = [before]

    def sample_rss() -> None:
        peak[0] = max(peak[0], tree_rss(pid)[0])

    soaked = drive(server.url, calls, clients, seconds, on_tick=sample_rss)
    after, processes = settled_rss(pid)
    if server.process.poll() is not None:
        warm_errors.append(f"the server exited with {server.process.returncode}")
    reports = []
    for endpoint in calls:
        tally = soaked[endpoint.name]
        reports.append(EndpointReport(endpoint.name, len(tally.seconds), len(tally.errors),
                                      round(_percentile(tally.seconds, 0.5) * 1e3, 1),
                                      round(_percentile(tally.seconds, 0.95) * 1e3, 1), tally.errors[:3]))
    if warm_errors:  # counted against the service as a whole (the first endpoint's row)
        reports[0].errors += len(warm_errors)
        reports[0].first_errors = (warm_errors + reports[0].first_errors)[:3]
    mib = 1024 * 1024
    return ModalityReport(server.modality, seconds, clients, warmup_requests, round(before / mib, 1),
                          round(after / mib, 1), round(max(peak[0], after) / mib, 1),
                          round(100 * (after - before) / before, 2) if before else float("inf"), reports, processes)


def soak(lab: Path, modalities: Sequence[str], *, seconds: float, clients: int, warmup: float,
         logs: Path, max_growth: float = MAX_GROWTH, emit: Callable[[str], None] = print) -> list[ModalityReport]:
    """Start each modality's server on ``lab`` in turn, soak it and stop it."""
    reports = []
    for modality in modalities:
        started = time.perf_counter()
        server = start_server(lab, modality, logs / f"{modality}-soak-server.log",
                              lineage=lineages(lab, modality)["replace"], iteration="2")
        try:
            emit(f"{modality}: server ready in {time.perf_counter() - started:.0f} s; warming up, then "
                 f"{seconds:g} s with {clients} clients")
            report = soak_server(server, lab, seconds=seconds, clients=clients, warmup=warmup)
        finally:
            server.stop()
        if report.errors:
            emit(f"{modality}: server log tail:\n{server.output()[-3000:]}")
        reports.append(report)
        emit(format_report(report, max_growth))
    return reports


def format_report(report: ModalityReport, max_growth: float = MAX_GROWTH) -> str:
    lines = [f"{report.modality}: {report.requests} requests in {report.seconds:g} s with {report.clients} clients "
             f"({report.requests / report.seconds:.1f}/s), {report.errors} errors; RSS of {report.processes} "
             f"processes {report.rss_warm_mib:.1f} MiB after warm-up ({report.warmup_requests} requests) → "
             f"{report.rss_after_mib:.1f} MiB after the soak ({report.growth_percent:+.2f} %, limit "
             f"{max_growth:g} %), peak {report.rss_peak_mib:.1f} MiB — "
             f"{'ok' if report.passed(max_growth) else 'FAILED'}",
             f"  {'endpoint':<20} {'requests':>9} {'errors':>7} {'p50 ms':>8} {'p95 ms':>8}"]
    for e in report.endpoints:
        lines.append(f"  {e.endpoint:<20} {e.requests:>9} {e.errors:>7} {e.p50_ms:>8.1f} {e.p95_ms:>8.1f}")
        lines += [f"    error: {message}" for message in e.first_errors]
    return "\n".join(lines)


def as_json(reports: Sequence[ModalityReport], max_growth: float = MAX_GROWTH) -> dict[str, Any]:
    return {"max_growth_percent": max_growth, "passed": all(r.passed(max_growth) for r in reports),
            "modalities": [{**asdict(r), "requests": r.requests, "errors": r.errors,
                            "passed": r.passed(max_growth)} for r in reports]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0, help="soak per modality, seconds (default 120)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    parser.add_argument("--modalities", nargs="+", choices=MODALITIES, default=list(MODALITIES))
    parser.add_argument("--project", type=Path, help=f"a smoke-trained project (default: ${ENV_LAB}, "
                                                     "else train one now)")
    parser.add_argument("--warmup", type=float, help="seconds of load before the first RSS reading "
                                                     "(default: a tenth of --seconds, 3..15)")
    parser.add_argument("--max-growth", type=float, default=MAX_GROWTH, help="RSS growth allowed, percent")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.clients < 1:
        parser.error("--seconds must be > 0 and --clients ≥ 1")
    warmup = args.warmup if args.warmup is not None else min(15.0, max(3.0, args.seconds / 10))
    modalities = tuple(dict.fromkeys(args.modalities))
    with tempfile.TemporaryDirectory(prefix="soak-") as scratch:
        given = args.project or (Path(os.environ[ENV_LAB]) if os.environ.get(ENV_LAB) else None)
        lab = (given or build_smoke_lab(Path(scratch) / "lab", modalities)).resolve()
        reports = soak(lab, modalities, seconds=args.seconds, clients=args.clients, warmup=warmup,
                       logs=Path(scratch), max_growth=args.max_growth, emit=lambda line: print(line, flush=True))
    report = as_json(reports, args.max_growth)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print("soak:", "passed" if report["passed"] else "FAILED", flush=True)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
