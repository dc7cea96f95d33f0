"""From raw CAM grids to what people see: ReLU, resize, normalise, colour overlay.

Scaling follows pytorch-grad-cam exactly (``scale_cam_image`` per layer, then again after the
layer aggregation), so our maps are comparable number for number with the anchor's.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pytorch_grad_cam.utils.image import scale_cam_image, show_cam_on_image


def finish_maps(raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Raw ``(N, h, w)`` maps -> ReLU'd, resized to ``size`` = (width, height), min-max scaled.

    Same two-step convention as pytorch-grad-cam's ``compute_cam_per_layer`` followed by
    ``aggregate_multi_layers`` for one target layer.
    """
    per_layer = scale_cam_image(np.maximum(raw, 0), size)
    return scale_cam_image(np.maximum(per_layer, 0))


def resize_map(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a ``[0, 1]`` map ``(h, w)`` to ``size`` = (width, height) bilinearly."""
    if cam.shape[::-1] == tuple(size):
        return cam
    return np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize(size, Image.BILINEAR))


def overlay(image: np.ndarray, cam: np.ndarray, opacity: float) -> np.ndarray:
    """Jet-coloured ``cam`` over the RGB uint8 ``image`` at heat-map ``opacity`` in [0, 1]."""
    base = image.astype(np.float32) / 255.0
    clipped = np.clip(cam, 0.0, 1.0)
    return show_cam_on_image(base, clipped, use_rgb=True, image_weight=1.0 - float(opacity))


def side_by_side(panels: list[tuple[str, np.ndarray]], gap: int = 8) -> Image.Image:
    """One PNG with each titled panel next to the other, for download and reports."""
    font = ImageFont.load_default()
    title_height = 22
    height = max(panel.shape[0] for _, panel in panels) + title_height
    width = sum(panel.shape[1] for _, panel in panels) + gap * (len(panels) - 1)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    left = 0
    for title, panel in panels:
        draw.text((left + 4, 4), title, fill="black", font=font)
        canvas.paste(Image.fromarray(panel), (left, title_height))
        left += panel.shape[1] + gap
    return canvas
