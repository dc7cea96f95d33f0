"""Gradio glue shared by both tabs: the raw image input, error translation, progress, downloads.

Nothing here knows about autograd or models; it only turns service results into widget values
and service exceptions into messages the user can read.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr
import numpy as np

from app.explain.gradients import ProgressFn
from app.explain.methods import METHODS
from app.explain.service import Explanation, ExplanationService, GammaStrip
from app.models.registry import ModelLoadError, ModelRegistry, model_specs
from app.ui.image_input import ImagePath

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

#: Event options of live controls: private, one explanation queue, only the latest move counts.
LIVE = {"api_visibility": "private", "concurrency_id": "explain", "trigger_mode": "always_last"}

#: Shown instead of a traceback when something unexpected breaks.
INTERNAL_ERROR = "Something went wrong while explaining this image; the error was logged. Please try another image or setting."


def user_errors(fn: F) -> F:
    """Run ``fn``; bad input and model-loading failures become ``gr.Error`` with their message.

    Anything else is logged with its traceback and shown as a short generic message, so no
    traceback ever reaches the browser or an API client, and the server keeps serving.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (ValueError, ModelLoadError) as error:  # InvalidInputError is a ValueError
            log.info("rejected request in %s: %s", fn.__name__, error)
            raise gr.Error(_sentence(str(error)), print_exception=False) from None
        except Exception:
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(INTERNAL_ERROR, print_exception=False) from None

    return wrapper  # type: ignore[return-value]


def _sentence(message: str) -> str:
    message = message.strip() or "Invalid input."
    return message[0].upper() + message[1:]


def gpu(fn: F) -> F:
    """On a ZeroGPU Space, ``spaces.GPU`` attaches a GPU for each call; elsewhere a no-op."""
    if not os.environ.get("SPACES_ZERO_GPU"):
        return fn
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:  # pragma: no cover - only on Spaces
        log.warning("SPACES_ZERO_GPU is set but the `spaces` package is missing")
        return fn
    return spaces.GPU(duration=int(os.environ.get("FINERCAM_GPU_SECONDS", "60")))(fn)  # type: ignore[no-any-return]


def progress_fn(progress: gr.Progress | None) -> ProgressFn | None:
    """Adapt ``gr.Progress`` to the service's ``(fraction, message)`` callback."""
    if progress is None:
        return None

    def report(fraction: float, message: str) -> None:
        try:
            progress(float(fraction), desc=message)
        except Exception:  # progress is cosmetic; never fail a request over it
            log.debug("progress update failed", exc_info=True)

    return report


def show_notices(explanation: Explanation, model_notice: str | None = None) -> None:
    """Surface the service's notices (clamped T, empty map ...) and a model fallback as toasts.

    Callers pass ``model_notice`` only for fresh (uncached) results, so moving a slider does not
    repeat it; the status line keeps showing it.
    """
    if model_notice:
        gr.Warning(model_notice)
    for notice in explanation.notices:
        gr.Warning(notice)


def top_scores(explanation: Explanation) -> dict[str, float]:
    """Top-k predictions as ``{name: probability}`` for ``gr.Label``."""
    return {score.name: round(score.probability, 6) for score in explanation.top}


SCORE_HEADERS = ["role", "class", "probability", "logit", "weight"]


def score_rows(explanation: Explanation) -> list[list[Any]]:
    """The target and the references actually used, one row each."""
    rows = [
        [
            "target",
            explanation.target.name,
            _r(explanation.target.probability),
            _r(explanation.target.logit),
            "",
        ]
    ]
    for i, ref in enumerate(explanation.references, 1):
        weight = "" if ref.weight is None else _r(ref.weight)
        rows.append([f"reference {i}", ref.name, _r(ref.probability), _r(ref.logit), weight])
    return rows


def _r(value: float) -> float:
    return round(float(value), 3)


def panel_titles(explanation: Explanation, target_label: str = "") -> tuple[str, str]:
    """Titles of the two panels: what each map explains."""
    target = target_label or explanation.target.name
    refs = ", ".join(ref.name for ref in explanation.references) or "no references"
    return (
        f"CAM ({explanation.method}): {target}",
        f"Finer-CAM (γ={explanation.gamma:g}): {target} − γ·[{refs}]",
    )


class DownloadDir:
    """Files offered for download, in one private temp folder pruned by age and count.

    Gradio copies returned files into its own cache, so ours only need to live until the
    response is sent; old ones are removed on later writes.
    """

    def __init__(self, max_age_s: float = 3600.0, max_files: int = 200) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="finercam-downloads-"))
        self.max_age_s = max_age_s
        self.max_files = max_files
        self._lock = threading.Lock()

    def save(
        self, explanation: Explanation, stem: str, strip: GammaStrip | None = None
    ) -> list[str]:
        """Write ``<stem>-maps.npy`` (2, H, W float32 [CAM, Finer-CAM]) and the composite PNG
        (with the γ strip under the panels when given)."""
        self._prune()
        folder = self.root / uuid.uuid4().hex[:12]
        folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:80] or "finercam"
        maps = folder / f"{safe}-maps.npy"
        np.save(maps, explanation.raw_maps())
        composite = folder / f"{safe}-cam-vs-finercam.png"
        explanation.composite(strip).save(composite, format="PNG")
        return [str(maps), str(composite)]

    def _prune(self) -> None:
        with self._lock:
            folders = sorted(
                (p for p in self.root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime
            )
            now = time.time()
            excess = max(0, len(folders) - self.max_files)
            for i, folder in enumerate(folders):
                if i < excess or now - folder.stat().st_mtime > self.max_age_s:
                    for file in folder.iterdir():
                        file.unlink(missing_ok=True)
                    folder.rmdir()


def file_stem(*parts: Any) -> str:
    return "-".join(str(p) for p in parts if p not in (None, ""))


def with_image(fn: F, on_missing: Callable[[], Any]) -> F:
    """``fn`` for live events: when the first input (the image) is empty, ``on_missing()``.

    Keeps ``fn``'s signature (``functools.wraps``) so Gradio still injects ``gr.Progress``.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not args or args[0] is None:
            return on_missing()
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def status_line(registry: ModelRegistry) -> str:
    """Which models are loaded, from where (Hub or offline demo), and on which device."""
    mode = (
        "offline: shipped demo models only"
        if registry.settings.offline
        else "online: weights from the Hugging Face Hub, offline demo models as fallback"
    )
    return f"**Status:** {registry.status()} ({mode})"


def image_with_examples(elem_prefix: str, examples: list[str]) -> ImagePath:
    """The image input (upload, paste, webcam) with the example gallery under it."""
    image = ImagePath(
        type="filepath",
        sources=["upload", "clipboard", "webcam"],
        label="Image",
        elem_id=f"{elem_prefix}-image",
    )
    if examples:
        gr.Examples(examples=[[path] for path in examples], inputs=[image], label="Examples")
    return image


def model_choices(registry: ModelRegistry, task: str) -> list[tuple[str, str]]:
    """``(label, name)`` pairs for the model dropdown, in registry order."""
    summaries = {spec.name: spec.summary for spec in model_specs(task)}  # type: ignore[arg-type]
    return [
        (f"{name} — {summaries.get(name, '')}".rstrip(" —"), name) for name in registry.names(task)
    ]  # type: ignore[arg-type]


def default_model(registry: ModelRegistry, task: str) -> str | None:
    """The model selected on page load.

    The first of ``--models``/``FINERCAM_MODELS`` when given; else, online, the first Hub model
    (CUB-200 / CLIP: the real thing, with the demo as its fallback); offline, the first demo.
    """
    names = registry.names(task)  # type: ignore[arg-type]
    if not names:
        return None
    for wanted in registry.settings.models:
        if wanted in names:
            return wanted
    if not registry.settings.offline:
        hub = [spec.name for spec in model_specs(task) if not spec.offline and spec.name in names]  # type: ignore[arg-type]
        if hub:
            return hub[0]
    return names[0]


def method_choices(service: ExplanationService, model_name: str | None) -> list[tuple[str, str]]:
    """``(label, name)`` pairs for the CAM-method dropdown of ``model_name``.

    The one place that decides which methods a model offers (both tabs, on page load and on
    every model change); today every model offers every method.
    """
    del service, model_name  # every method applies to every model for now
    return [(method.label, method.name) for method in METHODS.values()]


def method_dropdown(choices: list[tuple[str, str]], current: str | None) -> Any:
    """The method dropdown after a model change: its choices, keeping ``current`` if offered."""
    names = [name for _, name in choices]
    value = current if current in names else (names[0] if names else None)
    return gr.Dropdown(choices=choices, value=value)
