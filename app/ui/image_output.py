"""The CAM panels' image component: live updates travel inside the event's message.

Kept in its own module because Gradio writes a ``.pyi`` stub next to any module that defines
a component class (as for ``image_input.py``).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np
from gradio.data_classes import ImageData
from PIL import Image

#: JPEG quality of inline panels (a 384-px overlay: ~15 KB, ~0.5 ms to encode).
INLINE_QUALITY = 90


@dataclass(frozen=True)
class Inline:
    """An RGB picture to send inline (a ``data:`` URL) instead of as a file in Gradio's cache."""

    pixels: np.ndarray
    name: str = "panel.jpeg"

    def data_url(self) -> str:
        buffer = io.BytesIO()
        Image.fromarray(self.pixels).save(buffer, format="JPEG", quality=INLINE_QUALITY)
        return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class PanelImage(gr.Image):
    """``gr.Image`` that also takes :class:`Inline` values.

    A returned numpy picture is written to Gradio's cache and fetched by the browser in a second
    request (what API clients need: a file). A slider move instead returns :class:`Inline`: the
    JPEG rides in the event's own message as a ``data:`` URL, so no file is written (no disk
    churn) and no second round trip delays the new panel. The browser side is the stock one.
    """

    def get_block_name(self) -> str:
        return "image"

    def postprocess(self, value: Any) -> ImageData | None:  # type: ignore[override]
        if isinstance(value, Inline):
            return ImageData(url=value.data_url(), orig_name=value.name, mime_type="image/jpeg")
        return super().postprocess(value)
