"""Live faithfulness and the method comparison: one batched forward, cached, the CLI's numbers."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from app.explain import metrics
from app.explain.faithfulness import Faithfulness, MapScore, maps_at_input, score_maps
from app.explain.inputs import InvalidInputError
from app.explain.methods import available_methods
from app.explain.service import ExplainSettings, ExplanationService

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def counted(tiny_adapter):
    """The tiny adapter with its ``logits`` calls (the no-grad forwards) counted by batch size."""
    calls: list[int] = []
    plain = tiny_adapter.logits

    def logits(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return plain(x)

    tiny_adapter.logits = logits
    return tiny_adapter, calls


def test_faithfulness_is_one_batched_forward_of_the_masked_maps_then_cached(counted, rgb_image):
    adapter, calls = counted
    service = ExplanationService(lambda name: adapter)
    settings = ExplainSettings(gamma=0.8, top_t=3)
    service.explain("tiny", rgb_image, settings)
    calls.clear()
    first = service.faithfulness("tiny", rgb_image, settings)
    assert calls == [2] and not first.cached  # CAM and Finer masked together, nothing else
    recoloured = ExplainSettings(gamma=0.8, top_t=3, opacity=0.9, colormap="viridis")
    again = service.faithfulness("tiny", rgb_image, recoloured)
    assert calls == [2] and again.cached and again.finer == first.finer
    other = service.faithfulness("tiny", rgb_image, ExplainSettings(gamma=0.2, top_t=3))
    assert calls == [2, 2] and other.cam == first.cam and other.finer != first.finer
    assert service.faithfulness("tiny", rgb_image, settings, top_fraction=0.2).pixels_masked == 205


def test_live_numbers_are_the_metrics_of_the_maps_on_screen(tiny_adapter, rgb_image):
    service = ExplanationService(lambda name: tiny_adapter)
    settings = ExplainSettings(gamma=0.6, top_t=2, method="layercam")
    shown = service.explain("tiny", rgb_image, settings)
    live = service.faithfulness("tiny", rgb_image, settings, top_fraction=0.1)
    x = tiny_adapter.preprocess(shown_image := service._load(rgb_image).image)
    assert shown_image.size == (64, 48)
    expected = metrics.relative_confidence_drop(
        tiny_adapter.logits, x, maps_at_input(shown.raw_maps(), x), shown.target.index,
        [r.index for r in shown.references], top_fraction=0.1,
    )  # fmt: skip
    got = [live.cam.relative_drop, live.finer.relative_drop]
    np.testing.assert_allclose(got, expected.relative_drop.numpy(), atol=1e-6)
    np.testing.assert_allclose(
        [live.cam.probability_drop, live.finer.probability_drop],
        expected.probability_drop.numpy(),
        atol=1e-6,
    )
    assert live.target == shown.target.name and len(live.references) == 2


def test_the_sentence_names_both_maps_the_target_and_the_references():
    def score(label: str, rd: float, pd: float, empty: bool = False) -> MapScore:
        return MapScore(label, "gradcam", label != "CAM", rd, pd, empty)

    result = Faithfulness("Red-crowned Bluebird", ("a", "b", "c"), 0.05, 10,
                          score("CAM", 0.18, 0.25), score("Finer-CAM", 0.31, 0.4))  # fmt: skip
    assert result.sentence() == (
        "Removing Finer-CAM's top 5 % lowers Red-crowned Bluebird's share against its 3 "
        "look-alikes by 31 %; removing CAM's top 5 %: 18 %. Its probability falls by 40 % and "
        "falls by 25 % respectively."
    )
    cam, finer = score("CAM", -0.12, -0.05), score("Finer-CAM", 0.2, 0.1, empty=True)
    rose = Faithfulness("X", ("a",), 0.1, 10, cam, finer, reference_noun="contrast")
    text = rose.sentence()
    assert "its 1 contrast by 20 %" in text and "top 10 % raises it by 12 %" in text
    assert "rises by 5 %" in text and "Finer-CAM map is empty" in text


def test_top_fraction_is_checked_with_a_message_naming_it(tiny_adapter, rgb_image):
    service = ExplanationService(lambda name: tiny_adapter)
    for bad in (0, 1.5, "x", float("nan")):
        with pytest.raises(InvalidInputError, match="k \\(share of top pixels"):
            service.faithfulness("tiny", rgb_image, top_fraction=bad)


def test_score_maps_chunks_nothing_on_the_cpu_and_reads_given_logits(tiny_adapter, rgb_image):
    x = tiny_adapter.preprocess(rgb_image)
    maps = np.random.default_rng(0).random((5, 48, 64)).astype(np.float32)
    calls = []

    def logits(batch):
        calls.append(batch.shape[0])
        return tiny_adapter.logits(batch)

    before = tiny_adapter.logits(x)[0]
    with_cache = score_maps(logits, x, maps, 1, [2, 3], logits_before=before)
    assert calls == [5]
    fresh = score_maps(logits, x, maps, 1, [2, 3])
    assert calls == [5, 1, 5]
    torch.testing.assert_close(with_cache.relative_drop, fresh.relative_drop)


def test_compare_scores_every_gradient_method_in_one_forward_best_first(counted, rgb_image):
    adapter, calls = counted
    service = ExplanationService(lambda name: adapter)
    settings = ExplainSettings(gamma=0.6)
    service.explain("tiny", rgb_image, settings)
    trunk_calls, calls[:] = adapter.trunk_calls, []
    comparison = service.compare_methods("tiny", rgb_image, settings)
    gradient = [m for m in available_methods(adapter) if m.uses_gradients]
    assert len(comparison.scores) == 2 * len(gradient) == len(comparison.maps)
    # the masked forward is the only model run: the gradient entry is shared by every method
    assert calls == [len(comparison.scores)] and adapter.trunk_calls == trunk_calls + 1
    drops = [s.relative_drop for s in comparison.scores]
    assert drops == sorted(drops, reverse=True)
    assert "Score-CAM" in comparison.on_request
    assert {s.label for s in comparison.scores} >= {"Grad-CAM", "Finer Grad-CAM"}
    live = service.faithfulness("tiny", rgb_image, settings)
    by_label = {s.label: s for s in comparison.scores}
    finer = by_label["Finer Grad-CAM"].relative_drop
    assert finer == pytest.approx(live.finer.relative_drop, abs=1e-6)
    assert service.compare_methods("tiny", rgb_image, settings).cached


def test_compare_with_the_slower_methods_and_curves_on_request(tiny_adapter, rgb_image):
    service = ExplanationService(lambda name: tiny_adapter)
    comparison = service.compare_methods("tiny", rgb_image, slower=True)
    assert "Score-CAM" in {s.label for s in comparison.scores} and comparison.on_request == ()
    deletion, insertion = service.comparison_curves("tiny", rgb_image, comparison, steps=4)
    assert deletion.probabilities.shape == (len(comparison.scores), 5)
    assert deletion.mode == "deletion" and insertion.mode == "insertion"


@pytest.mark.skipif(
    not (REPO / "assets" / "demo" / "demo-cnn.safetensors").is_file(),
    reason="demo-cnn weights are not in assets/demo",
)
def test_live_numbers_equal_the_cli_evaluate_metrics(tmp_path):
    from app.cli import main
    from app.cli.datasets import ItemDataset, discover_synthbirds
    from app.models import registry

    out = tmp_path / "o"
    argv = ["evaluate", "--dataset", "synthbirds", "--count", "2", "--model", "demo-cnn",
            "--device", "cpu", "--steps", "2", "--target", "predicted", "--gamma", "0.6",
            "--method", "gradcam,layercam", "--out", str(out), "--workers", "0",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    with open(out / "per_image.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    items = discover_synthbirds(2).items
    loaded = ItemDataset(items, max_side=10_000)
    images = {item.key: loaded[i].image for i, item in enumerate(items)}
    service = ExplanationService(registry.ModelRegistry().get)
    for row in rows:
        settings = ExplainSettings(method=row["method"], gamma=0.6)
        live = service.faithfulness("demo-cnn", images[row["image"]], settings)
        score = live.finer if row["variant"] == "finer" else live.cam
        assert score.relative_drop == pytest.approx(float(row["rel_conf_drop"]), abs=1e-6)
        assert score.probability_drop == pytest.approx(float(row["prob_drop"]), abs=1e-6)
    assert len(rows) == 2 * 2 * 2
