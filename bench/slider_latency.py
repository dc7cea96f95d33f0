"""Slider latency in a real browser: from a γ slider input to the new Finer-CAM image on screen.

Starts the app in a subprocess (offline, demo models), opens it in Debian's chromium through
Playwright (as tests/test_app_browser.py does; never a downloaded browser), uploads an example,
then moves the γ slider ``--moves`` times. Each move is timed inside the page: from dispatching
the range input's ``input``/``change`` events (and, with ``--release``, the ``pointerup`` that
ends a drag) to the moment the Finer-CAM <img> shows a new,
decoded picture. Prints median and p90 (and the machine's load average, since the CPU is
shared); never asserts a time.

``--baseline DIR`` also serves another checkout of the app (e.g. ``git archive`` of an older
commit unpacked in DIR) and alternates moves between the two pages, so both see the same load
and the ratio is fair.

    nice -n 10 python -m bench.slider_latency --moves 60
    git archive 55ddebc | tar -x -C /tmp/before && \
        nice -n 10 python -m bench.slider_latency --moves 40 --baseline /tmp/before
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import tempfile
from pathlib import Path

from bench.server import REPO_ROOT, running_server

log = logging.getLogger("bench.slider_latency")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
EXAMPLE = REPO_ROOT / "assets" / "examples" / "red-crowned-bluebird.png"

# Dispatch a slider move and resolve with the milliseconds until the panel shows a new picture.
MOVE_JS = """
async ([slider, panel, value, release]) => {
  const root = document.querySelector(`#${panel}`);
  const old = root.querySelector('img')?.src;
  const input = document.querySelector(`#${slider} input[type=range]`);
  const shown = new Promise((resolve) => {
    const check = async () => {
      const img = root.querySelector('img');
      if (img && img.src && img.src !== old) {
        observer.disconnect();
        try { await img.decode(); } catch (e) {}
        resolve(performance.now());
      }
    };
    const observer = new MutationObserver(check);
    observer.observe(root, {subtree: true, childList: true, attributes: true,
                            attributeFilter: ['src']});
  });
  const start = performance.now();
  input.value = String(value);
  input.dispatchEvent(new Event('input', {bubbles: true}));
  input.dispatchEvent(new Event('change', {bubbles: true}));
  if (release) input.dispatchEvent(new PointerEvent('pointerup', {bubbles: true}));
  return (await shown) - start;
}
"""


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def open_page(browser, url: str, prefix: str = "clf"):
    """A page of ``url`` with the example explained (its Finer panel shown)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(120_000)
    page.goto(url)
    page.locator(f"#{prefix}-image input[type=file]").set_input_files(str(EXAMPLE))
    page.wait_for_function(
        "id => { const i = document.querySelector(`#${id} img`);"
        " return i && i.complete && i.naturalWidth > 0; }",
        arg=f"{prefix}-finer",
    )
    page.wait_for_timeout(1500)  # let the first explanation's follow-up events settle
    return page


def measure(
    urls: list[str], moves: int, warmup: int, prefix: str = "clf", release: bool = False
) -> list[list[float]]:
    """Milliseconds per γ move on each page, moves alternating between the pages; with
    ``release`` each move ends as a drag does (``pointerup``: the slider's release event)."""
    from playwright.sync_api import sync_playwright

    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        pages = [open_page(browser, url, prefix) for url in urls]
        # 0.05, 0.1, ..., 1 without 0.6 (the start value); consecutive values always differ
        cycle = [round(0.05 * k, 2) for k in range(1, 21) if k != 12]
        values = [cycle[i % len(cycle)] for i in range(warmup + moves)]
        timings: list[list[float]] = [[] for _ in urls]
        for i, value in enumerate(values):
            for page, series in zip(pages, timings, strict=True):
                elapsed = page.evaluate(
                    MOVE_JS, [f"{prefix}-gamma", f"{prefix}-finer", value, release]
                )
                if i >= warmup:
                    series.append(float(elapsed))
                page.wait_for_timeout(150)  # a person's pause between moves; nothing pending
        browser.close()
    return timings


def report(label: str, timings: list[float]) -> None:
    log.info(
        "%s: γ slider -> new Finer-CAM image, %d moves: median %.1f ms, p90 %.1f ms, "
        "min %.1f ms, max %.1f ms",
        label,
        len(timings),
        statistics.median(timings),
        percentile(timings, 0.9),
        min(timings),
        max(timings),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--moves", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--models", default="demo-cnn,demo-tinyclip")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the server")
    parser.add_argument("--baseline", type=Path, help="another checkout to compare against")
    parser.add_argument(
        "--release",
        action="store_true",
        help="end each move with pointerup, as a drag does (fires the slider's "
        "release event, which re-scores the faithfulness line)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    models = args.models.split(",")
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="slider-latency-")))
        repos = [REPO_ROOT] + ([args.baseline.resolve()] if args.baseline else [])
        servers = []
        for i, repo in enumerate(repos):
            (workdir / str(i)).mkdir()
            servers.append(stack.enter_context(
                running_server(models, workdir / str(i), None, args.threads, repo=repo)
            ))  # fmt: skip
        timings = measure(
            [server.url for server in servers], args.moves, args.warmup, release=args.release
        )
    for repo, series in zip(repos, timings, strict=True):
        report("this checkout" if repo == REPO_ROOT else f"baseline {repo}", series)
    if len(timings) == 2:
        log.info(
            "median ratio baseline / this checkout: %.2fx (same run, moves alternating)",
            statistics.median(timings[1]) / statistics.median(timings[0]),
        )
    load = os.getloadavg()
    log.info("load average %.2f %.2f %.2f on %d CPUs (shared machine)", *load, os.cpu_count() or 0)


if __name__ == "__main__":
    main()
