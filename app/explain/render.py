"""From raw CAM grids to what people see: ReLU, resize, normalise, colour overlay.

Scaling follows pytorch-grad-cam exactly (``scale_cam_image`` per layer, then again after the
layer aggregation), so our maps are comparable number for number with the anchor's.

Given the model's ``device``, :func:`finish_maps` and :func:`overlay_maps` run as tensor
operations there when :func:`~app.models.preprocess.tensor_path` says so (CUDA), each with one
copy back for all its maps; on the CPU numpy/OpenCV do the work (the tensor path is no faster
there: docs/benchmarks.md, (g)).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from pytorch_grad_cam.utils.image import scale_cam_image, show_cam_on_image

from app.explain.inputs import InvalidInputError
from app.models.preprocess import tensor_path

log = logging.getLogger(__name__)


def finish_maps(
    raw: np.ndarray, size: tuple[int, int], device: torch.device | str | None = None
) -> np.ndarray:
    """Raw ``(N, h, w)`` maps -> ReLU'd, resized to ``size`` = (width, height), min-max scaled.

    Same two-step convention as pytorch-grad-cam's ``compute_cam_per_layer`` followed by
    ``aggregate_multi_layers`` for one target layer.
    """
    if device is not None and tensor_path(device):
        grids = torch.from_numpy(np.require(raw, np.float32, ["C", "W"])).to(device)
        return _finish_on_device(grids, size).cpu().numpy()
    per_layer = scale_cam_image(np.maximum(raw, 0), size)
    return scale_cam_image(np.maximum(per_layer, 0))


def _finish_on_device(raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """:func:`finish_maps` in torch: OpenCV's bilinear resize is ``interpolate``'s with
    half-pixel centres (``align_corners=False``)."""
    per_layer = _min_max(raw.clamp(min=0))
    if per_layer.shape[1:] != (size[1], size[0]):
        per_layer = F.interpolate(
            per_layer[:, None], size=(size[1], size[0]), mode="bilinear", align_corners=False
        )[:, 0]
    return _min_max(per_layer.clamp(min=0))


def _min_max(maps: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's per-map scaling ``(m - min) / (1e-7 + max)``, in place on the
    contiguous ``maps`` (each a fresh ReLU here): no full-size temporaries."""
    flat = maps.view(maps.shape[0], -1)
    flat.sub_(flat.amin(dim=1, keepdim=True))
    flat.div_(1e-7 + flat.amax(dim=1, keepdim=True))
    return maps


def resize_map(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a ``[0, 1]`` map ``(h, w)`` to ``size`` = (width, height) bilinearly."""
    if cam.shape[::-1] == tuple(size):
        return cam
    return np.asarray(
        Image.fromarray(cam.astype(np.float32), mode="F").resize(size, Image.BILINEAR)
    )


#: Colour maps offered for the heat maps (OpenCV's tables): jet is the paper's; the others are
#: perceptually uniform (turbo: a smoother jet).
COLORMAPS = {
    "jet": cv2.COLORMAP_JET,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "inferno": cv2.COLORMAP_INFERNO,
    "turbo": cv2.COLORMAP_TURBO,
}
DEFAULT_COLORMAP = "jet"


def validate_colormap(name: str | None) -> str:
    """``name`` when it is one of :data:`COLORMAPS` (``None``/empty: jet); else an
    :class:`InvalidInputError` naming the field and the choices."""
    chosen = str(name or DEFAULT_COLORMAP).strip().lower()
    if chosen not in COLORMAPS:
        raise InvalidInputError(
            f"Colour map must be one of {', '.join(COLORMAPS)}; got {str(name)[:40]!r}."
        )
    return chosen


def overlay(
    image: np.ndarray,
    cam: np.ndarray,
    opacity: float,
    colormap: str = DEFAULT_COLORMAP,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """``cam`` coloured with ``colormap`` over the RGB uint8 ``image`` at heat-map ``opacity``
    in [0, 1] (pytorch-grad-cam's blending)."""
    return overlay_maps(image, cam[None], opacity, colormap, device)[0]


def overlay_maps(
    image: np.ndarray,
    cams: np.ndarray,
    opacity: float,
    colormap: str = DEFAULT_COLORMAP,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """:func:`overlay` of each of the ``(N, H, W)`` maps ``cams``: ``(N, H, W, 3)`` uint8. On
    the tensor path all of them on ``device`` with one copy back."""
    name = validate_colormap(colormap)
    if device is not None and tensor_path(device):
        return _overlays_on_device(image, cams, float(opacity), name, torch.device(device))
    base = image.astype(np.float32) / 255.0
    return np.stack(
        [
            show_cam_on_image(
                base,
                np.clip(cam, 0.0, 1.0),
                use_rgb=True,
                colormap=COLORMAPS[name],
                image_weight=1.0 - float(opacity),
            )
            for cam in cams
        ]
    )


def _overlays_on_device(
    image: np.ndarray, cams: np.ndarray, opacity: float, colormap: str, device: torch.device
) -> np.ndarray:
    """``show_cam_on_image`` on ``device`` with its float32 operations: the colour table looked
    up there (the heat weight applied to its 256 entries first, which gives the same values),
    the image's share added, each blend scaled by its own maximum, truncated to uint8; every
    map copied back at once.

    One map at a time: a gather over all of them at once is 3–4× slower per map on the CPU
    (a working set of N full-size float images) and saves nothing but a few kernel launches.
    """
    # np.require copies only arrays torch cannot wrap (read-only, strided, another dtype).
    pixels = torch.from_numpy(np.require(image, np.uint8, ["C", "W"])).to(device)
    masks = torch.from_numpy(np.require(cams, np.float32, ["C", "W"])).to(device)
    image_weight = 1.0 - opacity  # the same float arithmetic as show_cam_on_image
    heat = (1 - image_weight) * (_colour_table(colormap, device).float() / 255)
    base = image_weight * (pixels.float() / 255.0)
    pictures = torch.empty((*masks.shape, 3), dtype=torch.uint8, device=device)
    for picture, mask in zip(pictures, masks, strict=True):
        index = (255 * mask.clamp(0.0, 1.0)).to(torch.int32)  # np.uint8's truncation
        blend = heat.index_select(0, index.flatten()).view(*index.shape, 3).add_(base)
        picture.copy_(blend.div_(blend.max()).mul_(255))
    return pictures.cpu().numpy()


@functools.lru_cache(maxsize=16)
def _colour_table(colormap: str, device: torch.device) -> torch.Tensor:
    """OpenCV's 256-entry table of ``colormap`` as RGB uint8 ``(256, 3)`` on ``device``."""
    ramp = np.arange(256, dtype=np.uint8)[:, None]
    bgr = cv2.applyColorMap(ramp, COLORMAPS[colormap])[:, 0]
    return torch.from_numpy(np.ascontiguousarray(bgr[:, ::-1])).to(device)


def colour_bar(width: int, colormap: str, font: ImageFont.ImageFont) -> Image.Image:
    """A horizontal bar of ``colormap`` from 0 (low) to 1 (high), labelled, ``width`` wide."""
    ramp = np.linspace(0, 255, max(2, width - 80)).astype(np.uint8)[None, :]
    bgr = cv2.applyColorMap(ramp, COLORMAPS[validate_colormap(colormap)])[0]
    bar = Image.new("RGB", (width, 24), "white")
    bar.paste(Image.fromarray(np.repeat(bgr[None, :, ::-1], 12, axis=0)), (40, 2))
    draw = ImageDraw.Draw(bar)
    draw.text((4, 1), "low", fill="black", font=font)
    draw.text((width - 36, 1), "high", fill="black", font=font)
    return bar


#: Panels are shown (and composed) at least this many pixels on their longest side.
DISPLAY_MIN_SIDE = 384


def display_size(width: int, height: int, min_side: int = DISPLAY_MIN_SIDE) -> tuple[int, int]:
    """``(width, height)`` scaled up so the longest side is at least ``min_side``."""
    scale = max(1.0, min_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def for_display(picture: np.ndarray, min_side: int = DISPLAY_MIN_SIDE) -> np.ndarray:
    """An RGB overlay resized (bicubic) to :func:`display_size`, so the browser does not
    stretch it."""
    height, width = picture.shape[:2]
    size = display_size(width, height, min_side)
    if size == (width, height):
        return picture
    return np.asarray(Image.fromarray(picture).resize(size, Image.BICUBIC))


@functools.cache
def caption_font(size: int) -> ImageFont.FreeTypeFont:
    """A font with Greek for the captions ("γ=0.6"): matplotlib's DejaVu Sans, which is always
    installed (pytorch-grad-cam depends on matplotlib; found without importing it). Pillow's
    default font draws γ as an empty box; it stays the fallback."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.is_file():
            return ImageFont.truetype(str(path), size)
    log.warning("DejaVu Sans not found: captions use Pillow's default font (no Greek)")
    return ImageFont.load_default(size=size)


def side_by_side(
    panels: list[tuple[str, np.ndarray]],
    strip: list[tuple[str, np.ndarray]] | None = None,
    gap: int = 8,
    colormap: str = DEFAULT_COLORMAP,
) -> Image.Image:
    """One picture: each titled panel (at display size) next to the other, then the γ strip,
    then the colour bar of ``colormap`` under the first panel (what the colours mean).

    Titles wrap to their panel's width, so a long list of references never runs into the next
    panel; strip thumbnails share the full width with their captions under them.
    """
    font = caption_font(14)
    shown = [(title, for_display(panel)) for title, panel in panels]
    width = sum(panel.shape[1] for _, panel in shown) + gap * (len(shown) - 1)
    titles = [_wrap(title, panel.shape[1] - 8, font) for title, panel in shown]
    title_height = 6 + 18 * max(len(lines) for lines in titles)
    panel_height = max(panel.shape[0] for _, panel in shown)
    strip_rows = _strip_row(strip, width, gap, font) if strip else None
    bar = colour_bar(shown[0][1].shape[1], colormap, font)  # under the first panel
    height = title_height + panel_height + (gap + strip_rows.height if strip_rows else 0)
    height += gap + bar.height
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    left = 0
    for lines, (_, panel) in zip(titles, shown, strict=True):
        for row, line in enumerate(lines):
            draw.text((left + 4, 4 + 18 * row), line, fill="black", font=font)
        canvas.paste(Image.fromarray(panel), (left, title_height))
        left += panel.shape[1] + gap
    if strip_rows:
        canvas.paste(strip_rows, (0, title_height + panel_height + gap))
    canvas.paste(bar, (0, height - bar.height))
    return canvas


def _strip_row(
    strip: list[tuple[str, np.ndarray]], width: int, gap: int, font: ImageFont.ImageFont
) -> Image.Image:
    """Thumbnails side by side across ``width`` with a caption under each."""
    side = (width - gap * (len(strip) - 1)) // len(strip)
    row = Image.new("RGB", (width, side + 22), "white")
    draw = ImageDraw.Draw(row)
    for i, (caption, thumbnail) in enumerate(strip):
        left = i * (side + gap)
        row.paste(Image.fromarray(thumbnail).resize((side, side), Image.BICUBIC), (left, 0))
        text = _wrap(caption, side, font)[0]
        draw.text((left + 2, side + 3), text, fill="black", font=font)
    return row


def _wrap(text: str, width: int, font: ImageFont.ImageFont) -> list[str]:
    """Greedy word wrap of ``text`` to lines at most ``width`` pixels wide (long words are cut)."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if font.getlength(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        while font.getlength(word) > width and len(word) > 1:
            cut = max(1, int(len(word) * width / font.getlength(word)))
            lines.append(word[:cut])
            word = word[cut:]
        line = word
    return lines + [line] if line else lines or [""]
