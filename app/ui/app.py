"""The Gradio Blocks app: a status line and two tabs over one shared explanation service."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder

from app.config import Settings
from app.explain import inputs
from app.explain.service import ExplanationService
from app.models.registry import ModelRegistry
from app.ui.classifier_tab import build_classifier_tab
from app.ui.compare_tab import build_compare_tab
from app.ui.concepts_tab import build_concepts_tab
from app.ui.hub_loader import build_hub_loader, build_status_details
from app.ui.landing import Landing
from app.ui.serving import (
    Admission,
    DiskCap,
    HeapTrim,
    hold_idle_connections,
    keep_alive_s,
    patient_url_check,
    serve_until_stopped,
    write_pictures_atomically,
)
from app.ui.tab_glue import DownloadDir, status_line
from app.ui.theme import THEME
from app.ui.trust import TRUST_CSS
from app.ui.wiring import Tab

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = REPO_ROOT / "assets" / "examples"
DEFAULT_CONCURRENCY = 2
QUEUE_MAX_SIZE = 64  # Gradio's own hard cap; Admission refuses with a message well before it
# Gradio's cache: every `frequency` s remove the files older than `age` s (the byte cap binds
# first under heavy traffic; this keeps a quiet server's files short-lived too).
DELETE_CACHE = (300, 1800)
EVENT_RECORDS = 500  # Gradio's monitoring records kept (its default: 10,000)
# Small inputs (the demo birds are 128 px) are shown scaled up to the panel width. Cosmetic:
# if Gradio renames these classes the images simply keep their natural size.
CSS = (
    """
.finercam-panel .image-frame { width: 100% !important; height: auto !important; }
.finercam-panel img { width: 100% !important; height: auto !important; max-height: 520px;
                      object-fit: contain; }
"""
    + TRUST_CSS
)

INTRO = """# Finer-CAM Studio
See why a fine-grained classifier chose one class over its look-alikes. **CAM** explains the
target's logit; **Finer-CAM** explains *target − γ·(look-alike classes)*, so the regions that
every similar class shares fade and the discriminative ones remain. γ = 0 is plain CAM. Moving
γ, T, the references, the weighting or the opacity re-renders from cached gradients."""


def create_service(registry: ModelRegistry, settings: Settings | None = None) -> ExplanationService:
    """The explanation service over ``registry`` with the configured cache bounds."""
    settings = settings or registry.settings
    return ExplanationService(
        registry.get,
        max_entries=settings.cache_entries,
        max_bytes=settings.cache_mb * 2**20,
        max_side=settings.max_side,
    )


def example_images(folder: Path = EXAMPLES_DIR) -> list[str]:
    """The example gallery: PNG/JPEG files in ``assets/examples``, sorted by name."""
    if not folder.is_dir():
        return []
    return [
        str(p) for p in sorted(folder.iterdir()) if p.suffix.lower() in (".png", ".jpg", ".jpeg")
    ]


def default_concurrency() -> int:
    """Simultaneous explanations (``FINERCAM_CONCURRENCY``; 2 by default)."""
    try:
        return max(1, int(os.environ.get("FINERCAM_CONCURRENCY", DEFAULT_CONCURRENCY)))
    except ValueError:
        return DEFAULT_CONCURRENCY


def build_app(
    service: ExplanationService,
    registry: ModelRegistry,
    settings: Settings | None = None,
    *,
    concurrency: int | None = None,
    examples: list[str] | None = None,
) -> gr.Blocks:
    """The whole UI; it only wires widgets to ``service`` and reads ``registry`` for names.

    The queue is configured here (``concurrency`` explanations at once, default
    :func:`default_concurrency`), so tests and ``python -m app`` serve the same app.
    """
    settings = settings or registry.settings
    examples = example_images() if examples is None else examples
    downloads = DownloadDir(parent=Path(get_upload_folder()))
    landing = Landing()
    with gr.Blocks(title="Finer-CAM Studio", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(INTRO)
        status = gr.Markdown(status_line(registry), label="Status", elem_id="status")
        details_load, details = build_status_details(registry)
        with gr.Tabs() as tabs:
            with gr.Tab("Fine-grained classifier", id="classifier"):
                classifier = build_classifier_tab(
                    service, registry, downloads, status, examples, landing
                )
                build_hub_loader(
                    registry, "classifier", classifier.model, status, then=classifier.on_load
                )
            with gr.Tab("CLIP concepts", id="concepts"):
                concepts = build_concepts_tab(
                    service, registry, downloads, status, examples, landing
                )
                build_hub_loader(registry, "concepts", concepts.model, status)
            with gr.Tab("Compare methods", id="compare") as compare:
                assert classifier.compare is not None
                build_compare_tab(service, classifier.compare, compare, tabs)
        demo.load(details_load, None, details, api_visibility="private", concurrency_limit=None)
        _on_page_load(demo, classifier, concepts)
    bound_event_records()
    demo.queue(
        default_concurrency_limit=concurrency or default_concurrency(), max_size=QUEUE_MAX_SIZE
    )
    demo.serving = Serving(  # type: ignore[attr-defined]
        Admission(demo, settings.queue_waiting), downloads, settings, landing
    )
    return demo


def _on_page_load(demo: gr.Blocks, *tabs: Tab) -> None:
    """Each tab's opening example (from the landing cache: no queue slot, no model run) and
    its faithfulness line, and the default classifier loaded (with progress), its class lists
    filled."""
    for tab in tabs:
        if tab.opening is not None:
            fn, inputs, outputs = tab.opening
            shown = demo.load(fn, inputs, outputs, api_visibility="private",
                              concurrency_limit=None, show_progress="hidden")  # fmt: skip
            if tab.then is not None:
                tab.then(shown)
        if tab.on_load is not None:
            fn, inputs, outputs = tab.on_load
            demo.load(fn, inputs, outputs, api_visibility="private", concurrency_id="explain")


def bound_event_records() -> None:
    """Keep Gradio's per-event records (for its monitoring page) few and rarely summarised.

    By default the queue keeps the last 10,000 events and rebuilds a pandas summary of all of
    them after every event: memory that grows for hours of traffic and CPU on every request.
    Read when the queue is created; an explicit environment setting wins.
    """
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", str(EVENT_RECORDS))
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", str(EVENT_RECORDS // 10))


@dataclass
class Serving:
    """What keeps a long-running server in bounds: admission, downloads, the configured caps."""

    admission: Admission
    downloads: DownloadDir
    settings: Settings
    landing: Landing
    disk: DiskCap | None = None
    heap: HeapTrim | None = None


def serving(demo: gr.Blocks) -> Serving:
    """The :class:`Serving` that :func:`build_app` attached to ``demo``."""
    return demo.serving  # type: ignore[attr-defined,no-any-return]


def health_route(registry: ModelRegistry) -> Any:
    """``GET /health``: 200 ``{"status": "ok"}``, or 503 ``"degraded"`` while a model load is
    stuck (the other models keep serving); for the container's HEALTHCHECK."""
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def health(request: Any) -> JSONResponse:
        report = registry.health()
        return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)

    return Route("/health", health, methods=["GET"])


def launch(
    demo: gr.Blocks,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    registry: ModelRegistry | None = None,
    **kwargs: Any,
) -> Any:
    """Serve ``demo`` with the project's safety settings (upload size cap, no extra paths,
    bounded sessions); with ``registry``, also ``GET /health``. Also starts the disk cap over
    Gradio's cache and the download folder, and the heap trim; keeps idle connections open
    ``FINERCAM_KEEP_ALIVE_S`` and writes returned pictures atomically (``app.ui.serving``).

    Gradio keeps, per visitor session (each page load, each API client, each ``/call`` without
    a session id), a copy of every component's config: ~170 KB for this app, for the last 10,000
    sessions by default — up to ~1.7 GB on a busy public Space. ``settings.sessions`` caps it.
    """
    keep_alive = keep_alive_s()
    if registry is not None:
        kwargs["app_kwargs"] = {**kwargs.get("app_kwargs", {}), "routes": [health_route(registry)]}
    state = serving(demo)
    write_pictures_atomically()
    patient_url_check()
    state.landing.start()  # the tabs' opening examples, explained while the server comes up
    if state.disk is None:
        state.disk = DiskCap(demo, [state.downloads.root], state.settings.disk_mb * 2**20)
        state.disk.start()
    if state.heap is None and state.settings.heap_trim_s > 0:
        state.heap = HeapTrim(demo, state.settings.heap_trim_s, state.settings.heap_report_s)
        state.heap.start()
    blocking = not kwargs.pop("prevent_thread_lock", False)
    launched = demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=inputs.MAX_UPLOAD_BYTES,
        show_error=False,
        ssr_mode=False,
        css=CSS,
        theme=THEME,
        state_session_capacity=state.settings.sessions,
        prevent_thread_lock=True,
        **kwargs,
    )
    hold_idle_connections(demo, keep_alive)
    if blocking:
        demo.block_thread()
    return launched


def serve(
    demo: gr.Blocks,
    host: str,
    port: int,
    share: bool = False,
    registry: ModelRegistry | None = None,
) -> None:
    """Launch and serve until SIGTERM/SIGINT; then finish the requests in flight and return."""
    launch(demo, host=host, port=port, share=share, registry=registry, prevent_thread_lock=True)
    state = serving(demo)
    serve_until_stopped(demo, state.admission, state.settings.stop_grace_s)
    for housekeeping in (state.disk, state.heap):
        if housekeeping is not None:
            housekeeping.stop()
