"""Tab 2, "CLIP concepts": widgets wired to ``ExplanationService.explain_concepts``.

CAM(target) | Finer-CAM(target − γ·contrast) for free-text prompts. The image trunk is cached
per image, so new prompts run only the text encoder and the tail; γ, method weighting and
opacity re-render from the cache.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import gradio as gr

from app.explain.service import ExplainSettings, ExplanationService
from app.models.registry import ModelRegistry
from app.ui.classifier_tab import METHOD_CHOICES, default_model, model_choices
from app.ui.common import (
    image_with_examples,
    DownloadDir,
    file_stem,
    gpu,
    panel_titles,
    progress_fn,
    show_notices,
    status_line,
    user_errors,
    with_image,
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


def build_concepts_tab(
    service: ExplanationService,
    registry: ModelRegistry,
    downloads: DownloadDir,
    status: gr.Markdown,
    examples: list[str],
) -> gr.Dropdown:
    """Lay out the tab inside the current ``gr.Blocks`` and wire its events; returns the model
    dropdown (the Hub loader selects loaded models in it)."""
    models = model_choices(registry, "concepts")
    selected = default_model(registry, "concepts")

    with gr.Row():
        with gr.Column(scale=1):
            image = image_with_examples("con", examples)
            model = gr.Dropdown(models, value=selected, label="CLIP model", elem_id="con-model",
                                allow_custom_value=True)  # Hub ids (API, Hub loader)
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
            gamma = gr.Slider(
                0, 1, value=0.6, step=0.05, label="γ (contrast strength)", elem_id="con-gamma"
            )
            method = gr.Dropdown(
                METHOD_CHOICES, value="gradcam", label="CAM method", elem_id="con-method"
            )
            opacity = gr.Slider(
                0, 1, value=0.5, step=0.05, label="Overlay opacity", elem_id="con-opacity"
            )
            run = gr.Button("Explain", variant="primary", elem_id="con-run")
        with gr.Column(scale=2):
            with gr.Row(equal_height=True):  # titles in their own row keep the panels aligned
                cam_title = gr.Markdown(
                    f"**{CAM_LABEL}**", label="CAM title", elem_id="con-cam-title"
                )
                finer_title = gr.Markdown(
                    f"**{FINER_LABEL}**", label="Finer-CAM title", elem_id="con-finer-title"
                )
            with gr.Row(equal_height=True):
                cam_image = gr.Image(
                    label=CAM_LABEL,
                    type="numpy",
                    format="png",
                    interactive=False,
                    elem_id="con-cam",
                    elem_classes=["finercam-panel"],
                )
                finer_image = gr.Image(
                    label=FINER_LABEL,
                    type="numpy",
                    format="png",
                    interactive=False,
                    elem_id="con-finer",
                    elem_classes=["finercam-panel"],
                )
            scores = gr.Dataframe(
                headers=SCORE_HEADERS,
                label="Similarity scores",
                interactive=False,
                wrap=True,
                elem_id="con-scores",
            )
            files = gr.File(
                label="Download: raw maps (.npy) and composite (.png)",
                file_count="multiple",
                interactive=False,
                elem_id="con-files",
            )

    controls = [image, model, target, contrast, template, gamma, method, opacity]
    outputs = [scores, cam_title, cam_image, finer_title, finer_image, files, status]

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
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - the Gradio idiom
    ) -> tuple[Any, ...]:
        """CAM(target) | Finer-CAM(target − γ·contrast) for free-text prompts on a CLIP model.

        `contrast_prompts`: one per line or comma separated. `template` wraps every prompt
        ("{}" = as typed). Returns the similarity scores, the CAM title and overlay, the
        Finer-CAM title and overlay (PNG, the input's size), the downloads
        ([maps.npy, composite.png]) and the status line.
        """
        if image is None:
            raise gr.Error("Upload an image first (or pick an example).")
        progress(0.0, desc=f"Loading {model}…")
        registry.get(model)
        settings = ExplainSettings(method=method, gamma=gamma, opacity=opacity)
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
        cam_title, finer_title = panel_titles(explanation)
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
        stem = file_stem("concepts", model, method, f"g{explanation.gamma:g}")
        return (
            rows,
            f"**{cam_title}**",
            explanation.cam_overlay,
            f"**{finer_title}**",
            explanation.finer_overlay,
            downloads.save(explanation, stem),
            status_line(registry),
        )

    def skip() -> tuple[Any, ...]:
        return tuple(gr.skip() for _ in outputs)

    cleared = (None, f"**{CAM_LABEL}**", None, f"**{FINER_LABEL}**", None, None, gr.skip())

    @functools.wraps(explain_concepts)
    def live(*args: Any, **kwargs: Any) -> tuple[Any, ...]:
        # Re-render only once there is an image and a target concept to explain.
        if args[0] is None or not str(args[2] or "").strip():
            return skip()
        return explain_concepts(*args, **kwargs)

    image_changed = with_image(live, lambda: cleared)

    @user_errors
    def load_model(
        name: str,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - the Gradio idiom
    ) -> Any:
        if not name:
            return status_line(registry)
        progress(0.0, desc=f"Loading {name}…")
        registry.get(name)
        notice = registry.notice(name)
        if notice:
            gr.Warning(notice)
        return status_line(registry)

    common = {"concurrency_id": "explain", "trigger_mode": "always_last"}
    run.click(
        explain_concepts, controls, outputs, api_name="explain_concepts", concurrency_id="explain"
    )
    target.submit(
        explain_concepts, controls, outputs, api_visibility="private", concurrency_id="explain"
    )
    image.change(image_changed, controls, outputs, api_visibility="private", **common)
    model.input(
        load_model, [model], [status], api_visibility="private", concurrency_id="explain"
    ).success(live, controls, outputs, api_visibility="private", **common)
    for slider in (gamma, opacity):
        slider.change(
            live, controls, outputs, api_visibility="private", show_progress="minimal", **common
        )
    for control in (method, template):
        control.input(live, controls, outputs, api_visibility="private", **common)
    return model
