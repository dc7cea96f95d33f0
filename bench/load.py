"""Load test: N concurrent gradio_client clients against a real Finer-CAM Studio server.

    python -m bench.load [--clients 8] [--duration 60] [--max-requests 2000] [--seed 0]
                         [--models demo-cnn] [--concept-model demo-tinyclip]
                         [--concurrency N] [--threads 1] [--timeout 120]
                         [--cache-entries N] [--cache-mb N] [--kinds KIND,...]
                         [--download-files] [--idle LO-HI]

Starts ``python -m app`` on a free 127.0.0.1 port in a subprocess (so its RSS is measured
alone: /proc/<pid>/status VmRSS every 0.5 s), then every client thread, each with its own
``gradio_client.Client``, sends a seeded random mix for ``--duration`` seconds (at most
``--max-requests`` in all): classifier requests on the example birds and on freshly rendered
distinct synthetic birds (so the caches fill and evict), γ/T/weighting changes on an image the
client sent before (cache hits), concept requests, and invalid requests (non-image bytes, an
empty file, a 1x1 PNG, γ=-1, γ=NaN over raw HTTP, an empty and a 2000-character prompt), each of
which must be refused with its own clear message.

Prints requests served, counts and p50/p95 latency per kind, errors by kind with a sample
message, peak RSS, mean RSS of the first vs the last 10 s and of every 10 s in between, and
``valid requests failed: N``. ``--download-files`` makes every client fetch each returned
picture like a browser, over its own pooled HTTP connection (a cut download is a failed
request); ``--idle LO-HI`` adds, after each request, an ``idle-reuse`` one: a GET on the
client's pooled connection, a pause of LO..HI seconds, a second GET on the same connection
(``--idle 4.99-5.0`` reuses it just as a 5-second keep-alive timer closes it). ``--kinds``
restricts the mix (e.g. to tell which requests grow memory); ``--cache-entries``/``--cache-mb``
set the server's gradient cache bounds.
Exit status 1 when a valid request failed, an invalid one was not refused with its message, or
the server died. The server only ever listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError
from PIL import Image

from app.synthbirds import NUM_SPECIES, render_sample
from app.ui.classifier_tab import FULL as CLASSIFIER_PARTS  # the endpoints' outputs, by name
from app.ui.concepts_tab import FULL as CONCEPT_PARTS
from bench.server import REPO_ROOT, SAMPLE_PERIOD_S, RssSampler, running_server

log = logging.getLogger("bench.load")

EXAMPLES = tuple(sorted((REPO_ROOT / "assets" / "examples").glob("*.png")))
CLASSIFIER_API = "/explain_classifier"
CONCEPTS_API = "/explain_concepts"
GRADIENT_METHODS = ("gradcam", "gradcam++", "layercam", "hirescam", "xgradcam")
CONCEPT_TARGETS = (
    "a bird with a red crown",
    "a bird with a yellow crown",
    "a bird with a white tail tip",
    "a bird with a black eye ring",
    "a blue bird",
)
CONCEPT_CONTRASTS = ("a photo of a bird", "a bird with a blue crown\na photo of a bird")
WINDOW_S = 10.0

OK, REFUSED, BUSY, FAILED = "ok", "refused", "busy", "FAILED"
#: The server's "busy" answer past capacity (app.ui.serving.BUSY) or Gradio's own full queue.
BUSY_MESSAGE = re.compile(r"server is busy: \d+ requests? ahead|queue is full", re.IGNORECASE)
BUSY_BACKOFF_S = (0.5, 2.0)  # a refused client waits this long (uniform) before its next try
CONCEPT_KINDS = ("concepts", "bad-empty-prompt", "bad-long-prompt")
HEADER = "kind                     n    ok  refused   busy  FAILED  p50 ms  p95 ms"


# ------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Result:
    """One request: what was sent, how long it took, and how it ended."""

    kind: str
    valid: bool
    started: float
    latency: float
    outcome: str  # OK | REFUSED (invalid input refused with its message) | BUSY | FAILED
    message: str = ""


@dataclass(frozen=True)
class Kind:
    """A request kind: its weight in the mix and, for invalid ones, the expected message."""

    name: str
    weight: float
    expect: str | None = None  # regex the refusal must match; None = a valid request

    @property
    def valid(self) -> bool:
        return self.expect is None


KINDS = (
    Kind("classify-example", 0.14),
    Kind("classify-new-bird", 0.24),
    Kind("classify-gamma-T", 0.20),
    Kind("concepts", 0.14),
    Kind("bad-not-image", 0.04, r"not a supported image"),
    Kind("bad-empty-file", 0.04, r"empty"),
    Kind("bad-1x1-png", 0.04, r"too small"),
    Kind("bad-gamma-negative", 0.04, r"minimum"),
    Kind("bad-gamma-nan", 0.04, r"finite"),
    Kind("bad-empty-prompt", 0.04, r"empty"),
    Kind("bad-long-prompt", 0.04, r"too long"),
)
#: With ``--idle``: sent after every request of the mix (its latency includes the pause).
IDLE_REUSE = Kind("idle-reuse", 0.0)


# --------------------------------------------------------------------------- the clients


def invalid_files(folder: Path) -> dict[str, Path]:
    """The bad uploads: non-image bytes, a 0-byte file, a 1x1 PNG."""
    one_pixel = io.BytesIO()
    Image.new("RGB", (1, 1), "red").save(one_pixel, "PNG")
    contents = {
        "bad-not-image": ("not-an-image.png", b"hello, I am plain text\n" * 20),
        "bad-empty-file": ("empty.png", b""),
        "bad-1x1-png": ("one-pixel.png", one_pixel.getvalue()),
    }
    paths = {}
    for kind, (name, data) in contents.items():
        paths[kind] = folder / name
        paths[kind].write_bytes(data)
    return paths


class Budget:
    """Shared stop condition: a deadline and a cap on the number of requests started."""

    def __init__(self, deadline: float, max_requests: int) -> None:
        self.deadline = deadline
        self.remaining = max_requests
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.remaining <= 0 or time.monotonic() >= self.deadline:
                return False
            self.remaining -= 1
            return True


@dataclass
class Workload:
    """What every client shares: the server, the files, the models, the bird counter."""

    url: str
    folder: Path
    classifiers: list[str]
    concept_model: str | None
    bad_files: dict[str, Path]
    seed: int
    timeout: float
    defaults: list[Any] = field(default_factory=list)  # /explain_classifier's default inputs
    download: bool = False  # fetch every returned picture, over the client's pooled connection
    idle: tuple[float, float] = (0.0, 0.0)  # pause between two requests of a client, s
    birds: Iterator[int] = field(default_factory=itertools.count)
    _birds_lock: threading.Lock = field(default_factory=threading.Lock)

    def new_bird(self) -> Path:
        """Render a synthetic bird no client has sent yet (distinct pixels: a new cache key)."""
        with self._birds_lock:
            number = next(self.birds)
        sample = render_sample(number % NUM_SPECIES, np.random.SeedSequence([self.seed, number]))
        path = self.folder / f"bird-{number:05d}.png"
        sample.image.save(path)
        return path


class Worker:
    """One client thread: its own gradio_client.Client, raw HTTP client and seeded RNG."""

    def __init__(self, index: int, work: Workload, kinds: tuple[Kind, ...]) -> None:
        self.work = work
        self.kinds = kinds
        self.rng = np.random.default_rng([work.seed, index])
        # gradio_client's HTTP calls (upload, queue join) time out after 5 s by default, which an
        # overloaded CPU exceeds; a browser waits, so the clients wait up to --timeout too.
        self.client = Client(
            work.url,
            verbose=False,
            analytics_enabled=False,
            download_files=False,
            httpx_kwargs={"timeout": work.timeout},
        )
        self.http = httpx.Client(timeout=work.timeout)
        self.last_image: Path = EXAMPLES[index % len(EXAMPLES)]
        self.results: list[Result] = []
        weights = np.array([k.weight for k in kinds])
        self._p = weights / weights.sum()
        self._send: dict[str, Callable[[], Any]] = {
            "classify-example": lambda: self.classify(self._example()),
            "classify-new-bird": self._new_bird,
            "classify-gamma-T": self._slider_change,
            "concepts": self._concepts,
            "bad-not-image": lambda: self.classify(work.bad_files["bad-not-image"]),
            "bad-empty-file": lambda: self.classify(work.bad_files["bad-empty-file"]),
            "bad-1x1-png": lambda: self.classify(work.bad_files["bad-1x1-png"]),
            "bad-gamma-negative": lambda: self.classify(self._example(), gamma=-1.0),
            "bad-gamma-nan": self._nan_gamma,
            "bad-empty-prompt": lambda: self.concepts(self._example(), target=""),
            "bad-long-prompt": lambda: self.concepts(self._example(), target="x" * 2000),
            IDLE_REUSE.name: self._idle_reuse,
        }

    def run(self, budget: Budget) -> None:
        while budget.take():
            kind = self.kinds[int(self.rng.choice(len(self.kinds), p=self._p))]
            result = self._record(self.request(kind))
            if result.outcome == BUSY:
                time.sleep(float(self.rng.uniform(*BUSY_BACKOFF_S)))
            if self.work.idle[1] > 0:
                self._record(self.request(IDLE_REUSE))
        self.client.close()
        self.http.close()

    def _record(self, result: Result) -> Result:
        self.results.append(result)
        if result.outcome == FAILED:
            log.warning(
                "%s FAILED %s at %s: %s",
                "valid" if result.valid else "invalid",
                result.kind,
                time.strftime("%H:%M:%S"),
                result.message,
            )
        return result

    def request(self, kind: Kind) -> Result:
        start = time.monotonic()
        try:
            self._send[kind.name]()
        except (AppError, QueueError) as error:
            if BUSY_MESSAGE.search(str(error)):
                return Result(
                    kind.name, kind.valid, start, time.monotonic() - start, BUSY, str(error)
                )
            return self._refusal(kind, start, str(error))
        except Exception as error:  # noqa: BLE001 - every failure is recorded, none ends the run
            return Result(
                kind.name,
                kind.valid,
                start,
                time.monotonic() - start,
                FAILED,
                f"{type(error).__name__}: {error}",
            )
        latency = time.monotonic() - start
        if kind.valid:
            return Result(kind.name, True, start, latency, OK)
        return Result(kind.name, False, start, latency, FAILED, "invalid input was accepted")

    def _refusal(self, kind: Kind, start: float, message: str) -> Result:
        latency = time.monotonic() - start
        expected = kind.expect is not None and re.search(kind.expect, message, re.IGNORECASE)
        if expected and "Traceback" not in message:
            return Result(kind.name, False, start, latency, REFUSED, message)
        return Result(kind.name, kind.valid, start, latency, FAILED, message or "(no message)")

    # -- requests

    def _call(self, api_name: str, outputs: int, **kwargs: Any) -> tuple[Any, ...]:
        job = self.client.submit(api_name=api_name, **kwargs)
        try:
            result = job.result(timeout=self.work.timeout)
        except FutureTimeout:
            job.cancel()
            raise TimeoutError(f"no answer within {self.work.timeout:.0f} s") from None
        if not isinstance(result, (tuple, list)) or len(result) != outputs:
            raise RuntimeError(f"unexpected response shape: {str(result)[:200]}")
        return tuple(result)

    def classify(self, image: Path, **kwargs: Any) -> tuple[Any, ...]:
        model = str(self.rng.choice(self.work.classifiers))
        result = self._call(
            CLASSIFIER_API,
            len(CLASSIFIER_PARTS),
            image=handle_file(str(image)),
            model=model,
            **kwargs,
        )
        self._check_images(*(result[CLASSIFIER_PARTS.index(part)] for part in ("cam", "finer")))
        return result

    def concepts(self, image: Path, target: str | None = None) -> tuple[Any, ...]:
        if self.work.concept_model is None:
            raise RuntimeError("no concept model (--concept-model '')")
        result = self._call(
            CONCEPTS_API,
            len(CONCEPT_PARTS),
            image=handle_file(str(image)),
            model=self.work.concept_model,
            target_concept=str(self.rng.choice(CONCEPT_TARGETS)) if target is None else target,
            contrast_prompts=str(self.rng.choice(CONCEPT_CONTRASTS)),
            gamma=round(float(self.rng.uniform(0, 1)), 2),
        )
        self._check_images(*(result[CONCEPT_PARTS.index(part)] for part in ("cam", "finer")))
        return result

    def _check_images(self, *outputs: Any) -> None:
        """Both panels came back as files the server serves (and, with ``--download-files``,
        each downloads whole)."""
        for output in outputs:
            if not isinstance(output, dict) or not (output.get("url") or output.get("path")):
                raise RuntimeError(f"missing image in the response: {str(output)[:200]}")
            if self.work.download and str(output.get("url")).startswith("http"):
                self.http.get(output["url"]).raise_for_status()  # httpx raises on a cut body

    def _example(self) -> Path:
        return EXAMPLES[int(self.rng.integers(len(EXAMPLES)))]

    def _new_bird(self) -> tuple[Any, ...]:
        self.last_image = self.work.new_bird()
        return self.classify(self.last_image, gamma=0.6, T=3)

    def _slider_change(self) -> tuple[Any, ...]:
        """A new γ, T, weighting or gradient method on an image sent before: no model run."""
        return self.classify(
            self.last_image,
            gamma=round(float(self.rng.uniform(0, 1)), 2),
            T=int(self.rng.integers(1, 6)),
            weighting=str(self.rng.choice(["uniform", "probability"])),
            method=str(self.rng.choice(GRADIENT_METHODS)),
        )

    def _concepts(self) -> tuple[Any, ...]:
        image = self.last_image if self.rng.random() < 0.5 else self._example()
        return self.concepts(image)

    def _idle_reuse(self) -> None:
        """A request on the pooled connection, a pause of ``--idle`` s, and a request on the
        same connection: the moment a server's keep-alive timer may close it."""
        info = f"{self.work.url}gradio_api/info"
        self.http.get(info).raise_for_status()
        time.sleep(float(self.rng.uniform(*self.work.idle)))
        self.http.get(info).raise_for_status()

    def _nan_gamma(self) -> None:
        """γ = NaN: gradio_client refuses to encode NaN, so the JSON goes over raw HTTP."""
        body = nan_gamma_body(
            self.http, self.work.url, self.work.defaults, self._example(), self.work.classifiers[0]
        )
        raise AppError(_error_message(call_refused(self.http, self.work.url, body)))


def nan_gamma_body(
    http: httpx.Client, url: str, defaults: Sequence[Any], image: Path, model: str
) -> str:
    """The JSON of a classifier call on ``image`` (uploaded here) with γ = NaN, sent without a
    session id like any plain HTTP client's call."""
    with open(image, "rb") as handle:
        uploaded = http.post(f"{url}gradio_api/upload", files={"files": handle}).json()[0]
    data = list(defaults)
    data[0] = {"path": uploaded, "meta": {"_type": "gradio.FileData"}, "orig_name": image.name}
    data[1], data[3] = model, float("nan")
    return json.dumps({"data": data})  # allow_nan: the literal NaN goes over the wire


def call_refused(http: httpx.Client, url: str, body: str) -> str:
    """POST ``body`` to the classifier's ``/call`` endpoint and return the refusal's SSE
    stream; RuntimeError when the call was not refused."""
    call = f"{url}gradio_api/call{CLASSIFIER_API}"
    event = http.post(call, content=body, headers={"content-type": "application/json"})
    stream = http.get(f"{call}/{event.json()['event_id']}").text
    if "event: error" not in stream:
        raise RuntimeError(f"the NaN γ call was not refused: {stream[:200]}")
    return stream


def _error_message(stream: str) -> str:
    """The message of an ``event: error`` in a /call SSE stream."""
    lines = stream.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("event: error") and i + 1 < len(lines):
            payload = lines[i + 1].removeprefix("data:").strip()
            try:
                decoded = json.loads(payload)
            except json.JSONDecodeError:
                return payload
            if isinstance(decoded, dict):
                return str(decoded.get("error") or decoded.get("message") or decoded)
            return str(decoded)
    return stream[:200]


def classifier_defaults(url: str) -> list[Any]:
    """Default inputs of /explain_classifier in parameter order (for raw HTTP calls)."""
    client = Client(url, verbose=False, analytics_enabled=False, download_files=False)
    try:
        api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    finally:
        client.close()
    parameters = api[CLASSIFIER_API]["parameters"]
    names = [p["parameter_name"] for p in parameters]
    if names[:4] != ["image", "model", "method", "gamma"]:
        raise RuntimeError(f"{CLASSIFIER_API} parameters changed: {names}")
    return [p.get("parameter_default") for p in parameters]


# ------------------------------------------------------------------------------ the run


@dataclass
class Report:
    results: list[Result]
    rss: list[tuple[float, int]]
    load_start: float
    load_end: float
    server_alive: bool
    clients: int
    loadavg: tuple[str, str]  # 1/5/15-min load averages before and after the run

    def valid_failed(self) -> int:
        return sum(r.valid and r.outcome == FAILED for r in self.results)

    def invalid_misanswered(self) -> int:
        return sum(not r.valid and r.outcome == FAILED for r in self.results)


def run_load(args: argparse.Namespace, workdir: Path) -> Report:
    """Start the server, drive it with ``args.clients`` clients, stop it; return the figures."""
    kinds = tuple(
        k
        for k in KINDS
        if (args.kinds is None or k.name in args.kinds)
        and (args.concept_model or k.name not in CONCEPT_KINDS)
    )
    if not kinds:
        raise SystemExit("error: no request kinds left to send (see --kinds, --concept-model)")
    models = list(args.models) + ([args.concept_model] if args.concept_model else [])
    loadavg_before = _loadavg()
    cache = {
        name: str(value)
        for name, value in (
            ("FINERCAM_CACHE_ENTRIES", args.cache_entries),
            ("FINERCAM_CACHE_MB", args.cache_mb),
        )
        if value is not None
    }
    with running_server(models, workdir, args.concurrency, args.threads, cache) as server:
        sampler = RssSampler(server.process.pid)
        sampler.start()
        work = Workload(
            url=server.url,
            folder=workdir,
            classifiers=list(args.models),
            concept_model=args.concept_model or None,
            bad_files=invalid_files(workdir),
            seed=args.seed,
            timeout=args.timeout,
            defaults=classifier_defaults(server.url),
            download=args.download_files,
            idle=args.idle,
        )
        results, load_start, load_end = drive(
            work, kinds, args.clients, args.duration, args.max_requests
        )
        alive = server.alive()
        sampler.stop()
        if not alive:
            log.error("the server died during the run:\n%s", server.log_tail())
    loadavg = (loadavg_before, _loadavg())
    return Report(results, sampler.samples, load_start, load_end, alive, args.clients, loadavg)


def drive(
    work: Workload, kinds: tuple[Kind, ...], clients: int, duration: float, max_requests: int
) -> tuple[list[Result], float, float]:
    """``clients`` threads send the mix for ``duration`` s; return (results, start, end)."""
    workers = [Worker(i, work, kinds) for i in range(clients)]
    start = time.monotonic()
    budget = Budget(start + duration, max_requests)
    threads = [
        threading.Thread(target=w.run, args=(budget,), name=f"client-{i}", daemon=True)
        for i, w in enumerate(workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, budget.deadline - time.monotonic()) + work.timeout + 30)
    return [r for w in workers for r in w.results], start, time.monotonic()


def _loadavg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


# ------------------------------------------------------------------------------ printing


def _ms(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q) * 1000:.0f}" if values else "-"


def _mb(value: float) -> str:
    return f"{value / 2**20:.1f} MB"


def rss_summary(report: Report) -> list[str]:
    """Peak RSS, and the mean of the first vs the last ``WINDOW_S`` of the load."""
    during = [(t, b) for t, b in report.rss if report.load_start <= t <= report.load_end and b]
    if not during:
        return ["server RSS: no samples"]
    before = [b for t, b in report.rss if t < report.load_start and b]
    first = [b for t, b in during if t < report.load_start + WINDOW_S]
    last = [b for t, b in during if t > report.load_end - WINDOW_S]
    first_mean, last_mean = float(np.mean(first)), float(np.mean(last))
    windows = _windows(during, report.load_start)
    return [
        (
            f"server RSS: before load {_mb(before[-1]) if before else '-'}, "
            f"peak {_mb(max(b for _, b in during))} "
            f"({len(during)} samples every {SAMPLE_PERIOD_S} s)"
        ),
        (
            f"server RSS mean: first {WINDOW_S:.0f} s {_mb(first_mean)} "
            f"(max {_mb(max(first))}), last {WINDOW_S:.0f} s {_mb(last_mean)} "
            f"(max {_mb(max(last))}), change {(last_mean - first_mean) / 2**20:+.1f} MB"
        ),
        f"server RSS mean per {WINDOW_S:.0f} s (MB): "
        + ", ".join(f"{np.mean(w) / 2**20:.0f}" for w in windows if w),
    ]


def _windows(samples: list[tuple[float, int]], start: float) -> list[list[int]]:
    """RSS samples grouped into consecutive ``WINDOW_S`` windows from ``start``."""
    count = int((samples[-1][0] - start) // WINDOW_S) + 1
    windows: list[list[int]] = [[] for _ in range(count)]
    for t, value in samples:
        windows[int((t - start) // WINDOW_S)].append(value)
    return windows


def kind_table(results: list[Result]) -> list[str]:
    """One row per request kind: counts by outcome and p50/p95 latency."""
    lines = []
    for kind in (*KINDS, IDLE_REUSE):
        rows = [r for r in results if r.kind == kind.name]
        if not rows:
            continue
        latencies = [r.latency for r in rows]
        counts = {o: sum(r.outcome == o for r in rows) for o in (OK, REFUSED, BUSY, FAILED)}
        lines.append(
            f"{kind.name:20s} {len(rows):5d} {counts[OK]:5d} {counts[REFUSED]:8d} "
            f"{counts[BUSY]:6d} {counts[FAILED]:7d} {_ms(latencies, 50):>7s} "
            f"{_ms(latencies, 95):>7s}"
        )
    return lines


def errors_by_kind(results: list[Result]) -> list[str]:
    """Per kind, the number of non-OK answers and a sample message (a failure when any)."""
    lines = ["errors by kind (sample message):"]
    for kind in KINDS:
        errors = [r for r in results if r.kind == kind.name and r.outcome != OK]
        if errors:
            sample = next((r for r in errors if r.outcome == FAILED), errors[0])
            lines.append(
                f"  {kind.name:20s} {len(errors):4d} {sample.outcome}: {sample.message[:140]}"
            )
    return lines


def format_report(report: Report, args: argparse.Namespace) -> str:
    results = report.results
    elapsed = report.load_end - report.load_start
    valid = [r for r in results if r.valid]
    models = ", ".join(args.models) + (f" + {args.concept_model}" if args.concept_model else "")
    lines = [
        (
            f"load: {report.clients} clients, {elapsed:.1f} s, models {models}, seed {args.seed}, "
            f"server torch threads {args.threads}, {os.cpu_count()} CPUs shared "
            f"(load average before {report.loadavg[0]}, after {report.loadavg[1]})"
        ),
        (
            f"server cache bound: {args.cache_entries or 'default'} entries, "
            f"{args.cache_mb or 'default'} MB"
        ),
        (
            f"requests served: {len(results)} ({len(results) / max(elapsed, 1e-9):.2f}/s); "
            f"valid {len(valid)}, invalid {len(results) - len(valid)}"
        ),
        "",
        HEADER,
    ]
    lines += kind_table(results)
    valid_latencies = [r.latency for r in valid if r.outcome == OK and r.kind != IDLE_REUSE.name]
    lines += [
        "",
        (
            f"valid requests latency: p50 {_ms(valid_latencies, 50)} ms, "
            f"p95 {_ms(valid_latencies, 95)} ms (includes queueing behind the other clients)"
        ),
    ]
    lines += errors_by_kind(results)
    lines += rss_summary(report)
    lines += [
        f"server alive after the run: {'yes' if report.server_alive else 'NO'}",
        f"invalid requests not refused with their message: {report.invalid_misanswered()}",
        f"valid requests failed: {report.valid_failed()}",
    ]
    return "\n".join(lines)


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``bench.load`` and ``bench.soak`` share: seed, models, server settings, and
    how the clients behave (timeout, downloads, idle gaps)."""
    parser.add_argument("--seed", type=int, default=0, help="seed of the request mix")
    parser.add_argument(
        "--models",
        default="demo-cnn",
        type=lambda text: [m.strip() for m in text.split(",") if m.strip()],
        help="comma-separated classifier models (offline ones; default %(default)s)",
    )
    parser.add_argument(
        "--concept-model", default="demo-tinyclip", help="concepts model ('' for none)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=None, help="server queue concurrency (app default)"
    )
    parser.add_argument("--threads", type=int, default=1, help="server torch threads (1)")
    parser.add_argument("--timeout", type=float, default=120.0, help="per-request timeout, s")
    parser.add_argument(
        "--download-files",
        action="store_true",
        help="each client fetches every returned picture over its pooled HTTP connection",
    )
    parser.add_argument(
        "--idle",
        type=idle_range,
        default=(0.0, 0.0),
        metavar="LO-HI",
        help="after each request, reuse the pooled connection after LO..HI s idle (default: off)",
    )


def idle_range(text: str) -> tuple[float, float]:
    """``LO-HI`` (or one number) in seconds, for ``--idle``."""
    low, _, high = text.partition("-")
    try:
        bounds = (float(low), float(high or low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--idle wants LO-HI seconds, got {text!r}") from None
    if not 0 <= bounds[0] <= bounds[1] or not all(np.isfinite(bounds)):
        raise argparse.ArgumentTypeError(f"--idle wants 0 <= LO <= HI seconds, got {text!r}")
    return bounds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (%(default)s)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (%(default)s)")
    parser.add_argument("--max-requests", type=int, default=2000, help="cap in all (%(default)s)")
    add_server_arguments(parser)
    parser.add_argument(
        "--kinds",
        default=None,
        type=lambda text: {k.strip() for k in text.split(",") if k.strip()},
        help="comma-separated request kinds to send (default: the whole mix: "
        + ", ".join(k.name for k in KINDS)
        + ")",
    )
    parser.add_argument(
        "--cache-entries", type=int, default=None, help="server gradient cache size (app default)"
    )
    parser.add_argument(
        "--cache-mb", type=int, default=None, help="server gradient cache MB (app default)"
    )
    args = parser.parse_args(argv)
    for name in ("clients", "max_requests", "threads", "cache_entries", "cache_mb"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 < args.duration <= 3600:
        parser.error("--duration must be in (0, 3600] seconds")
    if not args.models:
        parser.error("--models needs at least one classifier model")
    unknown = sorted((args.kinds or set()) - {k.name for k in KINDS})
    if unknown:
        parser.error(f"unknown --kinds {', '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    workdir = Path(tempfile.mkdtemp(prefix="finercam-load-"))
    try:
        report = run_load(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(format_report(report, args))
    failed = report.valid_failed() or report.invalid_misanswered() or not report.server_alive
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
