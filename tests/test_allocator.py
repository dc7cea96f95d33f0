"""The C allocator settings of a long-running server: arenas capped, free pages handed back."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
from appserver import REPO_ROOT

from app.allocator import heap_statistics
from app.ui.serving import HeapTrim, Periodic

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="glibc only",
)

# In a fresh process (no other thread touching the heap): 1,500 touched blocks of 96 KB (below
# glibc's mmap threshold, so they live in the heap), all freed but the last one, which pins the
# freed memory below the top of the heap where glibc never returns it on its own.
FRAGMENTED_HEAP = """
import ctypes, sys
from app.allocator import release_free_memory

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

size = 96 * 1024
blocks = [libc.malloc(size) for _ in range(1500)]
for block in blocks:
    ctypes.memset(block, 1, size)
for block in blocks[:-1]:
    libc.free(block)
freed = rss_mb()
released = release_free_memory()
print(freed, rss_mb(), released)
"""


@glibc
def test_free_memory_pinned_below_a_live_block_goes_back_to_the_os():
    out = subprocess.run(
        [sys.executable, "-c", FRAGMENTED_HEAP],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    ).stdout.split()
    freed_mb, trimmed_mb, released = float(out[0]), float(out[1]), out[2]
    assert released == "True"
    assert freed_mb - trimmed_mb > 100, (freed_mb, trimmed_mb)  # ~140 MB were free in the heap


class Ticker(Periodic):
    def __init__(self, fail_first: int) -> None:
        super().__init__("ticker", SimpleNamespace(has_launched=False), period=0.01)
        self.fail_first = fail_first
        self.ticks = 0
        self.ticked = threading.Event()

    def tick(self) -> None:
        self.ticks += 1
        if self.ticks <= self.fail_first:
            raise RuntimeError("a failing round")
        self.ticked.set()


def test_a_periodic_thread_survives_a_failing_round_and_stops_when_asked():
    ticker = Ticker(fail_first=2)
    ticker.start()
    assert ticker.ticked.wait(10), "the thread stopped after a failing round"
    ticker.stop()
    ticker.join(5)
    assert not ticker.is_alive()
    assert ticker.ticks >= 3


def test_a_periodic_thread_ends_with_its_server():
    server = SimpleNamespace(has_launched=True, is_running=True)
    ticker = Ticker(fail_first=0)
    ticker.demo = server
    ticker.start()
    assert ticker.ticked.wait(10)
    server.is_running = False
    ticker.join(5)
    assert not ticker.is_alive()


def test_the_heap_trim_runs_until_stopped():
    trim = HeapTrim(SimpleNamespace(has_launched=False), period=0.01)
    trim.start()
    deadline = time.monotonic() + 10
    while trim.trims < 3:
        assert time.monotonic() < deadline, "the heap trim stopped trimming"
        time.sleep(0.01)
    trim.stop()
    trim.join(5)
    assert not trim.is_alive()


def test_the_heap_report_logs_where_memory_is(caplog):
    big = bytearray(64 * 2**20)  # 64 MB held while the report is taken: RSS and glibc see it
    trim = HeapTrim(SimpleNamespace(has_launched=False), period=0.01, report_s=0.01)
    with caplog.at_level(logging.INFO, logger="app.ui.serving"):
        trim.start()
        deadline = time.monotonic() + 10
        while not any(r.message.startswith("heap: ") for r in caplog.records):
            assert time.monotonic() < deadline, "no heap report was logged"
            time.sleep(0.01)
        trim.stop()
        trim.join(5)
    line = next(r.message for r in caplog.records if r.message.startswith("heap: "))
    parts = line.removeprefix("heap: ").split(" ")
    fields = dict(part.split("=", 1) for part in parts if "=" in part)
    assert float(fields["rss"]) > 64
    assert int(fields["python_blocks"]) > 0 and int(fields["threads"]) >= 2
    if heap_statistics():  # glibc >= 2.33
        assert float(fields["mmapped"]) + float(fields["in_use"]) >= 64
    del big
