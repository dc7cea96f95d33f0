"""Soak test: hold a real server under the app's real mix for a long time, then overload it.

    python -m bench.soak [--duration 1800] [--clients 8] [--sample-period 5]
                         [--overload-clients 32] [--overload-duration 60]
                         [--plot soak.png] [--seed 0] [--tracemalloc DIR] [--cache-entries N]
                         [--download-files] [--idle LO-HI]

Starts ``python -m app`` like ``bench.load`` (offline demo models, 127.0.0.1 only, its own
``GRADIO_TEMP_DIR``/``TMPDIR``, so every file the server writes lands in one folder) and drives it
with ``bench.load``'s mix: classifier requests on examples and on new synthetic birds, γ/T moves,
concept prompts and invalid input (``--download-files`` and ``--idle`` as in ``bench.load``:
clients that fetch every returned picture, a pooled connection reused after an idle pause).
Every ``--sample-period`` seconds it samples the server's RSS and the bytes and files in that
folder.
Then an overload phase: ``--overload-clients`` clients
(more than the server can serve) for ``--overload-duration`` seconds, where every request must
end served, refused with the "busy" message, or (invalid input) refused with its own message.

Prints: requests and outcomes per kind for both phases, RSS first/last/peak and the RSS slope
(least squares, MB/min) over the second half of the soak phase, the disk peak, file count and
its slope, and ``valid requests failed: N``; for runs of 40 minutes or more, the band RSS stays in
from minute 30 (single samples, 5-minute medians, and the RSS right after each heap trim from the
server's ``heap:`` log lines, which the soak turns on every minute); writes a PNG of RSS and disk
over time.
Exit status 1 when a valid request failed, an invalid one was answered wrongly, an overload
request failed without the busy message, or the server died. ``--tracemalloc DIR`` makes the
server write tracemalloc growth reports there (leak hunting; it slows the server, so RSS and
latency from such a run are not comparable).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.allocator import resident_bytes
from bench.load import (
    BUSY,
    CONCEPT_KINDS,
    FAILED,
    HEADER,
    KINDS,
    OK,
    REFUSED,
    Result,
    Workload,
    _loadavg,
    add_server_arguments,
    classifier_defaults,
    drive,
    errors_by_kind,
    invalid_files,
    kind_table,
)
from bench.server import running_server

log = logging.getLogger("bench.soak")


@dataclass(frozen=True)
class Sample:
    t: float  # monotonic seconds
    rss: int  # bytes
    disk: int  # bytes under the server's temp folder
    files: int


@dataclass(frozen=True)
class HeapLine:
    """One ``heap:`` line of the server's log (written right after a heap trim)."""

    t: float  # monotonic seconds, on the samples' clock
    rss: float  # MB
    in_use: float  # MB held by glibc's heaps for live allocations
    python_blocks: int


HEAP_LINE = re.compile(
    r"^(?P<stamp>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ \S+ app\.ui\.serving: heap: "
    r"rss=(?P<rss>[\d.]+) MB(?: in_use=(?P<in_use>[\d.]+) MB)?.*?python_blocks=(?P<blocks>\d+)"
)


def heap_lines(log_text: str, wall_to_monotonic: float) -> list[HeapLine]:
    """The server log's heap reports, their local-time stamps moved onto the monotonic clock
    (``wall_to_monotonic`` = ``time.monotonic() - time.time()`` when the run started)."""
    lines = []
    for match in map(HEAP_LINE.match, log_text.splitlines()):
        if match:
            wall = time.mktime(time.strptime(match["stamp"], "%Y-%m-%d %H:%M:%S"))
            lines.append(
                HeapLine(
                    wall + wall_to_monotonic,
                    float(match["rss"]),
                    float(match["in_use"] or "nan"),
                    int(match["blocks"]),
                )
            )
    return lines


class ServerSampler(threading.Thread):
    """Every ``period`` s: the server's RSS and the bytes and files under its temp folder."""

    def __init__(self, pid: int, folder: Path, period: float, csv: Path | None = None) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.pid, self.folder, self.period, self.csv = pid, folder, period, csv
        self.samples: list[Sample] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            disk, files = folder_usage(self.folder)
            sample = Sample(time.monotonic(), resident_bytes(self.pid), disk, files)
            self.samples.append(sample)
            if self.csv is not None:
                self._append(sample)
            self._stop_event.wait(self.period)

    def _append(self, sample: Sample) -> None:
        """One CSV row per sample as it is taken, so a long soak can be read while it runs."""
        new = not self.csv.exists()
        with self.csv.open("a") as out:
            if new:
                out.write("wall_time,seconds,rss_mb,disk_mb,files\n")
            out.write(
                f"{time.strftime('%H:%M:%S')},{sample.t - self.samples[0].t:.1f},"
                f"{sample.rss / 2**20:.1f},{sample.disk / 2**20:.1f},{sample.files}\n"
            )

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def folder_usage(folder: Path) -> tuple[int, int]:
    """(bytes, files) under ``folder``; files vanishing during the walk are skipped."""
    total = count = 0
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                total += (Path(root) / name).lstat().st_size
            except OSError:
                continue
            count += 1
    return total, count


@dataclass
class SoakReport:
    soak: list[Result]
    overload: list[Result]
    samples: list[Sample]
    phases: dict[str, tuple[float, float]]  # name -> (start, end), monotonic
    server_alive: bool
    loadavg: tuple[str, str]
    heap: list[HeapLine] = field(default_factory=list)

    def in_phase(self, name: str) -> list[Sample]:
        start, end = self.phases[name]
        return [s for s in self.samples if start <= s.t <= end and s.rss]


def run_soak(args: argparse.Namespace, workdir: Path) -> SoakReport:
    """Start the server, run the soak phase and the overload phase, stop it."""
    kinds = tuple(k for k in KINDS if args.concept_model or k.name not in CONCEPT_KINDS)
    models = list(args.models) + ([args.concept_model] if args.concept_model else [])
    env = {"FINERCAM_TRACEMALLOC": str(args.tracemalloc)} if args.tracemalloc else {}
    env["FINERCAM_HEAP_REPORT_S"] = "60"  # one "heap:" line a minute in the server's log
    if args.cache_entries:
        env["FINERCAM_CACHE_ENTRIES"] = str(args.cache_entries)
    loadavg_before = _loadavg()
    wall_to_monotonic = time.monotonic() - time.time()
    with running_server(models, workdir, args.concurrency, args.threads, env) as server:
        sampler = ServerSampler(
            server.process.pid, workdir / "server-tmp", args.sample_period, args.samples
        )
        sampler.start()
        work = Workload(
            url=server.url,
            folder=workdir / "client-files",
            classifiers=list(args.models),
            concept_model=args.concept_model or None,
            bad_files=invalid_files(workdir),
            seed=args.seed,
            timeout=args.timeout,
            defaults=classifier_defaults(server.url),
            download=args.download_files,
            idle=args.idle,
        )
        work.folder.mkdir()
        soak, start, end = drive(work, kinds, args.clients, args.duration, 10**9)
        phases = {"soak": (start, end)}
        overload: list[Result] = []
        if args.overload_clients:
            overload, start, end = drive(
                work, kinds, args.overload_clients, args.overload_duration, 10**9
            )
            phases["overload"] = (start, end)
        alive = server.alive()
        sampler.stop()
        if not alive:
            log.error("the server died during the run:\n%s", server.log_tail())
    log_path = workdir / "server.log"
    log_text = log_path.read_text(errors="replace") if log_path.exists() else ""
    heap = heap_lines(log_text, wall_to_monotonic)
    loadavg = (loadavg_before, _loadavg())
    return SoakReport(soak, overload, sampler.samples, phases, alive, loadavg, heap)


# ------------------------------------------------------------------------------ figures


def slope_mb_per_min(samples: list[Sample], field: str) -> float:
    """Least-squares slope of ``field`` (MB) against time (min) over the second half."""
    if len(samples) < 4:
        return float("nan")
    middle = (samples[0].t + samples[-1].t) / 2
    half = [s for s in samples if s.t >= middle]
    t = np.array([s.t for s in half]) / 60.0
    y = np.array([getattr(s, field) for s in half]) / 2**20
    return float(np.polyfit(t - t[0], y, 1)[0])


def _mb(value: float) -> str:
    return f"{value / 2**20:.1f} MB"


def _counts(results: list[Result]) -> dict[str, int]:
    return {o: sum(r.outcome == o for r in results) for o in (OK, REFUSED, BUSY, FAILED)}


def memory_lines(report: SoakReport) -> list[str]:
    samples = report.in_phase("soak")
    if not samples:
        return ["server RSS: no samples"]
    minute = [s.rss for s in samples if s.t < samples[0].t + 60]
    last = [s.rss for s in samples if s.t > samples[-1].t - 60]
    return [
        (
            f"server RSS: first minute mean {_mb(np.mean(minute))}, last minute mean "
            f"{_mb(np.mean(last))}, peak {_mb(max(s.rss for s in samples))}"
        ),
        f"server RSS slope over the second half: {slope_mb_per_min(samples, 'rss'):+.2f} MB/min",
        (
            f"server files: peak {_mb(max(s.disk for s in samples))} in "
            f"{max(s.files for s in samples)} files (end {_mb(samples[-1].disk)}, "
            f"{samples[-1].files} files), slope over the second half "
            f"{slope_mb_per_min(samples, 'disk'):+.2f} MB/min"
        ),
    ]


#: The long-run band starts here: caches and Gradio's file records fill during the first minutes.
BAND_FROM_MIN = 30.0


def band_lines(report: SoakReport, from_min: float = BAND_FROM_MIN) -> list[str]:
    """RSS from minute ``from_min`` to the end of the soak phase (runs at least 10 minutes
    longer than that): the range of single samples (they include the requests in flight and the
    growth between two heap trims), of 5-minute medians, and of the RSS right after each trim
    with glibc's live heap and Python's allocated blocks (the server's ``heap:`` lines)."""
    start, end = report.phases["soak"]
    if (end - start) / 60 < from_min + 10:
        return []
    since = start + 60 * from_min
    samples = [s for s in report.in_phase("soak") if s.t >= since]
    buckets: dict[int, list[int]] = {}
    for sample in samples:
        buckets.setdefault(int((sample.t - start) // 300), []).append(sample.rss)
    medians = [float(np.median(rss)) for rss in buckets.values()]
    rss = [s.rss for s in samples]
    lines = [
        f"server RSS from minute {from_min:.0f}: samples {_span(min(rss), max(rss))}, "
        f"5-minute medians {_span(min(medians), max(medians))}"
    ]
    heap = [h for h in report.heap if since <= h.t <= end]
    if heap:
        after_trim = [h.rss * 2**20 for h in heap]
        in_use = [h.in_use * 2**20 for h in heap]
        blocks = [h.python_blocks for h in heap]
        lines.append(
            f"  right after the heap trims ({len(heap)} reports): RSS "
            f"{_span(min(after_trim), max(after_trim))}, glibc in use "
            f"{_span(min(in_use), max(in_use))}, Python blocks {min(blocks)}-{max(blocks)}"
        )
    return lines


def _span(low: float, high: float) -> str:
    return f"{_mb(low)}-{_mb(high)} ({(high - low) / 2**20:.0f} MB apart)"


def overload_lines(report: SoakReport, clients: int) -> list[str]:
    if not report.overload:
        return []
    counts = _counts(report.overload)
    busy = [r.latency for r in report.overload if r.outcome == BUSY]
    samples = report.in_phase("overload")
    lines = [
        "",
        f"overload phase: {clients} clients, {len(report.overload)} requests",
        HEADER,
        *kind_table(report.overload),
        (
            f"overload: served {counts[OK]}, refused busy with the message {counts[BUSY]} "
            f"(median answer {np.median(busy) * 1000 if busy else 0:.0f} ms), invalid refused "
            f"{counts[REFUSED]}, failed {counts[FAILED]}"
        ),
        *errors_by_kind(report.overload),
    ]
    if samples:
        lines.append(
            f"overload: RSS peak {_mb(max(s.rss for s in samples))}, files peak "
            f"{_mb(max(s.disk for s in samples))}"
        )
    return lines


def format_report(report: SoakReport, args: argparse.Namespace) -> str:
    start, end = report.phases["soak"]
    results = report.soak
    counts = _counts(results)
    valid = [r for r in results if r.valid]
    invalid = len(results) - len(valid)
    lines = [
        (
            f"soak: {args.clients} clients, {(end - start) / 60:.1f} min, models "
            f"{', '.join(args.models)} + {args.concept_model or '-'}, seed {args.seed}, "
            f"{os.cpu_count()} CPUs shared (load average before {report.loadavg[0]}, "
            f"after {report.loadavg[1]}), gradient cache {args.cache_entries or 'default'} entries"
        ),
        (
            f"requests: {len(results)} ({len(results) / max(end - start, 1e-9):.2f}/s); "
            f"valid {len(valid)}, invalid {invalid}, refused busy {counts[BUSY]}"
        ),
        "",
        HEADER,
        *kind_table(results),
        "",
        *errors_by_kind(results),
        *memory_lines(report),
        *band_lines(report),
        *overload_lines(report, args.overload_clients),
        "",
        f"server alive after the run: {'yes' if report.server_alive else 'NO'}",
        (
            "invalid requests refused with their message: "
            f"{sum(not r.valid and r.outcome == REFUSED for r in results)}/{invalid}"
        ),
        f"valid requests failed: {sum(r.valid and r.outcome == FAILED for r in results)}",
    ]
    return "\n".join(lines)


def plot(report: SoakReport, path: Path) -> None:
    """RSS and the temp folder's size over time, the phases shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = report.phases["soak"][0]
    samples = [s for s in report.samples if s.rss]
    minutes = [(s.t - t0) / 60 for s in samples]
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 5.5))
    top.plot(minutes, [s.rss / 2**20 for s in samples], color="tab:blue")
    top.set_ylabel("server RSS (MB)")
    bottom.plot(minutes, [s.disk / 2**20 for s in samples], color="tab:orange")
    bottom.set_ylabel("server files (MB)")
    bottom.set_xlabel("minutes since the load started")
    if "overload" in report.phases:
        start, end = ((t - t0) / 60 for t in report.phases["overload"])
        for axis in (top, bottom):
            axis.axvspan(start, end, color="tab:red", alpha=0.12, label="overload")
        top.legend(loc="lower right")
    top.set_title("Finer-CAM Studio soak: RSS and disk")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ------------------------------------------------------------------------------ command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--duration", type=float, default=1800.0, help="soak seconds (1800)")
    parser.add_argument("--clients", type=int, default=8, help="soak clients (%(default)s)")
    parser.add_argument("--sample-period", type=float, default=5.0, help="seconds (5)")
    parser.add_argument("--overload-clients", type=int, default=32, help="0: no overload phase")
    parser.add_argument("--overload-duration", type=float, default=60.0, help="seconds (60)")
    parser.add_argument("--plot", type=Path, default=Path("soak.png"), help="PNG path")
    parser.add_argument("--samples", type=Path, default=None, help="CSV of every sample")
    parser.add_argument("--server-log", type=Path, default=None, help="keep the server's log")
    add_server_arguments(parser)
    parser.add_argument("--tracemalloc", type=Path, default=None, help="leak-hunting reports")
    parser.add_argument(
        "--cache-entries",
        type=int,
        default=None,
        help="server gradient cache entries (app default 64); a small bound reaches its steady "
        "state early, so a short soak measures growth beyond the cache",
    )
    args = parser.parse_args(argv)
    if args.clients < 1 or args.overload_clients < 0 or args.sample_period <= 0:
        parser.error("--clients >= 1, --overload-clients >= 0, --sample-period > 0")
    if not 0 < args.duration <= 86400:
        parser.error("--duration must be in (0, 86400] seconds")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    workdir = Path(tempfile.mkdtemp(prefix="finercam-soak-"))
    try:
        report = run_soak(args, workdir)
    finally:
        if args.server_log is not None and (workdir / "server.log").exists():
            shutil.copyfile(workdir / "server.log", args.server_log)
        shutil.rmtree(workdir, ignore_errors=True)
    print(format_report(report, args))
    plot(report, args.plot)
    print(f"plot: {args.plot}")
    failed = sum(r.valid and r.outcome == FAILED for r in report.soak + report.overload)
    misanswered = sum(not r.valid and r.outcome == FAILED for r in report.soak + report.overload)
    return 1 if failed or misanswered or not report.server_alive else 0


if __name__ == "__main__":
    sys.exit(main())
