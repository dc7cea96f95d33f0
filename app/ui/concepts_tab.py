"""Tab 2, "CLIP concepts": widgets wired to ``ExplanationService.explain_concepts``.

CAM(target) | Finer-CAM(target − γ·contrast) for free-text prompts. The image trunk is cached
per image, so new prompts run only the text encoder and the tail; γ, method weighting and
opacity re-render from the cache, and each event returns only the parts it changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.explain.service import ExplainSettings, Explanation, ExplanationService
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
    DownloadDir,
    file_stem,
    gpu,
    image_with_examples,
    method_choices,
    method_dropdown,
    progress_fn,
    show_notices,
    status_line,
    user_errors,
)

log = logging.getLogger(__name__)

DEFAULT_CONTRAST = "a photo of a bird"
TEMPLATE_CHOICES = [
    ("None (prompts as typed)", "{}"),
    ("a photo of a {}.", "a photo of a {}."),
    ("a photo of a bird with {}.", "a photo of a bird with {}."),
]
CAM_LABEL = "CAM(target)"
FINER_LABEL = "Finer-CAM(target − γ·contrast)"
SCORE_HEADERS = ["role", "prompt", "similarity (logit)", "probability"]
#: The named endpoint's parameters, in the order of the tab's inputs.
PARAMS = ("image", "model", "target_concept", "contrast_prompts", "template", "gamma", "method",
          "opacity", "auto_gamma", "pooling")  # fmt: skip
POOLING_CHOICES = [("class token (what CLIP computes)", "token"),
                   ("average-pooled surrogate (Finer-CAM tutorial)", "avg")]  # fmt: skip
DEFAULT_POOLING = "token"
#: The tab's method for concepts (also the API's when a client leaves it out): the best at
#: finding the named part on the tiny CLIP (README, ``python -m bench.concepts``).
DEFAULT_METHOD = "attention-gradient"
#: Everything the Explain button (and the API) returns.
FULL = ("scores", *PANEL_PARTS, "status")
#: A new image, model, method or template: everything but the downloads.
STRUCTURE = tuple("no_files" if part == "files" else part for part in FULL)


@dataclass
class _Controls:
    """The tab's input widgets; :meth:`inputs` is the handler's argument order."""

    image: Any
    model: gr.Dropdown
    target: gr.Textbox
    contrast: gr.Textbox
    template: gr.Dropdown
    gamma: gr.Slider
    method: gr.Dropdown
    opacity: gr.Slider
    auto: gr.Checkbox
    gamma_note: Any
    pooling: gr.Radio
    run: gr.Button

    def inputs(self) -> list[Any]:
        """In :data:`PARAMS` order."""
        return [self.image, self.model, self.target, self.contrast, self.template, self.gamma,
                self.method, self.opacity, self.auto, self.pooling]  # fmt: skip


def build_concepts_tab(
    service: ExplanationService,
    registry: ModelRegistry,
    downloads: DownloadDir,
    status: gr.Markdown,
    examples: list[str],
) -> gr.Dropdown:
    """Lay out the tab inside the current ``gr.Blocks`` and wire its events; returns the model
    dropdown (the Hub loader selects loaded models in it)."""
    with gr.Row():
        with gr.Column(scale=1):
            controls = _build_controls(service, registry, examples)
        with gr.Column(scale=2):
            panels = build_panels("con", CAM_LABEL, FINER_LABEL)
            scores = gr.Dataframe(
                headers=SCORE_HEADERS,
                label="Similarity scores",
                interactive=False,
                wrap=True,
                elem_id="con-scores",
            )
            download = build_downloads(
                panels, "con", "Download: raw maps (.npy) and composite (.png)"
            )
    panels.components.update(
        scores=scores, status=status, gamma=controls.gamma, gamma_note=controls.gamma_note
    )
    render = _renderer(service, registry, downloads)
    _wire(controls, panels, render, _answers_from_cache(service),
          _load_handler(service, registry), status, download)  # fmt: skip
    return controls.model


def _build_controls(
    service: ExplanationService, registry: ModelRegistry, examples: list[str]
) -> _Controls:
    image = image_with_examples("con", examples)
    model, method = model_and_method(
        "con", service, registry, "concepts", "CLIP model", preferred_method=DEFAULT_METHOD
    )
    target = gr.Textbox(
        label="Target concept",
        placeholder="e.g. a bird with a red crown",
        max_lines=1,
        elem_id="con-target",
    )
    contrast = gr.Textbox(
        value=DEFAULT_CONTRAST,
        lines=3,
        label="Contrast prompts (one per line, or comma separated)",
        elem_id="con-contrast",
    )
    template = gr.Dropdown(
        TEMPLATE_CHOICES,
        value="{}",
        allow_custom_value=True,
        label="Prompt template ({} = the prompt)",
        elem_id="con-template",
    )
    gamma, auto, note = gamma_controls("con")
    opacity = opacity_slider("con")
    pooling = gr.Radio(
        POOLING_CHOICES,
        value=DEFAULT_POOLING,
        label="What is explained",
        info="CLIP's class token, or the average of its patch tokens (the surrogate the "
        "official Finer-CAM CLIP tutorial explains)",
        elem_id="con-pooling",
    )
    run = gr.Button("Explain", variant="primary", elem_id="con-run")
    return _Controls(image, model, target, contrast, template, gamma, method, opacity, auto,
                     note, pooling, run)  # fmt: skip


def score_rows(explanation: Explanation) -> list[list[Any]]:
    """The target prompt and every contrast prompt with its similarity and probability."""
    rows = [
        [
            "target",
            explanation.target.name,
            round(explanation.target.logit, 4),
            round(explanation.target.probability, 4),
        ]
    ]
    rows += [
        [f"contrast {i}", ref.name, round(ref.logit, 4), round(ref.probability, 4)]
        for i, ref in enumerate(explanation.references, 1)
    ]
    return rows


def _renderer(
    service: ExplanationService, registry: ModelRegistry, downloads: DownloadDir
) -> Callable[..., dict[str, Any]]:
    """``render(request, names, progress=None)``: the values of the parts ``names``."""

    def render(
        request: dict[str, Any], names: Sequence[str], progress: Any = None
    ) -> dict[str, Any]:
        model, image = request["model"], request["image"]
        registry.get(model)
        prompts, template, settings = _prompts(request), _template(request), _settings(request)
        explanation, values = render_parts(
            names,
            settings,
            bool(request.get("auto_gamma")),
            lambda s, auto: service.concepts_gamma_strip(
                model, image, *prompts, s, template, auto=auto
            ),
            lambda s: service.explain_concepts(
                model, image, *prompts, s, template=template, progress=progress_fn(progress)
            ),
            downloads,
            lambda e: file_stem("concepts", model, settings.method, f"g{e.gamma:g}"),
        )
        log.info("concepts %s γ=%s cached=%s parts=%s", model, explanation.gamma,
                 explanation.cached, ",".join(names))  # fmt: skip
        show_notices(explanation)  # a model's fallback notice is shown once, on model load
        if "scores" in names:
            values["scores"] = score_rows(explanation)
        if "status" in names:
            values["status"] = status_line(registry)
        return values

    return render


def _prompts(request: dict[str, Any]) -> tuple[str, str]:
    return request["target_concept"], request.get("contrast_prompts") or ""


def _template(request: dict[str, Any]) -> str:
    return request.get("template") or "{}"


def _settings(request: dict[str, Any]) -> ExplainSettings:
    return ExplainSettings(
        method=request.get("method") or "gradcam",
        gamma=request["gamma"],
        opacity=request.get("opacity", 0.5),
        pooling=request.get("pooling") or DEFAULT_POOLING,
    )


def _ready(request: dict[str, Any]) -> bool:
    """Live events wait for a target concept."""
    return bool(str(request.get("target_concept") or "").strip())


def _answers_from_cache(service: ExplanationService) -> Callable[[dict[str, Any]], bool]:
    """Whether a live request runs no model (nothing to do without a concept)."""

    def cached(request: dict[str, Any]) -> bool:
        return not _ready(request) or service.concepts_cached(
            request["model"], request["image"], *_prompts(request), _settings(request),
            _template(request),
        )  # fmt: skip

    return cached


def _api_handler(render: Callable[..., dict[str, Any]]) -> Callable[..., tuple[Any, ...]]:
    @gpu
    @user_errors
    def explain_concepts(
        image: str | bytes | None,
        model: str,
        target_concept: str,
        contrast_prompts: str = DEFAULT_CONTRAST,
        template: str = "{}",
        gamma: float = 0.6,
        method: str = "gradcam",
        opacity: float = 0.5,
        auto_gamma: bool = False,
        pooling: str = DEFAULT_POOLING,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - the Gradio idiom
    ) -> tuple[Any, ...]:
        """CAM(target) | Finer-CAM(target − γ·contrast) for free-text prompts on a CLIP model.

        `contrast_prompts`: one per line or comma separated. `template` wraps every prompt
        ("{}" = as typed). `auto_gamma` picks γ for this image (`gamma` is then ignored).
        `pooling`: "token" explains CLIP's class token, "avg" the average-pooled surrogate.
        Returns the similarity scores, the CAM title and overlay, the Finer-CAM title and
        overlay (JPEG, at least 384 px on the longest side), the γ strip, the γ used, the
        auto-γ note, the downloads ([maps.npy, composite.png]) and the status line.
        """
        if image is None:
            raise gr.Error("Upload an image first (or pick an example).")
        progress(0.0, desc=f"Loading {model}…")
        request = dict(zip(PARAMS, (image, model, target_concept, contrast_prompts, template,
                                    gamma, method, opacity, auto_gamma, pooling),
                           strict=True))  # fmt: skip
        values = render(request, FULL, progress)
        return tuple(values[name] for name in FULL)

    return explain_concepts


def _load_handler(
    service: ExplanationService, registry: ModelRegistry
) -> Callable[..., tuple[Any, ...]]:
    @user_errors
    def load_model(
        name: str,
        method: str | None = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - the Gradio idiom
    ) -> tuple[Any, ...]:
        """Load the chosen CLIP model (with progress) and offer its methods."""
        if not name:
            return gr.skip(), status_line(registry)
        progress(0.0, desc=f"Loading {name}…")
        registry.get(name)
        notice = registry.notice(name)
        if notice:
            gr.Warning(notice)
        choices = method_choices(service, name, loaded=True)
        return method_dropdown(choices, method), status_line(registry)

    return load_model


def _wire(
    controls: _Controls,
    panels: Panels,
    render: Callable[..., dict[str, Any]],
    cached: Callable[[dict[str, Any]], bool],
    load: Callable[..., tuple[Any, ...]],
    status: gr.Markdown,
    download: gr.Button,
) -> None:
    """Run button and Enter (the named API endpoint), live controls, the strip, the loader.

    Live events wait for an image and a target concept, and return only what they change.
    """
    inputs = controls.inputs()

    def on(trigger: Any, names: Sequence[str], fast: bool = False, **options: Any) -> Any:
        params, event_inputs = panels.inputs_for(PARAMS, inputs, names)
        handler = gpu(user_errors(live_handler(render, params, names, panels, _ready)))
        outputs, options = panels.outputs(names), {**LIVE, **options}
        if fast:  # slider moves: answered outside the queue when no model runs
            return cached_first(trigger, handler, cached, params, event_inputs, outputs, **options)
        return trigger(handler, event_inputs, outputs, **options)

    api = _api_handler(render)
    controls.run.click(api, inputs, panels.outputs(FULL), api_name="explain_concepts",
                       concurrency_id="explain")  # fmt: skip
    controls.target.submit(api, inputs, panels.outputs(FULL), api_visibility="private",
                           concurrency_id="explain")  # fmt: skip
    on(controls.image.change, STRUCTURE)
    loading = controls.model.input(
        load, [controls.model, controls.method], [controls.method, status],
        api_visibility="private", concurrency_id="explain",
    )  # fmt: skip
    on(loading.success, STRUCTURE)
    on(controls.gamma.change, EVENT_PARTS["gamma"], fast=True, show_progress="hidden")
    on(controls.opacity.change, EVENT_PARTS["opacity"], fast=True, show_progress="hidden")
    on(controls.auto.input, EVENT_PARTS["auto"])
    on(download.click, EVENT_PARTS["download"])
    for control in (controls.method, controls.template, controls.pooling):
        on(control.input, STRUCTURE)
    panels.strip.select(strip_gamma, None, [controls.gamma], queue=False,
                        api_visibility="private", show_progress="hidden")  # fmt: skip
