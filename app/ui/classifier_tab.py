"""Tab 1, "Fine-grained classifier": widgets wired to ``ExplanationService.explain``.

Every control renders through one ``render(request, parts)`` and its event returns only the
parts it changes (a γ move: the Finer panel, its title and the strip's selection). The service
caches per (model, image), so γ, T, the references, the weighting, the target and the opacity
re-render from cached gradients; only a new image, model or method runs the network.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.explain import inputs
from app.explain.service import ExplainSettings, ExplanationService
from app.models.registry import ModelRegistry
from app.ui.panels import (
    EVENT_PARTS,
    PANEL_PARTS,
    Panels,
    build_downloads,
    build_panels,
    cached_first,
    gamma_controls,
    live_handler,
    model_and_method,
    opacity_slider,
    render_parts,
    strip_gamma,
)
from app.ui.tab_glue import (
    LIVE,
    SCORE_HEADERS,
    DownloadDir,
    file_stem,
    gpu,
    image_with_examples,
    method_choices,
    method_dropdown,
    progress_fn,
    score_rows,
    show_notices,
    status_line,
    top_scores,
    user_errors,
)

log = logging.getLogger(__name__)

PREDICTED = "(predicted class)"
REFERENCE_MODE_CHOICES = [
    ("Closest logits", "logits"),
    ("Classifier-weight similarity", "weights"),
    ("Manual (pick classes)", "manual"),
]
WEIGHTING_CHOICES = [("Uniform (paper)", "uniform"), ("Softmax probability", "probability")]
FGCAM_LAYER = "FG-CAM output layer"
#: The named endpoint's parameters, in the order of the tab's inputs.
PARAMS = ("image", "model", "method", "gamma", "T", "reference_mode", "manual_references",
          "target", "weighting", "opacity", "high_resolution", "fgcam_layer", "fgcam_denoise",
          "auto_gamma")  # fmt: skip
#: Everything the Explain button (and the API) returns.
FULL = ("top5", "used", *PANEL_PARTS, "status")
#: A new image, model, method, target or FG-CAM setting: everything but the downloads.
STRUCTURE = tuple("no_files" if part == "files" else part for part in FULL)
#: T, the reference rule or the weighting: the references, the Finer panel and the strip.
REFERENCES = ("used", "finer_title", "finer", "strip", "gamma", "gamma_note")


@dataclass
class ClassifierTab:
    """The tab's components, for ``app.build_app`` (page-load wiring) and tests."""

    #: ``(fn, inputs, outputs)`` to run on page load: loads the default model, fills class lists.
    on_load: tuple[Any, list[Any], list[Any]]


@dataclass
class _Controls:
    """The tab's input widgets; :meth:`inputs` is the handler's argument order."""

    image: Any
    model: gr.Dropdown
    method: gr.Dropdown
    gamma: gr.Slider
    top_t: gr.Slider
    reference_mode: gr.Radio
    manual: gr.Dropdown
    target: gr.Dropdown
    weighting: gr.Radio
    opacity: gr.Slider
    high_res: gr.Checkbox
    fg_layer: gr.Dropdown
    fg_denoise: gr.Checkbox
    auto: gr.Checkbox
    gamma_note: Any
    run: gr.Button

    def inputs(self) -> list[Any]:
        """In :data:`PARAMS` order."""
        return [
            self.image, self.model, self.method, self.gamma, self.top_t, self.reference_mode,
            self.manual, self.target, self.weighting, self.opacity, self.high_res,
            self.fg_layer, self.fg_denoise, self.auto,
        ]  # fmt: skip


def build_classifier_tab(
    service: ExplanationService,
    registry: ModelRegistry,
    downloads: DownloadDir,
    status: gr.Markdown,
    examples: list[str],
) -> ClassifierTab:
    """Lay out the tab inside the current ``gr.Blocks`` and wire its events."""
    with gr.Row():
        with gr.Column(scale=1):
            controls = _build_controls(service, registry, examples)
        with gr.Column(scale=2):
            panels = build_panels("clf")
            used, top5 = _build_scores()
            download = build_downloads(
                panels, "clf", "Download: raw maps (.npy, [CAM, Finer-CAM]) and composite (.png)"
            )
    panels.components.update(
        top5=top5, used=used, status=status, gamma=controls.gamma, gamma_note=controls.gamma_note
    )
    render = _renderer(service, registry, downloads)
    load = _load_handler(service, registry)
    loaded = [controls.target, controls.manual, controls.high_res, controls.fg_layer,
              controls.method, status]  # fmt: skip

    def cached(request: dict[str, Any]) -> bool:
        return service.cached(request["model"], request["image"], _settings(request))

    _wire(controls, panels, render, cached, load, loaded, download)
    return ClassifierTab(on_load=(load, [controls.model, controls.method], loaded))


def _build_controls(
    service: ExplanationService, registry: ModelRegistry, examples: list[str]
) -> _Controls:
    image = image_with_examples("clf", examples)
    model, method = model_and_method("clf", service, registry, "classifier", "Model")
    gamma, auto, note = gamma_controls(
        "clf", "0 = plain CAM; higher subtracts more of the look-alike classes"
    )
    top_t, reference_mode, manual, target, weighting = _reference_controls()
    opacity = opacity_slider("clf")
    high_res, fg_layer, fg_denoise = _fgcam_controls()
    run = gr.Button("Explain", variant="primary", elem_id="clf-run")
    return _Controls(image, model, method, gamma, top_t, reference_mode, manual, target,
                     weighting, opacity, high_res, fg_layer, fg_denoise, auto, note,
                     run)  # fmt: skip


def _reference_controls() -> tuple[Any, ...]:
    """T, the reference rule, the manual references, the target class and the weighting."""
    top_t = gr.Slider(
        1, 5, value=3, step=1, label="T (number of reference classes)", elem_id="clf-t"
    )
    reference_mode = gr.Radio(
        REFERENCE_MODE_CHOICES, value="logits", label="Reference classes", elem_id="clf-refmode"
    )
    manual = gr.Dropdown(
        [],
        value=[],
        multiselect=True,
        filterable=True,
        allow_custom_value=True,
        label="Manual references (type to search)",
        visible=False,
        elem_id="clf-manual",
    )
    target = gr.Dropdown(
        [PREDICTED],
        value=PREDICTED,
        filterable=True,
        allow_custom_value=True,
        label="Target class",
        elem_id="clf-target",
    )
    weighting = gr.Radio(
        WEIGHTING_CHOICES, value="uniform", label="Reference weighting", elem_id="clf-weighting"
    )
    return top_t, reference_mode, manual, target, weighting


def _fgcam_controls() -> tuple[gr.Checkbox, gr.Dropdown, gr.Checkbox]:
    """FG-CAM's switch, output layer and denoising (shown on model load where supported)."""
    high_res = gr.Checkbox(
        False,
        label="High resolution (FG-CAM)",
        info="Carry both maps down to pixels (plain CNNs and ResNets only)",
        visible=False,
        elem_id="clf-fgcam",
    )
    fg_layer = gr.Dropdown(
        [("input (full resolution)", 0)],
        value=0,
        allow_custom_value=True,  # choices follow the model; lost with a dropped session
        label=FGCAM_LAYER,
        visible=False,
        elem_id="clf-fgcam-layer",
    )
    fg_denoise = gr.Checkbox(
        False, label="FG-CAM SVD denoising", visible=False, elem_id="clf-fgcam-denoise"
    )
    return high_res, fg_layer, fg_denoise


def _build_scores() -> tuple[gr.Dataframe, gr.Label]:
    used = gr.Dataframe(
        headers=SCORE_HEADERS,
        label="Target and references used",
        interactive=False,
        wrap=True,
        elem_id="clf-used",
        column_widths=["18%", "40%", "14%", "14%", "14%"],
    )
    top5 = gr.Label(num_top_classes=5, label="Top-5 predictions", elem_id="clf-top5")
    return used, top5


def _renderer(
    service: ExplanationService, registry: ModelRegistry, downloads: DownloadDir
) -> Callable[..., dict[str, Any]]:
    """``render(request, names, progress=None)``: the values of the parts ``names``.

    The γ strip (and auto-γ, one batched forward) is computed only when a part shows it; the
    rest is one cached re-render.
    """

    def render(
        request: dict[str, Any], names: Sequence[str], progress: Any = None
    ) -> dict[str, Any]:
        model, image = request["model"], request["image"]
        registry.get(model)
        explanation, values = render_parts(
            names,
            _settings(request),
            bool(request.get("auto_gamma")),
            lambda settings, auto: service.gamma_strip(model, image, settings, auto=auto),
            lambda settings: service.explain(model, image, settings, progress_fn(progress)),
            downloads,
            lambda e: file_stem(model, request.get("method"), e.target.name, f"g{e.gamma:g}"),
        )
        log.info("classifier %s γ=%s cached=%s parts=%s", model, explanation.gamma,
                 explanation.cached, ",".join(names))  # fmt: skip
        show_notices(explanation)  # a model's fallback notice is shown once, on model load
        tab = {"top5": lambda: top_scores(explanation), "used": lambda: score_rows(explanation),
               "status": lambda: status_line(registry)}  # fmt: skip
        values.update({name: tab[name]() for name in names if name in tab})
        return values

    return render


def _settings(request: dict[str, Any]) -> ExplainSettings:
    target = request.get("target")
    return ExplainSettings(
        method=request.get("method") or "gradcam",
        gamma=request["gamma"],
        top_t=request.get("T", 3),
        reference_mode=request.get("reference_mode") or "logits",
        weighting=request.get("weighting") or "uniform",
        target=None if target in (None, "", PREDICTED) else target,
        manual_references=tuple(request.get("manual_references") or ()),
        opacity=request.get("opacity", 0.5),
        fgcam=bool(request.get("high_resolution")),
        fgcam_stop=inputs.validate_index(request.get("fgcam_layer") or 0, name=FGCAM_LAYER),
        fgcam_denoise=bool(request.get("fgcam_denoise")),
    )


def _api_handler(render: Callable[..., dict[str, Any]]) -> Callable[..., tuple[Any, ...]]:
    @gpu
    @user_errors
    def explain_classifier(
        image: str | bytes | None,
        model: str,
        method: str = "gradcam",
        gamma: float = 0.6,
        T: float = 3,  # the paper's name, shown in the API docs
        reference_mode: str = "logits",
        manual_references: list[str] | None = None,
        target: str | None = PREDICTED,
        weighting: str = "uniform",
        opacity: float = 0.5,
        high_resolution: bool = False,
        fgcam_layer: int = 0,
        fgcam_denoise: bool = False,
        auto_gamma: bool = False,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - the Gradio idiom
    ) -> tuple[Any, ...]:
        """CAM | Finer-CAM of an image under a classifier.

        `target` is a class name, or empty / "(predicted class)" for the prediction;
        `manual_references` (class names) are used when `reference_mode` is "manual".
        `high_resolution` raises both maps to pixels with FG-CAM (Finer-FG-CAM for the second),
        stopping at the input of FG-CAM layer `fgcam_layer` (0 = the input image).
        `auto_gamma` picks γ for this image (`gamma` is then ignored).
        Returns top-5 predictions, the target and references used, the CAM title and overlay,
        the Finer-CAM title and overlay (JPEG, at least 384 px on the longest side), the γ
        strip, the γ used, the auto-γ note, the downloads ([maps.npy, composite.png]) and the
        status line.
        """
        if image is None:
            raise gr.Error("Upload an image first (or pick an example).")
        progress(0.0, desc=f"Loading {model}…")
        arguments = (image, model, method, gamma, T, reference_mode, manual_references, target,
                     weighting, opacity, high_resolution, fgcam_layer, fgcam_denoise,
                     auto_gamma)  # fmt: skip
        request = dict(zip(PARAMS, arguments, strict=True))
        values = render(request, FULL, progress)
        return tuple(values[name] for name in FULL)

    return explain_classifier


def _load_handler(
    service: ExplanationService, registry: ModelRegistry
) -> Callable[..., tuple[Any, ...]]:
    @user_errors
    def load_model(
        name: str,
        method: str | None = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - the Gradio idiom
    ) -> tuple[Any, ...]:
        """Load the chosen model (with progress); offer its class names and methods."""
        if not name:
            return (gr.skip(),) * 5 + (status_line(registry),)
        progress(0.0, desc=f"Loading {name}…")
        labels = list(registry.get(name).labels)
        notice = registry.notice(name)
        if notice:
            gr.Warning(notice)
        stops = service.fgcam_stops(name)
        return (
            gr.Dropdown(choices=[PREDICTED, *labels], value=PREDICTED),
            gr.Dropdown(choices=labels, value=[]),
            gr.Checkbox(visible=bool(stops), value=False),
            gr.Dropdown(choices=stops or [("input (full resolution)", 0)], value=0, visible=False),
            method_dropdown(method_choices(service, name, loaded=True), method),
            status_line(registry),
        )

    return load_model


def _wire(
    controls: _Controls,
    panels: Panels,
    render: Callable[..., dict[str, Any]],
    cached: Callable[[dict[str, Any]], bool],
    load: Callable[..., tuple[Any, ...]],
    loaded: list[Any],
    download: gr.Button,
) -> None:
    """Run button (the named API endpoint), live controls, the strip and the model loader.

    Each live event returns only the parts it changes; slider moves show no progress.
    """
    inputs = controls.inputs()

    def on(trigger: Any, names: Sequence[str], fast: bool = False, **options: Any) -> Any:
        params, event_inputs = panels.inputs_for(PARAMS, inputs, names)
        handler = gpu(user_errors(live_handler(render, params, names, panels, lambda r: True)))
        outputs, options = panels.outputs(names), {**LIVE, **options}
        if fast:  # slider moves: answered outside the queue when no model runs
            return cached_first(trigger, handler, cached, params, event_inputs, outputs, **options)
        return trigger(handler, event_inputs, outputs, **options)

    controls.run.click(_api_handler(render), inputs, panels.outputs(FULL),
                       api_name="explain_classifier", concurrency_id="explain")  # fmt: skip
    on(controls.image.change, STRUCTURE)
    loading = controls.model.input(
        load, [controls.model, controls.method], loaded, api_visibility="private",
        concurrency_id="explain",
    )  # fmt: skip
    on(loading.success, STRUCTURE)
    on(controls.gamma.change, EVENT_PARTS["gamma"], fast=True, show_progress="hidden")
    on(controls.opacity.change, EVENT_PARTS["opacity"], fast=True, show_progress="hidden")
    on(controls.top_t.change, REFERENCES, show_progress="hidden")
    on(controls.auto.input, EVENT_PARTS["auto"])
    on(download.click, EVENT_PARTS["download"])
    for control in (controls.reference_mode, controls.manual, controls.weighting):
        on(control.input, REFERENCES, show_progress="hidden")
    for control in (controls.method, controls.target, controls.high_res, controls.fg_layer,
                    controls.fg_denoise):  # fmt: skip
        on(control.input, STRUCTURE)
    panels.strip.select(strip_gamma, None, [controls.gamma], queue=False,
                        api_visibility="private", show_progress="hidden")  # fmt: skip
    controls.reference_mode.input(
        lambda mode: gr.Dropdown(visible=mode == "manual"),
        [controls.reference_mode],
        [controls.manual],
        queue=False,
        api_visibility="private",
    )
    controls.high_res.input(
        lambda on: (gr.Dropdown(visible=on), gr.Checkbox(visible=on)),
        [controls.high_res],
        [controls.fg_layer, controls.fg_denoise],
        queue=False,
        api_visibility="private",
    )
