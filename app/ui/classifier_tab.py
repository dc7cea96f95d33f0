"""Tab 1, "Fine-grained classifier": widgets wired to ``ExplanationService.explain``.

Every control renders through one ``render(request, parts)`` and its event returns only the
parts it changes (a γ move: the Finer panel, its title and the strip's selection). The service
caches per (model, image), so γ, T, the references, the weighting, the target and the opacity
re-render from cached gradients; only a new image, model or method runs the network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.explain import inputs
from app.explain.render import DEFAULT_COLORMAP
from app.explain.service import ExplainSettings, ExplanationService
from app.models.registry import ModelRegistry
from app.ui import panels as widgets
from app.ui import wiring
from app.ui.compare_tab import CompareSource
from app.ui.landing import Landing
from app.ui.tab_glue import (
    SCORE_HEADERS,
    DownloadDir,
    file_stem,
    gpu,
    image_with_examples,
    method_choices,
    method_dropdown,
    score_rows,
    top_scores,
    user_errors,
)
from app.ui.trust import build_trust_line, wire_trust_line

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
          "auto_gamma", "colormap")  # fmt: skip
#: Everything the Explain button (and the API) returns.
FULL = ("top5", "used", *widgets.PANEL_PARTS, "status")
#: T, the reference rule or the weighting: the references, the Finer panel and the strip.
REFERENCES = ("used", "finer_title", "finer", "strip", "gamma", "gamma_note")


@dataclass
class _Controls(wiring.LiveControls):
    """The tab's input widgets; :meth:`inputs` is the handler's argument order."""

    top_t: gr.Slider
    reference_mode: gr.Radio
    manual: gr.Dropdown
    target: gr.Dropdown
    weighting: gr.Radio
    high_res: gr.Checkbox
    fg_layer: gr.Dropdown
    fg_denoise: gr.Checkbox

    def inputs(self) -> list[Any]:
        """In :data:`PARAMS` order."""
        return [
            self.image, self.model, self.method, self.gamma, self.top_t, self.reference_mode,
            self.manual, self.target, self.weighting, self.opacity, self.high_res,
            self.fg_layer, self.fg_denoise, self.auto, self.colormap,
        ]  # fmt: skip


def build_classifier_tab(
    service: ExplanationService,
    registry: ModelRegistry,
    downloads: DownloadDir,
    status: gr.Markdown,
    examples: list[str],
    landing: Landing,
) -> wiring.Tab:
    """Lay out the tab inside the current ``gr.Blocks`` and wire its events; it opens on the
    first example, explained (``landing``)."""
    with gr.Row():
        with gr.Column(scale=1):
            controls = _build_controls(service, registry, examples)
        with gr.Column(scale=2):
            panels = widgets.build_panels("clf")
            trust = build_trust_line("clf")
            used, top5 = _build_scores()
            panels.components.update(top5=top5, used=used, status=status, gamma=controls.gamma,
                                     gamma_note=controls.gamma_note)  # fmt: skip
            controls.download = widgets.build_downloads(
                panels, "clf", "Download: raw maps (.npy, [CAM, Finer-CAM]) and composite (.png)"
            )

    explainer = _explainer(service)
    render = wiring.renderer(explainer, registry, downloads)
    events = wiring.TabWiring(panels, PARAMS, controls.inputs(), render, explainer.cached, FULL)
    wire_trust_line(trust, events, explainer, controls.gamma, _api_handler(render), "faithfulness")
    load = _load_handler(service, registry)
    loaded = [controls.target, controls.manual, controls.high_res, controls.fg_layer,
              controls.method, status]  # fmt: skip
    _wire(controls, events, load, loaded)
    opening = examples and events.opens_on(
        landing, "classifier", dict(zip(PARAMS, _values(controls, examples[0]), strict=True))
    )
    on_load = (load, [controls.model, controls.method], loaded)
    compare = CompareSource(PARAMS, controls.inputs(), _settings, controls.method,
                            controls.high_res, trust.k, events)  # fmt: skip
    return wiring.Tab(controls.model, opening or None, on_load, events.then, compare)


def _values(controls: _Controls, image: str) -> list[Any]:
    """The controls' initial values with ``image``, in :data:`PARAMS` order."""
    return [image, *(control.value for control in controls.inputs()[1:])]


def _build_controls(
    service: ExplanationService, registry: ModelRegistry, examples: list[str]
) -> _Controls:
    image = image_with_examples("clf", [[path] for path in examples],
                                value=examples[0] if examples else None)  # fmt: skip
    model, method = widgets.model_and_method("clf", service, registry, "classifier", "Model")
    gamma, auto, note = widgets.gamma_controls(
        "clf", "0 = plain CAM; higher subtracts more of the look-alike classes"
    )
    top_t, reference_mode, manual, target, weighting = _reference_controls()
    opacity, colormap = widgets.opacity_slider("clf"), widgets.colormap_dropdown("clf")
    high_res, fg_layer, fg_denoise = _fgcam_controls()
    run = gr.Button("Explain", variant="primary", elem_id="clf-run")
    api_run = gr.Button("Explain (API)", visible=False)
    return _Controls(image, model, method, gamma, opacity, auto, colormap, run, api_run, None,
                     note, top_t, reference_mode, manual, target, weighting, high_res, fg_layer,
                     fg_denoise)  # fmt: skip


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


def _explainer(service: ExplanationService) -> wiring.Explainer:
    return wiring.Explainer(
        "classifier",
        service,
        _settings,
        lambda r, e: file_stem(r["model"], r.get("method"), e.target.name, f"g{e.gamma:g}"),
        {"top5": top_scores, "used": score_rows},
    )


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
        colormap=request.get("colormap") or DEFAULT_COLORMAP,
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
        colormap: str = DEFAULT_COLORMAP,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - the Gradio idiom
    ) -> tuple[Any, ...]:
        """CAM | Finer-CAM of an image under a classifier.

        `target` is a class name, or empty / "(predicted class)" for the prediction;
        `manual_references` (class names) are used when `reference_mode` is "manual".
        `high_resolution` raises both maps to pixels with FG-CAM (Finer-FG-CAM for the second),
        stopping at the input of FG-CAM layer `fgcam_layer` (0 = the input image).
        `auto_gamma` picks γ for this image (`gamma` is then ignored). `colormap`: jet (the
        paper's), viridis, inferno or turbo.
        Returns top-5 predictions, the target and references used, the CAM title and overlay,
        the Finer-CAM title and overlay (JPEG, at least 384 px on the longest side), the γ
        strip, the γ used, the auto-γ note, the downloads ([maps.npy, composite.png]) and the
        status line.
        """
        values = (image, model, method, gamma, T, reference_mode, manual_references, target,
                  weighting, opacity, high_resolution, fgcam_layer, fgcam_denoise, auto_gamma,
                  colormap)  # fmt: skip
        return wiring.api_answer(render, PARAMS, FULL, values, progress)

    return explain_classifier


def _load_handler(service: ExplanationService, registry: ModelRegistry) -> Callable[..., Any]:
    def offer(name: str, method: str | None) -> tuple[Any, ...]:
        """The model's class names, FG-CAM layers (where it has them) and methods."""
        labels = list(registry.get(name).labels)
        stops = service.fgcam_stops(name)
        return (
            gr.Dropdown(choices=[PREDICTED, *labels], value=PREDICTED),
            gr.Dropdown(choices=labels, value=[]),
            gr.Checkbox(visible=bool(stops), value=False),
            gr.Dropdown(choices=stops or [("input (full resolution)", 0)], value=0, visible=False),
            method_dropdown(method_choices(service, name, loaded=True), method),
        )

    return wiring.model_loader(registry, offer, 6)


def _wire(
    controls: _Controls, events: wiring.TabWiring, load: Callable[..., Any], loaded: list[Any]
) -> None:
    """The shared events (:class:`~app.ui.wiring.TabWiring`), then T, the references, the
    target and FG-CAM."""
    events.explain(controls, _api_handler(events.render), "explain_classifier")
    events.common(controls, load, loaded)
    events.on(controls.top_t.change, REFERENCES, show_progress="hidden")
    for control in (controls.reference_mode, controls.manual, controls.weighting):
        events.on(control.input, REFERENCES, show_progress="hidden")
    for control in (controls.target, controls.high_res, controls.fg_layer, controls.fg_denoise):
        events.on(control.input, events.structure)
    events.stale(controls.top_t.input, controls.reference_mode.input, controls.manual.input,
                 controls.weighting.input)  # fmt: skip
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
