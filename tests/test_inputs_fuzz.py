"""Fuzz the input boundary: whatever comes in, the answer is an RGB image within the caps or an
InvalidInputError, never another exception and never a hang."""

from __future__ import annotations

import io
import math
import os
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from app.explain.inputs import (
    MAX_GAMMA,
    MIN_SIDE,
    InvalidInputError,
    load_image,
    parse_prompts,
    validate_gamma,
    validate_opacity,
    validate_prompt,
    validate_top_t,
)

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore::UserWarning"),  # Pillow on corrupt TIFF/EXIF
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
]

FUZZ = settings(  # FUZZ_EXAMPLES=5000 for a long local run
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")),
    deadline=timedelta(seconds=3),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MODES = ["1", "L", "LA", "P", "PT", "RGB", "RGBA", "CMYK", "YCbCr", "HSV", "LAB", "I;16", "I", "F"]
FORMATS = ["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"]


def check(source, max_side: int = 1024, **kwargs) -> None:
    try:
        out = load_image(source, max_side=max_side, **kwargs)
    except InvalidInputError as err:
        assert str(err) and len(str(err)) < 300
        return
    assert isinstance(out, Image.Image) and out.mode == "RGB"
    assert min(out.size) >= MIN_SIDE and max(out.size) <= max_side
    out.getpixel((0, 0))  # pixels are in memory, not behind a closed file


def make_image(mode: str, w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(-(2**31), 2**31 - 1, (h, w), dtype=np.int32))
    if mode == "F":
        return Image.fromarray(
            (rng.standard_normal((h, w)) * 10.0 ** rng.integers(-3, 6)).astype(np.float32)
        )
    blocks = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    rgb = Image.fromarray(blocks).resize((w, h), Image.Resampling.NEAREST)
    if mode == "PT":  # palette with a transparent index
        image = rgb.convert("P")
        image.info["transparency"] = int(rng.integers(0, 256))
        return image
    return rgb.convert(mode)


def encode(image: Image.Image, fmt: str, animated: bool) -> bytes:
    if fmt == "GIF" and image.mode not in ("1", "L", "P"):
        image = image.convert("RGB").convert("P")  # web palette: quantizing is slow
    buf = io.BytesIO()
    params = {"save_all": True, "append_images": [image.rotate(90)]} if animated else {}
    try:
        image.save(buf, fmt, **params)
    except (OSError, ValueError, KeyError, TypeError):  # mode this format cannot store
        buf = io.BytesIO()
        image.convert("RGB").save(buf, fmt)
    return buf.getvalue()


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(data):
    check(data)


@FUZZ
@given(
    st.sampled_from(MODES),
    st.integers(1, 300),
    st.integers(1, 300),
    st.sampled_from(FORMATS),
    st.booleans(),
    st.integers(0, 2**32 - 1),
    st.sampled_from(["none", "truncate", "garble"]),
    st.floats(0, 1),
    st.integers(MIN_SIDE, 400),
)
def test_random_encoded_images(mode, w, h, fmt, animated, seed, damage, where, max_side):
    data = encode(make_image(mode, w, h, seed), fmt, animated and fmt in ("GIF", "PNG", "WEBP"))
    cut = int(where * len(data))
    if damage == "truncate":
        data = data[:cut]
    elif damage == "garble":
        data = data[:cut] + bytes(reversed(data[cut : cut + 16])) + data[cut + 16 :]
    check(data, max_side=max_side)


@FUZZ
@given(st.sampled_from(MODES), st.integers(1, 200), st.integers(1, 200), st.integers(0, 2**32 - 1))
def test_random_pil_images(mode, w, h, seed):
    check(make_image(mode, w, h, seed), max_side=128)


ARRAY_DTYPES = st.sampled_from(
    [np.uint8, np.uint16, np.int32, np.int64, np.float32, np.float64, np.bool_]
)
ARRAY_SHAPES = st.one_of(
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=64),
    st.tuples(st.integers(1, 64), st.integers(1, 64), st.integers(1, 5)),
    hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=8),
)


@FUZZ
@given(hnp.arrays(ARRAY_DTYPES, ARRAY_SHAPES))
def test_random_arrays(array):
    before = array.copy()
    check(array, max_side=32)
    assert np.array_equal(array, before, equal_nan=array.dtype.kind == "f")


ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([10**400, "1e999", "nan", " 3 ", "-0", np.float32(0.5), np.int64(7)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=2),
)


@FUZZ
@given(ANYTHING, ANYTHING, st.integers(-2, 50))
def test_random_parameters(gamma, opacity, num_classes):
    for validate, hi in ((validate_gamma, MAX_GAMMA), (validate_opacity, 1.0)):
        value = gamma if validate is validate_gamma else opacity
        try:
            clean = validate(value)
        except InvalidInputError:
            continue
        assert isinstance(clean, float) and 0 <= clean <= hi and math.isfinite(clean)
    try:
        t, notice = validate_top_t(gamma, num_classes)
    except InvalidInputError:
        return
    assert isinstance(t, int) and 1 <= t <= num_classes - 1
    assert (notice is None) == (t == int(float(gamma)))


@FUZZ
@given(
    st.one_of(
        st.text(max_size=400), st.lists(st.one_of(st.text(max_size=60), st.integers()), max_size=24)
    )
)
def test_random_prompts(value):
    if isinstance(value, str):
        try:
            prompt = validate_prompt(value)
            assert prompt and prompt == prompt.strip() and len(prompt) <= 300
        except InvalidInputError:
            pass
    try:
        prompts = parse_prompts(value)
    except InvalidInputError:
        return
    assert 1 <= len(prompts) <= 16
    assert len({p.casefold() for p in prompts}) == len(prompts)
    assert all(p and len(p) <= 300 and "\n" not in p for p in prompts)
