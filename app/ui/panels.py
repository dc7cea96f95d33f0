"""Widgets both tabs share: the CAM | Finer-CAM panels with their titles, the γ strip, the
downloads, the γ slider with its Auto toggle and the opacity slider, plus the values they show.

Events return only what they change, so every output has a name (:data:`PARTS`) and a handler
asks for the parts it needs; :func:`part_values` renders exactly those.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import gradio as gr
import numpy as np

from app.explain.gamma import GAMMA_GRID
from app.explain.render import COLORMAPS, DEFAULT_COLORMAP, for_display
from app.explain.service import (
    ExplainSettings,
    Explanation,
    ExplanationService,
    GammaStrip,
)
from app.models.registry import ModelRegistry
from app.ui.image_output import Inline, PanelImage, StripGallery
from app.ui.tab_glue import DownloadDir, default_model, method_choices, model_choices, panel_titles

log = logging.getLogger(__name__)

#: Output parts shared by both tabs (each tab adds its own score tables and status).
PANEL_PARTS = ("cam_title", "cam", "finer_title", "finer", "strip", "gamma", "gamma_note", "files")


@dataclass
class Panels:
    """The titled CAM and Finer-CAM panels of one tab and its download list."""

    cam_title: gr.Markdown
    cam_image: PanelImage
    finer_title: gr.Markdown
    finer_image: PanelImage
    strip: StripGallery
    marked: gr.State  # the γ whose strip thumbnail the browser shows marked (per session)
    cam_label: str = "CAM"
    finer_label: str = "Finer-CAM"
    components: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.components.update(
            cam_title=self.cam_title, cam=self.cam_image, finer_title=self.finer_title,
            finer=self.finer_image, strip=self.strip, strip_mark=self.strip, marked=self.marked,
        )  # fmt: skip

    def outputs(self, names: Sequence[str]) -> list[Any]:
        """The components of ``names`` (panel parts, the γ controls, downloads, tab parts)."""
        return [self.components[name] for name in names]

    def inputs_for(
        self, params: Sequence[str], inputs: Sequence[Any], names: Sequence[str]
    ) -> tuple[tuple[str, ...], list[Any]]:
        """An event's parameter names and input components: the tab's, plus the marked γ for
        an event that moves the strip's mark (it re-sends the mark only when it changes)."""
        if "marked" in names:
            return (*params, "marked"), [*inputs, self.marked]
        return tuple(params), list(inputs)

    def cleared(self, names: Sequence[str]) -> tuple[Any, ...]:
        """Values for "no image": default titles, empty panels and strip, nothing to download."""
        empty = {
            "cam_title": f"**{self.cam_label}**", "finer_title": f"**{self.finer_label}**",
            "gamma": gr.skip(), "status": gr.skip(), "gamma_note": "",
        }  # fmt: skip
        return tuple(empty.get(name) for name in names)


def build_panels(prefix: str, cam_label: str = "CAM", finer_label: str = "Finer-CAM") -> Panels:
    """Titles in their own row (keeps the panels aligned), then the two images side by side."""
    with gr.Row(equal_height=True):
        cam_title = gr.Markdown(
            f"**{cam_label}**", label="CAM title", elem_id=f"{prefix}-cam-title"
        )
        finer_title = gr.Markdown(
            f"**{finer_label}**", label="Finer-CAM title", elem_id=f"{prefix}-finer-title"
        )
    with gr.Row(equal_height=True):
        cam_image = _panel_image(cam_label, f"{prefix}-cam")
        finer_image = _panel_image(finer_label, f"{prefix}-finer")
    strip = StripGallery(
        label="γ strip: Finer-CAM at γ = 0, 0.2, …, 1 (click one to set γ)",
        columns=len(GAMMA_GRID),
        rows=1,
        height=190,
        allow_preview=False,
        object_fit="contain",
        format="jpeg",
        interactive=False,
        elem_id=f"{prefix}-strip",
    )
    # None: not known yet (a new session, or one Gradio dropped): the next γ move sends its mark.
    marked = gr.State(None)
    return Panels(
        cam_title, cam_image, finer_title, finer_image, strip, marked, cam_label, finer_label
    )


def _panel_image(label: str, elem_id: str) -> PanelImage:
    # JPEG: at 384 px it encodes ~100x faster than PNG and ~20x faster than WebP (README,
    # "Sliders"); live events send it inline (see :func:`live_handler`).
    return PanelImage(
        label=label,
        type="numpy",
        format="jpeg",
        interactive=False,
        elem_id=elem_id,
        elem_classes=["finercam-panel"],
    )


def build_downloads(panels: Panels, prefix: str, label: str) -> gr.Button:
    """The download list (raw maps .npy, composite .png) and the button that fills it.

    Files are written only when asked for (this button, the Explain button or the API), never
    on a slider move.
    """
    button = gr.Button("Prepare downloads", size="sm", elem_id=f"{prefix}-download")
    files = gr.File(
        label=label, file_count="multiple", interactive=False, elem_id=f"{prefix}-files"
    )
    # "no_files" empties the list: a new image or setting makes the last downloads stale.
    panels.components.update(files=files, no_files=files)
    return button


def model_and_method(
    prefix: str,
    service: ExplanationService,
    registry: ModelRegistry,
    task: str,
    label: str,
    preferred_method: str = "gradcam",
) -> tuple[gr.Dropdown, gr.Dropdown]:
    """The model dropdown (default model selected) and the CAM-method dropdown it offers,
    set to ``preferred_method`` when the default model offers it (else Grad-CAM)."""
    selected = default_model(registry, task)
    model = gr.Dropdown(
        model_choices(registry, task),
        value=selected,
        label=label,
        elem_id=f"{prefix}-model",
        allow_custom_value=True,  # Hub ids (API, Hub loader)
    )
    choices = method_choices(service, selected)
    method = gr.Dropdown(
        choices,
        value=preferred_method if preferred_method in dict(choices).values() else "gradcam",
        label="CAM method",
        elem_id=f"{prefix}-method",
        # The choices follow the model in the page; an API call (or a session Gradio dropped)
        # sees the default model's, so the service, not the dropdown, says what a model runs.
        allow_custom_value=True,
    )
    return model, method


def gamma_controls(prefix: str, info: str | None = None) -> tuple[gr.Slider, gr.Checkbox, Any]:
    """γ, the contrast strength, in [0, 1] (0.6 by default, the paper's value), its "Auto"
    toggle beside it and a one-line note saying why auto picked what it picked."""
    with gr.Row(equal_height=True):
        gamma = gr.Slider(
            0,
            1,
            value=0.6,
            step=0.05,
            label="γ (contrast strength)",
            elem_id=f"{prefix}-gamma",
            info=info,
            scale=4,
        )
        auto = gr.Checkbox(
            False, label="Auto", info="pick γ per image", elem_id=f"{prefix}-auto", scale=1
        )
    note = gr.Markdown("", elem_id=f"{prefix}-gamma-note")
    return gamma, auto, note


def opacity_slider(prefix: str) -> gr.Slider:
    """Heat-map opacity of both overlays."""
    return gr.Slider(
        0, 1, value=0.5, step=0.05, label="Overlay opacity", elem_id=f"{prefix}-opacity"
    )


def colormap_dropdown(prefix: str) -> gr.Dropdown:
    """The heat maps' colour map: jet (the paper's) or a perceptually uniform one."""
    return gr.Dropdown(
        list(COLORMAPS),
        value=DEFAULT_COLORMAP,
        label="Colour map",
        info="jet is the paper's; viridis, inferno and turbo read evenly",
        allow_custom_value=True,  # the service names the valid ones
        elem_id=f"{prefix}-colormap",
    )


@dataclass
class Rendered:
    """What one event computed: the explanation, the γ strip when asked for, the auto note."""

    explanation: Explanation
    strip: GammaStrip | None = None
    note: str = ""


def needs_strip(names: Sequence[str]) -> bool:
    """Whether the parts asked for show the strip (the strip itself or the composite)."""
    return "strip" in names or "files" in names


def render_parts(
    names: Sequence[str],
    settings: ExplainSettings,
    auto_gamma: bool,
    strip_fn: Callable[[ExplainSettings, bool], GammaStrip],
    explain_fn: Callable[[ExplainSettings], Explanation],
    downloads: DownloadDir,
    stem_fn: Callable[[Explanation], str],
) -> tuple[Explanation, dict[str, Any]]:
    """Explain and render the shared parts in ``names``.

    The γ strip is computed only when a part shows it; auto-γ (one batched forward) only when
    the γ slider or the strip is among the parts, and it sets γ only when the slider is.
    """
    auto = auto_gamma and ("gamma" in names or needs_strip(names))
    strip = strip_fn(settings, auto) if auto or needs_strip(names) else None
    if auto and "gamma" in names and strip is not None and strip.auto is not None:
        settings = replace(settings, gamma=strip.auto.gamma)
    explanation = explain_fn(settings)
    rendered = Rendered(explanation, strip, auto_note(strip) if auto else "")
    return explanation, part_values(rendered, names, downloads, stem_fn(explanation))


def part_values(
    rendered: Rendered, names: Sequence[str], downloads: DownloadDir, stem: str
) -> dict[str, Any]:
    """Values of the shared parts in ``names``: panels at display size, strip, γ, downloads."""
    explanation, strip = rendered.explanation, rendered.strip
    cam_title, finer_title = panel_titles(explanation)
    makers = {
        "cam_title": lambda: f"**{cam_title}**",
        "cam": lambda: for_display(explanation.cam_overlay),
        "finer_title": lambda: f"**{finer_title}**",
        "finer": lambda: for_display(explanation.finer_overlay),
        "strip": lambda: strip_value(strip, explanation.gamma),
        "gamma": lambda: explanation.gamma,
        "gamma_note": lambda: rendered.note,
        "files": lambda: downloads.save(explanation, stem, strip),
        "no_files": lambda: None,
        "strip_mark": lambda: strip_mark(explanation.gamma),
        "marked": lambda: explanation.gamma,
    }
    return {name: makers[name]() for name in names if name in makers}


def strip_value(strip: GammaStrip | None, gamma: float) -> Any:
    """The strip's thumbnails (auto choice in the caption), the shown γ selected."""
    if strip is None:
        return None
    captions = [strip.caption(i) for i in range(len(strip.gammas))]
    return gr.Gallery(
        value=list(zip(strip.overlays(), captions, strict=True)), selected_index=strip_index(gamma)
    )


def strip_index(gamma: float) -> int | None:
    """The strip thumbnail showing ``gamma``, if it is one of the strip's values."""
    for index, value in enumerate(GAMMA_GRID):
        if abs(value - float(gamma)) < 1e-9:
            return index
    return None


def strip_mark(gamma: float) -> Any:
    """Only move the strip's selection to ``gamma`` (a γ move re-sends no thumbnail)."""
    return gr.Gallery(selected_index=strip_index(gamma))


def strip_gamma(event: gr.SelectData) -> float:
    """The γ of the clicked strip thumbnail (sets the slider)."""
    return GAMMA_GRID[event.index]


def auto_note(strip: GammaStrip | None) -> str:
    """One line: which γ auto picked and why."""
    if strip is None or strip.auto is None:
        return ""
    return f"Auto γ = {strip.auto.gamma:g}: {strip.auto.reason}."


#: Which parts each kind of event returns (γ moves: the Finer panel, its title, the strip mark
#: when it moves, and the marked γ it remembers).
EVENT_PARTS = {
    "gamma": ("finer_title", "finer", "strip_mark", "marked"),
    "opacity": ("cam", "finer"),
    "colormap": ("cam", "finer", "strip"),
    "auto": ("strip", "gamma", "gamma_note"),
    "download": ("files",),
}

Render = Callable[[dict[str, Any], Sequence[str]], dict[str, Any]]

#: The parts that are panel pictures.
PICTURES = ("cam", "finer")


def _inline(name: str, value: Any) -> Any:
    """A panel picture travels inline; anything else (``None``, an update, a skip) as it is."""
    return (
        Inline(value, f"{name}.jpeg")
        if name in PICTURES and isinstance(value, np.ndarray)
        else value
    )


def event_values(names: Sequence[str], values: dict[str, Any]) -> Any:
    """An event's return value: the parts ``names`` in order, panel pictures inline (one
    output: the value itself, as Gradio expects)."""
    result = tuple(_inline(name, values[name]) for name in names)
    return result[0] if len(names) == 1 else result


def live_handler(
    render: Render, params: Sequence[str], names: Sequence[str], panels: Panels
) -> Callable[..., Any]:
    """An event handler returning the parts ``names`` for the inputs ``params``.

    Without an image it clears the panels (the image was removed). Panels go back inline (a
    JPEG ``data:`` URL in the event's message): no file written, no second request per move.
    """

    def handler(*args: Any) -> Any:
        request = dict(zip(params, args, strict=True))
        if request.get("image") is None:  # the strip is emptied: remember the slider's γ
            values = dict(
                zip(names, panels.cleared(names), strict=True), marked=request.get("gamma")
            )
        else:
            unmoved = unmoved_mark(names, request)
            values = render(request, [name for name in names if name not in unmoved])
            values.update({name: gr.skip() for name in unmoved})
        return event_values(names, values)

    return handler


def unmoved_mark(names: Sequence[str], request: dict[str, Any]) -> tuple[str, ...]:
    """``("strip_mark",)`` when the γ move keeps the same strip thumbnail marked (or none):
    most moves land between strip values, and an unchanged selection need not be built, sent
    or re-rendered by the browser."""
    if (
        "strip_mark" in names
        and request.get("marked") is not None
        and strip_index(request["marked"]) == strip_index(request["gamma"])
    ):
        return ("strip_mark",)
    return ()


#: Why a fast (outside the queue) render gave way to the queued one; never shown.
NEEDS_MODEL = "not cached: this move runs the model, on the queue"


def cached_first(
    trigger: Any,
    handler: Callable[..., Any],
    cached: Callable[[dict[str, Any]], bool],
    params: Sequence[str],
    inputs: Sequence[Any],
    outputs: Sequence[Any],
    **options: Any,
) -> Any:
    """Wire ``trigger`` to ``handler`` answered outside Gradio's queue when ``cached(request)``
    says no model runs (a γ or opacity move re-renders cached gradients: ~5 ms of work behind
    a queue round trip that costs more), and on the queue otherwise.

    The fast event refuses uncached requests with an invisible error, and its ``failure``
    listener runs the same handler on the queue (with its concurrency limit and busy message),
    so the model never runs outside the queue. On a ZeroGPU Space every call needs
    ``spaces.GPU``, so everything stays on the queue there.
    """
    if os.environ.get("SPACES_ZERO_GPU"):
        return trigger(handler, inputs, outputs, **options)

    def from_cache(*args: Any) -> Any:
        request = dict(zip(params, args, strict=True))
        try:
            ready = request.get("image") is None or cached(request)
        except Exception:  # noqa: BLE001 - the queued handler reports it to the user
            log.debug("fast render declined", exc_info=True)
            ready = False
        if not ready:
            raise gr.Error(NEEDS_MODEL, visible=False, print_exception=False)
        return handler(*args)

    fast_options = {k: v for k, v in options.items() if k != "concurrency_id"}
    fast = trigger(from_cache, inputs, outputs, **{**fast_options, "queue": False})
    return fast.failure(handler, inputs, outputs, **options)
