"""Tab 2, "CLIP concepts": widgets wired to ``ExplanationService.explain_concepts``.

CAM(target) | Finer-CAM(target − γ·contrast) for free-text prompts. The image trunk is cached
per image, so new prompts run only the text encoder and the tail; γ, method weighting and
opacity re-render from the cache.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.explain.service import ExplainSettings, Explanation, ExplanationService
from app.models.registry import ModelRegistry
from app.ui.common import (
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
    with_image,
)
from app.ui.panels import (
    Panels,
    build_downloads,
    build_panels,
    gamma_slider,
    model_and_method,
    opacity_slider,
    panel_values,
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
    pooling: gr.Radio
    run: gr.Button

    def inputs(self) -> list[Any]:
        return [self.image, self.model, self.target, self.contrast, self.template, self.gamma,
                self.method, self.opacity, self.pooling]  # fmt: skip


POOLING_CHOICES = [("class token (what CLIP computes)", "token"),
                   ("average-pooled surrogate (Finer-CAM tutorial)", "avg")]  # fmt: skip
DEFAULT_POOLING = "token"


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
            panels.files = build_downloads("con", "Download: raw maps (.npy) and composite (.png)")
    outputs = [scores, *panels.outputs(), panels.files, status]
    explain = _explain_handler(service, registry, downloads)
    _wire(controls, panels, outputs, explain, _load_handler(service, registry), status)
    return controls.model


def _build_controls(
    service: ExplanationService, registry: ModelRegistry, examples: list[str]
) -> _Controls:
    image = image_with_examples("con", examples)
    model, method = model_and_method("con", service, registry, "concepts", "CLIP model")
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
    gamma = gamma_slider("con")
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
    return _Controls(image, model, target, contrast, template, gamma, method, opacity, pooling,
                     run)  # fmt: skip


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


def _explain_handler(
    service: ExplanationService, registry: ModelRegistry, downloads: DownloadDir
) -> Callable[..., tuple[Any, ...]]:
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
        pooling: str = DEFAULT_POOLING,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - the Gradio idiom
    ) -> tuple[Any, ...]:
        """CAM(target) | Finer-CAM(target − γ·contrast) for free-text prompts on a CLIP model.

        `contrast_prompts`: one per line or comma separated. `template` wraps every prompt
        ("{}" = as typed). `pooling`: "token" explains CLIP's class token, "avg" the
        average-pooled surrogate. Returns the similarity scores, the CAM title and overlay, the
        Finer-CAM title and overlay (PNG, the input's size), the downloads
        ([maps.npy, composite.png]) and the status line.
        """
        if image is None:
            raise gr.Error("Upload an image first (or pick an example).")
        progress(0.0, desc=f"Loading {model}…")
        registry.get(model)
        settings = ExplainSettings(method=method, gamma=gamma, opacity=opacity, pooling=pooling)
        progress(0.1, desc="Explaining…")
        explanation = service.explain_concepts(
            model,
            image,
            target_concept,
            contrast_prompts,
            settings,
            template=template or "{}",
            progress=progress_fn(progress),
        )
        log.info("concepts %s/%s gamma=%s cached=%s", model, method, gamma, explanation.cached)
        show_notices(explanation)  # a model's fallback notice is shown once, on model load
        stem = file_stem("concepts", model, method, f"g{explanation.gamma:g}")
        return (
            score_rows(explanation),
            *panel_values(explanation),
            downloads.save(explanation, stem),
            status_line(registry),
        )

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
    outputs: list[Any],
    explain: Callable[..., tuple[Any, ...]],
    load: Callable[..., tuple[Any, ...]],
    status: gr.Markdown,
) -> None:
    """Run button and Enter (the named API endpoint), live controls and the model loader."""
    inputs = controls.inputs()

    @functools.wraps(explain)
    def live(*args: Any, **kwargs: Any) -> tuple[Any, ...]:
        # Re-render only once there is an image and a target concept to explain.
        if args[0] is None or not str(args[2] or "").strip():
            return tuple(gr.skip() for _ in outputs)
        return explain(*args, **kwargs)

    image_changed = with_image(live, lambda: (None, *panels.cleared(), None, gr.skip()))
    controls.run.click(
        explain, inputs, outputs, api_name="explain_concepts", concurrency_id="explain"
    )
    controls.target.submit(
        explain, inputs, outputs, api_visibility="private", concurrency_id="explain"
    )
    controls.image.change(image_changed, inputs, outputs, **LIVE)
    controls.model.input(
        load, [controls.model, controls.method], [controls.method, status],
        api_visibility="private", concurrency_id="explain",
    ).success(live, inputs, outputs, **LIVE)  # fmt: skip
    for slider in (controls.gamma, controls.opacity):
        slider.change(live, inputs, outputs, show_progress="minimal", **LIVE)
    for control in (controls.method, controls.template, controls.pooling):
        control.input(live, inputs, outputs, **LIVE)
