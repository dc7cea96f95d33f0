"""Tab 2, "CLIP concepts": widgets wired to ``ExplanationService`` with ``ConceptPrompts``.

CAM(target) | Finer-CAM(target − γ·contrast) for free-text prompts. The image trunk is cached
per image, so new prompts run only the text encoder and the tail; γ, method weighting and
opacity re-render from the cache, and each event returns only the parts it changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.explain import inputs
from app.explain.render import DEFAULT_COLORMAP
from app.explain.service import ConceptPrompts, ExplainSettings, Explanation, ExplanationService
from app.models.registry import ModelRegistry
from app.ui import panels as widgets
from app.ui import wiring
from app.ui.concept_examples import ConceptExample, concept_examples
from app.ui.landing import Landing
from app.ui.tab_glue import (
    DownloadDir,
    file_stem,
    gpu,
    image_with_examples,
    method_choices,
    method_dropdown,
    user_errors,
)
from app.ui.trust import build_trust_line, wire_trust_line

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
FULL = ("scores", *widgets.PANEL_PARTS, "status")


@dataclass
class _Controls(wiring.LiveControls):
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
) -> wiring.Tab:
    """Lay out the tab inside the current ``gr.Blocks`` and wire its events; it opens on the
    first example, explained (``landing``)."""
    shown = concept_examples(examples)
    with gr.Row():
        with gr.Column(scale=1):
            controls = _build_controls(service, registry, shown)
        with gr.Column(scale=2):
            panels = widgets.build_panels("con", CAM_LABEL, FINER_LABEL)
            trust = build_trust_line("con")
            scores = gr.Dataframe(
                headers=SCORE_HEADERS,
                label="Similarity scores",
                interactive=False,
                wrap=True,
                elem_id="con-scores",
            )
            panels.components.update(scores=scores, status=status, gamma=controls.gamma,
                                     gamma_note=controls.gamma_note)  # fmt: skip
            controls.download = widgets.build_downloads(
                panels, "con", "Download: raw maps (.npy) and composite (.png)"
            )
    explainer = _explainer(service)
    render = wiring.renderer(explainer, registry, downloads)
    events = wiring.TabWiring(panels, PARAMS, controls.inputs(), render, explainer.cached, FULL)
    wire_trust_line(trust, events, explainer, controls.gamma, _api_handler(render),
                    "concepts_faithfulness")  # fmt: skip
    events.explain(controls, _api_handler(events.render), "explain_concepts",
                   also=[controls.target.submit])  # fmt: skip
    events.common(controls, _load_handler(service, registry), [controls.method, status])
    for control in (controls.template, controls.pooling):
        events.on(control.input, events.structure)
    opening = None
    if shown:
        values = [shown[0].image, *(c.value for c in controls.inputs()[1:])]
        request = dict(zip(PARAMS, values, strict=True))
        opening = events.opens_on(landing, "concepts", request)
    return wiring.Tab(controls.model, opening, then=events.then)


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
    model, method = widgets.model_and_method(
        "con", service, registry, "concepts", "CLIP model", preferred_method=DEFAULT_METHOD
    )
    template = gr.Dropdown(
        TEMPLATE_CHOICES,
        value="{}",
        allow_custom_value=True,
        label="Prompt template ({} = the prompt)",
        elem_id="con-template",
    )
    gamma, auto, note = widgets.gamma_controls("con")
    opacity, colormap = widgets.opacity_slider("con"), widgets.colormap_dropdown("con")
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


def _explainer(service: ExplanationService) -> wiring.Explainer:
    return wiring.Explainer(
        "concepts", service, _settings,
        lambda r, e: file_stem("concepts", r["model"], r.get("method"), f"g{e.gamma:g}"),
        {"scores": score_rows}, _prompts,
    )  # fmt: skip


def _prompts(request: dict[str, Any]) -> ConceptPrompts:
    """The target concept against the contrast prompts, in the request's template (the
    contrasts checked first so a message names them)."""
    contrast = request.get("contrast_prompts") or ""
    try:
        inputs.parse_prompts(contrast)
    except inputs.InvalidInputError as error:
        raise inputs.InvalidInputError(f"Contrast prompts: {error}") from None
    return ConceptPrompts(request["target_concept"], contrast, _template(request))


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
        return wiring.api_answer(render, PARAMS, FULL, values, progress)

    return explain_concepts


def _load_handler(service: ExplanationService, registry: ModelRegistry) -> Callable[..., Any]:
    def offer(name: str, method: str | None) -> tuple[Any, ...]:
        """The CLIP model's methods."""
        return (method_dropdown(method_choices(service, name, loaded=True), method),)

    return wiring.model_loader(registry, offer, 2)
