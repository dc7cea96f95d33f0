"""The explanation service: caching, live re-render, references, thread safety, bad input."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from app.explain.inputs import InvalidInputError
from app.explain.service import ExplainSettings, ExplanationService


@pytest.fixture
def service(tiny_adapter):
    return ExplanationService(lambda name: tiny_adapter)


def test_maps_come_back_at_image_size_with_top_predictions(service, rgb_image):
    result = service.explain("tiny", rgb_image, ExplainSettings(gamma=0.6, top_t=3))
    assert result.cam.shape == result.finer.shape == (48, 64)
    assert result.cam_overlay.shape == (48, 64, 3) and result.cam_overlay.dtype == np.uint8
    assert result.target.index == result.top[0].index
    assert len(result.references) == 3 and result.target.index not in {
        r.index for r in result.references
    }
    assert abs(sum(r.weight for r in result.references) - 1) < 1e-6
    assert result.raw_maps().shape == (2, 48, 64)
    assert result.composite().size[0] > 2 * 64


def test_slider_changes_rerender_from_cache_without_running_the_model(
    service, tiny_adapter, rgb_image
):
    first = service.explain("tiny", rgb_image, ExplainSettings(gamma=0.6))
    assert tiny_adapter.trunk_calls == 1 and not first.cached
    for settings in (
        ExplainSettings(gamma=1.0),
        ExplainSettings(gamma=0.3, top_t=5, weighting="probability"),
        ExplainSettings(reference_mode="weights", opacity=0.9),
        ExplainSettings(target="Class 2", method="layercam"),
        ExplainSettings(reference_mode="manual", manual_references=("Class 4", 5)),
    ):
        again = service.explain("tiny", rgb_image, settings)
        assert again.cached
    assert tiny_adapter.trunk_calls == 1


def test_gamma_zero_gives_identical_panels_and_gamma_changes_only_finer(service, rgb_image):
    zero = service.explain("tiny", rgb_image, ExplainSettings(gamma=0.0))
    np.testing.assert_array_equal(zero.cam, zero.finer)
    strong = service.explain("tiny", rgb_image, ExplainSettings(gamma=1.0))
    np.testing.assert_array_equal(zero.cam, strong.cam)
    assert np.abs(strong.finer - zero.finer).max() > 1e-3


def test_t_larger_than_class_count_is_clamped_with_a_notice(service, rgb_image):
    result = service.explain("tiny", rgb_image, ExplainSettings(top_t=50))
    assert len(result.references) == 5
    assert any("T=50" in notice for notice in result.notices)


def test_score_cam_through_the_service_is_cached_per_entry(service, tiny_adapter, rgb_image):
    first = service.explain("tiny", rgb_image, ExplainSettings(method="scorecam", gamma=0.5))
    second = service.explain("tiny", rgb_image, ExplainSettings(method="scorecam", gamma=1.0))
    assert second.cached and tiny_adapter.trunk_calls == 2  # the entry + one batch of 16 masks
    assert not np.array_equal(first.finer, second.finer)


@pytest.mark.parametrize(
    "settings, message",
    [
        (ExplainSettings(gamma=float("nan")), "gamma"),
        (ExplainSettings(gamma=-1), "gamma"),
        (ExplainSettings(top_t=0), "T"),
        (ExplainSettings(method="nope"), "method"),
        (ExplainSettings(target="Not A Class"), "unknown class"),
        (ExplainSettings(target=99), "out of range"),
        (ExplainSettings(reference_mode="manual"), "manual"),
        (ExplainSettings(reference_mode="psychic"), "reference mode"),
        (ExplainSettings(opacity=3), "opacity"),
    ],
)
def test_bad_settings_raise_clear_value_errors(service, rgb_image, settings, message):
    with pytest.raises(ValueError, match=message):
        service.explain("tiny", rgb_image, settings)
    assert service.explain("tiny", rgb_image).cam.shape == (48, 64)  # still serving


def test_bad_image_raises_invalid_input(service):
    with pytest.raises(InvalidInputError):
        service.explain("tiny", b"not an image at all")


def test_cache_is_bounded(tiny_adapter):
    service = ExplanationService(lambda name: tiny_adapter, max_entries=3)
    rng = np.random.default_rng(3)
    for _ in range(8):
        service.explain("tiny", Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)))
    assert len(service.entries) == 3


def test_two_threads_on_one_model_get_independent_correct_results(tiny_adapter):
    rng = np.random.default_rng(5)
    images = [Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)) for _ in range(2)]
    expected = [ExplanationService(lambda n: tiny_adapter).explain("t", im).finer for im in images]
    shared = ExplanationService(lambda n: tiny_adapter)
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            for _ in range(5):
                shared.entries.clear()
                results[index] = shared.explain("t", images[index]).finer
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for index in range(2):
        np.testing.assert_allclose(results[index], expected[index], atol=1e-6)


def test_fgcam_through_the_service_equals_cam_at_the_target_layer(service, rgb_image, tiny_adapter):
    tiny_adapter.fgcam_layers = lambda: tiny_adapter.net[:6]
    at_layer = ExplainSettings(gamma=0.8, fgcam=True, fgcam_stop=6)
    high = service.explain("tiny", rgb_image, at_layer)
    plain = service.explain("tiny", rgb_image, ExplainSettings(gamma=0.8))
    np.testing.assert_allclose(high.cam, plain.cam, atol=1e-4)
    np.testing.assert_allclose(high.finer, plain.finer, atol=1e-4)
    full = service.explain("tiny", rgb_image, ExplainSettings(gamma=0.8, fgcam=True))
    assert full.finer.shape == (48, 64) and not np.allclose(full.finer, plain.finer, atol=1e-2)
    assert [label for label, _ in service.fgcam_stops("tiny")][:2] == [
        "input (full resolution)",
        "3 (MaxPool2d)",
    ]


def test_fgcam_on_a_model_without_a_plain_stack_is_a_clear_error(service, rgb_image):
    with pytest.raises(InvalidInputError, match="FG-CAM needs a plain CNN"):
        service.explain("tiny", rgb_image, ExplainSettings(fgcam=True))


def test_adapter_notices_reach_the_explanation(service, tiny_adapter, rgb_image):
    tiny_adapter.notices = ("Prompt 2 was truncated to 77 tokens.",)
    result = service.explain("tiny", rgb_image)
    assert result.notices[0] == "Prompt 2 was truncated to 77 tokens."


def test_large_images_are_capped_to_the_configured_side(tiny_adapter):
    service = ExplanationService(lambda name: tiny_adapter, max_side=40)
    big = Image.fromarray(np.zeros((100, 200, 3), dtype=np.uint8))
    assert service.explain("tiny", big).cam.shape == (20, 40)


def test_cached_says_whether_explaining_runs_no_model():
    """What lets a slider move skip the queue: True only when entry and gradients are cached."""
    from app.config import Settings
    from app.models.registry import ModelRegistry
    from app.synthbirds import render_sample

    registry = ModelRegistry(Settings(device="cpu", offline=True, models=("demo-cnn",)))
    service = ExplanationService(registry.get)
    image = render_sample(0, 3).image
    settings = ExplainSettings(gamma=0.3, top_t=1)
    assert not service.cached("demo-cnn", image, settings)
    service.explain("demo-cnn", image, settings)
    assert service.cached("demo-cnn", image, replace(settings, gamma=0.9, opacity=0.2))
    assert not service.cached("demo-cnn", image, replace(settings, top_t=3))  # new references
    assert not service.cached("demo-cnn", image, replace(settings, method="scorecam"))
    service.explain("demo-cnn", image, replace(settings, method="scorecam"))
    assert service.cached("demo-cnn", image, replace(settings, method="scorecam", gamma=1.0))
    assert not service.cached("demo-cnn", image, replace(settings, fgcam=True))
    service.entries.clear()
    assert not service.cached("demo-cnn", image, settings)
