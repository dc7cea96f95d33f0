"""Image preprocessing shared by the adapters: PIL image -> normalised ``(1, 3, H, W)`` tensor.

The whole image is resized (never cropped) so every pixel the user sees is explained;
:func:`aspect_size` keeps the aspect ratio for CNNs, which take any input size.

Two resize paths give the same pixels within a level (of 255): PIL's, and a tensor one on the
model's device (the upload copied once as uint8, resized there). :func:`tensor_path` picks the
tensor path on CUDA, where it takes the resize off the CPU, and PIL elsewhere, where PIL is the
faster of the two (docs/benchmarks.md); ``FINERCAM_TENSOR_PATH`` = ``on``/``off`` forces either.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

_INTERPOLATIONS = {
    "bicubic": Image.BICUBIC,
    "bilinear": Image.BILINEAR,
    "nearest": Image.NEAREST,
    "lanczos": Image.LANCZOS,
}
#: Resamplings the tensor path reproduces (torch's antialiased kernels are PIL's); the others
#: always go through PIL.
_TENSOR_MODES = ("bilinear", "bicubic")

#: ``auto`` (the default): device paths on CUDA only; ``on``: everywhere; ``off``: nowhere.
TENSOR_PATH_ENV = "FINERCAM_TENSOR_PATH"


def tensor_path(device: torch.device | str) -> bool:
    """Whether CPU-side work for ``device`` (resizing the upload, rendering the maps) runs as
    tensor operations on ``device`` rather than with PIL/numpy on the CPU."""
    choice = os.environ.get(TENSOR_PATH_ENV, "auto").strip().lower()
    if choice in ("on", "off"):
        return choice == "on"
    return torch.device(device).type == "cuda"


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
    if tensor_path(device) and interpolation in _TENSOR_MODES:
        pixels = resize_on_device(image, size, device, interpolation)
    else:
        if image.size != tuple(size):
            image = image.resize(tuple(size), _INTERPOLATIONS.get(interpolation, Image.BICUBIC))
        pixels = pixel_tensor(image, device).float()
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return (pixels / 255.0 - mean_t) / std_t


def pixel_tensor(image: Image.Image, device: torch.device | str) -> torch.Tensor:
    """The RGB image as a uint8 ``(1, 3, H, W)`` tensor on ``device``: one copy of its bytes."""
    pixels = torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8)).to(device)
    return pixels.permute(2, 0, 1).unsqueeze(0)


def resize_on_device(
    image: Image.Image, size: tuple[int, int], device: torch.device, interpolation: str
) -> torch.Tensor:
    """PIL's antialiased ``resize`` as tensor operations on ``device``: float ``(1, 3, H, W)``
    pixel values in [0, 255].

    PIL resamples the width, then the height, rounding to 8 bits after each pass; doing the
    same keeps nearly every pixel equal to PIL's (the rest within a level or two).
    """
    x = pixel_tensor(image, device).float()
    width, height = size
    if x.shape[3] != width:
        x = _resample(x, (x.shape[2], width), interpolation)
    if x.shape[2] != height:
        x = _resample(x, (height, width), interpolation)
    return x


def _resample(x: torch.Tensor, size: tuple[int, int], interpolation: str) -> torch.Tensor:
    """One antialiased pass, rounded half up and clipped to 8 bits like PIL's."""
    out = F.interpolate(x, size=size, mode=interpolation, antialias=True, align_corners=False)
    return out.add_(0.5).floor_().clamp_(0.0, 255.0)


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
