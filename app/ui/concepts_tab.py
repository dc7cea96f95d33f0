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
from app.explain import inputs
from app.explain.render import DEFAULT_COLORMAP
from app.ui.common import (
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
from app.ui.concept_examples import ConceptExample, concept_examples
from app.ui.landing import Landing
from app.ui.panels import (
    PANEL_PARTS,
    build_downloads,
    build_panels,
    colormap_dropdown,
    gamma_controls,
    model_and_method,
    opacity_slider,
    render_parts,
)
from app.ui.wiring import (
    LiveControls,
    Tab,
    TabWiring,
    api_answer,
    load_chosen_model,
    warned,
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
          "opacity", "auto_gamma", "pooling", "colormap")  # fmt: skip
POOLING_CHOICES = [("class token (what CLIP computes)", "token"),
                   ("average-pooled surrogate (Finer-CAM tutorial)", "avg")]  # fmt: skip
DEFAULT_POOLING = "token"
#: The tab's method for concepts (also the API's when a client leaves it out): the best at
#: finding the named part on the tiny CLIP (README, ``python -m bench.concepts``).
DEFAULT_METHOD = "attention-gradient"
#: Everything the Explain button (and the API) returns.
FULL = ("scores", *PANEL_PARTS, "status")


@dataclass
class _Controls(LiveControls):
    """The tab's input widgets; :meth:`inputs` is the handler's argument order."""

    target: gr.Textbox
    contrast: gr.Textbox
    template: gr.Dropdown
    pooling: gr.Radio

    def inputs(self) -> list[Any]:
        """In :data:`PARAMS` order."""
        return [self.image, self.model, self.target, self.contrast, self.template, self.gamma,
                self.method, self.opacity, self.auto, self.pooling, self.colormap]  # fmt: skip


def build_concepts_tab(
    service: ExplanationService,
    registry: ModelRegistry,
    downloads: DownloadDir,
    status: gr.Markdown,
    examples: list[str],
    landing: Landing,
) -> Tab:
    """Lay out the tab inside the current ``gr.Blocks`` and wire its events; it opens on the
    first example, explained (``landing``)."""
    shown = concept_examples(examples)
    with gr.Row():
        with gr.Column(scale=1):
            controls = _build_controls(service, registry, shown)
        with gr.Column(scale=2):
            panels = build_panels("con", CAM_LABEL, FINER_LABEL)
            scores = gr.Dataframe(
                headers=SCORE_HEADERS,
                label="Similarity scores",
                interactive=False,
                wrap=True,
                elem_id="con-scores",
            )
            panels.components.update(scores=scores, status=status, gamma=controls.gamma,
                                     gamma_note=controls.gamma_note)  # fmt: skip
            controls.download = build_downloads(
                panels, "con", "Download: raw maps (.npy) and composite (.png)"
            )
    wiring = TabWiring(panels, PARAMS, controls.inputs(), _renderer(service, registry, downloads),
                       _answers_from_cache(service), FULL)  # fmt: skip
    wiring.explain(controls, _api_handler(wiring.render), "explain_concepts",
                   also=[controls.target.submit])  # fmt: skip
    wiring.common(controls, _load_handler(service, registry), [controls.method, status])
    for control in (controls.template, controls.pooling):
        wiring.on(control.input, wiring.structure)
    opening = None
    if shown:
        request = dict(zip(PARAMS, [shown[0].image, *(c.value for c in controls.inputs()[1:])]))
        opening = wiring.opens_on(landing, "concepts", request)
    return Tab(controls.model, opening)


def _build_controls(
    service: ExplanationService, registry: ModelRegistry, examples: list[ConceptExample]
) -> _Controls:
    first = examples[0] if examples else ConceptExample("", "", DEFAULT_CONTRAST)
    target = gr.Textbox(
        value=first.target,
        label="Target concept",
        placeholder="e.g. a bird with a red crown",
        max_lines=1,
        elem_id="con-target",
        render=False,
    )
    contrast = gr.Textbox(
        value=first.contrast,
        lines=3,
        label="Contrast prompts (one per line, or comma separated)",
        elem_id="con-contrast",
        render=False,
    )
    image = image_with_examples("con", [example.row() for example in examples],
                                [target, contrast], first.image or None)  # fmt: skip
    target.render()
    contrast.render()
    model, method = model_and_method(
        "con", service, registry, "concepts", "CLIP model", preferred_method=DEFAULT_METHOD
    )
    template = gr.Dropdown(
        TEMPLATE_CHOICES,
        value="{}",
        allow_custom_value=True,
        label="Prompt template ({} = the prompt)",
        elem_id="con-template",
    )
    gamma, auto, note = gamma_controls("con")
    opacity, colormap = opacity_slider("con"), colormap_dropdown("con")
    pooling = gr.Radio(
        POOLING_CHOICES,
        value=DEFAULT_POOLING,
        label="What is explained",
        info="CLIP's class token, or the average of its patch tokens (the surrogate the "
        "official Finer-CAM CLIP tutorial explains)",
        elem_id="con-pooling",
    )
    run = gr.Button("Explain", variant="primary", elem_id="con-run")
    api_run = gr.Button("Explain (API)", visible=False)
    return _Controls(image, model, method, gamma, opacity, auto, colormap, run, api_run, None,
                     note, target, contrast, template, pooling)  # fmt: skip


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
    """The target concept and the contrast prompts (checked here so a message names them)."""
    contrast = request.get("contrast_prompts") or ""
    try:
        inputs.parse_prompts(contrast)
    except inputs.InvalidInputError as error:
        raise inputs.InvalidInputError(f"Contrast prompts: {error}") from None
    return request["target_concept"], contrast


def _template(request: dict[str, Any]) -> str:
    return request.get("template") or "{}"


def _settings(request: dict[str, Any]) -> ExplainSettings:
    return ExplainSettings(
        method=request.get("method") or "gradcam",
        gamma=request["gamma"],
        opacity=request.get("opacity", 0.5),
        pooling=request.get("pooling") or DEFAULT_POOLING,
        colormap=request.get("colormap") or DEFAULT_COLORMAP,
    )


def _answers_from_cache(service: ExplanationService) -> Callable[[dict[str, Any]], bool]:
    """Whether a live request runs no model."""

    def cached(request: dict[str, Any]) -> bool:
        return service.concepts_cached(
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
        colormap: str = DEFAULT_COLORMAP,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - the Gradio idiom
    ) -> tuple[Any, ...]:
        """CAM(target) | Finer-CAM(target − γ·contrast) for free-text prompts on a CLIP model.

        `contrast_prompts`: one per line or comma separated. `template` wraps every prompt
        ("{}" = as typed). `auto_gamma` picks γ for this image (`gamma` is then ignored).
        `pooling`: "token" explains CLIP's class token, "avg" the average-pooled surrogate.
        `colormap`: jet (the paper's), viridis, inferno or turbo.
        Returns the similarity scores, the CAM title and overlay, the Finer-CAM title and
        overlay (JPEG, at least 384 px on the longest side), the γ strip, the γ used, the
        auto-γ note, the downloads ([maps.npy, composite.png]) and the status line.
        """
        values = (image, model, target_concept, contrast_prompts, template, gamma, method,
                  opacity, auto_gamma, pooling, colormap)  # fmt: skip
        return api_answer(render, PARAMS, FULL, values, progress)

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
        skipped = load_chosen_model(registry, name, progress, 1)
        if skipped is not None:
            return skipped
        choices = method_choices(service, name, loaded=True)
        return method_dropdown(choices, method), status_line(registry)

    return warned(load_model, 2)
