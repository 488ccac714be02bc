"""`bentoml serve` processes on free loopback ports, for the serving tests and the benchmark."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from serving.smoke import BIN, command_env

SERVICES = {"linreg": "collapse_linreg.serving:LinregService", "lm": "collapse_lm.serving:LmService",
            "vae": "collapse_vae.serving:VaeService"}
READY_TIMEOUT = 240.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    """A `bentoml serve` process started by a test, and where it answers."""

    modality: str
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the group this test started, by its id
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)


def start_server(lab: Path, modality: str, log: Path, *, lineage: str | None = None, iteration: str | None = None,
                 extra_env: dict[str, str] | None = None, wait: bool = True, port: int | None = None) -> Server:
    """``bentoml serve <service>`` in ``lab`` on a free loopback port (the default host)."""
    port = port or free_port()
    env = command_env()
    env.update({"COLLAPSE_PROJECT": str(lab), **(extra_env or {})})
    for name, value in (("COLLAPSE_LINEAGE", lineage), ("COLLAPSE_ITERATION", iteration)):
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    handle = log.open("wb")
    process = subprocess.Popen([str(BIN / "bentoml"), "serve", SERVICES[modality], "--port", str(port)],
                               cwd=lab, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(modality, f"http://127.0.0.1:{port}", port, process, log)
    if wait:
        wait_ready(server)
    return server


def wait_ready(server: Server, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"bentoml serve exited with {server.process.returncode}:\n{server.output()}")
        try:
            if httpx.get(server.url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop()
    raise AssertionError(f"bentoml serve was not ready after {timeout:.0f} s:\n{server.output()}")
