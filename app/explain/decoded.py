"""Decoded uploads, remembered: a slider move must not decode and hash the photo again.

Every live event (γ, T, opacity, references) hands the service the same upload — a path in
Gradio's upload folder, or the bytes of a pasted image. Decoding and validating a 1024-px JPEG
takes ~60 ms and hashing its pixels ~8 ms on one core, ~20x the cached re-render itself, so the
few most recent uploads are kept decoded with their content digest. Keys name the content: a
path with its size and modification time, or a hash of the bytes, plus the side cap.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from .cache import BoundedLRU

#: Recent uploads kept decoded (a few browser tabs moving sliders at once).
DEFAULT_DECODED_ENTRIES = 8
#: ... and at most this many bytes of pixels (eight 1024x1024 RGB images ≈ 25 MB).
DEFAULT_DECODED_BYTES = 32 * 1024 * 1024


def image_digest(image: Image.Image) -> str:
    """Content hash of a decoded RGB image (cache key of explanations)."""
    digest = hashlib.blake2b(image.tobytes(), digest_size=16)
    digest.update(f"{image.size}{image.mode}".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Decoded:
    """A validated RGB image and its content digest."""

    image: Image.Image
    digest: str


def _pixel_bytes(decoded: Decoded) -> int:
    width, height = decoded.image.size
    return width * height * len(decoded.image.getbands())


def upload_key(source: Any, max_side: int) -> Hashable | None:
    """What identifies an upload's content without decoding it; None for in-memory images
    (PIL, numpy: the caller already holds the pixels, nothing to save)."""
    if isinstance(source, (bytes, bytearray)):
        return ("bytes", hashlib.blake2b(source, digest_size=16).hexdigest(), max_side)
    if isinstance(source, (str, Path)):
        try:
            stat = os.stat(source)
        except OSError:
            return None  # let the loader give its clear message
        return ("path", os.fspath(source), stat.st_size, stat.st_mtime_ns, max_side)
    return None


class DecodedImages:
    """A bounded, thread-safe memo of decoded uploads (:func:`upload_key` → :class:`Decoded`)."""

    def __init__(
        self,
        max_entries: int = DEFAULT_DECODED_ENTRIES,
        max_bytes: int = DEFAULT_DECODED_BYTES,
    ) -> None:
        self._memo: BoundedLRU[Decoded] = BoundedLRU(max_entries, max_bytes, _pixel_bytes)

    def load(
        self, source: Any, max_side: int, decode: Callable[[Any, int], Image.Image]
    ) -> Decoded:
        """``source`` decoded by ``decode(source, max_side)``, or the remembered result."""
        key = upload_key(source, max_side)
        remembered = self._memo.get(key) if key is not None else None
        if remembered is not None:
            return remembered
        image = decode(source, max_side)
        decoded = Decoded(image, image_digest(image))
        if key is not None:
            self._memo.put(key, decoded)
        return decoded
