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
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component
class StripGallery(gr.Gallery):
    """``gr.Gallery`` whose API schema is computed once per process, not on every update.

    Gradio answers every update of a component — a new selection, even ``gr.skip()`` — by
    building a new instance and its session config, which includes the API schema that pydantic
    regenerates each time (Gradio caches it per instance): ~8 ms of every γ move for a schema
    that never changes. The browser side is the stock one.
    """

    _shared_api_info: ClassVar[dict[str, Any] | None] = None

    def get_block_name(self) -> str:
        return "gallery"

    def api_info(self) -> dict[str, Any]:
        cls = type(self)
        if cls._shared_api_info is None:
            cls._shared_api_info = super().api_info()
        return cls._shared_api_info
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component

    