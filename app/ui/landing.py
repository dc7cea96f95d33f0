"""The explained examples the tabs open on, computed once per process in the background.

A visitor should see the point of the app — CAM and Finer-CAM side by side — before knowing
where to click. The examples are explained by one thread started with the server (its
readiness does not wait), and every page load is answered from the stored result: no page
load runs a model, and on ZeroGPU no page load spends GPU time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from app.ui.tab_glue import gpu

log = logging.getLogger(__name__)

#: How long a page load waits for the examples while the server has just started.
WAIT_S = 30.0


class Landing:
    """Per-tab values computed once by :meth:`start`'s thread, read by every page load."""

    def __init__(self, wait_s: float = WAIT_S) -> None:
        self.wait_s = wait_s
        self._jobs: dict[str, Callable[[], dict[str, Any]]] = {}
        self._values: dict[str, dict[str, Any]] = {}
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, tab: str, compute: Callable[[], dict[str, Any]]) -> None:
        """Register the computation of ``tab``'s example (run by :meth:`start`)."""
        self._jobs[tab] = compute

    def start(self) -> None:
        """Compute every registered example in one background thread (once per process)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="finercam-landing", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            for tab, compute in self._jobs.items():
                try:
                    self._values[tab] = gpu(compute)()
                except Exception:  # a tab without its example still works; say why once
                    log.exception("the %s tab's opening example could not be explained", tab)
        finally:
            self._done.set()

    def values(self, tab: str) -> dict[str, Any] | None:
        """``tab``'s example, waiting up to ``wait_s`` while it is computed; ``None`` when it
        is not available (not started, failed, or still running)."""
        if self._thread is not None:
            self._done.wait(self.wait_s)
        return self._values.get(tab)
