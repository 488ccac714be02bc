"""`bentoml build` of each service, offline, from a copy of the project (README's commands)."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from serving.smoke import BIN, copy_project, run

pytestmark = pytest.mark.slow

ROUTES = {"linreg": {"/models", "/predict", "/sample"}, "lm": {"/models", "/generate", "/score"},
          "vae": {"/models", "/sample", "/reconstruct"}}


@pytest.mark.parametrize("modality", ["linreg", "lm", "vae"])
def test_bentoml_build_offline(modality: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lab = copy_project(tmp_path / "lab")
    home = tmp_path / "bentoml-home"
    dead = "http://127.0.0.1:9"  # any attempt to reach a network fails fast
    for name, value in {"BENTOML_HOME": str(home), "HTTP_PROXY": dead, "HTTPS_PROXY": dead, "http_proxy": dead,
                        "https_proxy": dead, "PIP_NO_INDEX": "1"}.items():
        monkeypatch.setenv(name, value)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", "build/wheels",
        "./shared", f"./services/{modality}", cwd=lab)
    run(str(BIN / "bentoml"), "build", f"services/{modality}", cwd=lab)

    built = [p for p in (home / "bentos" / f"collapse-{modality}").iterdir() if p.name != "latest"]
    assert len(built) == 1
    bento = built[0]
    wheels = sorted(p.name for p in (bento / "env/python/wheels").glob("*.whl"))
    assert wheels == sorted([f"collapse_lab_{modality}-0.1.0-py3-none-any.whl",
                             "collapse_lab_shared-0.1.0-py3-none-any.whl"])
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    assert {route["route"] for route in info["schema"]["routes"]} == ROUTES[modality]
    assert info["services"][0]["config"]["http"]["host"] == "127.0.0.1"
    assert not (bento / "env/python/requirements.lock.txt").exists()  # lock_packages: false
    # every runtime requirement of the two wheels is listed by the bento itself
    projects = [tomllib.loads((lab / package / "pyproject.toml").read_text())["project"]
                for package in ("shared", f"services/{modality}")]
    needed = {requirement for project in projects for requirement in project["dependencies"]
              if not requirement.startswith("collapse-lab-")}
    assert needed <= set((bento / "env/python/requirements.txt").read_text().split())
