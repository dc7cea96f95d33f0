"""The one place user input is validated: images and explanation parameters.

The web UI, the API and the CLI all call these functions, so a bad upload or a bad
parameter fails the same way everywhere: with an :class:`InvalidInputError` (a
``ValueError``) whose message is short enough to show the user as is. Nothing from
Pillow or numpy leaks out; the original exception is kept as ``__cause__`` for logs.

Image loading never touches Pillow's global state (``Image.MAX_IMAGE_PIXELS``,
warning filters): the pixel budget is checked from the header before any pixel is
decoded, and it is never looser than Pillow's own decompression-bomb limit, so an
image that makes Pillow warn is always rejected here.
"""

from __future__ import annotations

import io
import math
import numbers
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

DEFAULT_MAX_SIDE = 1024  # longest side of the image handed to the models
DEFAULT_MAX_PIXELS = 50_000_000  # header-checked budget before decoding (~50 MP)
MIN_SIDE = 8  # below this there is nothing to explain
MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # also the gradio ``max_file_size``
ACCEPTED_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF", "AVIF")
MAX_GAMMA = 2.0  # the UI slider stops at 1; the API may go up to this
MAX_PROMPTS = 16
MAX_PROMPT_CHARS = 300

_DISPLAY_NAMES = {"WEBP": "WebP", "MPO": "JPEG"}
_HIGH_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MAGIC = [  # to tell "corrupt JPEG" from "not an image" when Pillow cannot identify a file
    (rb"\x89PNG", "PNG"),
    (rb"\xff\xd8\xff", "JPEG"),
    (rb"GIF8[79]a", "GIF"),
    (rb"(?s)RIFF....WEBP", "WebP"),
    (rb"(?s)BM.{4}\0\0\0\0", "BMP"),
    (rb"II\*\0|MM\0\*", "TIFF"),
]


class InvalidInputError(ValueError):
    """Bad user input. ``str(err)`` is a short message meant for the user."""


# --------------------------------------------------------------------------- images


def load_image(
    source: Any,
    *,
    max_side: int = DEFAULT_MAX_SIDE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = MAX_UPLOAD_BYTES,
) -> Image.Image:
    """Decode ``source`` into a fresh RGB image whose longest side is at most ``max_side``.

    ``source`` may be ``bytes``, a path (``str``/``Path``), a binary file object, a PIL image
    or a numpy array (HxW, HxWx1, HxWx3, HxWx4; bool, integer or float). EXIF orientation is
    applied, transparency is composited on white, 16/32-bit images are scaled to 8 bits by
    their actual range (floats too, unless already in [0, 1]), animations give their first
    frame. The caller's image or array is never modified.

    Raises:
        InvalidInputError: empty, too large, not a supported image, truncated or corrupt,
            smaller than ``MIN_SIDE`` pixels, or too elongated to survive the resize.
    """
    if max_side < MIN_SIDE:
        raise ValueError(f"max_side must be at least {MIN_SIDE}")  # a bug, not bad input
    if source is None:
        raise InvalidInputError("No image was given.")
    ours = not isinstance(source, Image.Image)  # ours to modify in place
    if not ours:
        image = source
    elif isinstance(source, np.ndarray):
        image = _array_to_image(source, max_pixels, max_side)
    else:
        image = _open(_read_bytes(source, max_bytes), max_pixels)

    fmt = _DISPLAY_NAMES.get(image.format or "", image.format or "image")
    _check_size(image.size, max_pixels, max_side)  # from the header: nothing decoded yet
    truncated = f"The {fmt} file is truncated or corrupt and could not be decoded."
    with _decoding(truncated, max_pixels):
        if ours and image.format in ("JPEG", "MPO"):
            image.draft(None, (max_side, max_side))  # decode big JPEGs at 1/2..1/8 scale
        image.load()  # full decode now, so truncation is detected here
    _check_size(image.size, max_pixels, max_side)  # a GIF frame may outgrow its header
    try:
        if ours:
            ImageOps.exif_transpose(image, in_place=True)
        else:
            image = ImageOps.exif_transpose(image)  # a copy: the caller's image is left alone
    except Exception:  # broken EXIF is no reason to refuse the pixels
        image = image if ours else image.copy()
    unsupported = f"The {fmt} image uses an unsupported colour mode ({image.mode})."
    with _decoding(unsupported, max_pixels):
        return _to_rgb_capped(image, max_side)


def _read_bytes(source: Any, max_bytes: int) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        try:
            path = Path(source)
            name = path.name or str(source)[:80]
            if not path.is_file():
                raise InvalidInputError(f"File not found: {name!r}.")
            if path.stat().st_size > max_bytes:
                raise InvalidInputError(_too_big(path.stat().st_size, max_bytes))
            data = path.read_bytes()
        except InvalidInputError:
            raise
        except (OSError, ValueError) as e:  # permissions, NUL in path, name too long
            raise InvalidInputError(f"Could not read the file {str(source)[-80:]!r}.") from e
    elif hasattr(source, "read"):
        data = source.read(max_bytes + 1)
        if not isinstance(data, bytes):
            raise InvalidInputError("The file must be opened in binary mode.")
    else:
        raise InvalidInputError(f"Unsupported image source: {type(source).__name__}.")
    if not data:
        raise InvalidInputError("The file is empty (0 bytes).")
    if len(data) > max_bytes:
        raise InvalidInputError(_too_big(len(data), max_bytes))
    return data


def _too_big(n: int, limit: int) -> str:
    return f"The file is too large: {n / 2**20:.1f} MB (limit {limit / 2**20:.0f} MB)."


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Parse the header only; no pixels are decoded here."""
    Image.init()
    formats = [f for f in ACCEPTED_FORMATS if f in Image.OPEN]
    try:
        return Image.open(io.BytesIO(data), formats=formats)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InvalidInputError(_bomb_message(None, None, max_pixels)) from e
    except Exception as e:  # UnidentifiedImageError, and whatever a plugin's header parser raises
        kind = next((k for magic, k in _MAGIC if re.match(magic, data)), None)
        if kind:
            raise InvalidInputError(f"The file looks like a {kind} but is corrupt.") from e
        names = ", ".join(_DISPLAY_NAMES.get(f, f) for f in formats)
        raise InvalidInputError(
            f"The file is not a supported image ({names}); "
            f"got {len(data)} bytes starting with {repr(data[:12])[1:]}."
        ) from e


def _check_size(size: tuple[int, int], max_pixels: int, max_side: int) -> None:
    w, h = size
    need = f"need at least {MIN_SIDE} px on each side"
    if min(w, h) < MIN_SIDE:
        raise InvalidInputError(f"The image is too small to explain: {w}x{h} px ({need}).")
    if w * h > _pixel_limit(max_pixels):
        raise InvalidInputError(_bomb_message(w, h, max_pixels))
    cw, ch = _capped_size(size, max_side)
    if min(cw, ch) < MIN_SIDE:
        raise InvalidInputError(
            f"The image is too elongated to explain: {w}x{h} px would shrink to "
            f"{cw}x{ch} px ({need})."
        )


def _pixel_limit(max_pixels: int) -> int:
    # Never looser than Pillow's bomb limit, so whatever Pillow would warn about is refused.
    pillow = Image.MAX_IMAGE_PIXELS
    return min(max_pixels, pillow) if pillow else max_pixels


def _bomb_message(w: int | None, h: int | None, max_pixels: int) -> str:
    limit = f"the limit is {_pixel_limit(max_pixels) / 1e6:.0f} megapixels"
    if w is None or h is None:
        return f"The image is too large to decode safely; {limit}."
    return f"The image is too large: {w}x{h} px ({w * h / 1e6:.0f} megapixels); {limit}."


@contextmanager
def _decoding(message: str, max_pixels: int) -> Iterator[None]:
    """Turn anything Pillow or numpy raises into an InvalidInputError with ``message``."""
    try:
        yield
    except InvalidInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InvalidInputError(_bomb_message(None, None, max_pixels)) from e
    except MemoryError as e:
        raise InvalidInputError("The image is too large to decode (out of memory).") from e
    except Exception as e:
        raise InvalidInputError(message) from e


def _to_rgb_capped(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` is ours (never the caller's), loaded, upright; the result may be ``image``."""
    if image.mode in _HIGH_BIT_MODES:
        # Resize in float first (cheap on memory), then map to 0..255: float images already
        # in [0, 1] are scaled by 255, everything else by its actual range (never clipped).
        f = image.convert("F")
        lo, hi = f.getextrema()
        values = np.asarray(_capped(f, max_side), dtype=np.float64)
        if image.mode == "F" and 0 <= lo <= hi <= 1:
            gray = np.rint(np.clip(values, 0, 1) * 255).astype(np.uint8)
        else:
            gray = _stretch(values)
        return Image.fromarray(gray, "L").convert("RGB")
    if image.mode in ("La", "RGBa"):  # premultiplied alpha
        image = image.convert(image.mode.upper())
    alpha = image.mode in ("LA", "PA", "RGBA") or "transparency" in image.info
    # Shrink before anything else full-size; palettes and colour-key transparency cannot be
    # resampled, so those are expanded first. (Pillow resizes RGBA with premultiplied alpha.)
    if image.mode in ("P", "PA") or (alpha and image.mode not in ("LA", "RGBA")):
        image = image.convert("RGBA" if alpha else "RGB")
    elif image.mode == "1":
        image = image.convert("L")
    image = _capped(image, max_side)
    if alpha:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    return image if image.mode == "RGB" else image.convert("RGB")


def _capped_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    w, h = size
    if max(w, h) <= max_side:
        return w, h
    scale = max_side / max(w, h)
    return max(1, min(max_side, round(w * scale))), max(1, min(max_side, round(h * scale)))


def _capped(image: Image.Image, max_side: int) -> Image.Image:
    size = _capped_size(image.size, max_side)
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)


def _array_to_image(array: np.ndarray, max_pixels: int, max_side: int) -> Image.Image:
    a = array
    if a.dtype.kind not in "biuf":
        raise InvalidInputError(f"Unsupported image array type: {a.dtype}.")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise InvalidInputError(
            f"Unsupported image array shape {a.shape}: expected HxW, HxWx3 or HxWx4."
        )
    _check_size((a.shape[1], a.shape[0]), max_pixels, max_side)
    if a.dtype.kind in "iu" and a.dtype != np.uint16 and a.min() >= 0 and a.max() <= 255:
        a = a.astype(np.uint8)  # 8-bit data held in a wide integer type
    if a.ndim == 2:
        return Image.fromarray(_to_uint8(a), "L")
    colour = _to_uint8(a[..., :3])
    if a.shape[2] == 3:
        return Image.fromarray(np.ascontiguousarray(colour), "RGB")
    return Image.fromarray(np.dstack([colour, _alpha_to_uint8(a[..., 3])]), "RGBA")


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """uint8 and bool as is; floats in [0, 1] times 255; anything else by its actual range."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    f = a.astype(np.float64)
    if not np.isfinite(f).all():
        raise InvalidInputError("The image contains NaN or infinite values.")
    if a.dtype.kind == "f" and f.min() >= 0 and f.max() <= 1:
        return np.rint(f * 255).astype(np.uint8)
    return _stretch(f)


def _stretch(f: np.ndarray) -> np.ndarray:
    """Map [min, max] linearly onto [0, 255]; a constant image keeps its value, clipped."""
    if not np.isfinite(f).all():
        raise InvalidInputError("The image contains NaN or infinite values.")
    lo, hi = float(f.min()), float(f.max())
    if hi <= lo:
        return np.full(f.shape, np.clip(lo, 0, 255), dtype=np.uint8)
    with np.errstate(all="ignore"):  # hi - lo may overflow for absurd float inputs
        t = np.nan_to_num((f - lo) / (hi - lo), nan=0.0, posinf=1.0, neginf=0.0)
    return np.rint(np.clip(t, 0, 1) * 255).astype(np.uint8)


def _alpha_to_uint8(a: np.ndarray) -> np.ndarray:
    """Alpha is scaled by its type's full range, never stretched: 65535 is opaque."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.dtype.kind == "f":
        return np.rint(np.clip(np.nan_to_num(a, nan=1.0), 0, 1) * 255).astype(np.uint8)
    top = 65535 if a.dtype.itemsize >= 2 and a.max() > 255 else 255
    return np.rint(np.clip(a, 0, top) * (255 / top)).astype(np.uint8)


# ----------------------------------------------------------------------- parameters


def _number(value: Any, name: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise InvalidInputError(f"{name} must be a number (got {value[:40]!r}).") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInputError(f"{name} must be a number (got {type(value).__name__}).")
    try:
        number = float(value)
    except (OverflowError, ValueError):  # 10**400, odd Real subclasses
        number = math.nan
    if not math.isfinite(number):
        raise InvalidInputError(f"{name} must be a finite number (got {number}).")
    return number


def _in_range(value: Any, name: str, lo: float, hi: float) -> float:
    number = _number(value, name)
    if not lo <= number <= hi:
        raise InvalidInputError(f"{name} must be between {lo:g} and {hi:g} (got {number:g}).")
    return number + 0.0  # -0.0 -> 0.0


def validate_gamma(value: Any, *, name: str = "gamma") -> float:
    """Finer-CAM's gamma (how much the look-alike classes are subtracted), in [0, MAX_GAMMA]."""
    return _in_range(value, name, 0.0, MAX_GAMMA)


def validate_opacity(value: Any, *, name: str = "opacity") -> float:
    """Heat-map overlay opacity in [0, 1]."""
    return _in_range(value, name, 0.0, 1.0)


def validate_top_fraction(value: Any, *, name: str = "k (share of top pixels removed)") -> float:
    """The share k of a map's pixels removed to score it, in (0, 1] (0.05: the paper's 5 %)."""
    number = _in_range(value, name, 0.0, 1.0)
    if number == 0:
        raise InvalidInputError(f"{name} must be above 0 (got 0): remove at least one pixel.")
    return number


def _whole(value: Any, name: str) -> int:
    number = _number(value, name)
    if not number.is_integer():
        raise InvalidInputError(f"{name} must be a whole number (got {number:g}).")
    return int(number)


def validate_index(value: Any, *, name: str) -> int:
    """A position in a list the model defines (a layer): a whole number >= 0. Whether the model
    has that many is checked where the list is known."""
    index = _whole(value, name)
    if index < 0:
        raise InvalidInputError(f"{name} must be at least 0 (got {index}).")
    return index


def validate_count(value: Any, *, name: str) -> int:
    """A count of things (reference classes): a whole number >= 1."""
    count = _whole(value, name)
    if count < 1:
        raise InvalidInputError(f"{name} must be at least 1 (got {count}).")
    return count


def validate_top_t(value: Any, num_classes: int, *, name: str = "T") -> tuple[int, str | None]:
    """Number of look-alike reference classes: an integer >= 1, clamped to ``num_classes - 1``.

    Returns ``(t, notice)``; ``notice`` is a message for the user when ``t`` was clamped.
    """
    t = validate_count(value, name=name)
    others = int(num_classes) - 1
    if others < 1:
        raise InvalidInputError(
            f"At least 2 classes are needed to compare against look-alikes (got {num_classes})."
        )
    if t > others:
        noun = "class" if others == 1 else "classes"
        return others, f"{name}={t} is more than the {others} other {noun}; using {name}={others}."
    return t, None


def validate_prompt(text: Any, *, max_chars: int = MAX_PROMPT_CHARS, name: str = "prompt") -> str:
    """One text prompt: control characters removed, whitespace collapsed, non-empty, short."""
    if not isinstance(text, str):
        raise InvalidInputError(f"{name} must be text (got {type(text).__name__}).")
    clean = " ".join(_CONTROL_CHARS.sub(" ", text).split())
    if not clean:
        raise InvalidInputError(f"{name} is empty.")
    if len(clean) > max_chars:
        raise InvalidInputError(f"{name} is too long: {len(clean)} characters (max {max_chars}).")
    return clean


def parse_prompts(
    text_or_list: Any,
    *,
    max_prompts: int = MAX_PROMPTS,
    max_chars: int = MAX_PROMPT_CHARS,
    min_prompts: int = 1,
) -> list[str]:
    """Class prompts from text or a list, cleaned and de-duplicated (first spelling kept).

    Text is split one prompt per line when it has several lines, else on commas, so a
    multi-line list may keep commas inside prompts. Blank entries are skipped. Duplicates
    are found case-insensitively, since CLIP's tokenizer lowercases text anyway.
    """
    if text_or_list is None:
        items: Iterable[Any] = []
    elif isinstance(text_or_list, str):
        lines = text_or_list.splitlines()
        items = lines if len([ln for ln in lines if ln.strip()]) > 1 else text_or_list.split(",")
    elif isinstance(text_or_list, (list, tuple)):
        items = text_or_list
    else:
        raise InvalidInputError(
            f"prompts must be text or a list of text (got {type(text_or_list).__name__})."
        )
    prompts: dict[str, str] = {}
    for i, item in enumerate(items, 1):
        if isinstance(item, str) and not _CONTROL_CHARS.sub(" ", item).strip():
            continue
        prompt = validate_prompt(item, max_chars=max_chars, name=f"prompt {i}")
        prompts.setdefault(prompt.casefold(), prompt)
    if len(prompts) > max_prompts:
        raise InvalidInputError(f"Too many prompts: {len(prompts)} (max {max_prompts}).")
    if not prompts:
        raise InvalidInputError("Enter at least one prompt.")
    if len(prompts) < min_prompts:
        raise InvalidInputError(
            f"Enter at least {min_prompts} different prompts (got {len(prompts)})."
        )
    return list(prompts.values())
