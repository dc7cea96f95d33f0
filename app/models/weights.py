"""Shared pieces of the model adapters: safe weight files, Hub errors, image preprocessing.

Weights come only from safetensors files or from ``torch.load(weights_only=True)``; a pickle
that carries arbitrary objects is refused with a clear error. Every failure to reach the
Hugging Face Hub or the torch hub becomes an ``OSError`` naming the model, the repository or
URL, the cache directory, and the offline alternatives.
"""

from __future__ import annotations

import os
import pickle
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
import torch
from PIL import Image

OFFLINE_HINT = (
    "Set FINERCAM_OFFLINE=1 (or pick demo-cnn / demo-tinyclip) to use the offline demo models, "
    "or run `python -m app.models.prefetch` while online to fill the cache."
)

_INTERPOLATIONS = {
    "bicubic": Image.BICUBIC,
    "bilinear": Image.BILINEAR,
    "nearest": Image.NEAREST,
    "lanczos": Image.LANCZOS,
}


class WeightsFileError(ValueError):
    """A local weights file is missing, unreadable, unsafe or does not fit the model."""


def hf_cache_dir() -> str:
    """Where huggingface_hub (open_clip, timm) caches downloads."""
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover - huggingface_hub is a dependency
        return os.path.expanduser("~/.cache/huggingface/hub")


def torch_cache_dir() -> str:
    """Where torchvision caches downloaded weights."""
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def hub_error(what: str, source: str, cache: str, error: BaseException) -> OSError:
    """An ``OSError`` for a failed download, naming model, source, cache and the way out."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    mode = " (HF_HUB_OFFLINE is set, so only the cache was looked at)" if offline else ""
    detail = str(error).strip().rstrip(".") or "no detail"
    return OSError(
        f"could not load {what} from {source}{mode}: {type(error).__name__}: {detail}. "
        f"Weights are cached in {cache}. {OFFLINE_HINT}"
    )


def load_tensor_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or a torch checkpoint loaded with ``weights_only``.

    Raises:
        WeightsFileError: the file does not exist, is not a weights file, or is a pickle that
            carries arbitrary Python objects (refused: ``torch.load(weights_only=True)``).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f"checkpoint file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise WeightsFileError(f"{path} is not a readable safetensors file: {error}") from error
    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise WeightsFileError(
            f"refusing to load {path}: it is a pickle with objects other than tensors "
            f"(loaded with torch.load(weights_only=True)); convert it to .safetensors. "
            f"Detail: {str(error).splitlines()[0]}"
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise WeightsFileError(f"{path} is not a readable torch checkpoint: {error}") from error
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not all(
        isinstance(v, torch.Tensor) for v in checkpoint.values()
    ):
        raise WeightsFileError(f"{path} does not hold a state dict of tensors")
    return {str(k).removeprefix("module."): v for k, v in checkpoint.items()}


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """Eval mode and no parameter gradients: autograd then only ever reaches the leaf."""
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    for sub in module.modules():
        if isinstance(sub, torch.nn.ReLU):
            sub.inplace = False  # hooks (FG-CAM) see the pre-activation tensors intact
    return module


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


def aspect_size(width: int, height: int, short: int = 224, max_long: int = 448, multiple: int = 32
                ) -> tuple[int, int]:
    """(width, height) with the shorter side ``short``, aspect kept (longer side at most
    ``max_long``), both rounded to a multiple of ``multiple`` so grid cells tile the input."""
    scale = short / min(width, height)
    w, h = min(width * scale, max_long), min(height * scale, max_long)

    def snap(v: float) -> int:
        return max(multiple, int(round(v / multiple)) * multiple)

    return snap(w), snap(h)


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRUDict(Generic[K, V]):
    """A small thread-safe LRU mapping with an entry bound."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items


_SHARED: dict[Hashable, object] = {}
_SHARED_LOCK = threading.Lock()
_KEY_LOCKS: dict[Hashable, threading.Lock] = {}


def shared_instance(key: Hashable, build: Callable[[], V]) -> V:
    """Build once per key, process-wide (one CLIP under several registry names)."""
    with _SHARED_LOCK:
        if key in _SHARED:
            return _SHARED[key]  # type: ignore[return-value]
        lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with lock:
        with _SHARED_LOCK:
            if key in _SHARED:
                return _SHARED[key]  # type: ignore[return-value]
        value = build()
        with _SHARED_LOCK:
            _SHARED[key] = value
        return value
