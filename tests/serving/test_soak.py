"""The soak command (``python tests/serving/soak.py``, what ``nox -s soak`` runs), for a few seconds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from serving.servers import Server
from serving.smoke import MODALITIES, ROOT, command_env
from serving.soak import Endpoint, EndpointReport, ModalityReport, as_json, drive, endpoints, tree_rss

SOAK = Path(__file__).with_name("soak.py")
ROUTES = {"linreg": {"/sample", "/predict"}, "lm": {"/generate", "/score"}, "vae": {"/sample", "/reconstruct"}}


def _report(growth: float, errors: int = 0, requests: int = 5) -> ModalityReport:
    return ModalityReport("linreg", 1.0, 2, 3, 100.0, 100.0 + growth, 100.0 + growth, growth,
                          [EndpointReport("POST /sample", requests, errors)], 2)


def test_verdict() -> None:
    """Passes only with no error, growth ≤ the limit, and every endpoint asked."""
    assert as_json([_report(9.99)])["passed"]
    assert not as_json([_report(10.01)])["passed"] and as_json([_report(10.01)], max_growth=11)["passed"]
    assert not as_json([_report(0.0, errors=1)])["passed"]
    assert not as_json([_report(0.0, requests=0)])["passed"]
    assert not as_json([_report(0.0), _report(12.0)])["passed"]


@pytest.mark.slow
def test_soak_counts_errors_and_reads_the_process_tree(linreg_server: Server, smoke_lab: Path) -> None:
    """A rejected request is an error; RSS is read from the server's whole process tree."""
    rss, processes = tree_rss(linreg_server.process.pid)
    assert rss > 50 * 1024 * 1024 and processes >= 2  # `bentoml serve` and its worker
    calls = endpoints(smoke_lab, "linreg")
    bad = [calls[0], Endpoint("POST", "/sample", lambda i: {"n": 0})]  # GET /ui/ and a rejected body
    tallies = drive(linreg_server.url, bad, clients=2, seconds=1.0)
    assert tallies["GET /ui/"].seconds and not tallies["GET /ui/"].errors
    assert len(tallies["POST /sample"].errors) == len(tallies["POST /sample"].seconds) > 0
    assert tallies["POST /sample"].errors[0].startswith("400:")


@pytest.mark.slow
def test_soak_command(smoke_lab: Path, tmp_path: Path) -> None:
    """~10 s per modality: every endpoint answered, no error, RSS growth within the limit, exit 0."""
    out = tmp_path / "soak.json"
    result = subprocess.run([sys.executable, str(SOAK), "--project", str(smoke_lab), "--seconds", "10",
                             "--clients", "4", "--warmup", "3", "--json", str(out)],
                            cwd=ROOT, env=command_env(), capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, f"{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    assert result.stdout.rstrip().endswith("soak: passed")
    report = json.loads(out.read_text())
    assert report["passed"] and report["max_growth_percent"] == 10
    assert [m["modality"] for m in report["modalities"]] == list(MODALITIES)
    for modality in report["modalities"]:
        routes = {e["endpoint"] for e in modality["endpoints"]}
        assert routes == {"GET /ui/", "POST /models", *(f"POST {r}" for r in ROUTES[modality["modality"]])}
        assert all(e["requests"] > 0 and e["errors"] == 0 for e in modality["endpoints"])
        assert modality["errors"] == 0 and modality["growth_percent"] <= 10
        assert 0 < modality["rss_warm_mib"] and modality["rss_after_mib"] <= modality["rss_peak_mib"]
        assert modality["processes"] >= 2 and modality["clients"] == 4
        print(f"{modality['modality']}: {modality['requests']} requests, RSS {modality['rss_warm_mib']} → "
              f"{modality['rss_after_mib']} MiB ({modality['growth_percent']:+.2f} %)")
