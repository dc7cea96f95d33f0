"""Auto-γ and the γ strip: from the cached gradients, at most one batched model forward."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.explain.gamma import AUTO_CANDIDATES, GAMMA_GRID
from app.explain.methods import feature_grid as entry_module
from app.explain.render import DISPLAY_MIN_SIDE
from app.explain.service import ExplainSettings, ExplanationService


@pytest.fixture
def counted(tiny_adapter, monkeypatch):
    """The service over the tiny adapter, with counters of gradient entries (model runs) and of
    plain forwards (``logits``), as ``(service, adapter, calls)``."""
    calls = {"entries": 0, "logits": 0, "batch": []}
    original_entry = entry_module.compute_entry
    original_logits = type(tiny_adapter).logits

    def entry(*args, **kwargs):
        calls["entries"] += 1
        return original_entry(*args, **kwargs)

    def logits(self, x):
        calls["logits"] += 1
        calls["batch"].append(int(x.shape[0]))
        return original_logits(self, x)

    monkeypatch.setattr(entry_module, "compute_entry", entry)
    monkeypatch.setattr(type(tiny_adapter), "logits", logits)
    return ExplanationService(lambda name: tiny_adapter), tiny_adapter, calls


@pytest.fixture
def picture() -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))


def test_strip_and_slider_moves_run_no_model_call(counted, picture):
    service, adapter, calls = counted
    service.explain("tiny", picture, ExplainSettings(gamma=0.6))
    assert calls["entries"] == 1
    trunks = adapter.trunk_calls
    strip = service.gamma_strip("tiny", picture, ExplainSettings())
    for gamma in (0.0, 0.35, 1.0):
        for opacity in (0.2, 0.9):
            service.explain("tiny", picture, ExplainSettings(gamma=gamma, opacity=opacity, top_t=2))
    assert (calls["entries"], calls["logits"], adapter.trunk_calls) == (1, 0, trunks)
    assert strip.gammas == GAMMA_GRID and strip.maps.shape == (len(GAMMA_GRID), 40, 48)
    assert strip.auto is None
    # the strip's maps are the panels' Finer maps at those γ
    at_04 = service.explain("tiny", picture, ExplainSettings(gamma=0.4))
    np.testing.assert_allclose(strip.maps[GAMMA_GRID.index(0.4)], at_04.finer, atol=1e-6)
    np.testing.assert_allclose(strip.maps[0], at_04.cam, atol=1e-6)


def test_auto_gamma_is_deterministic_and_runs_one_batched_forward(counted, picture):
    service, adapter, calls = counted
    service.explain("tiny", picture, ExplainSettings())
    first = service.gamma_strip("tiny", picture, ExplainSettings(), auto=True)
    assert calls["logits"] == 1 and calls["batch"] == [len(AUTO_CANDIDATES)]
    assert calls["entries"] == 1  # the gradients came from the cache
    second = service.gamma_strip("tiny", picture, ExplainSettings(), auto=True)
    assert first.auto == second.auto
    assert first.auto.gamma in AUTO_CANDIDATES and first.auto.gammas == AUTO_CANDIDATES
    best = int(np.argmax(first.auto.drops))
    assert first.auto.gamma == AUTO_CANDIDATES[best]
    assert "γ=0.6" in first.auto.reason


def test_auto_gamma_on_a_fresh_image_runs_the_model_once_for_gradients(counted, picture):
    service, adapter, calls = counted
    service.gamma_strip("tiny", picture, ExplainSettings(top_t=1), auto=True)
    assert (calls["entries"], calls["logits"]) == (1, 1)


def test_composite_has_titles_that_fit_large_panels_and_the_strip(counted, picture):
    service, _, _ = counted
    settings = ExplainSettings(gamma=0.6, top_t=5)
    explanation = service.explain("tiny", picture, settings)
    strip = service.gamma_strip("tiny", picture, settings, auto=True)
    plain = explanation.composite()
    with_strip = explanation.composite(strip)
    assert with_strip.width == plain.width >= 2 * DISPLAY_MIN_SIDE
    assert with_strip.height > plain.height + 50  # the strip row under the panels
    # titles wrap within their own panel: the gap between the panels stays white above them
    pixels = np.asarray(plain.convert("L"))
    panel_width = (plain.width - 8) // 2
    assert (pixels[:, panel_width : panel_width + 8] == 255).all()
