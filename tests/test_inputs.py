"""Every kind of bad input is refused with a short InvalidInputError; odd but valid input is
normalised to an RGB image within the caps."""

from __future__ import annotations

import io
import math
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from app.explain.inputs import (
    DEFAULT_MAX_SIDE,
    MAX_GAMMA,
    MAX_PROMPT_CHARS,
    MAX_PROMPTS,
    MIN_SIDE,
    InvalidInputError,
    load_image,
    parse_prompts,
    validate_gamma,
    validate_index,
    validate_opacity,
    validate_prompt,
    validate_top_t,
)


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def noise(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width x height`` but carries a few bytes of pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def rejected(source, match: str, **kwargs) -> InvalidInputError:
    with pytest.raises(InvalidInputError, match=match) as info:
        load_image(source, **kwargs)
    assert len(str(info.value)) < 200, "messages are shown to users: keep them short"
    return info.value


def assert_rgb(image: Image.Image, size: tuple[int, int] | None = None) -> None:
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    assert max(image.size) <= DEFAULT_MAX_SIDE and min(image.size) >= MIN_SIDE
    if size is not None:
        assert image.size == size


# ------------------------------------------------------------------------- bad files


def test_non_image_file_names_what_it_got():
    err = rejected(b"hello, this is not an image", "not a supported image")
    assert "27 bytes" in str(err) and "'hello, this " in str(err)


def test_non_image_path(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("just some text")
    rejected(path, "not a supported image")
    rejected(str(path), "not a supported image")


def test_corrupt_jpeg_header():
    data = bytearray(encode(noise(64, 64), "JPEG"))
    k = data.find(b"\xff\xc4")  # Huffman table: garble it
    data[k + 4 : k + 40] = b"\xff" * 36
    rejected(bytes(data), "looks like a JPEG but is corrupt")


def test_truncated_jpeg():
    data = encode(noise(64, 64), "JPEG")
    rejected(data[: len(data) // 2], "JPEG file is truncated or corrupt")


def test_truncated_png():
    data = encode(noise(64, 64), "PNG")
    rejected(data[: len(data) // 2], "PNG file is truncated or corrupt")


def test_corrupt_png_data():
    data = bytearray(encode(noise(64, 64), "PNG"))
    data[60:80] = b"\0" * 20
    rejected(bytes(data), "PNG file is truncated or corrupt")


def test_truncation_detected_even_if_only_tail_missing():
    data = encode(noise(64, 64), "PNG")
    rejected(data[:-30], "truncated or corrupt")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    rejected(path, r"empty \(0 bytes\)")
    rejected(b"", r"empty \(0 bytes\)")


def test_missing_file(tmp_path):
    rejected(tmp_path / "nope.png", "File not found: 'nope.png'")


def test_none_and_unsupported_source():
    rejected(None, "No image was given")
    rejected(42, "Unsupported image source: int")


def test_one_pixel_image():
    rejected(encode(Image.new("RGB", (1, 1)), "PNG"), r"too small to explain: 1x1 px")
    rejected(encode(Image.new("RGB", (100, MIN_SIDE - 1)), "PNG"), "too small")


def test_too_elongated_after_resize():
    rejected(encode(Image.new("RGB", (4000, 10)), "PNG"), "too elongated")


def test_file_over_byte_limit():
    data = encode(noise(64, 64), "PNG")
    rejected(data, "too large", max_bytes=len(data) - 1)
    assert_rgb(load_image(data, max_bytes=len(data)))


def test_unaccepted_format_is_refused():
    rejected(encode(Image.new("RGB", (16, 16)), "PCX"), "not a supported image")


def test_decompression_bomb_rejected_from_header_without_decoding(monkeypatch):
    def no_decoding(self):
        raise AssertionError("pixels must not be decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    start = time.perf_counter()
    # 400 MP: past twice Pillow's limit, where Pillow itself raises DecompressionBombError.
    rejected(png_header_only(20000, 20000), "too large")
    # 100 MP: Pillow only warns; our header check refuses it.
    with pytest.warns(Image.DecompressionBombWarning):
        rejected(png_header_only(10000, 10000), r"too large: 10000x10000 px")
    # 64 MP: under Pillow's limit, over ours.
    rejected(png_header_only(8000, 8000), r"too large: 8000x8000 px \(64 megapixels\)")
    rejected(png_header_only(400, 400), "too large", max_pixels=100_000)
    assert time.perf_counter() - start < 1.0


@pytest.mark.filterwarnings("error")
def test_decompression_bomb_warning_as_error_is_still_an_input_error():
    rejected(png_header_only(10000, 10000), "too large")


def test_pixel_limit_never_looser_than_pillow(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.warns(Image.DecompressionBombWarning):
        rejected(encode(noise(40, 40), "PNG"), "too large", max_pixels=10**9)


def test_real_large_constant_png_is_capped():
    data = encode(Image.new("RGB", (3000, 1500), "navy"), "PNG")
    assert len(data) < 100_000
    out = load_image(data)
    assert_rgb(out, (1024, 512))
    assert out.getpixel((500, 200)) == (0, 0, 128)


# -------------------------------------------------------------- modes and formats


def test_cmyk_jpeg():
    data = encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", quality=95)
    out = load_image(data)
    assert_rgb(out, (32, 32))
    r, g, b = out.getpixel((16, 16))
    assert r > 230 and g < 25 and b < 25


def test_16bit_png_scaled_by_actual_range():
    ramp = np.tile(np.linspace(1000, 60000, 64).astype(np.uint16), (16, 1))
    source = Image.fromarray(ramp)
    assert source.mode.startswith("I;16")
    data = encode(source, "PNG")
    assert Image.open(io.BytesIO(data)).mode in ("I;16", "I;16B", "I")
    out = np.asarray(load_image(data))
    assert out.shape == (16, 64, 3)
    row = out[8, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255  # stretched, not clipped or divided by 65535
    assert np.all(np.diff(row) >= 0) and len(np.unique(row)) > 50
    assert np.array_equal(out[..., 0], out[..., 1])


def test_16bit_big_endian_and_32bit_modes():
    ramp = np.tile(np.linspace(0, 4000, 32).astype(np.uint16), (16, 1))
    for image in (
        Image.fromarray(ramp).convert("I"),
        Image.fromarray(ramp.astype(">u2")),  # I;16B
        Image.fromarray(ramp.astype(np.float32) / 4000 * 0.5, "F"),  # F in [0, 1]: x255
    ):
        out = np.asarray(load_image(image))[..., 0]
        assert out.shape == (16, 32) and out[:, 0].max() == 0
        assert out[:, -1].min() == (128 if image.mode == "F" else 255), image.mode


def test_grayscale_and_bilevel():
    for mode in ("L", "1"):
        image = Image.new(mode, (20, 20), 255)
        image.paste(0, (0, 0, 10, 20))
        out = load_image(encode(image, "PNG"))
        assert_rgb(out, (20, 20))
        assert out.getpixel((2, 2)) == (0, 0, 0) and out.getpixel((15, 2)) == (255, 255, 255)


def test_palette_with_transparency_composited_on_white():
    image = Image.new("P", (16, 16), 1)
    image.putpalette([0, 0, 0] + [255, 0, 0] + [0] * 762)
    image.paste(0, (0, 0, 8, 16))
    data = encode(image, "PNG", transparency=0)
    out = load_image(data)
    assert out.getpixel((2, 2)) == (255, 255, 255)  # transparent black -> white
    assert out.getpixel((12, 2)) == (255, 0, 0)


def test_rgba_composited_on_white():
    image = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    image.paste((0, 0, 255, 255), (0, 0, 8, 8))
    image.paste((0, 0, 0, 128), (8, 8, 16, 16))
    for out in (load_image(encode(image, "PNG")), load_image(image)):
        assert_rgb(out, (16, 16))
        assert out.getpixel((12, 2)) == (255, 255, 255)
        assert out.getpixel((2, 2)) == (0, 0, 255)
        assert all(abs(c - 127) <= 1 for c in out.getpixel((12, 12)))


def test_la_ycbcr_premultiplied_modes():
    for mode, colour in [("LA", (0, 255)), ("YCbCr", (128, 128, 128)), ("RGBa", (0, 0, 0, 255))]:
        out = load_image(Image.new(mode, (10, 10), colour))
        assert_rgb(out, (10, 10))


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animation_gives_first_frame(fmt):
    frames = [Image.new("RGB", (24, 24), c) for c in ("red", "blue", "lime")]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    r, g, b = load_image(data).getpixel((12, 12))
    assert r > 200 and g < 40 and b < 40


def test_exif_orientation_6_is_applied():
    image = Image.new("RGB", (64, 32), "white")  # landscape as stored
    image.paste((255, 0, 0), (0, 0, 16, 16))  # marker at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    out = load_image(encode(image, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.size == (32, 64)  # portrait as displayed
    r, g, b = out.getpixel((32 - 8, 8))  # top-left went to the top-right
    assert r > 200 and g < 50 and b < 50
    assert out.getpixel((8, 8))[1] > 200  # old bottom-left corner: white


def test_big_jpeg_is_capped_with_aspect():
    out = load_image(encode(noise(3000, 1200), "JPEG"))
    assert_rgb(out, (1024, 410))
    assert load_image(encode(noise(300, 200), "JPEG"), max_side=100).size == (100, 67)


def test_other_accepted_formats():
    for fmt in ("BMP", "TIFF", "WEBP", "GIF"):
        assert_rgb(load_image(encode(noise(40, 30), fmt)), (40, 30))


def test_path_and_file_object(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(encode(noise(40, 30), "PNG"))
    assert_rgb(load_image(path), (40, 30))
    assert_rgb(load_image(str(path)), (40, 30))
    with path.open("rb") as f:
        assert_rgb(load_image(f), (40, 30))
    assert_rgb(load_image(bytearray(path.read_bytes())), (40, 30))


def test_callers_pil_image_is_not_modified():
    image = Image.new("RGBA", (2000, 100), (10, 20, 30, 40))
    out = load_image(image)
    assert image.mode == "RGBA" and image.size == (2000, 100)
    assert out is not image and out.size == (1024, 51)
    rgb = Image.new("RGB", (20, 20))
    assert load_image(rgb) is not rgb


# ---------------------------------------------------------------------- numpy input


def test_float_arrays():
    unit = np.zeros((16, 16, 3))
    unit[..., 1] = 1.0
    unit[0, 0] = 0.5
    out = np.asarray(load_image(unit))
    assert tuple(out[5, 5]) == (0, 255, 0) and tuple(out[0, 0]) == (128, 128, 128)

    wide = np.linspace(-5.0, 5.0, 16 * 16, dtype=np.float32).reshape(16, 16)
    out = np.asarray(load_image(wide))
    assert out.shape == (16, 16, 3) and out.min() == 0 and out.max() == 255

    for bad in (np.nan, np.inf):
        broken = unit.copy()
        broken[3, 3, 0] = bad
        with pytest.raises(InvalidInputError, match="NaN or infinite"):
            load_image(broken)


def test_integer_bool_and_alpha_arrays():
    u16 = np.tile(np.linspace(100, 900, 20).astype(np.uint16), (10, 1))
    out = np.asarray(load_image(u16))[..., 0]
    assert out[0, 0] == 0 and out[0, -1] == 255

    wide_int = np.full((10, 10, 3), 200, dtype=np.int64)  # 8-bit values in a wide type
    assert tuple(np.asarray(load_image(wide_int))[0, 0]) == (200, 200, 200)

    mask = np.zeros((10, 10), dtype=bool)
    mask[:5] = True
    assert tuple(np.asarray(load_image(mask))[0, 0]) == (255, 255, 255)

    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent -> white
    assert tuple(np.asarray(load_image(rgba))[0, 0]) == (255, 255, 255)

    rgba16 = np.zeros((10, 10, 4), dtype=np.uint16)
    rgba16[..., 3] = 65535  # opaque black
    assert tuple(np.asarray(load_image(rgba16))[0, 0]) == (0, 0, 0)

    assert load_image(np.zeros((12, 10, 1), dtype=np.uint8)).size == (10, 12)


def test_bad_arrays():
    rejected(np.zeros((10, 10, 2), dtype=np.uint8), r"array shape \(10, 10, 2\)")
    rejected(np.zeros((2, 10, 10, 3), dtype=np.uint8), "array shape")
    rejected(np.zeros((10, 10), dtype=np.complex64), "array type")
    rejected(np.zeros((10, 10), dtype=object), "array type")
    rejected(np.zeros((4, 10, 3), dtype=np.uint8), "too small")


# ------------------------------------------------------------------------ parameters


@pytest.mark.parametrize("value", [0, 0.5, 1, MAX_GAMMA, "0.7", np.float32(0.25)])
def test_gamma_accepts(value):
    assert validate_gamma(value) == pytest.approx(float(value))


@pytest.mark.parametrize(
    "value, message",
    [
        (math.nan, "finite"),
        (math.inf, "finite"),
        (-math.inf, "finite"),
        (-1, "between 0 and 2"),
        (2.5, "between 0 and 2"),
        ("abc", "must be a number"),
        (None, "must be a number"),
        (True, "must be a number"),
        ([0.5], "must be a number"),
        (10**400, "finite"),
        ("1e999", "finite"),
    ],
)
def test_gamma_rejects(value, message):
    with pytest.raises(InvalidInputError, match=f"^gamma .*{message}"):
        validate_gamma(value)


def test_gamma_custom_name():
    with pytest.raises(InvalidInputError, match="^finer_gamma must"):
        validate_gamma(-1, name="finer_gamma")


def test_top_t():
    assert validate_top_t(3, 10) == (3, None)
    assert validate_top_t(3.0, 10) == (3, None)
    assert validate_top_t(9, 10) == (9, None)
    t, notice = validate_top_t(20, 5)
    assert t == 4 and notice == "T=20 is more than the 4 other classes; using T=4."
    assert validate_top_t(3, 2) == (1, "T=3 is more than the 1 other class; using T=1.")
    for bad, message in [
        (0, "at least 1"),
        (-2, "at least 1"),
        (2.5, "whole number"),
        (math.nan, "finite"),
        ("x", "must be a number"),
    ]:
        with pytest.raises(InvalidInputError, match=f"^T .*{message}"):
            validate_top_t(bad, 10)
    with pytest.raises(InvalidInputError, match="At least 2 classes"):
        validate_top_t(1, 1)


def test_index():
    assert validate_index(0, name="layer") == 0
    assert validate_index("3", name="layer") == 3
    assert validate_index(4.0, name="layer") == 4
    for bad, message in [(-1, "at least 0"), (1.5, "whole number"), ("top", "must be a number")]:
        with pytest.raises(InvalidInputError, match=f"^layer .*{message}"):
            validate_index(bad, name="layer")


@pytest.mark.parametrize("value", [-0.1, 1.01, math.nan, "high"])
def test_opacity_rejects(value):
    with pytest.raises(InvalidInputError, match="^opacity "):
        validate_opacity(value)


def test_opacity_accepts():
    assert (
        validate_opacity(0) == 0.0 and validate_opacity(1) == 1.0 and validate_opacity("0.5") == 0.5
    )


def test_prompt():
    assert validate_prompt("  a photo of a\n  crow\t ") == "a photo of a crow"
    assert validate_prompt("null\x00byte") == "null byte"
    for empty in ("", "   ", "\n\t", "\x00"):
        with pytest.raises(InvalidInputError, match="^prompt is empty"):
            validate_prompt(empty)
    with pytest.raises(InvalidInputError, match=r"too long: 2000 characters \(max 300\)"):
        validate_prompt("x" * 2000)
    assert validate_prompt("x" * MAX_PROMPT_CHARS) == "x" * MAX_PROMPT_CHARS
    with pytest.raises(InvalidInputError, match="must be text"):
        validate_prompt(12)


def test_parse_prompts():
    assert parse_prompts("crow, raven ,rook") == ["crow", "raven", "rook"]
    assert parse_prompts("a red, white bird\na crow\n\n") == ["a red, white bird", "a crow"]
    assert parse_prompts("crow, Crow, raven, crow ,") == ["crow", "raven"]
    assert parse_prompts(["crow", " raven ", "", "CROW"]) == ["crow", "raven"]
    assert parse_prompts("only one,\n") == ["only one"]
    for empty in ("", " , ,\n", [], None, ["", "  "]):
        with pytest.raises(InvalidInputError, match="at least one prompt"):
            parse_prompts(empty)
    many = ", ".join(f"bird {i}" for i in range(MAX_PROMPTS + 4))
    with pytest.raises(InvalidInputError, match=r"Too many prompts: 20 \(max 16\)"):
        parse_prompts(many)
    assert len(parse_prompts(many, max_prompts=20)) == 20
    with pytest.raises(InvalidInputError, match="prompt 2 is too long"):
        parse_prompts(["ok", "y" * 2000])
    with pytest.raises(InvalidInputError, match="at least 2 different"):
        parse_prompts("crow, CROW", min_prompts=2)
    with pytest.raises(InvalidInputError, match="prompts must be text"):
        parse_prompts(42)
