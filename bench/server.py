"""A Finer-CAM Studio server in a subprocess on 127.0.0.1, and its RSS sampled from /proc.

A subprocess (not a thread of the benchmark) so the server's memory is measured alone: the
clients, their threads and their buffers live in another process.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.allocator import resident_bytes

log = logging.getLogger("bench.server")

HOST = "127.0.0.1"  # never anything else: the benchmarks must not reach another machine
REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_PERIOD_S = 0.5
READY_TIMEOUT_S = 240.0


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """The running server: its URL, its process and the file its output goes to."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def server_command(models: list[str], port: int, concurrency: int | None) -> list[str]:
    """``python -m app`` on 127.0.0.1, offline, with the given models preloaded."""
    command = [sys.executable, "-m", "app", "--host", HOST, "--port", str(port), "--offline"]
    command += ["--models", ",".join(models), "--preload"]
    if concurrency is not None:
        command += ["--concurrency", str(concurrency)]
    return command


@contextmanager
def running_server(
    models: list[str],
    workdir: Path,
    concurrency: int | None,
    threads: int,
    cache: dict[str, str] | None = None,
    repo: Path = REPO_ROOT,
) -> Iterator[ServerProcess]:
    """Start the app (of the checkout ``repo``) in a subprocess, wait until it answers, stop it
    afterwards."""
    port = free_port()
    temp = workdir / "server-tmp"
    temp.mkdir()
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        GRADIO_ANALYTICS_ENABLED="False",
        GRADIO_TEMP_DIR=str(temp),  # uploads and outputs land in our temp folder
        TMPDIR=str(temp),
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        **(cache or {}),
    )
    log_path = workdir / "server.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            server_command(models, port, concurrency),
            cwd=repo,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(f"http://{HOST}:{port}/", process, log_path)
    try:
        wait_until_ready(server)
        yield server
    except Exception:
        # The folder with the server's log is usually a temporary one: show why it failed.
        log.error("the run failed; the server's last output:\n%s", server.log_tail(60))
        raise
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_ready(server: ServerProcess, timeout: float = READY_TIMEOUT_S) -> None:
    """Poll the server's page until it answers 200; fail fast if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"the server exited while starting:\n{server.log_tail()}")
        try:
            if httpx.get(server.url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server did not answer within {timeout:.0f} s:\n{server.log_tail()}")


class RssSampler(threading.Thread):
    """Samples a process's RSS every ``period`` seconds: ``samples`` = [(monotonic, bytes)]."""

    def __init__(self, pid: int, period: float = SAMPLE_PERIOD_S) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid = pid
        self.period = period
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append((time.monotonic(), resident_bytes(self.pid)))
            self._stop_event.wait(self.period)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
