"""Slider latency in a real browser: from a γ slider input to the new Finer-CAM image on screen.

Starts the app in a subprocess (offline, demo models), opens it in Debian's chromium through
Playwright (as tests/test_app_browser.py does; never a downloaded browser), uploads an example,
then moves the γ slider ``--moves`` times. Each move is timed inside the page: from dispatching
the range input's ``input``/``change`` events to the moment the Finer-CAM <img> shows a new,
decoded picture. Prints median and p90 (and the machine's load average, since the CPU is
shared); never asserts a time.

    nice -n 10 python -m bench.slider_latency --moves 60
"""

from __future__ import annotations

import argparse
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
async ([slider, panel, value]) => {
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


def measure(url: str, moves: int, warmup: int, prefix: str = "clf") -> list[float]:
    """Milliseconds per γ move, after ``warmup`` untimed moves."""
    from playwright.sync_api import sync_playwright

    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.set_default_timeout(60_000)
        page.goto(url)
        page.locator(f"#{prefix}-image input[type=file]").set_input_files(str(EXAMPLE))
        page.wait_for_function(
            "id => { const i = document.querySelector(`#${id} img`);"
            " return i && i.complete && i.naturalWidth > 0; }",
            arg=f"{prefix}-finer",
        )
        page.wait_for_timeout(1500)  # let the first explanation's follow-up events settle
        values = [round(0.05 * (i % 20) + 0.05, 2) for i in range(warmup + moves)]
        timings = []
        for i, value in enumerate(values):
            if value == 0.6 and i == 0:
                value = 0.55
            elapsed = page.evaluate(MOVE_JS, [f"{prefix}-gamma", f"{prefix}-finer", value])
            if i >= warmup:
                timings.append(float(elapsed))
            page.wait_for_timeout(150)  # a person's pause between moves; nothing pending
        browser.close()
    return timings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--moves", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--models", default="demo-cnn,demo-tinyclip")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the server")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="slider-latency-") as workdir:
        with running_server(args.models.split(","), Path(workdir), None, args.threads) as server:
            timings = measure(server.url, args.moves, args.warmup)
    load = os.getloadavg()
    log.info(
        "γ slider -> new Finer-CAM image, %d moves: median %.1f ms, p90 %.1f ms, "
        "min %.1f ms, max %.1f ms (load average %.2f %.2f %.2f on %d CPUs)",
        len(timings),
        statistics.median(timings),
        percentile(timings, 0.9),
        min(timings),
        max(timings),
        *load,
        os.cpu_count() or 0,
    )


if __name__ == "__main__":
    main()
