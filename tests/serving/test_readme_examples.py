"""The README's serving examples, run as written (only the port differs), against the real servers.

Each example here is a line of the README's "Serving" section; when the README has that section,
every example must appear in it verbatim.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from serving.servers import Server
from serving.smoke import ROOT, command_env

pytestmark = pytest.mark.slow

README_PORT = {"linreg": "3000", "lm": "3001", "vae": "3002"}
CURL = {
    "linreg": [
        "curl -s -X POST http://127.0.0.1:3000/models -H 'Content-Type: application/json' -d '{}'",
        "curl -s -X POST http://127.0.0.1:3000/sample -H 'Content-Type: application/json' "
        "-d '{\"n\": 5, \"start\": 0}'",
        "curl -s -X POST http://127.0.0.1:3000/sample -H 'Content-Type: application/json' "
        "-d '{\"lineage\": \"linreg-accumulate\", \"iteration\": 2, \"n\": 3, \"seed\": 7}'",
    ],
    "lm": [
        "curl -s -X POST http://127.0.0.1:3001/generate -H 'Content-Type: application/json' "
        "-d '{\"n\": 2, \"start\": 0}'",
        "curl -s -X POST http://127.0.0.1:3001/generate -H 'Content-Type: application/json' "
        "-d '{\"prompt\": \"Once upon a time\", \"n\": 2, \"max_new_tokens\": 40, \"temperature\": 0.8}'",
        "curl -s -X POST http://127.0.0.1:3001/score -H 'Content-Type: application/json' "
        "-d '{\"texts\": [\"The little rabbit ran home.\"]}'",
    ],
    "vae": [
        "curl -s -X POST http://127.0.0.1:3002/sample -H 'Content-Type: application/json' "
        "-d '{\"n\": 4, \"start\": 0}'",
    ],
}
VAE_PNG = ("curl -s -X POST http://127.0.0.1:3002/sample -H 'Content-Type: application/json' -d '{\"n\": 16}' | "
           "python -c 'import base64, json, sys; open(\"grid.png\", \"wb\").write(base64.b64decode(json.load("
           "sys.stdin)[\"png\"]))'")
CLIENT = {
    "linreg": """\
import bentoml

with bentoml.SyncHTTPClient("http://127.0.0.1:3000") as client:
    rows = client.sample(n=4, start=0)            # rows 0..3 of the served model's samples
    fit = client.predict(x=rows["x"])             # x·ŵ of the same model
    print(rows["model"]["lineage"], rows["model"]["iteration"], fit["y_hat"], rows["y"])
""",
    "lm": """\
import bentoml

with bentoml.SyncHTTPClient("http://127.0.0.1:3001", timeout=300) as client:
    stories = client.generate(n=2, start=0)       # documents 0, 1 of the pipeline's samples
    other = client.generate(n=2, lineage="lm-accumulate", iteration=1, prompt="Once upon a time", temperature=0.8)
    scores = client.score(texts=stories["texts"])
    print(stories["texts"], other["texts"], scores["cross_entropy"])
""",
}


def _readme_check(example: str) -> None:
    readme = (ROOT / "README.md").read_text()
    if "bentoml serve collapse_" not in readme:
        return  # the README has no serving section yet: nothing to compare
    for line in example.strip().splitlines():
        assert line.strip() in readme, f"README's serving section lacks: {line.strip()}"


@pytest.mark.parametrize("modality", ["linreg", "lm", "vae"])
def test_curl_examples(modality: str, request: pytest.FixtureRequest) -> None:
    server: Server = request.getfixturevalue(f"{modality}_server")
    for example in CURL[modality]:
        _readme_check(example)
        command = shlex.split(example.replace(f":{README_PORT[modality]}/", f":{server.port}/"))
        result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300)
        answer = json.loads(result.stdout)
        assert ("model" in answer or "default" in answer) and "error" not in answer, answer


@pytest.mark.parametrize("modality", ["linreg", "lm"])
def test_client_examples(modality: str, request: pytest.FixtureRequest) -> None:
    server: Server = request.getfixturevalue(f"{modality}_server")
    _readme_check(CLIENT[modality])
    code = CLIENT[modality].replace(f":{README_PORT[modality]}\"", f":{server.port}\"")
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            env=command_env(), timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    assert re.search(r"\S", result.stdout)


def test_vae_png_example(vae_server: Server, tmp_path: Path) -> None:
    """The README's pipe from /sample to grid.png, run by the shell as written (in a scratch folder)."""
    _readme_check(VAE_PNG)
    command = VAE_PNG.replace(":3002/", f":{vae_server.port}/")
    subprocess.run(["bash", "-c", command], cwd=tmp_path, env=command_env(), check=True, timeout=300)
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
