"""Panels of live events travel inline (a JPEG data: URL, no file); API results stay files."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from app.ui.image_output import Inline, PanelImage
from app.ui.panels import _inline


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
