"""Image preprocessing shared by the adapters: PIL image -> normalised ``(1, 3, H, W)`` tensor.

The whole image is resized (never cropped) so every pixel the user sees is explained;
:func:`aspect_size` keeps the aspect ratio for CNNs, which take any input size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

_INTERPOLATIONS = {
    "bicubic": Image.BICUBIC,
    "bilinear": Image.BILINEAR,
    "nearest": Image.NEAREST,
    "lanczos": Image.LANCZOS,
}


def to_tensor(
    image: Image.Image,
    size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    interpolation: str = "bicubic",
) -> torch.Tensor:
    """Resize the whole image to ``size`` = (width, height), normalise: ``(1, 3, H, W)``."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(image).__name__}")
    image = image.convert("RGB")
    if image.size != tuple(size):
        image = image.resize(tuple(size), _INTERPOLATIONS.get(interpolation, Image.BICUBIC))
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return ((x - mean_t) / std_t).unsqueeze(0).to(device)


def aspect_size(
    width: int, height: int, short: int = 224, max_long: int = 448, multiple: int = 32
) -> tuple[int, int]:
    """(width, height) with the shorter side ``short``, aspect kept (longer side at most
    ``max_long``), both rounded to a multiple of ``multiple`` so grid cells tile the input."""
    scale = short / min(width, height)
    w, h = min(width * scale, max_long), min(height * scale, max_long)

    def snap(v: float) -> int:
        return max(multiple, int(round(v / multiple)) * multiple)

    return snap(w), snap(h)
