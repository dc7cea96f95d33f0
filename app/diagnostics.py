"""Leak hunting: periodic tracemalloc snapshot diffs of the running server, written to a log.

Enabled by ``FINERCAM_TRACEMALLOC=<folder>`` (``bench.soak --tracemalloc`` sets it). Every
``FINERCAM_TRACEMALLOC_PERIOD`` seconds (60) the top allocation sites that grew since the first
snapshot taken after warm-up are appended to ``<folder>/tracemalloc.txt``. Tracing costs CPU and
memory of its own, so a soak that measures RSS runs without it.
"""

from __future__ import annotations

import linecache
import logging
import os
import threading
import time
import tracemalloc
from pathlib import Path

log = logging.getLogger(__name__)

FRAMES = 8
TOP = 25


def start_from_env() -> threading.Thread | None:
    """Start the snapshot thread when ``FINERCAM_TRACEMALLOC`` names a folder."""
    folder = os.environ.get("FINERCAM_TRACEMALLOC", "").strip()
    if not folder:
        return None
    period = float(os.environ.get("FINERCAM_TRACEMALLOC_PERIOD", "60"))
    tracemalloc.start(FRAMES)
    thread = threading.Thread(
        target=_snapshots, args=(Path(folder), period), name="tracemalloc", daemon=True
    )
    thread.start()
    log.info("tracemalloc on: growth every %.0f s in %s", period, folder)
    return thread


def _snapshots(folder: Path, period: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    report = folder / "tracemalloc.txt"
    time.sleep(period)  # the first snapshot after warm-up (models loaded, first requests served)
    base = _snapshot()
    started = time.monotonic()
    while True:
        time.sleep(period)
        current = _snapshot()
        stats = current.compare_to(base, "traceback")
        grown = sum(s.size_diff for s in stats) / 2**20
        traced = sum(s.size for s in stats) / 2**20
        elapsed = time.monotonic() - started
        lines = [
            f"=== {elapsed:.0f} s after the base: traced {traced:.1f} MB, growth {grown:+.2f} MB"
        ]
        for stat in stats[:TOP]:
            lines.append(f"{stat.size_diff / 2**10:+9.1f} KiB {stat.count_diff:+7d} blocks")
            lines += [f"      {line}" for line in stat.traceback.format()[-FRAMES:]]
        with open(report, "a", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")


def _snapshot() -> tracemalloc.Snapshot:
    """A snapshot without tracing's own allocations (nor the source lines its reports read)."""
    own = (tracemalloc.__file__, linecache.__file__, "<frozen*>")
    return tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, f) for f in own])
