"""Widgets both tabs share: the CAM | Finer-CAM panels with their titles, the downloads and the
γ / opacity sliders, plus the values they show for an explanation.

Only layout and widget values live here; the tabs wire events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.explain.service import Explanation, ExplanationService
from app.models.registry import ModelRegistry
from app.ui.common import default_model, method_choices, model_choices, panel_titles


@dataclass
class Panels:
    """The titled CAM and Finer-CAM panels of one tab and its download list."""

    cam_title: gr.Markdown
    cam_image: gr.Image
    finer_title: gr.Markdown
    finer_image: gr.Image
    files: gr.File | None = None
    cam_label: str = "CAM"
    finer_label: str = "Finer-CAM"

    def outputs(self) -> list[Any]:
        """The four panel outputs, in the order :func:`panel_values` returns them."""
        return [self.cam_title, self.cam_image, self.finer_title, self.finer_image]

    def cleared(self) -> tuple[Any, ...]:
        """Panel values for "no image": default titles, empty images."""
        return (f"**{self.cam_label}**", None, f"**{self.finer_label}**", None)


def build_panels(prefix: str, cam_label: str = "CAM", finer_label: str = "Finer-CAM") -> Panels:
    """Titles in their own row (keeps the panels aligned), then the two images side by side."""
    with gr.Row(equal_height=True):
        cam_title = gr.Markdown(f"**{cam_label}**", label="CAM title", elem_id=f"{prefix}-cam-title")
        finer_title = gr.Markdown(
            f"**{finer_label}**", label="Finer-CAM title", elem_id=f"{prefix}-finer-title"
        )
    with gr.Row(equal_height=True):
        cam_image = _panel_image(cam_label, f"{prefix}-cam")
        finer_image = _panel_image(finer_label, f"{prefix}-finer")
    return Panels(cam_title, cam_image, finer_title, finer_image, None, cam_label, finer_label)


def _panel_image(label: str, elem_id: str) -> gr.Image:
    return gr.Image(
        label=label,
        type="numpy",
        format="png",
        interactive=False,
        elem_id=elem_id,
        elem_classes=["finercam-panel"],
    )


def build_downloads(prefix: str, label: str) -> gr.File:
    """The download list (raw maps .npy and the composite .png)."""
    return gr.File(label=label, file_count="multiple", interactive=False, elem_id=f"{prefix}-files")


def model_and_method(
    prefix: str, service: ExplanationService, registry: ModelRegistry, task: str, label: str
) -> tuple[gr.Dropdown, gr.Dropdown]:
    """The model dropdown (default model selected) and the CAM-method dropdown it offers."""
    selected = default_model(registry, task)
    model = gr.Dropdown(
        model_choices(registry, task), value=selected, label=label, elem_id=f"{prefix}-model",
        allow_custom_value=True,  # Hub ids (API, Hub loader)
    )
    method = gr.Dropdown(
        method_choices(service, selected),
        value="gradcam",
        label="CAM method",
        elem_id=f"{prefix}-method",
    )
    return model, method


def gamma_slider(prefix: str, info: str | None = None) -> gr.Slider:
    """γ, the contrast strength, in [0, 1] (0.6 by default, the paper's value)."""
    return gr.Slider(
        0,
        1,
        value=0.6,
        step=0.05,
        label="γ (contrast strength)",
        elem_id=f"{prefix}-gamma",
        info=info,
    )


def opacity_slider(prefix: str) -> gr.Slider:
    """Heat-map opacity of both overlays."""
    return gr.Slider(0, 1, value=0.5, step=0.05, label="Overlay opacity", elem_id=f"{prefix}-opacity")


def panel_values(explanation: Explanation) -> tuple[Any, ...]:
    """CAM title, CAM overlay, Finer-CAM title, Finer-CAM overlay (for :meth:`Panels.outputs`)."""
    cam_title, finer_title = panel_titles(explanation)
    return (
        f"**{cam_title}**",
        explanation.cam_overlay,
        f"**{finer_title}**",
        explanation.finer_overlay,
    )
