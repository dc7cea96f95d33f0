"""What the page shows of faithfulness: the sentence and bars under the panels (and their
wiring), the API's JSON, the compare grid's captions and the deletion / insertion plot. The
service computes; this module only turns its results into widget values.

The line is re-scored after the panels are sent: chained (``.success``) to every event that
changes the maps, except γ moves, which re-score when the slider is released (``.release``),
on a queue of their own (``faithfulness``, one at a time) so a score never holds up a panel.
"""

from __future__ import annotations

import html
import inspect
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import gradio as gr
import numpy as np

from app.explain.faithfulness import (
    DEFAULT_TOP_FRACTION,
    Faithfulness,
    MapScore,
    MethodComparison,
)
from app.explain.metrics import PerturbationCurve
from app.explain.render import overlay_maps
from app.ui.tab_glue import gpu, user_errors
from app.ui.wiring import NO_IMAGE, Explainer, TabWiring, warned

#: Options of every scoring event: private, its own queue, one score at a time, latest wins.
SCORE_EVENT = {
    "api_visibility": "private",
    "concurrency_id": "faithfulness",
    "concurrency_limit": 1,
    "show_progress": "hidden",
    "trigger_mode": "always_last",
}


@dataclass
class TrustLine:
    """The faithfulness line under a tab's panels, its k, and the hidden twin of the named
    endpoint's button with its JSON answer."""

    html: gr.HTML
    k: gr.Slider
    api_run: gr.Button
    answer: gr.JSON


def build_trust_line(prefix: str) -> TrustLine:
    """Lay out the line (inside the current Blocks)."""
    line = gr.HTML(PENDING_HTML, elem_id=f"{prefix}-trust")
    k = gr.Slider(
        0, 1, value=DEFAULT_TOP_FRACTION, step=0.01, elem_id=f"{prefix}-trust-k",
        label="Faithfulness: share k of each map's top pixels removed",
    )  # fmt: skip
    api_run = gr.Button("Faithfulness (API)", visible=False)
    return TrustLine(line, k, api_run, gr.JSON(visible=False))


def wire_trust_line(
    line: TrustLine,
    events: TabWiring,
    explainer: Explainer,
    gamma: gr.Slider,
    api_like: Callable[..., Any],
    api_name: str,
) -> None:
    """Score after every map-changing event of ``events`` (call before wiring them), when the
    γ slider or k is released, and on the named endpoint ``api_name``, whose parameters are
    ``api_like``'s (the tab's explain endpoint) and ``k``."""
    inputs = [*events.inputs, line.k]

    def rescore(*values: Any) -> Any:
        # the γ shown is on the slider (auto-γ's pick included)
        request = dict(zip(events.params, values[:-1], strict=True), auto_gamma=False)
        if request.get("image") is None:
            return PENDING_HTML
        return faithfulness_html(score(explainer, request, values[-1]))

    handler = gpu(warned(rescore, 1))

    def chain(event: Any) -> Any:
        return event.success(handler, inputs, [line.html], **SCORE_EVENT)

    events.then = chain
    events.warm = lambda request: score(explainer, {**request, "auto_gamma": False}, line.k.value)
    for release in (gamma.release, line.k.release):
        release(handler, inputs, [line.html], **SCORE_EVENT)

    def answer(*values: Any) -> dict[str, Any]:
        request = dict(zip(events.params, values[:-1], strict=True))
        if request.get("image") is None:
            raise gr.Error(NO_IMAGE)
        return faithfulness_payload(score(explainer, request, values[-1]))

    endpoint = gpu(user_errors(answer))
    endpoint.__signature__ = _with_k(api_like)  # type: ignore[attr-defined]
    endpoint.__doc__ = ENDPOINT_DOC
    line.api_run.click(endpoint, inputs, [line.answer], api_name=api_name,
                       concurrency_id="faithfulness", concurrency_limit=1)  # fmt: skip


def score(explainer: Explainer, request: dict[str, Any], k: float) -> Faithfulness:
    """The faithfulness of the two maps ``request`` shows (at auto-γ's pick when it asks)."""
    settings = explainer.settings(request)
    if request.get("auto_gamma"):
        choice = explainer.strip(request, settings, True).auto
        settings = settings if choice is None else replace(settings, gamma=choice.gamma)
    return explainer.faithfulness(request, settings, k)


ENDPOINT_DOC = """How faithful the CAM and the Finer-CAM maps of the same request are.

Takes the parameters of the tab's explain endpoint and `k`, the share of each map's top pixels
removed (0.05: the paper's 5 %). Returns JSON: for `cam` and `finer`, `relative_drop` (how much
removing the map's top pixels lowers the target's share against its references; 1 = gone,
< 0 = rose) and `probability_drop` (the same for the target's probability), `empty`; the
`target`, the `references`, `top_fraction`, `pixels_masked` and the `sentence` the page shows.
"""


def _with_k(api_like: Callable[..., Any]) -> inspect.Signature:
    """``api_like``'s signature without its progress, with ``k`` last."""
    signature = inspect.signature(api_like)
    kept = [p for name, p in signature.parameters.items() if name != "progress"]
    k = inspect.Parameter("k", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                          default=DEFAULT_TOP_FRACTION, annotation=float)  # fmt: skip
    return signature.replace(parameters=[*kept, k], return_annotation=dict)


#: Shown under the panels before the first score arrives.
PENDING_HTML = "<div class='finercam-trust'>Faithfulness: scored once the panels are shown.</div>"


def faithfulness_html(result: Faithfulness) -> str:
    """The sentence, then one bar per map: its relative confidence drop (0 to 100 %)."""
    bars = "".join(_bar(score) for score in (result.finer, result.cam))
    sentence = html.escape(result.sentence())
    return f"<div class='finercam-trust'><p class='trust-sentence'>{sentence}</p>{bars}</div>"


def faithfulness_payload(result: Faithfulness) -> dict[str, Any]:
    """The API's answer: every number of the line, and the sentence."""
    return {**asdict(result), "sentence": result.sentence()}


def comparison_gallery(
    comparison: MethodComparison, opacity: float, colormap: str
) -> list[tuple[Any, str]]:
    """``(overlay, caption)`` per map, highest drop first: ``1. Finer Layer-CAM: 31 %``."""
    overlays = overlay_maps(comparison.image, comparison.maps, opacity, colormap, comparison.device)
    return [
        (picture, f"{rank}. {score.label}: {_percent(score)}")
        for rank, (score, picture) in enumerate(zip(comparison.scores, overlays, strict=True), 1)
    ]


def comparison_summary(comparison: MethodComparison) -> str:
    """One line over the grid: what was removed, against what, and what is left to compute."""
    count = len(comparison.references)
    text = (
        f"Each map's top {comparison.top_fraction * 100:g} % removed; the number is how much "
        f"that lowers {comparison.target}'s share against its {count} look-alike"
        f"{'s' * (count != 1)}. Highest first; click a map to use its method in the classifier "
        "tab. The number says how much a map's top pixels matter to the contrast; on test birds "
        "whose telling part is known it was not a reliable way to pick the best method for an "
        "image (a fixed method did better)."
    )
    if comparison.on_request:
        text += f" Slower, on request: {', '.join(comparison.on_request)}."
    return text


def curves_figure(
    comparison: MethodComparison, curves: tuple[PerturbationCurve, PerturbationCurve]
) -> Any:
    """Deletion and insertion curves of every map, side by side (a matplotlib figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for axis, curve in zip(axes, curves, strict=True):
        fractions = curve.fractions.cpu().numpy()
        for score, values, auc in zip(
            comparison.scores,
            curve.probabilities.cpu().numpy(),
            curve.auc.cpu().numpy(),
            strict=True,
        ):
            axis.plot(fractions, values, label=f"{score.label} ({auc:.3f})")
        better = "lower" if curve.mode == "deletion" else "higher"
        axis.set_title(f"{curve.mode} (AUC, {better} is better)")
        axis.set_xlabel("fraction of pixels")
        axis.set_ylabel(f"p({comparison.target})")
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    plt.close(figure)
    return figure


def _bar(score: MapScore) -> str:
    width = float(np.clip(score.relative_drop, 0.0, 1.0)) * 100
    colour = "#c0392b" if score.relative_drop < 0 else "#2e86c1"
    return (
        f"<div class='trust-bar' title='{html.escape(score.label)}'>"
        f"<span class='trust-label'>{html.escape(score.label)}</span>"
        f"<span class='trust-track'><span class='trust-fill' "
        f"style='width:{width:.1f}%;background:{colour}'></span></span>"
        f"<span class='trust-value'>{_percent(score)}</span></div>"
    )


def _percent(score: MapScore) -> str:
    value = f"{score.relative_drop * 100:.0f} %"
    return f"{value} (empty map)" if score.empty else value


#: Styles of the line (added to the page's CSS).
TRUST_CSS = """
.finercam-trust .trust-sentence { margin: 0.2em 0 0.4em; }
.finercam-trust .trust-bar { display: flex; align-items: center; gap: 0.6em; margin: 0.15em 0; }
.finercam-trust .trust-label { width: 7em; font-size: 0.9em; }
.finercam-trust .trust-track { flex: 1; height: 0.7em; background: #e5e8eb; border-radius: 3px;
                               overflow: hidden; }
.finercam-trust .trust-fill { display: block; height: 100%; }
.finercam-trust .trust-value { width: 7em; font-size: 0.9em; text-align: right; }
"""
