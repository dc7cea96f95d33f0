"""Panels of live events travel inline (a JPEG data: URL, no file); API results stay files;
a γ move re-sends the strip's mark only when it moves."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from app.ui.image_output import Inline, PanelImage, StripGallery
from app.ui.panels import EVENT_PARTS, _inline, build_panels, live_handler


def _panel() -> PanelImage:
    with gr.Blocks():
        return PanelImage(format="jpeg", interactive=False)


def test_inline_value_is_a_jpeg_data_url_of_the_picture():
    pixels = np.zeros((384, 512, 3), np.uint8)
    pixels[:, 256:] = (200, 30, 30)
    data = _panel().postprocess(Inline(pixels, "finer.jpeg"))
    assert data.path is None and data.url.startswith("data:image/jpeg;base64,")
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(data.url.split(",", 1)[1]))))
    assert decoded.shape == pixels.shape
    assert np.abs(decoded.astype(int) - pixels).mean() < 3  # JPEG at quality 90


def test_numpy_value_is_still_a_file_for_api_clients():
    data = _panel().postprocess(np.full((64, 64, 3), 128, np.uint8))
    assert data.url is None and Path(data.path).is_file() and data.path.endswith(".jpeg")


def test_live_handlers_inline_only_the_panel_pictures():
    picture = np.zeros((8, 8, 3), np.uint8)
    assert isinstance(_inline("finer", picture), Inline)
    assert _inline("finer", None) is None
    assert _inline("finer_title", "**Finer-CAM**") == "**Finer-CAM**"


def test_an_update_or_a_skip_for_a_panel_is_never_wrapped_as_a_picture():
    for value in (gr.skip(), gr.update(visible=True), gr.Image(value=None)):
        assert _inline("cam", value) is value


def _gamma_move(marked: float, gamma: float, image: object = "bird") -> dict[str, object]:
    """What the γ event returns for a move from ``marked`` to ``gamma`` (render stubbed)."""
    with gr.Blocks():
        panels = build_panels("t")
    names = EVENT_PARTS["gamma"]

    def render(request: dict, parts: tuple) -> dict:
        return {
            "finer_title": "**Finer**",
            "finer": np.zeros((4, 4, 3), np.uint8),
            "strip_mark": gr.Gallery(selected_index=None),
            "marked": request["gamma"],
        }

    params, _ = panels.inputs_for(("image", "gamma"), ["image", "gamma"], names)
    handler = live_handler(render, params, names, panels)
    return dict(zip(names, handler(image, gamma, marked), strict=True))


def test_gamma_move_between_strip_values_leaves_the_strip_alone():
    values = _gamma_move(marked=0.35, gamma=0.45)
    assert values["strip_mark"] == gr.skip() and values["marked"] == 0.45
    assert isinstance(values["finer"], Inline)


def test_gamma_move_onto_or_off_a_strip_value_moves_the_mark():
    assert isinstance(_gamma_move(marked=0.35, gamma=0.4)["strip_mark"], gr.Gallery)
    assert isinstance(_gamma_move(marked=0.4, gamma=0.45)["strip_mark"], gr.Gallery)
    assert isinstance(_gamma_move(marked=0.4, gamma=0.6)["strip_mark"], gr.Gallery)


def test_gamma_move_with_an_unknown_mark_sends_it():
    # A new session (or one Gradio dropped) does not know what the browser shows marked.
    assert isinstance(_gamma_move(marked=None, gamma=0.45)["strip_mark"], gr.Gallery)


def test_gamma_move_without_an_image_clears_and_remembers_the_slider():
    values = _gamma_move(marked=0.6, gamma=0.8, image=None)
    assert values["strip_mark"] is None and values["marked"] == 0.8


def test_only_events_that_move_the_mark_take_the_marked_state():
    with gr.Blocks():
        panels = build_panels("t")
    params, inputs = panels.inputs_for(("image",), ["i"], EVENT_PARTS["opacity"])
    assert params == ("image",) and inputs == ["i"]
    params, inputs = panels.inputs_for(("image",), ["i"], EVENT_PARTS["gamma"])
    assert params == ("image", "marked") and inputs == ["i", panels.marked]


def test_strip_gallery_schema_is_computed_once_and_is_the_stock_one():
    with gr.Blocks():
        first, second = StripGallery(), StripGallery()
        stock = gr.Gallery()
    assert first.get_block_name() == "gallery"
    assert first.api_info() is second.api_info()  # Gradio builds a new instance per update
    assert first.api_info() == stock.api_info()
