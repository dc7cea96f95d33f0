"""Serving strangers for days: a busy message past capacity, a graceful stop, a disk cap.

Gradio's queue waits without bound and its "queue full" answer is a fixed sentence that says
neither how busy nor for how long. :class:`Admission` refuses an explanation once
``max_waiting`` events wait ahead of it, with a message saying how many and for about how long,
delivered like any ``gr.Error`` (a toast in the browser, ``AppError`` in ``gradio_client``).
On SIGTERM/SIGINT :func:`serve_until_stopped` refuses new events, lets the ones already
accepted finish (at most ``grace_s``), closes the server and returns, so the process exits 0.
:class:`DiskCap` keeps this server's files (Gradio's cached uploads and outputs, our downloads)
under a byte cap whatever the traffic, removing the oldest files first; :class:`HeapTrim` hands
the memory the C allocator keeps free back to the OS, so RSS follows the live heap.
:func:`hold_idle_connections` keeps idle connections open longer than clients keep them, and
:func:`write_pictures_atomically` keeps a picture being downloaded whole while the same picture
is written again.

Hooks into ``Queue.push``, ``processing_utils.save_pil_to_cache`` and the uvicorn server's
config (gradio 6); ``tests/test_serving.py`` breaks when those change.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import signal
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import gradio as gr
import httpx
from gradio import networking, processing_utils
from gradio.server_messages import ProcessCompletedMessage
from gradio.utils import error_payload
from PIL import Image

from app.allocator import heap_statistics, release_free_memory, resident_bytes

log = logging.getLogger(__name__)

BUSY = "The server is busy: {ahead} request{s} ahead of yours. Please try again in about {wait} s."
STOPPING = "The server is restarting; please try again in a minute."
FORGET_EVERY = 256  # events between two sweeps of Gradio's finished sessions
MAX_CPU_SHARE = 0.02  # of one core, for the disk cap's sweeps
KEEP_ALIVE_ENV = "FINERCAM_KEEP_ALIVE_S"
#: How long an idle HTTP connection stays open: well past the idle expiry of client pools
#: (httpx 5 s, aiohttp 15 s, AWS load balancers 60 s), as long as nginx's default.
KEEP_ALIVE_S = 75.0
CACHE_FILE_MODE = 0o644  # what Gradio's own cache writes get (mkstemp would give 0o600)


class Admission:
    """Refuse queued events past ``max_waiting`` (and all of them while stopping) with a message.

    The event is first queued by Gradio, then, when too many wait ahead of it, taken out again
    and answered at once with an error, so the client learns immediately instead of spinning.
    """

    def __init__(self, demo: gr.Blocks, max_waiting: int) -> None:
        self.queue = demo._queue
        self.max_waiting = max_waiting
        self.stopping = False
        self.refused = 0
        self._pushes = 0
        self._push = self.queue.push
        self.queue.push = self.push  # type: ignore[method-assign]

    async def push(self, body: Any, request: Any, username: str | None) -> tuple[Any, ...]:
        self._pushes += 1
        if self._pushes % FORGET_EVERY == 0:
            self.forget_finished_sessions()
        accepted, event_id, state = await self._push(body, request, username)
        event = self.queue.event_ids_to_events.get(event_id) if accepted else None
        if event is None:  # refused by Gradio itself, or answered from a cache
            return accepted, event_id, state
        waiting = self.queue.event_queue_per_concurrency_id[event.concurrency_id]
        ahead = len(waiting.queue) - 1 + waiting.current_concurrency
        if self.stopping or len(waiting.queue) > self.max_waiting:
            waiting.queue.remove(event)
            self.queue.event_ids_to_events.pop(event_id, None)
            self._refuse(event, STOPPING if self.stopping else self._busy(event, waiting, ahead))
        return accepted, event_id, state

    def forget_finished_sessions(self) -> int:
        """Drop the empty per-session id sets Gradio leaves behind; return how many.

        Gradio keeps a set of undelivered event ids per session and never removes a set once
        empty, so every browser visit and every ``/call`` request leaves one entry for good.
        Runs on the event loop (from :meth:`push`), like the code that reads these sets.
        """
        sessions = self.queue.pending_event_ids_session
        finished = [session for session, ids in sessions.items() if not ids]
        for session in finished:
            del sessions[session]
        return len(finished)

    def _busy(self, event: Any, waiting: Any, ahead: int) -> str:
        average = self.queue.process_time_per_fn[event.fn].avg_time or 1.0
        workers = max(1, waiting.concurrency_limit or 1)
        wait = max(1, math.ceil(average * ahead / workers))
        return BUSY.format(ahead=ahead, s="" if ahead == 1 else "s", wait=wait)

    def _refuse(self, event: Any, message: str) -> None:
        self.refused += 1
        log.info("refused an event: %s", message)
        content = error_payload(gr.Error(message, title="Busy", print_exception=False), True)
        self.queue.send_message(
            event, ProcessCompletedMessage(output=content, title="Busy", success=False)
        )

    def in_flight(self) -> int:
        """Events accepted whose answer has not reached its client yet (waiting, running, or
        done but not streamed); Gradio forgets those of a client that disconnects."""
        undelivered = sum(len(ids) for ids in self.queue.pending_event_ids_session.values())
        running = sum(job is not None for job in self.queue.active_jobs)
        return max(undelivered, running)


def serve_until_stopped(demo: gr.Blocks, admission: Admission, grace_s: float) -> None:
    """Block until SIGTERM or SIGINT, then drain (at most ``grace_s``) and close the server."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        log.info("%s received: finishing the requests in flight", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    while not stop.wait(1.0):
        if not demo.is_running:
            return
    admission.stopping = True
    deadline = time.monotonic() + grace_s
    while admission.in_flight() and time.monotonic() < deadline:
        time.sleep(0.05)
    left = admission.in_flight()
    if left:
        log.warning("stopping with %d event(s) unfinished after %.0f s", left, grace_s)
    demo.close(verbose=False)
    log.info("server stopped")


class Periodic(threading.Thread, ABC):
    """A daemon thread that calls :meth:`tick` every ``period`` seconds until stopped or until
    ``demo``'s server is closed; a failing tick is logged and the next one still runs."""

    def __init__(self, name: str, demo: gr.Blocks, period: float) -> None:
        super().__init__(name=name, daemon=True)
        self.demo = demo
        self.period = period
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.next_wait()):
            if getattr(self.demo, "has_launched", False) and not self.demo.is_running:
                return  # the server was closed
            try:
                self.tick()
            except Exception:
                log.exception("%s failed", self.name)

    def stop(self) -> None:
        self._done.set()

    def next_wait(self) -> float:
        """Seconds until the next round."""
        return self.period

    @abstractmethod
    def tick(self) -> None:
        """One round of the thread's work."""


class HeapTrim(Periodic):
    """Every ``period`` seconds, give the C allocator's free pages back to the OS.

    Without it the server's RSS climbed +11 MB/min over a 15-minute soak while its live heap
    stayed flat: image and tensor buffers freed below still-live objects stay resident.
    """

    def __init__(self, demo: gr.Blocks, period: float, report_s: float = 0.0) -> None:
        super().__init__("heap-trim", demo, period)
        self.trims = 0
        self.report_s = report_s  # 0: no heap report in the log
        self._last_report = time.monotonic()

    def tick(self) -> None:
        start = time.perf_counter()
        released = release_free_memory()
        self.trims += 1
        elapsed_ms = 1e3 * (time.perf_counter() - start)
        log.debug("heap trim: released=%s in %.1f ms", released, elapsed_ms)
        if self.report_s > 0 and time.monotonic() - self._last_report >= self.report_s:
            self._last_report = time.monotonic()
            log.info("heap: %s", heap_report())


def heap_report() -> str:
    """One log line of where the process's memory is, right after a trim: RSS, glibc's heaps
    (in use / kept free / mapped on their own), Python's allocated blocks and live threads —
    enough to tell live objects from fragmentation when RSS creeps over hours."""
    heap = {name: value / 2**20 for name, value in heap_statistics().items()}
    parts = [f"rss={resident_bytes() / 2**20:.1f} MB"]
    parts += [f"{name}={value:.1f} MB" for name, value in heap.items()]
    parts += [f"python_blocks={sys.getallocatedblocks()}", f"threads={threading.active_count()}"]
    return " ".join(parts)


class DiskCap(Periodic):
    """Keep this server's files within ``cap_bytes``: oldest first, every ``period`` seconds.

    Files younger than ``min_age_s`` are left alone (a response may still be sending them), so
    the cap can be exceeded by what the last ``min_age_s`` seconds wrote. A sweep stats every
    file (~5 us each: 220-340 ms of CPU for 45,000 files, measured), so rounds are spaced to
    keep that under ``MAX_CPU_SHARE`` of a core: every ``period`` seconds while the files are
    few, every 11-17 s at 45,000.

    This server's files are the ones Gradio records as written for this app (uploads, returned
    images and files: its per-component sets of temp files) plus everything under ``owned``
    (our download folder). Other files in a shared cache folder are never touched, nor are the
    files Gradio keeps on purpose (examples, default values). Removed paths, and recorded paths
    whose file is gone, are dropped from Gradio's sets: otherwise each keeps a record until
    Gradio's age-based cleanup (forever for a path whose file vanished first).
    """

    def __init__(
        self,
        demo: gr.Blocks,
        owned: Iterable[Path],
        cap_bytes: int,
        period: float = 5.0,
        min_age_s: float = 30.0,
    ) -> None:
        super().__init__("disk-cap", demo, period)
        self.owned = tuple(Path(p).resolve() for p in owned)
        self.cap_bytes = cap_bytes
        self.min_age_s = min_age_s  # younger files may belong to a response still being sent
        self.sweeps = 0
        self.removed = 0
        self.last_sweep_s = 0.0

    def tick(self) -> None:
        start = time.thread_time()  # this thread's CPU: a busy server does not stretch it
        self.sweep()
        self.last_sweep_s = time.thread_time() - start

    def next_wait(self) -> float:
        return max(self.period, self.last_sweep_s / MAX_CPU_SHARE)

    def usage(self) -> tuple[int, int]:
        """(bytes, files) of this server's files."""
        files, _ = self._files()
        return sum(size for _, _, size in files), len(files)

    def sweep(self) -> int:
        """Remove the oldest files until the total is under the cap; return the bytes freed."""
        files, missing = self._files()
        files.sort()  # (mtime, path, size): oldest first
        total = sum(size for _, _, size in files)
        keep = self._kept()
        freed = 0
        removed: set[str] = set()
        young = time.time() - self.min_age_s
        for mtime, path, size in files:
            if total - freed <= self.cap_bytes or mtime > young:
                break  # under the cap, or only files of requests still in flight are left
            if path in keep or _written_since(path, young):
                continue
            try:
                os.unlink(path)
            except OSError:
                continue
            freed += size
            removed.add(path)
            _remove_empty_parent(Path(path).parent)
        for temp_files in self._temp_sets():
            temp_files.difference_update(removed | missing)
        self.sweeps += 1
        self.removed += len(removed)
        if removed:
            log.info("disk cap: removed %d file(s), %.1f MB", len(removed), freed / 2**20)
        return freed

    def _temp_sets(self) -> list[set[str]]:
        return list(getattr(self.demo, "temp_file_sets", []))

    def _files(self) -> tuple[list[tuple[float, str, int]], set[str]]:
        """This server's files as (mtime, path, size), and the recorded paths that no longer
        exist (deleted by Gradio's age limit, or re-recorded by Gradio after a sweep when a
        browser sends back an expired upload): records to forget."""
        paths = {p for temp_files in self._temp_sets() for p in list(temp_files)}
        for root in self.owned:
            for folder, _, names in os.walk(root):
                paths.update(os.path.join(folder, name) for name in names)
        files = []
        missing = set()
        for path in paths:
            try:
                stat = os.lstat(path)
            except FileNotFoundError:
                missing.add(path)
                continue
            except OSError:
                continue
            files.append((stat.st_mtime, path, stat.st_size))
        return files, missing

    def _kept(self) -> set[str]:
        keep: set[str] = set()
        for block in self.demo.blocks.values():
            keep.update(str(p) for p in getattr(block, "keep_in_cache", ()))
        return keep


def _written_since(path: str, moment: float) -> bool:
    """Whether ``path`` was written after ``moment``: a picture returned again is renamed over
    its old file between a sweep's listing and its removal, and may be downloading already."""
    try:
        return os.lstat(path).st_mtime > moment
    except OSError:
        return False


def _remove_empty_parent(folder: Path) -> None:
    """Gradio stores each file in a folder of its own (named by hash): drop it once empty."""
    with contextlib.suppress(OSError):
        folder.rmdir()


#: How long launch waits for the server's own page to answer before it gives up.
URL_CHECK_S = 60.0


def patient_url_check(limit_s: float = URL_CHECK_S) -> None:
    """Make Gradio's start-up check of its own URL wait for a slow first answer.

    ``launch`` asks ``networking.url_ok`` whether the page answers (a HEAD of ``/`` with a 3-s
    timeout, given up at the first timeout) and, if not, refuses to start without a share link
    ("When localhost is not accessible…"). The first page builds the whole app's config, which
    on a loaded machine takes longer than 3 s. Here a timed-out try is retried until
    ``limit_s``; a refused connection still fails at once.
    """
    networking.url_ok = functools.partial(url_answers, limit_s=limit_s)


def url_answers(url: str, limit_s: float = URL_CHECK_S) -> bool:
    """Whether ``url`` answers a HEAD with a success or redirect status within ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while True:
        try:
            status = httpx.head(url, timeout=max(1.0, deadline - time.monotonic())).status_code
        except httpx.TimeoutException:
            status = None
        except httpx.TransportError:
            return False
        if status in (200, 301, 302, 303, 307, 308, 401):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def write_pictures_atomically() -> None:
    """Make Gradio write every returned picture to a staging file renamed into place.

    Gradio names a cached picture after the hash of its bytes and, when the same picture is
    returned again (the same example and settings, from any visitor), rewrites that file in
    place. A download of it already under way has sent ``Content-Length`` from ``stat`` and
    then reads the truncated file: the server logs "Too little data for declared
    Content-Length" and cuts the connection, and the client gets "peer closed connection
    without sending complete message body (received 0 bytes, expected N)". After a rename a
    reader keeps the whole old file and a new reader opens the whole new one.
    """
    processing_utils.save_pil_to_cache = save_pil_to_cache


def save_pil_to_cache(
    img: Image.Image, cache_dir: str, name: str = "image", format: str = "webp"
) -> str:
    """``gradio.processing_utils.save_pil_to_cache`` with the file renamed into place."""
    data = processing_utils.encode_pil_to_bytes(img, format)
    folder = Path(cache_dir) / processing_utils.hash_bytes(data)
    folder.mkdir(exist_ok=True, parents=True)
    path = (folder / f"{name}.{format}").resolve()
    descriptor, staging = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.")
    try:
        os.fchmod(descriptor, CACHE_FILE_MODE)
        with os.fdopen(descriptor, "wb") as staged:
            staged.write(data)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return str(path)


def keep_alive_s() -> float:
    """Seconds an idle connection stays open: ``FINERCAM_KEEP_ALIVE_S``, else ``KEEP_ALIVE_S``."""
    text = os.environ.get(KEEP_ALIVE_ENV, "").strip()
    if not text:
        return KEEP_ALIVE_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{KEEP_ALIVE_ENV} must be a positive number of seconds, got {text!r}")
    return seconds


def hold_idle_connections(demo: gr.Blocks, seconds: float) -> None:
    """Keep an idle HTTP connection of ``demo``'s server open ``seconds``.

    Gradio starts uvicorn with its default of 5 s, and httpx's pools retire an idle connection
    after 5 s too: a client that reuses a connection just under 5 s idle sends its request as
    the server closes it, and gets "Connection reset by peer" or "Server disconnected without
    sending a response". With the server's timer well past the client's, the client always
    retires the connection first. uvicorn reads the value for each new connection.
    """
    demo.server.config.timeout_keep_alive = seconds
