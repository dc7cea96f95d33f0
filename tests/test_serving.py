"""Holding a public server: a busy message past capacity, a disk cap under many requests, the
explanation still shown when the disk is full, and a graceful stop on SIGTERM."""

from __future__ import annotations

import errno
import http.server
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pytest
from appserver import REPO_ROOT, free_port, running_server, write_image
from gradio import networking, processing_utils
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app.synthbirds import NUM_SPECIES, render_sample
from app.ui.app import serving
from app.ui.classifier_tab import FULL
from app.ui.serving import (
    KEEP_ALIVE_ENV,
    MAX_CPU_SHARE,
    DiskCap,
    keep_alive_s,
    patient_url_check,
    save_pil_to_cache,
    url_answers,
    write_pictures_atomically,
)
from app.ui.tab_glue import DOWNLOAD_UNAVAILABLE, DownloadDir

pytestmark = pytest.mark.timeout(300)

API = "/explain_classifier"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The real app, with its Gradio cache in a folder of its own (the disk test measures it)."""
    saved = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(tmp_path_factory.mktemp("gradio-cache"))
    try:
        with running_server() as srv:
            yield srv
    finally:
        if saved is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = saved


def _client(url: str) -> Client:
    return Client(url, verbose=False, analytics_enabled=False, download_files=False)


def _bird(folder: Path, index: int) -> Path:
    """A distinct synthetic bird per ``index`` (new pixels: a new upload and new outputs)."""
    sample = render_sample(index % NUM_SPECIES, np.random.SeedSequence([17, index]), size=96)
    path = folder / f"bird-{index:03d}.png"
    sample.image.save(path)
    return path


def test_past_capacity_a_request_is_refused_at_once_with_a_busy_message(
    server, tmp_path, monkeypatch
):
    admission = serving(server.demo).admission
    monkeypatch.setattr(admission, "max_waiting", 2)
    gate, started = threading.Event(), threading.Semaphore(0)
    explain = server.service.explain

    def held(*args, **kwargs):  # the workers stay busy until the test lets them go
        started.release()
        gate.wait(60)
        return explain(*args, **kwargs)

    monkeypatch.setattr(server.service, "explain", held)
    image = write_image(tmp_path / "bird.png", (96, 72))
    client = _client(server.url)
    try:
        jobs = [
            client.submit(image=handle_file(str(image)), model=server.classifier, api_name=API)
            for _ in range(2)
        ]
        for _ in range(2):  # the default concurrency: both workers are now held
            assert started.acquire(timeout=60)
        jobs += [
            client.submit(image=handle_file(str(image)), model=server.classifier, api_name=API)
            for _ in range(2)
        ]
        deadline = time.monotonic() + 30
        while (
            sum(len(q.queue) for q in admission.queue.event_queue_per_concurrency_id.values()) < 2
        ):
            assert time.monotonic() < deadline, "the two waiting requests never queued"
            time.sleep(0.05)
        refused_before = admission.refused
        extra = client.submit(image=handle_file(str(image)), model=server.classifier, api_name=API)
        with pytest.raises(AppError, match=r"busy: 4 requests ahead of yours.*try again"):
            extra.result(timeout=30)  # answered while every worker is still held
        assert admission.refused == refused_before + 1
        gate.set()
        for job in jobs:  # the accepted requests are all served
            assert job.result(timeout=120)[3] is not None
    finally:
        gate.set()
        client.close()


def test_while_stopping_new_requests_are_refused_with_a_message(server, tmp_path, monkeypatch):
    admission = serving(server.demo).admission
    image = write_image(tmp_path / "bird.png", (96, 72))
    client = _client(server.url)
    try:
        monkeypatch.setattr(admission, "stopping", True)
        with pytest.raises(AppError, match="restarting; please try again"):
            client.predict(image=handle_file(str(image)), model=server.classifier, api_name=API)
        monkeypatch.setattr(admission, "stopping", False)
        assert client.predict(image=handle_file(str(image)), model=server.classifier, api_name=API)
    finally:
        client.close()


def test_finished_sessions_are_forgotten_and_serving_goes_on(server, tmp_path):
    admission = serving(server.demo).admission
    image = write_image(tmp_path / "bird.png", (96, 72))
    sessions = admission.queue.pending_event_ids_session
    for _ in range(3):  # a client per visit, as browsers are: each leaves a session behind
        client = _client(server.url)
        client.predict(image=handle_file(str(image)), model=server.classifier, api_name=API)
        client.close()
    assert sum(not ids for ids in sessions.values()) >= 3
    assert admission.forget_finished_sessions() >= 3
    assert all(sessions.values())
    client = _client(server.url)
    try:  # the same client twice after the sweep: its session is simply recreated
        for _ in range(2):
            client.predict(image=handle_file(str(image)), model=server.classifier, api_name=API)
    finally:
        client.close()


def test_visitor_sessions_are_capped(server, tmp_path, monkeypatch):
    """Gradio copies every component's config per session and keeps 10,000 by default: the
    app caps them (``FINERCAM_SESSIONS``) so a busy public Space does not grow for days."""
    from app.config import Settings

    holder = server.demo.state_holder
    assert holder.capacity == Settings().sessions == 128
    cap = len(holder.session_data) + 1  # Gradio drops one old session per new one
    monkeypatch.setattr(holder, "capacity", cap)
    image = write_image(tmp_path / "bird.png", (96, 72))
    for _ in range(4):  # four visitors, one after another
        client = _client(server.url)
        client.predict(image=handle_file(str(image)), model=server.classifier, api_name=API)
        client.close()
        assert len(holder.session_data) <= cap


def test_files_stay_under_the_disk_cap_over_many_requests(server, tmp_path, monkeypatch):
    disk = serving(server.demo).disk
    assert disk is not None and disk.is_alive()
    cap = 2**19  # a request writes 250-450 kB: from the second one on, the cap binds
    monkeypatch.setattr(disk, "cap_bytes", cap)
    monkeypatch.setattr(disk, "period", 0.1)
    monkeypatch.setattr(disk, "min_age_s", 0.3)  # files of a request in flight are kept
    freed: list[int] = []  # bytes of each sweep: what was written is what is left plus these
    sweep = disk.sweep

    def counted_sweep() -> int:
        freed.append(sweep())
        return freed[-1]

    monkeypatch.setattr(disk, "sweep", counted_sweep)
    start, _ = disk.usage()
    client = _client(server.url)
    try:
        for i in range(6):
            result = client.predict(
                image=handle_file(str(_bird(tmp_path, i))), model=server.classifier, api_name=API
            )
            assert result[3] is not None and result[5] is not None
            time.sleep(disk.min_age_s)
            sweeps = disk.sweeps
            deadline = time.monotonic() + 20
            while disk.sweeps < sweeps + 2:  # a whole sweep after this request's files exist
                assert time.monotonic() < deadline, "the disk cap stopped sweeping"
                time.sleep(0.05)
            used, files = disk.usage()
            assert used <= cap, f"{used} bytes in {files} files after request {i + 1}"
    finally:
        client.close()
    written = used + sum(freed) - start
    assert written > 2 * cap  # the requests wrote far more than the cap: the cap was binding
    assert disk.removed > 0
    kept = [p for block in server.demo.blocks.values() for p in getattr(block, "keep_in_cache", ())]
    assert all(Path(p).exists() for p in kept)  # the examples survive the sweeps


def test_the_heap_trim_runs_beside_the_server(server):
    heap = serving(server.demo).heap
    assert heap is not None and heap.is_alive()
    assert heap.period == serving(server.demo).settings.heap_trim_s > 0


def test_a_picture_returned_again_leaves_the_file_being_downloaded_whole(tmp_path):
    """The same picture returned again (same example, same settings) must not rewrite in place
    the file a download is reading: that download has sent Content-Length already, and a
    truncated file cuts its connection ("received 0 bytes, expected N" in the client)."""
    write_pictures_atomically()  # as launch() does
    pixels = np.random.default_rng(3).integers(0, 256, (900, 900, 3), dtype=np.uint8)
    picture = Image.fromarray(pixels)
    path = Path(processing_utils.save_pil_to_cache(picture, str(tmp_path), format="png"))
    whole = path.read_bytes()
    sizes: set[int] = set()
    with open(path, "rb") as download:  # a download in flight
        writer = threading.Thread(
            target=lambda: [
                processing_utils.save_pil_to_cache(picture, str(tmp_path), format="png")
                for _ in range(6)
            ]
        )
        writer.start()
        while writer.is_alive():  # what a download starting now would find
            sizes.add(os.stat(path).st_size)
        writer.join()
        assert sizes == {len(whole)}  # never a short file
        assert download.read() == whole
        assert os.fstat(download.fileno()).st_ino != os.stat(path).st_ino  # replaced, not rewritten
    assert path.read_bytes() == whole
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no staging file left
    assert path.stat().st_mode & 0o777 == 0o644


def test_the_server_writes_its_pictures_atomically(server):
    assert processing_utils.save_pil_to_cache is save_pil_to_cache


def test_an_idle_connection_outlives_a_client_pools_expiry(server):
    """A pooled client (httpx: 5 s) reuses a connection idle just under its expiry; a server
    closing idle connections at that same moment loses the request ("Connection reset by
    peer"). The server must keep an idle connection open well past it."""
    pool_expiry_s = httpx.Limits().keepalive_expiry
    assert pool_expiry_s is not None and keep_alive_s() >= 4 * pool_expiry_s
    host, port = server.url.removeprefix("http://").rstrip("/").split(":")
    request = f"GET /gradio_api/info HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(request)
        assert _whole_response(connection).startswith(b"HTTP/1.1 200")
        time.sleep(pool_expiry_s + 1.0)
        readable, _, _ = select.select([connection], [], [], 0)
        assert not readable, "the server closed the idle connection"
        connection.sendall(request)
        assert _whole_response(connection).startswith(b"HTTP/1.1 200")


def _whole_response(connection: socket.socket) -> bytes:
    """One HTTP response read to the end of its body, so no byte of it is left to look like
    the server closing the connection (a loaded server may send headers and body apart)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        assert chunk, "the server closed the connection before its headers"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    assert length, f"no Content-Length in {head!r}"
    while len(body) < int(length.group(1)):
        chunk = connection.recv(65536)
        assert chunk, "the server closed the connection inside a body"
        body += chunk
    return head + b"\r\n\r\n" + body


def test_a_bad_keep_alive_setting_is_refused_with_its_name(monkeypatch):
    monkeypatch.setenv(KEEP_ALIVE_ENV, "soon")
    with pytest.raises(ValueError, match=KEEP_ALIVE_ENV):
        keep_alive_s()
    monkeypatch.setenv(KEEP_ALIVE_ENV, "30")
    assert keep_alive_s() == 30.0


def test_the_disk_cap_forgets_the_records_of_files_that_are_gone(tmp_path):
    """Gradio records every file it writes; a record whose file vanished (age limit, or an
    expired upload sent back by a page) would otherwise stay for the life of the server."""
    with gr.Blocks() as demo:
        image = gr.Image()
    kept = tmp_path / "kept.png"
    kept.write_bytes(b"x" * 100)
    gone = [str(tmp_path / f"gone-{i}.png") for i in range(3)]
    image.temp_files.update([str(kept), *gone])
    disk = DiskCap(demo, [], cap_bytes=2**20)
    assert disk.usage() == (100, 1)
    assert disk.sweep() == 0
    assert image.temp_files == {str(kept)} and kept.exists()


def test_the_disk_cap_keeps_a_file_written_again_after_its_listing(tmp_path, monkeypatch):
    """A sweep lists the files, then removes the oldest; a picture returned again in between is
    a new file under the old name, which a download may be reading."""
    with gr.Blocks() as demo:
        image = gr.Image()
    picture = tmp_path / "image.jpeg"
    picture.write_bytes(b"x" * 100)
    os.utime(picture, (time.time() - 3600, time.time() - 3600))
    image.temp_files.add(str(picture))
    disk = DiskCap(demo, [], cap_bytes=0)
    listing = disk._files()
    picture.write_bytes(b"y" * 100)  # written again, now
    monkeypatch.setattr(disk, "_files", lambda: listing)
    assert disk.sweep() == 0
    assert picture.read_bytes() == b"y" * 100
    monkeypatch.undo()
    os.utime(picture, (time.time() - 3600, time.time() - 3600))
    assert disk.sweep() == 100 and not picture.exists()  # an old file still goes


def test_the_disk_cap_spaces_its_sweeps_by_their_cost(tmp_path):
    """A sweep stats every file: with tens of thousands of them it would eat a core's time every
    few seconds, so the next one waits long enough to keep that under MAX_CPU_SHARE."""
    with gr.Blocks() as demo:
        image = gr.Image()
    for i in range(300):
        path = tmp_path / f"{i}.png"
        path.write_bytes(b"x")
        image.temp_files.add(str(path))
    disk = DiskCap(demo, [], cap_bytes=2**20, period=5.0)
    assert disk.next_wait() == 5.0
    disk.tick()
    assert 0 < disk.last_sweep_s < 0.1  # this thread's CPU time for 300 files
    disk.last_sweep_s = 0.3  # as measured for 45,000 files
    assert disk.next_wait() == pytest.approx(0.3 / MAX_CPU_SHARE)


def test_a_full_disk_still_shows_the_explanation_and_says_the_download_is_unavailable(
    server, tmp_path, monkeypatch
):
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(DownloadDir, "_write", full_disk)
    client = _client(server.url)
    try:
        job = client.submit(
            image=handle_file(str(_bird(tmp_path, 99))), model=server.classifier, api_name=API
        )
        result = job.result(timeout=120)
        warnings = []
        while not job.communicator.updates.empty():
            update = job.communicator.updates.get_nowait()
            if getattr(update, "log", None):
                warnings.append(update.log[0])
    finally:
        client.close()
    assert result[3] is not None and result[5] is not None  # both panels
    assert not result[FULL.index("files")]  # no download files
    assert DOWNLOAD_UNAVAILABLE in warnings


def test_sigterm_lets_the_request_in_flight_finish_and_the_process_exit_0(tmp_path):
    port = free_port()
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        GRADIO_ANALYTICS_ENABLED="False",
        GRADIO_TEMP_DIR=str(tmp_path / "cache"),
        OMP_NUM_THREADS="1",
        FINERCAM_STOP_GRACE="90",  # generous on a shared CPU; the default is a few seconds
    )
    command = [sys.executable, "-m", "app", "--offline", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--models", "demo-cnn", "--preload"]
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_up(url, process, log_path)
        client = _client(url)
        # Score-CAM runs one masked forward pass per channel: long enough to still be running.
        big = write_image(tmp_path / "big.png", (512, 512))
        job = client.submit(
            image=handle_file(str(big)), model="demo-cnn", method="scorecam", api_name=API
        )
        _wait_until_running(log_path, job)
        process.send_signal(signal.SIGTERM)
        result = job.result(timeout=120)
        assert result[3] is not None and result[5] is not None
        assert process.wait(timeout=60) == 0, log_path.read_text()
        client.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log = log_path.read_text()
    assert "SIGTERM received" in log and "server stopped" in log


def _wait_until_up(url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert process.poll() is None, log_path.read_text()
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"the server did not come up:\n{log_path.read_text()}")


def _wait_until_running(log_path: Path, job) -> None:
    """Until the job is being processed (not just queued) and has not finished."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = job.status()
        if status.code.name == "PROCESSING" or status.progress_data:
            assert not job.done(), "the request finished before SIGTERM: make it slower"
            return
        time.sleep(0.02)
    raise AssertionError(f"the request never started:\n{log_path.read_text()}")


class _SlowPage(http.server.BaseHTTPRequestHandler):
    """Answers every HEAD after ``delay`` seconds, as a loaded server's first page does."""

    delay = 3.5

    def do_HEAD(self) -> None:  # noqa: N802 - the http.server hook's name
        time.sleep(self.delay)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_the_launch_check_of_our_own_url_waits_for_a_slow_first_answer(monkeypatch):
    """Gradio gives up after one 3-s try and then refuses to start ("When localhost is not
    accessible, a shareable link must be created"); the check launch installs waits."""
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowPage) as slow:
        threading.Thread(target=slow.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{slow.server_address[1]}/"
        monkeypatch.setattr(networking, "url_ok", networking.url_ok)  # restored after the test
        patient_url_check(limit_s=20)
        assert networking.url_ok(url)
        slow.shutdown()
    started = time.monotonic()
    assert not url_answers(f"http://127.0.0.1:{free_port()}/", limit_s=20)  # nothing listens
    assert time.monotonic() - started < 10
