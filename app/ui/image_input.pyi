"""The image input: stock ``gr.Image`` in the browser, the raw upload on the server.

Kept in its own module because Gradio writes a ``.pyi`` stub next to any module that defines
a component class (``image_input.pyi``, generated, committed so it is not rewritten).
"""

from __future__ import annotations

import base64
from typing import Any

import gradio as gr

class ImagePath(gr.Image):
    """``gr.Image`` that hands the handler the uploaded file's path untouched.

    Stock ``gr.Image`` opens every upload with Pillow before the handler runs, so a corrupt
    file, a decompression bomb or a 0-byte upload fails inside Gradio with a generic error,
    and mode conversions (CMYK, 16-bit) happen before our loader sees the pixels. Here the
    path (or the bytes of a ``data:`` URL) goes straight to ``app.explain.inputs.load_image``,
    which validates everything and raises clear messages. The browser side is the stock one.
    """

    def get_block_name(self) -> str:
        return "image"

    def preprocess(self, payload: Any) -> str | bytes | None:  # type: ignore[override]
        if payload is None:
            return None
        url = getattr(payload, "url", None)
        if url and url.startswith("data:"):
            try:
                return base64.b64decode(url.split(",", 1)[1], validate=False)
            except (IndexError, ValueError) as error:
                raise gr.Error("The pasted image could not be decoded.") from error
        path = getattr(payload, "path", None)
        if path is None:
            raise gr.Error("No image was given.")
        if not is_http_url_like(path) and not os.path.exists(path):
            # an upload the page still shows, removed since by the disk cap or the age limit
            raise gr.Error(UPLOAD_EXPIRED, print_exception=False)
        return str(path)
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component