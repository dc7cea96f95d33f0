"""Tab 1, "Fine-grained classifier": widgets wired to ``ExplanationService.explain``.

Every control re-runs the same handler. The service caches per (model, image), so moving γ, T,
the reference mode, the weighting, the target or the opacity re-renders from cached gradients;
only a new image, model or method runs the network.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.explain.methods import METHODS
from app.explain.service import ExplainSettings, ExplanationService
from app.models.registry import ModelRegistry, model_specs
from app.ui.common import (
    image_with_examples,
    SCORE_HEADERS,
    DownloadDir,
    file_stem,
    gpu,
    panel_titles,
    progress_fn,
    score_rows,
    show_notices,
    status_line,
    top_scores,
    user_errors,
    with_image,
)

log = logging.getLogger(__name__)

PREDICTED = "(predicted class)"
REFERENCE_MODE_CHOICES = [
    ("Closest logits", "logits"),
    ("Classifier-weight similarity", "weights"),
    ("Manual (pick classes)", "manual"),
]
WEIGHTING_CHOICES = [("Uniform (paper)", "uniform"), ("Softmax probability", "probability")]
METHOD_CHOICES = [(method.label, method.name) for method in METHODS.values()]


@dataclass
class ClassifierTab:
    """The tab's components, for ``app.build_app`` (page-load wiring) and tests."""

    #: ``(fn, inputs, outputs)`` to run on page load: loads the default model, fills class lists.
    on_load: tuple[Any, list[Any], list[Any]]


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


def build_classifier_tab(
    service: ExplanationService,
    registry: ModelRegistry,
    downloads: DownloadDir,
    status: gr.Markdown,
    examples: list[str],
) -> ClassifierTab:
    """Lay out the tab inside the current ``gr.Blocks`` and wire its events."""
    models = model_choices(registry, "classifier")
    selected = default_model(registry, "classifier")

    with gr.Row():
        with gr.Column(scale=1):
            image = image_with_examples("clf", examples)
            model = gr.Dropdown(models, value=selected, label="Model", elem_id="clf-model",
                                allow_custom_value=True)  # Hub ids (API, Hub loader)
            method = gr.Dropdown(
                METHOD_CHOICES, value="gradcam", label="CAM method", elem_id="clf-method"
            )
            gamma = gr.Slider(
                0,
                1,
                value=0.6,
                step=0.05,
                label="γ (contrast strength)",
                elem_id="clf-gamma",
                info="0 = plain CAM; higher subtracts more of the look-alike classes",
            )
            top_t = gr.Slider(
                1, 5, value=3, step=1, label="T (number of reference classes)", elem_id="clf-t"
            )
            reference_mode = gr.Radio(
                REFERENCE_MODE_CHOICES,
                value="logits",
                label="Reference classes",
                elem_id="clf-refmode",
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
                WEIGHTING_CHOICES,
                value="uniform",
                label="Reference weighting",
                elem_id="clf-weighting",
            )
            opacity = gr.Slider(
                0, 1, value=0.5, step=0.05, label="Overlay opacity", elem_id="clf-opacity"
            )
            high_res = gr.Checkbox(
                False,
                label="High resolution (FG-CAM)",
                info="Carry both maps down to pixels (plain CNNs and ResNets only)",
                visible=False,  # shown on model load for models FG-CAM supports
                elem_id="clf-fgcam",
            )
            fg_layer = gr.Dropdown(
                [("input (full resolution)", 0)],
                value=0,
                label="FG-CAM output layer",
                visible=False,
                elem_id="clf-fgcam-layer",
            )
            fg_denoise = gr.Checkbox(
                False, label="FG-CAM SVD denoising", visible=False, elem_id="clf-fgcam-denoise"
            )
            run = gr.Button("Explain", variant="primary", elem_id="clf-run")
        with gr.Column(scale=2):
            with gr.Row(equal_height=True):  # titles in their own row keep the panels aligned
                cam_title = gr.Markdown("**CAM**", label="CAM title", elem_id="clf-cam-title")
                finer_title = gr.Markdown(
                    "**Finer-CAM**", label="Finer-CAM title", elem_id="clf-finer-title"
                )
            with gr.Row(equal_height=True):
                cam_image = gr.Image(
                    label="CAM",
                    type="numpy",
                    format="png",
                    interactive=False,
                    elem_id="clf-cam",
                    elem_classes=["finercam-panel"],
                )
                finer_image = gr.Image(
                    label="Finer-CAM",
                    type="numpy",
                    format="png",
                    interactive=False,
                    elem_id="clf-finer",
                    elem_classes=["finercam-panel"],
                )
            used = gr.Dataframe(
                headers=SCORE_HEADERS,
                label="Target and references used",
                interactive=False,
                wrap=True,
                elem_id="clf-used",
                column_widths=["18%", "40%", "14%", "14%", "14%"],
            )
            top5 = gr.Label(num_top_classes=5, label="Top-5 predictions", elem_id="clf-top5")
            files = gr.File(
                label="Download: raw maps (.npy, [CAM, Finer-CAM]) and composite (.png)",
                file_count="multiple",
                interactive=False,
                elem_id="clf-files",
            )

    cleared = (None, None, "**CAM**", None, "**Finer-CAM**", None, None, gr.skip())
    controls = [
        image,
        model,
        method,
        gamma,
        top_t,
        reference_mode,
        manual,
        target,
        weighting,
        opacity,
        high_res,
        fg_layer,
        fg_denoise,
    ]
    outputs = [top5, used, cam_title, cam_image, finer_title, finer_image, files, status]

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
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - the Gradio idiom
    ) -> tuple[Any, ...]:
        """CAM | Finer-CAM of an image under a classifier.

        `target` is a class name, or empty / "(predicted class)" for the prediction;
        `manual_references` (class names) are used when `reference_mode` is "manual".
        `high_resolution` raises both maps to pixels with FG-CAM (Finer-FG-CAM for the second),
        stopping at the input of FG-CAM layer `fgcam_layer` (0 = the input image).
        Returns top-5 predictions, the target and references used, the CAM title and overlay,
        the Finer-CAM title and overlay (PNG, the input's size), the downloads
        ([maps.npy, composite.png]) and the status line.
        """
        if image is None:
            raise gr.Error("Upload an image first (or pick an example).")
        progress(0.0, desc=f"Loading {model}…")
        registry.get(model)
        settings = ExplainSettings(
            method=method,
            gamma=gamma,
            top_t=T,
            reference_mode=reference_mode,
            weighting=weighting,
            target=None if target in (None, "", PREDICTED) else target,
            manual_references=tuple(manual_references or ()),
            opacity=opacity,
            fgcam=bool(high_resolution),
            fgcam_stop=int(fgcam_layer or 0),
            fgcam_denoise=bool(fgcam_denoise),
        )
        progress(0.1, desc="Explaining…")
        explanation = service.explain(model, image, settings, progress=progress_fn(progress))
        log.info("classifier %s/%s gamma=%s cached=%s", model, method, gamma, explanation.cached)
        show_notices(explanation)  # a model's fallback notice is shown once, on model load
        cam_title, finer_title = panel_titles(explanation)
        stem = file_stem(model, method, explanation.target.name, f"g{explanation.gamma:g}")
        return (
            top_scores(explanation),
            score_rows(explanation),
            f"**{cam_title}**",
            explanation.cam_overlay,
            f"**{finer_title}**",
            explanation.finer_overlay,
            downloads.save(explanation, stem),
            status_line(registry),
        )

    # A control moved: re-render when there is an image (a cache hit unless the image, model
    # or method changed). A cleared image clears the outputs.
    live = with_image(explain_classifier, lambda: tuple(gr.skip() for _ in outputs))
    image_changed = with_image(explain_classifier, lambda: cleared)

    @user_errors
    def load_model(
        name: str,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - the Gradio idiom
    ) -> tuple[Any, ...]:
        """Load the chosen model (with progress) and offer its class names."""
        if not name:
            return (gr.skip(),) * 4 + (status_line(registry),)
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
            status_line(registry),
        )

    common = {"concurrency_id": "explain", "trigger_mode": "always_last"}
    run.click(
        explain_classifier,
        controls,
        outputs,
        api_name="explain_classifier",
        concurrency_id="explain",
    )
    image.change(image_changed, controls, outputs, api_visibility="private", **common)
    loaded = [target, manual, high_res, fg_layer, status]
    model.input(
        load_model,
        [model],
        loaded,
        api_visibility="private",
        concurrency_id="explain",
    ).success(live, controls, outputs, api_visibility="private", **common)
    reference_mode.input(
        lambda mode: gr.Dropdown(visible=mode == "manual"),
        [reference_mode],
        [manual],
        queue=False,
        api_visibility="private",
    )
    for slider in (gamma, top_t, opacity):
        slider.change(
            live, controls, outputs, api_visibility="private", show_progress="minimal", **common
        )
    high_res.input(
        lambda on: (gr.Dropdown(visible=on), gr.Checkbox(visible=on)),
        [high_res],
        [fg_layer, fg_denoise],
        queue=False,
        api_visibility="private",
    )
    for control in (method, reference_mode, manual, target, weighting, high_res, fg_layer,
                    fg_denoise):
        control.input(live, controls, outputs, api_visibility="private", **common)

    return ClassifierTab(on_load=(load_model, [model], loaded))
