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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr
import numpy as np

from app.explain.gradients import ProgressFn
from app.explain.methods import METHODS
from app.explain.service import Explanation, ExplanationService, GammaStrip
from app.models.registry import ModelLoadError, ModelRegistry, get_spec, model_specs
from app.ui.image_input import ImagePath

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

#: Event options of live controls: private, one explanation queue, only the latest move counts.
LIVE = {"api_visibility": "private", "concurrency_id": "explain", "trigger_mode": "always_last"}

#: Shown instead of a traceback when something unexpected breaks.
INTERNAL_ERROR = (
    "Something went wrong while explaining this image; the error was logged. "
    "Please try another image or setting."
)


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
    pooled = POOLING_LABELS.get(explanation.pooling or "")
    method = f"{explanation.method}, {pooled}" if pooled else explanation.method
    return (
        f"CAM ({method}): {target}",
        f"Finer-CAM (γ={explanation.gamma:g}): {target} − γ·[{refs}]",
    )


class DownloadDir:
    """Files offered for download, in one private folder pruned by age and count.

    Created inside Gradio's file cache (``parent``) when given, so Gradio serves the files where
    they are instead of copying them, and the disk cap (``app.ui.serving.DiskCap``) sees them.
    When the disk is full the explanation is still shown; only the download is missing.
    """

    def __init__(
        self, max_age_s: float = 900.0, max_files: int = 32, parent: Path | None = None
    ) -> None:
        if parent is not None:
            parent.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="finercam-downloads-", dir=parent))
        self.max_age_s = max_age_s
        self.max_files = max_files
        self._lock = threading.Lock()

    def save(
        self, explanation: Explanation, stem: str, strip: GammaStrip | None = None
    ) -> list[str]:
        """Write ``<stem>-maps.npy`` (2, H, W float32 [CAM, Finer-CAM]) and the composite PNG
        (with the γ strip under the panels when given).

        Returns ``[]`` with a warning toast when they cannot be written (a full disk).
        """
        self._prune()
        folder = self.root / uuid.uuid4().hex[:12]
        try:
            return self._write(explanation, stem, folder, strip)
        except OSError as error:
            log.warning("downloads not written (%s): %s", type(error).__name__, error)
            _remove_tree(folder)
            gr.Warning(DOWNLOAD_UNAVAILABLE)
            return []

    def _write(
        self, explanation: Explanation, stem: str, folder: Path, strip: GammaStrip | None = None
    ) -> list[str]:
        folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:80] or "finercam"
        maps = folder / f"{safe}-maps.npy"
        np.save(maps, explanation.raw_maps())
        composite = folder / f"{safe}-cam-vs-finercam.png"
        explanation.composite(strip).save(composite, format="PNG")
        return [str(maps), str(composite)]

    def _prune(self) -> None:
        """Drop folders past ``max_files`` or ``max_age_s`` (the disk cap may remove any first)."""
        with self._lock:
            ages = []
            for folder in self.root.glob("*/"):
                try:
                    ages.append((folder.stat().st_mtime, folder))
                except FileNotFoundError:
                    continue
            ages.sort()
            now = time.time()
            excess = max(0, len(ages) - self.max_files)
            for i, (mtime, folder) in enumerate(ages):
                if i < excess or now - mtime > self.max_age_s:
                    _remove_tree(folder)


#: Shown (as a warning) when the download files could not be written.
DOWNLOAD_UNAVAILABLE = (
    "The download is unavailable right now: the server could not write the files (its disk "
    "may be full). The explanation above is complete."
)


def _remove_tree(folder: Path) -> None:
    """Remove a download folder (flat: files only); whatever is already gone is fine."""
    if not folder.is_dir():
        return
    try:
        for file in folder.iterdir():
            file.unlink(missing_ok=True)
        folder.rmdir()
    except OSError:
        log.debug("could not remove %s", folder, exc_info=True)


def file_stem(*parts: Any) -> str:
    return "-".join(str(p) for p in parts if p not in (None, ""))


STATUS_MAX_CHARS = 400


def status_line(registry: ModelRegistry) -> str:
    """One or two short lines: device, models loaded, fallbacks, Hub state (≤ 400 chars)."""
    from app.models.hub import policy as hub

    if registry.settings.offline:
        mode = "Offline: shipped demo models only."
    elif hub.user_offline():
        mode = "Hub: offline (HF_HUB_OFFLINE), cached models and demos."
    elif hub.hub_online():
        mode = "Hub: online."
    else:
        mode = "Hub: unreachable, cached models and demos serve."
    text = f"**Status:** {registry.status()}  \n{mode}"
    if len(text) > STATUS_MAX_CHARS:
        text = text[: STATUS_MAX_CHARS - len(mode) - 5] + "…  \n" + mode
    return text


def image_with_examples(
    elem_prefix: str, rows: list[list[Any]], fills: Sequence[Any] = (), value: str | None = None
) -> ImagePath:
    """The image input (upload, paste, webcam; showing ``value`` first) with the example
    gallery under it; each row fills the image and then the components ``fills``."""
    image = ImagePath(
        value=value,
        type="filepath",
        sources=["upload", "clipboard", "webcam"],
        label="Image",
        elem_id=f"{elem_prefix}-image",
    )
    if rows:
        gr.Examples(examples=rows, inputs=[image, *fills], label="Examples")
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
            serving = registry.serving(hub[0])  # its offline fallback when the Hub is unreachable
            return serving if serving in names else hub[0]
    return names[0]


def method_choices(
    service: ExplanationService, model_name: str | None, loaded: bool = False
) -> list[tuple[str, str]]:
    """``(label, name)`` pairs for the CAM-method dropdown of ``model_name``.

    The one place that decides which methods a model offers (both tabs, on page load and on
    every model change), read from the method registry: each method says where it runs
    (LeGrad and attention-gradient only for ViTs). Once the model is
    ``loaded`` the answer is exact (the served model may be an offline fallback); before, the
    registry's hint decides, so building the page never loads a model.
    """
    if loaded and model_name:
        methods = service.methods_for(model_name)
    else:
        hint = _attention_hint(model_name)
        methods = [m for m in METHODS.values() if m.supports_hint(hint)]
    return [(method.label, method.name) for method in methods]


def _attention_hint(model_name: str | None) -> bool:
    try:
        return bool(model_name) and bool(get_spec(model_name).attention)
    except ValueError:
        return False


#: How the panel titles name what a CLIP model's maps explain.
POOLING_LABELS = {"token": "class token", "avg": "average-pooled surrogate"}


def method_dropdown(choices: list[tuple[str, str]], current: str | None) -> Any:
    """The method dropdown after a model change: its choices, keeping ``current`` if offered."""
    names = [name for _, name in choices]
    value = current if current in names else (names[0] if names else None)
    return gr.Dropdown(choices=choices, value=value)
