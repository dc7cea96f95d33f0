"""Tab 3, "Compare methods": every method × {CAM, Finer} of the classifier tab's image and
settings, as a grid of small maps ranked by their relative confidence drop.

The grid is computed when the tab is opened (and on its button): gradient methods from the one
cached entry, the masks of every map in one batched forward (:meth:`ExplanationService.
compare_methods`); Score-CAM and FG-CAM only when asked for. Clicking a map makes its method the
classifier tab's, which then re-renders its panels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.explain.service import ExplainSettings, ExplanationService
from app.ui import wiring
from app.ui.trust import comparison_gallery, comparison_summary, curves_figure

#: A compare event: its own queue, as the faithfulness line's.
COMPARE_EVENT = {"api_visibility": "private", "concurrency_id": "faithfulness"}


@dataclass
class CompareSource:
    """What the compare tab reads from the classifier tab, and the widgets it sets there."""

    params: tuple[str, ...]
    inputs: list[Any]
    settings: Callable[[dict[str, Any]], ExplainSettings]
    method: gr.Dropdown
    high_res: gr.Checkbox
    k: gr.Slider
    events: wiring.TabWiring


def build_compare_tab(
    service: ExplanationService, source: CompareSource, tab: gr.Tab, tabs: gr.Tabs
) -> None:
    """Lay out the tab (inside ``tab``) and wire it to the classifier tab's ``source``."""
    with gr.Row():
        slower = gr.Checkbox(False, label="Include the slower methods (Score-CAM, FG-CAM)",
                             elem_id="cmp-slower")  # fmt: skip
        run = gr.Button("Compare methods", variant="primary", elem_id="cmp-run")
    summary = gr.Markdown(elem_id="cmp-summary")
    grid = gr.Gallery(label="Every method × {CAM, Finer}, highest drop first", columns=4,
                      height="auto", allow_preview=False, elem_id="cmp-grid")  # fmt: skip
    curves = gr.Button("Deletion / insertion curves", elem_id="cmp-curves")
    plot = gr.Plot(label="Deletion and insertion curves", elem_id="cmp-plot")
    shown = gr.State([])  # (method, FG-CAM) of each cell of the grid

    def comparison(values: tuple[Any, ...]) -> Any:
        *chosen, with_slower, k = values
        request = dict(zip(source.params, chosen, strict=True))
        if request.get("image") is None:
            raise gr.Error("Image: explain an image in the classifier tab first.")
        return service.compare_methods(request["model"], request["image"],
                                       source.settings(request), slower=bool(with_slower),
                                       top_fraction=k), request  # fmt: skip

    def compare(*values: Any) -> tuple[Any, ...]:
        result, request = comparison(values)
        cells = [(score.method, score.fgcam) for score in result.scores]
        settings = source.settings(request)
        gallery = comparison_gallery(result, settings.opacity, settings.colormap)
        return comparison_summary(result), gallery, cells

    def plot_curves(*values: Any) -> Any:
        result, request = comparison(values)
        return curves_figure(result, service.comparison_curves(request["model"], request["image"],
                                                               result))  # fmt: skip

    def pick(cells: list[list[Any]], selected: gr.SelectData) -> tuple[Any, ...]:
        if selected is None or not isinstance(selected.index, int) or selected.index >= len(cells):
            return gr.skip(), gr.skip(), gr.skip()
        method, fgcam = cells[selected.index]
        classifier = gr.Tabs(selected="classifier")
        return gr.Dropdown(value=method), gr.Checkbox(value=bool(fgcam)), classifier

    inputs = [*source.inputs, slower, source.k]
    outputs = [summary, grid, shown]
    for trigger in (tab.select, run.click):
        trigger(wiring.warned(compare, 3), inputs, outputs, **COMPARE_EVENT)
    curves.click(wiring.warned(plot_curves, 1), inputs, [plot], **COMPARE_EVENT)
    targets = [source.method, source.high_res, tabs]
    picked = grid.select(wiring.warned(pick, 3), [shown], targets, api_visibility="private",
                         queue=False)  # fmt: skip
    source.events.on(picked.success, source.events.structure)
