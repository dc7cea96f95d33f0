"""Colour maps: jet (the paper's) and the perceptually uniform viridis, inferno and turbo, in the
overlays, the γ strip, the composite (with its colour bar) and the CLI; colours only, so a new
map never runs the model."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image
from test_cli import MODEL, _image, tiny_model  # noqa: F401 - the CLI's registered tiny model

from app.cli import main
from app.cli.options import COLORMAP_NAMES
from app.explain.inputs import InvalidInputError
from app.explain.render import COLORMAPS, colour_bar, overlay, validate_colormap
from app.explain.service import ExplainSettings, ExplanationService


def test_the_cli_offers_exactly_the_render_colour_maps_jet_first():
    assert tuple(COLORMAPS) == COLORMAP_NAMES and COLORMAP_NAMES[0] == "jet"


def test_every_map_colours_differently_and_unknown_names_are_refused():
    image = np.full((8, 8, 3), 128, np.uint8)
    cam = np.tile(np.linspace(0, 1, 8, dtype=np.float32), (8, 1))
    pictures = {name: overlay(image, cam, 1.0, name) for name in COLORMAPS}
    assert len({picture.tobytes() for picture in pictures.values()}) == len(COLORMAPS)
    hot = cv2.applyColorMap(np.array([[255]], np.uint8), COLORMAPS["viridis"])[0, 0, ::-1]
    assert np.abs(pictures["viridis"][0, -1].astype(int) - hot).max() <= 2  # RGB, not BGR
    assert validate_colormap(None) == "jet" and validate_colormap(" Turbo ") == "turbo"
    with pytest.raises(InvalidInputError, match="Colour map must be one of jet"):
        validate_colormap("rainbow")


def test_colour_bar_runs_from_the_map_low_to_high():
    from PIL import ImageFont

    bar = np.asarray(colour_bar(300, "inferno", ImageFont.load_default(size=14)))
    low, high = (cv2.applyColorMap(np.array([[v]], np.uint8), COLORMAPS["inferno"])[0, 0, ::-1]
                 for v in (0, 255))  # fmt: skip
    assert np.abs(bar[8, 40].astype(int) - low).max() <= 3
    assert np.abs(bar[8, 300 - 41].astype(int) - high).max() <= 3


def test_a_new_map_recolours_panels_strip_and_composite_from_the_cache(tiny_adapter, rgb_image):
    service = ExplanationService(lambda name: tiny_adapter)
    jet = service.explain("tiny", rgb_image, ExplainSettings())
    viridis = service.explain("tiny", rgb_image, ExplainSettings(colormap="viridis"))
    strip = service.gamma_strip("tiny", rgb_image, ExplainSettings(colormap="viridis"))
    assert tiny_adapter.trunk_calls == 1 and viridis.cached  # colours only: no model call
    np.testing.assert_array_equal(jet.finer, viridis.finer)
    assert not np.array_equal(jet.finer_overlay, viridis.finer_overlay)
    expected = overlay(rgb_image_array(rgb_image), strip.maps[2], 0.5, "viridis")
    np.testing.assert_array_equal(strip.overlays()[2], expected)
    plain, with_bar = jet.composite(), viridis.composite(strip)
    bottom = np.asarray(with_bar)[-14]
    assert with_bar.size[1] > plain.size[1]
    assert len({tuple(pixel) for pixel in bottom[40:-40]}) > 50  # a colour ramp, not text
    with pytest.raises(InvalidInputError, match="Colour map"):
        service.explain("tiny", rgb_image, ExplainSettings(colormap="rainbow"))


def rgb_image_array(image: Image.Image | np.ndarray) -> np.ndarray:
    return np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)


def test_cli_colormap_flag_colours_the_overlays(tiny_model, tmp_path):  # noqa: F811
    _image(tmp_path / "x.png", 7)
    pictures = {}
    for name in ("jet", "inferno"):
        out = tmp_path / name
        argv = ["explain", str(tmp_path / "x.png"), "--model", MODEL, "--colormap", name,
                "--out", str(out), "--workers", "0", "--no-progress"]  # fmt: skip
        assert main(argv) == 0
        pictures[name] = np.asarray(Image.open(out / "x" / "gradcam_cam.png"))
    assert not np.array_equal(pictures["jet"], pictures["inferno"])
    with pytest.raises(SystemExit):
        main(["explain", str(tmp_path / "x.png"), "--model", MODEL, "--colormap", "rainbow"])


def test_captions_draw_gamma_as_a_letter_not_a_missing_glyph_box():
    """Pillow's default font has no Greek: "γ=0.6" came out as a box in the composite PNG."""
    from app.explain.render import caption_font

    font = caption_font(14)
    missing = font.getmask("\ue000")  # a private-use code point: the font's missing-glyph box
    gamma = font.getmask("γ")
    assert gamma.getbbox() and bytes(gamma) != bytes(missing)
