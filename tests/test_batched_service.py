"""``ExplanationService.prepare_batch``: one forward and one batched backward for many images,
with the per-image results of explaining them one at a time (on real offline models); and
``faithfulness_batch``: the faithfulness of many images' maps in one forward of their masked
images, with the per-image numbers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from app.config import Settings
from app.explain import gradients
from app.explain.inputs import InvalidInputError
from app.explain.service import ExplainSettings, ExplanationService
from app.models.registry import ModelRegistry
from app.synthbirds import render_sample

#: Batched convolutions and matrix products may sum in another order than single ones.
TOLERANCE = 1e-5
#: The faithfulness numbers of a batch against one image's: the masked images are the same,
#: only the rows sharing their forward differ.
SCORE_TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    return ModelRegistry(Settings(device="cpu", offline=True, models=("demo-cnn", "demo-vit")))


def _images() -> list:
    """Three birds of different sizes (each is resized to the model's input)."""
    images = [render_sample(i, 3).image for i in range(3)]
    return [images[0], images[1].resize((96, 80)), images[2].resize((140, 100))]


def _same(one, other) -> None:
    assert one.target.index == other.target.index
    assert [r.index for r in one.references] == [r.index for r in other.references]
    for ours, theirs in zip(one.references, other.references, strict=True):
        assert ours.weight == pytest.approx(theirs.weight, abs=TOLERANCE)
    assert one.target.probability == pytest.approx(other.target.probability, abs=TOLERANCE)
    assert one.cam.shape == other.cam.shape
    np.testing.assert_allclose(one.cam, other.cam, atol=TOLERANCE)
    np.testing.assert_allclose(one.finer, other.finer, atol=TOLERANCE)


@pytest.mark.parametrize(
    ("model", "settings"),
    [
        ("demo-cnn", ExplainSettings(method="gradcam")),
        ("demo-cnn", ExplainSettings(method="gradcam++", weighting="probability")),
        ("demo-cnn", ExplainSettings(method="layercam", reference_mode="weights")),
        ("demo-cnn", ExplainSettings(method="gradcam", fgcam=True)),
        ("demo-cnn", ExplainSettings(method="scorecam")),
        ("demo-vit", ExplainSettings(method="gradcam")),
        ("demo-vit", ExplainSettings(method="legrad")),
        ("demo-vit", ExplainSettings(method="attention-gradient")),
    ],
    ids=lambda value: value if isinstance(value, str) else value.method + "-fgcam" * value.fgcam,
)
def test_a_prepared_batch_explains_each_image_as_one_at_a_time(registry, model, settings):
    settings = replace(settings, gamma=0.6, top_t=3)
    images = _images()
    alone = ExplanationService(registry.get)
    expected = [alone.explain(model, image, settings) for image in images]

    batched = ExplanationService(registry.get)
    batched.prepare_batch(model, images, settings)
    for image, want in zip(images, expected, strict=True):
        got = batched.explain(model, image, settings)
        assert got.cached  # the entry came from the batch
        _same(got, want)
        strip = batched.gamma_strip(model, image, settings)
        np.testing.assert_allclose(
            strip.maps, alone.gamma_strip(model, image, settings).maps, atol=TOLERANCE
        )


def test_a_batch_runs_the_trunk_once_and_one_backward(registry, monkeypatch):
    """Grid methods: one trunk pass for the batch, and the gradients of every image's target
    and references from one autograd call; explaining afterwards runs neither again."""
    model = registry.get("demo-cnn")
    trunk, passes, backwards = model.trunk, [], []
    monkeypatch.setattr(model, "trunk", lambda x: passes.append(len(x)) or trunk(x))
    row_gradients = gradients.row_gradients
    monkeypatch.setattr(
        gradients, "row_gradients", lambda *a: backwards.append(a[2]) or row_gradients(*a)
    )
    service = ExplanationService(registry.get)
    settings = ExplainSettings(top_t=3)
    images = _images()
    service.prepare_batch("demo-cnn", images, settings)
    assert passes == [3]
    assert len(backwards) == 1 and sorted(backwards[0]) == [0, 1, 2]
    assert all(len(classes) == 4 for classes in backwards[0].values())  # target + T
    for method in ("gradcam", "layercam", "gradcam++"):  # one entry serves them all
        service.prepare_batch("demo-cnn", images, replace(settings, method=method))
        for image in images:
            service.explain("demo-cnn", image, replace(settings, method=method, gamma=0.3))
    assert passes == [3] and len(backwards) == 1


def test_images_preprocessed_to_different_sizes_get_one_pass_per_size(tiny_adapter, monkeypatch):
    def preprocess(image: Image.Image) -> torch.Tensor:  # narrow images to 32², wide to 40²
        side = 32 if image.width < 60 else 40
        array = np.asarray(image.convert("RGB").resize((side, side)), dtype=np.float32) / 255
        return torch.from_numpy(array).permute(2, 0, 1)[None] * 2 - 1

    monkeypatch.setattr(tiny_adapter, "preprocess", preprocess)
    passes = []
    trunk = tiny_adapter.trunk
    monkeypatch.setattr(tiny_adapter, "trunk", lambda x: passes.append(tuple(x.shape)) or trunk(x))
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 255, (40, width, 3), dtype=np.uint8))
        for width in (48, 80, 50, 90, 52)
    ]
    service = ExplanationService(lambda name: tiny_adapter)
    service.prepare_batch("tiny", images)
    assert sorted(passes) == [(2, 3, 40, 40), (3, 3, 32, 32)]
    alone = ExplanationService(lambda name: tiny_adapter)
    for image in images:
        _same(service.explain("tiny", image), alone.explain("tiny", image))


def test_an_image_that_cannot_be_prepared_fails_alone_in_its_own_call(registry):
    images = _images()
    batch = [images[0], b"not an image", images[1]]
    service = ExplanationService(registry.get)
    service.prepare_batch("demo-cnn", batch, ExplainSettings())
    assert service.cached("demo-cnn", images[0]) and service.cached("demo-cnn", images[1])
    with pytest.raises(InvalidInputError):
        service.explain("demo-cnn", b"not an image")
    assert service.explain("demo-cnn", images[1]).cached


def test_settings_that_cannot_run_leave_the_error_to_each_image(registry):
    """An attention method on a CNN: nothing is prepared, each image's call says why."""
    service = ExplanationService(registry.get)
    settings = ExplainSettings(method="legrad")
    service.prepare_batch("demo-cnn", _images(), settings)
    assert len(service.entries) == 0
    with pytest.raises(InvalidInputError, match="attention"):
        service.explain("demo-cnn", _images()[0], settings)


def _count_logits(monkeypatch, model) -> list[int]:
    """Batch sizes of ``model.logits`` calls (the no-grad forwards) from now on."""
    calls: list[int] = []
    plain = model.logits
    monkeypatch.setattr(model, "logits", lambda x: calls.append(len(x)) or plain(x))
    return calls


def _same_scores(one, other) -> None:
    assert (one.target, one.references, one.pixels_masked) == (
        other.target,
        other.references,
        other.pixels_masked,
    )
    for ours, theirs in ((one.cam, other.cam), (one.finer, other.finer)):
        assert ours.relative_drop == pytest.approx(theirs.relative_drop, abs=SCORE_TOLERANCE)
        assert ours.probability_drop == pytest.approx(theirs.probability_drop, abs=SCORE_TOLERANCE)
        assert ours.empty == theirs.empty


@pytest.mark.parametrize("model", ["demo-cnn", "demo-vit"])
def test_a_batch_is_scored_in_one_forward_with_the_per_image_numbers(registry, model, monkeypatch):
    settings = ExplainSettings(gamma=0.6, top_t=3)
    images = _images()
    alone = ExplanationService(registry.get)
    alone.prepare_batch(model, images, settings)  # the same unmasked logits as the batch's
    expected = [alone.faithfulness(model, image, settings) for image in images]

    batched = ExplanationService(registry.get)
    batched.prepare_batch(model, images, settings)
    calls = _count_logits(monkeypatch, registry.get(model))
    scores = batched.faithfulness_batch(model, images, [settings])
    assert calls == [3 * 2]  # every image's CAM and Finer masked images, together
    for (got,), want, image in zip(scores, expected, images, strict=True):
        _same_scores(got, want)
        again = batched.faithfulness(model, image, settings)
        assert again.cached and again.finer == got.finer
    assert calls == [3 * 2]


def test_a_batch_scores_every_settings_and_size_and_leaves_bad_images(tiny_adapter, monkeypatch):
    """Inputs of two sizes at two γ: one forward per size; an unreadable image is left to its
    own call."""

    def preprocess(image: Image.Image) -> torch.Tensor:  # narrow images to 32², wide to 40²
        side = 32 if image.width < 60 else 40
        array = np.asarray(image.convert("RGB").resize((side, side)), dtype=np.float32) / 255
        return torch.from_numpy(array).permute(2, 0, 1)[None] * 2 - 1

    monkeypatch.setattr(tiny_adapter, "preprocess", preprocess)
    rng = np.random.default_rng(1)
    images = [
        Image.fromarray(rng.integers(0, 255, (40, width, 3), dtype=np.uint8))
        for width in (48, 80, 50)
    ]
    settings = [ExplainSettings(gamma=gamma, top_t=2) for gamma in (0.3, 1.0)]
    service = ExplanationService(lambda name: tiny_adapter)
    calls = _count_logits(monkeypatch, tiny_adapter)
    scores = service.faithfulness_batch("tiny", [*images, b"not an image"], settings, 0.1)
    assert sorted(calls) == [1 * 2 * 2, 2 * 2 * 2]  # images x γ x maps, per input size
    assert scores[-1] == [None, None]
    alone = ExplanationService(lambda name: tiny_adapter)
    for row, image in zip(scores[:-1], images, strict=True):
        for got, each in zip(row, settings, strict=True):
            _same_scores(got, alone.faithfulness("tiny", image, each, 0.1))
    with pytest.raises(InvalidInputError):
        service.faithfulness("tiny", b"not an image", settings[0])
