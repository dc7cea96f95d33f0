"""The tensor paths (resize on the model's device, maps rendered there) against PIL/numpy.

They run on CUDA by default; forcing them (``FINERCAM_TENSOR_PATH=on``) runs the same code on
the CPU, so each is checked here against the path it replaces: the resized pixels, the demo
models' logits and maps (within the CPU-vs-CUDA tolerance of ``test_cuda``), the overlays, the γ
strip's and the composite PNG (within a level).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from app.config import Settings
from app.explain import render
from app.explain.render import COLORMAPS, finish_maps, overlay, overlay_maps
from app.explain.service import ExplainSettings, ExplanationService
from app.models.preprocess import TENSOR_PATH_ENV, resize_on_device, tensor_path
from app.models.registry import ModelRegistry

EXAMPLE = "assets/examples/red-crowned-bluebird.png"
#: The service's CPU-vs-CUDA tolerance (test_cuda): maps and logits agree this closely.
PARITY_ATOL = 1e-3


@pytest.fixture(scope="module")
def models() -> ModelRegistry:
    return ModelRegistry(Settings(device="cpu", offline=True))


@pytest.fixture(scope="module")
def example() -> Image.Image:
    return Image.open(EXAMPLE).convert("RGB")


def test_the_tensor_path_is_cuda_only_unless_forced(monkeypatch):
    monkeypatch.delenv(TENSOR_PATH_ENV, raising=False)
    assert tensor_path("cuda") and tensor_path(torch.device("cuda:1"))
    assert not tensor_path("cpu")
    monkeypatch.setenv(TENSOR_PATH_ENV, "on")
    assert tensor_path("cpu")
    monkeypatch.setenv(TENSOR_PATH_ENV, "OFF")
    assert not tensor_path("cuda")


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("size", [(224, 224), (96, 64), (448, 320)])
@pytest.mark.parametrize("source", [(128, 128), (1000, 700), (300, 200)])
def test_the_device_resize_gives_pils_pixels_within_two_levels(
    example, interpolation, size, source
):
    image = example.resize(source, Image.BICUBIC)
    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[interpolation]
    want = np.asarray(image.resize(size, resample), dtype=np.float32)
    got = resize_on_device(image, size, torch.device("cpu"), interpolation)
    difference = np.abs(got[0].permute(1, 2, 0).numpy() - want)
    assert got.shape == (1, 3, size[1], size[0])
    assert difference.max() <= 2 and difference.mean() < 0.05


@pytest.mark.parametrize("name", ["demo-cnn", "demo-vit", "demo-tinyclip-species", "demo-tinyclip"])
def test_tensor_preprocessing_keeps_the_demo_models_logits_and_maps(
    models, example, monkeypatch, name
):
    upload = example.resize((1000, 700), Image.BICUBIC)  # downscaled, unlike the 128 px example
    model = models.get(name)
    runs = {}
    for choice in ("off", "on"):
        monkeypatch.setenv(TENSOR_PATH_ENV, choice)
        service = ExplanationService(models.get)
        if name == "demo-tinyclip":
            result = service.explain_concepts(name, upload, "a bird with a red crown", ["a bird"])
        else:
            result = service.explain(name, upload, ExplainSettings(gamma=0.6, top_t=3))
        runs[choice] = (model.preprocess(upload), result)
    (x_pil, pil), (x_tensor, tensor) = runs["off"], runs["on"]
    assert not torch.equal(x_pil, x_tensor)  # the tensor path did run
    assert tensor.target.index == pil.target.index
    assert [r.index for r in tensor.references] == [r.index for r in pil.references]
    np.testing.assert_allclose(
        [s.logit for s in (tensor.target, *tensor.references)],
        [s.logit for s in (pil.target, *pil.references)],
        atol=PARITY_ATOL,
    )
    np.testing.assert_allclose(tensor.cam, pil.cam, atol=PARITY_ATOL)
    np.testing.assert_allclose(tensor.finer, pil.finer, atol=PARITY_ATOL)


@pytest.mark.parametrize("grid", [(14, 14), (7, 10), (300, 400)])
def test_maps_finished_on_the_device_match_numpy(monkeypatch, grid):
    raw = np.random.default_rng(0).standard_normal((2, *grid)).astype(np.float32)
    want = finish_maps(raw, (256, 192))
    monkeypatch.setenv(TENSOR_PATH_ENV, "on")
    got = finish_maps(raw, (256, 192), "cpu")
    assert got.shape == want.shape == (2, 192, 256) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("colormap", list(COLORMAPS))
@pytest.mark.parametrize("opacity", [0.0, 0.35, 0.6, 1.0])
def test_overlays_rendered_on_the_device_are_within_a_level(monkeypatch, colormap, opacity):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    cam = finish_maps(rng.standard_normal((1, 7, 7)).astype(np.float32), (128, 96))[0]
    want = overlay(image, cam, opacity, colormap)
    monkeypatch.setenv(TENSOR_PATH_ENV, "on")
    got = overlay(image, cam, opacity, colormap, "cpu")
    assert got.dtype == np.uint8 and got.shape == want.shape
    assert np.abs(got.astype(int) - want).max() <= 1


def test_the_composite_png_rendered_on_the_device_is_within_a_level(models, example, monkeypatch):
    settings = ExplainSettings(gamma=0.6, top_t=3, opacity=0.45, colormap="turbo")
    numpy_render = ExplanationService(models.get).explain("demo-cnn", example, settings)
    monkeypatch.setattr(render, "tensor_path", lambda device: True)  # rendering only
    device_render = ExplanationService(models.get).explain("demo-cnn", example, settings)
    np.testing.assert_allclose(device_render.cam, numpy_render.cam, atol=1e-5)
    want = np.asarray(numpy_render.composite(), dtype=int)
    got = np.asarray(device_render.composite(), dtype=int)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1


@pytest.mark.parametrize("name", ["demo-cnn", "demo-vit"])
def test_the_gamma_strip_renders_on_the_device_within_a_level(models, example, monkeypatch, name):
    settings = ExplainSettings(top_t=3, opacity=0.45, colormap="turbo")
    monkeypatch.setenv(TENSOR_PATH_ENV, "off")
    numpy_strip = ExplanationService(models.get).gamma_strip(name, example, settings)
    monkeypatch.setenv(TENSOR_PATH_ENV, "on")
    device_strip = ExplanationService(models.get).gamma_strip(name, example, settings)
    np.testing.assert_allclose(device_strip.maps, numpy_strip.maps, atol=PARITY_ATOL)
    want = overlay_maps(device_strip.image, device_strip.maps, 0.45, "turbo")  # numpy
    got = np.stack(device_strip.overlays(0.45))
    assert got.dtype == np.uint8 and got.shape == (len(device_strip.gammas), *want.shape[1:])
    assert np.abs(got.astype(int) - want).max() <= 1


def test_the_gamma_strip_is_one_device_call_and_no_numpy_with_the_tensor_path_on(
    models, example, monkeypatch
):
    def numpy_rendering(*args, **kwargs):
        raise AssertionError("numpy rendering with the tensor path on")

    monkeypatch.setenv(TENSOR_PATH_ENV, "on")
    monkeypatch.setattr(render, "scale_cam_image", numpy_rendering)
    monkeypatch.setattr(render, "show_cam_on_image", numpy_rendering)
    batches = []
    on_device = render._overlays_on_device

    def counted(image, cams, *rest):
        batches.append(cams.shape)
        return on_device(image, cams, *rest)

    monkeypatch.setattr(render, "_overlays_on_device", counted)
    strip = ExplanationService(models.get).gamma_strip("demo-cnn", example, ExplainSettings())
    pictures = strip.overlays()
    assert batches == [strip.maps.shape]  # every γ in one call
    assert len(pictures) == len(strip.gammas) == strip.maps.shape[0] > 1


def test_the_compare_grid_is_coloured_in_one_device_call_within_a_level(
    models, example, monkeypatch
):
    from app.ui.trust import comparison_gallery

    monkeypatch.setenv(TENSOR_PATH_ENV, "on")
    comparison = ExplanationService(models.get).compare_methods("demo-cnn", example)
    batches = []
    on_device = render._overlays_on_device

    def counted(image, cams, *rest):
        batches.append(cams.shape[0])
        return on_device(image, cams, *rest)

    monkeypatch.setattr(render, "_overlays_on_device", counted)
    gallery = comparison_gallery(comparison, 0.5, "jet")
    assert batches == [len(comparison.maps)] and len(gallery) == len(comparison.maps) > 1
    want = overlay_maps(comparison.image, comparison.maps, 0.5, "jet")  # numpy
    got = np.stack([picture for picture, _ in gallery])
    assert np.abs(got.astype(int) - want).max() <= 1
