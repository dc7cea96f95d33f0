"""The sanity check (cascading model randomisation) on the real demo models, its measures, the
CLI's ``evaluate --sanity`` and the trustworthiness study's smoke run."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from app.explain.inputs import InvalidInputError
from app.explain.sanity import (
    SanityScore,
    cascade,
    markdown_table,
    rank_correlation,
    reinitialise,
    sanity_check,
    ssim,
    summarise,
)
from app.explain.service import ExplainSettings, ExplanationService
from app.models.base import CascadeLayers, layers_with_parameters
from app.synthbirds.dataset import iter_samples

#: Mean Spearman ρ of Grad-CAM maps (trained vs random head) over 8 held-out birds measured
#: 0.18 (CAM) / 0.28 (Finer) at seed 0 and at most 0.28 over seeds 0-2; the trained model's
#: maps against themselves give 1. A bound of 0.5 leaves room for numerical drift and still
#: fails a map that ignores the head. demo-tinyclip-species's Grad-CAM measured at most 0.34 over
#: 3 birds and seeds 0-2; demo-tinyclip on four concept prompts at most 0.0 over 2 birds.
RANDOM_HEAD_RHO_BOUND = 0.5


def _state_hash(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def demo_cnn():
    from app.models.zoo.demo_cnn import load_demo_cnn

    return load_demo_cnn()


@pytest.fixture(scope="module")
def birds():
    return [sample.image for sample in iter_samples(8, 2026, "test")]


def test_gradcam_maps_decorrelate_once_the_head_is_random(demo_cnn, birds):
    scores = sanity_check(demo_cnn, birds, ["gradcam"], depth=1, seed=0)
    assert {s.layer for s in scores} == {"fc"} and len(scores) == 2 * len(birds)
    for kind in ("cam", "finer"):
        rho = np.mean([s.spearman for s in scores if s.map == kind])
        similarity = np.mean([s.ssim for s in scores if s.map == kind])
        assert rho < RANDOM_HEAD_RHO_BOUND, (kind, rho)
        assert similarity < 0.6, (kind, similarity)


def test_served_model_and_its_cache_are_untouched(demo_cnn, birds):
    served = ExplanationService(lambda _name: demo_cnn)
    before = served.explain(demo_cnn.name, birds[0], ExplainSettings(method="gradcam"))
    weights = _state_hash(demo_cnn.model)
    scores = sanity_check(demo_cnn, birds[:1], ["gradcam"])
    layers = [name for name, _ in demo_cnn.cascade_layers()]
    assert [s.layer for s in scores if s.map == "cam"] == layers
    assert _state_hash(demo_cnn.model) == weights
    after = served.explain(demo_cnn.name, birds[0], ExplainSettings(method="gradcam"))
    assert after.cached
    np.testing.assert_array_equal(after.finer, before.finer)


def test_demo_cnn_declares_its_layers_head_first(demo_cnn):
    assert isinstance(demo_cnn, CascadeLayers)
    names = [name for name, _ in demo_cnn.cascade_layers()]
    assert names == ["fc", "layer4", "layer3", "layer2", "layer1", "bn1", "conv1"]


def test_demo_vit_head_is_reinitialised_on_the_copy_only():
    from app.models.zoo.demo_vit import load_demo_vit

    model = load_demo_vit()
    names = [name for name, _ in model.cascade_layers()]
    assert names[:2] == ["head", "norm"] and names[-1] == "patch_embed"
    assert names[2:-1] == [f"blocks.{i}" for i in (3, 2, 1, 0)]
    weight = model.weight.clone()
    layer, randomised = next(cascade(model, depth=1))
    assert layer == "head"
    assert torch.equal(model.weight, weight)
    assert not torch.allclose(randomised.weight, weight)


@pytest.fixture(scope="module")
def tinyclip_species():
    from app.models.registry import ModelRegistry

    return ModelRegistry().get("demo-tinyclip-species")


def test_tiny_clip_declares_its_layers_head_first_and_every_weight_is_redrawn(tinyclip_species):
    model = tinyclip_species
    names = [name for name, _ in model.cascade_layers()]
    blocks = [f"transformer.resblocks.{i}" for i in (3, 2, 1, 0)]
    assert names == ["head", "proj", "ln_post", *blocks, "ln_pre", "conv1"]
    visual = model.engine.model.visual
    weights, texts = _state_hash(visual), model.text_embeddings().clone()
    _, randomised = list(cascade(model))[-1]  # every layer random
    assert _state_hash(visual) == weights and torch.equal(model.text_embeddings(), texts)
    served = dict(visual.named_parameters())
    kept = [
        name
        for name, tensor in randomised.engine.model.visual.named_parameters()
        if torch.equal(tensor, served[name])
    ]
    assert kept == ["class_embedding", "positional_embedding"]  # bare parameters stay trained
    assert not torch.allclose(randomised.text_embeddings(), texts)


def test_sanity_check_runs_on_the_tiny_clip_and_its_maps_change(tinyclip_species, birds):
    scores = sanity_check(tinyclip_species, birds[:3], ["gradcam"], depth=2)
    assert [s.layer for s in scores if s.map == "cam" and s.image == 0] == ["head", "proj"]
    for kind in ("cam", "finer"):
        rho = np.mean([s.spearman for s in scores if s.map == kind and s.step == 1])
        assert rho < RANDOM_HEAD_RHO_BOUND, (kind, rho)


def test_sanity_check_runs_on_the_tiny_clip_concepts_with_prompts(birds):
    from app.models.registry import ModelRegistry

    concepts = ModelRegistry().get("demo-tinyclip")
    assert [name for name, _ in concepts.cascade_layers()][0] == "proj"  # no prompts, no head
    model = concepts.with_prompts(["a red wing", "a blue wing", "a yellow beak", "a bird"])
    scores = sanity_check(model, birds[:2], ["gradcam"], top_t=2, depth=1)
    assert {s.layer for s in scores} == {"head"} and len(scores) == 2 * 2
    assert max(s.spearman for s in scores) < RANDOM_HEAD_RHO_BOUND


def test_reinitialise_is_seeded_and_restores_the_global_rng():
    first, second = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    state = torch.random.get_rng_state()
    assert reinitialise(first, 7) == 1 and reinitialise(second, 7) == 1
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(first.weight, second.weight)


def test_reinitialise_redraws_a_multihead_attention_input_projection():
    attention = torch.nn.MultiheadAttention(8, 2)
    packed = attention.in_proj_weight.detach().clone()
    assert reinitialise(attention, 3) == 2  # the attention and its output projection
    assert not torch.equal(attention.in_proj_weight, packed)


def test_model_without_declared_layers_is_refused(tiny_adapter):
    with pytest.raises(InvalidInputError, match="declares no layers"):
        next(cascade(tiny_adapter))


def test_score_cam_checks_only_the_first_slow_images(tiny_adapter, rgb_image):
    class Declared(type(tiny_adapter)):
        def cascade_layers(self):
            return layers_with_parameters(self.net, list(self.net))

    tiny_adapter.__class__ = Declared
    images = [rgb_image, rgb_image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), rgb_image.rotate(90)]
    scores = sanity_check(tiny_adapter, images, ["gradcam", "scorecam"], depth=1, slow_images=1)
    checked = {m: {s.image for s in scores if s.method == m} for m in ("gradcam", "scorecam")}
    assert checked == {"gradcam": {0, 1, 2}, "scorecam": {0}}
    table = markdown_table(summarise(scores))
    assert "| gradcam | CAM | " in table and "| scorecam (1 image) | Finer | " in table


def test_rank_correlation_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a = np.maximum(rng.normal(size=(16, 16)), 0)  # half the pixels tie at 0, as after a ReLU
    b = a + rng.normal(scale=0.5, size=a.shape)
    assert rank_correlation(a, b) == pytest.approx(stats.spearmanr(a.ravel(), b.ravel())[0])
    assert rank_correlation(a, np.zeros_like(a)) == 0.0


def test_ssim_is_one_for_equal_maps_and_low_for_an_inverted_one():
    rng = np.random.default_rng(1)
    a = rng.random((32, 32))
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, 1 - a) < 0
    b = np.clip(a + rng.normal(scale=0.1, size=a.shape), 0, 1)
    assert ssim(a, b) == pytest.approx(ssim(b, a)) and 0 < ssim(a, b) < 1


def test_summary_table_has_a_column_per_step():
    rows = summarise(
        [
            SanityScore("gradcam", kind, step, layer, 0, 0.1 * step, 0.2)
            for kind in ("cam", "finer")
            for step, layer in ((1, "fc"), (2, "layer4"))
        ]
    )
    table = markdown_table(rows).splitlines()
    assert table[0] == "| method | map | + fc | + layer4 |"
    assert table[2] == "| gradcam | CAM | 0.10 / 0.20 | 0.20 / 0.20 |"


def test_cli_evaluate_sanity_writes_its_table(tmp_path):
    from app.cli.main import main

    out = tmp_path / "sanity"
    code = main(
        [
            "evaluate",
            "--sanity",
            "--dataset",
            "synthbirds",
            "--count",
            "4",
            "--limit",
            "2",
            "--sanity-depth",
            "2",
            "--method",
            "gradcam",
            "--out",
            str(out),
            "--threads",
            "2",
        ]
    )
    assert code == 0
    table = (out / "sanity.md").read_text()
    assert "| method | map | + fc | + layer4 |" in table and "| gradcam | Finer |" in table
    with open(out / "sanity.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 2 * 2  # images x maps x steps
    assert all(-1 <= float(r["spearman"]) <= 1 and float(r["ssim"]) <= 1 for r in rows)


@pytest.mark.parametrize("flag", ["--sanity-slow-limit", "--sanity-depth"])
def test_cli_evaluate_sanity_refuses_a_count_below_one(tmp_path, flag):
    from app.cli.main import main

    args = ["evaluate", "--sanity", "--dataset", "synthbirds", "--count", "2", flag, "0"]
    assert main([*args, "--out", str(tmp_path / "o")]) == 2


def test_cli_evaluate_sanity_refuses_a_gamma_sweep(tmp_path):
    from app.cli.main import main

    assert (
        main(
            [
                "evaluate",
                "--sanity",
                "--dataset",
                "synthbirds",
                "--count",
                "2",
                "--gamma",
                "0.3,0.6",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )


def test_trustworthiness_study_smoke_run(tmp_path):
    from bench import trustworthiness

    text = trustworthiness.main(
        ["--count", "3", "--methods", "gradcam,layercam", "--out", str(tmp_path), "--threads", "2"]
    )
    with open(tmp_path / "per_image.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * 2 * 2  # birds x methods x {CAM, Finer}
    assert all(0 <= float(r["energy"]) <= 1 and np.isfinite(float(r["rd"])) for r in rows)
    assert "| demo-cnn | gradcam | Finer | 3 |" in text
    assert "| demo-cnn | Finer maps | all | 2 | 3 |" in text


def _choice_row(text: str, kinds: str, methods: str, images: int) -> list[str]:
    prefix = f"| demo-cnn | {kinds} | {methods} |"
    rows = [line for line in text.splitlines() if line.startswith(prefix)]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    return next(c for c in cells if c[4] == str(images))


def _choice_from_csv(rows: list[dict[str, str]], samples: set[int]) -> tuple[str, str, str]:
    """Energy of the score's pick and of the best-on-average map among the Finer maps of
    ``samples``, and the share of picks that are Score-CAM's, recomputed from the CSV rows."""
    finer = [r for r in rows if r["map"] == "finer" and int(r["sample"]) in samples]
    picks = [
        max((r for r in finer if int(r["sample"]) == s), key=lambda r: float(r["rd"]))
        for s in samples
    ]
    by_method: dict[str, list[float]] = {}
    for r in finer:
        by_method.setdefault(r["method"], []).append(float(r["energy"]))
    fixed = max(float(np.mean(energies)) for energies in by_method.values())
    slow = np.mean([r["method"] == "scorecam" for r in picks])
    return (
        f"{np.mean([float(r['energy']) for r in picks]):.3f}",
        f"{fixed:.3f}",
        f"{slow:.2f}" if any(r["method"] == "scorecam" for r in finer) else "—",
    )


def test_trustworthiness_scores_score_cam_on_the_first_slow_limit_birds_only(tmp_path):
    from bench import trustworthiness

    text = trustworthiness.main(
        [
            *("--count", "3", "--methods", "gradcam,scorecam", "--slow-limit", "2"),
            *("--out", str(tmp_path), "--threads", "2"),
        ]
    )
    with open(tmp_path / "per_image.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    explained = {
        m: {int(r["sample"]) for r in rows if r["method"] == m} for m in ("gradcam", "scorecam")
    }
    assert explained == {"gradcam": {0, 1, 2}, "scorecam": {0, 1}}
    assert (
        "| demo-cnn | scorecam | Finer | 2 |" in text
        and "| demo-cnn | gradcam | Finer | 3 |" in text
    )
    # Each choice row is computed on its own images only: recomputed from the CSV, a row that
    # mixed the three Grad-CAM birds with Score-CAM's two would differ.
    for methods, images, samples in (
        ("without scorecam", 3, {0, 1, 2}),
        ("without scorecam", 2, {0, 1}),
        ("with scorecam", 2, {0, 1}),
    ):
        row = _choice_row(text, "Finer maps", methods, images)
        assert row[3] == ("2" if methods.startswith("with ") else "1")  # candidate maps
        kept = [r for r in rows if methods.startswith("with ") or r["method"] == "gradcam"]
        assert tuple(row[8:11]) == _choice_from_csv(kept, samples)
    assert _choice_row(text, "CAM and Finer maps", "with scorecam", 2)[3] == "4"


def test_trustworthiness_choice_refuses_images_with_different_maps():
    from bench.trustworthiness import MapScore, choice_quality

    scores = [
        MapScore(0, "gradcam", "finer", 0.5, 0.1),
        MapScore(0, "scorecam", "finer", 0.6, 0.2),
        MapScore(1, "gradcam", "finer", 0.4, 0.1),
    ]
    with pytest.raises(ValueError, match="different maps"):
        choice_quality(scores, ("finer",))
    assert (
        choice_quality(scores[:2], ("finer",), frozenset({"scorecam"}))["score_pick_is_slow"] == 1.0
    )


def test_trustworthiness_choice_sets_with_score_cam_on_every_image():
    from bench.trustworthiness import MapScore, choice_sets

    scores = [
        MapScore(sample, method, "finer", 0.5, 0.1)
        for sample in (0, 1)
        for method in ("gradcam", "scorecam")
    ]
    sets = choice_sets(scores, frozenset({"scorecam"}))
    assert [(label, len(subset)) for label, subset, _ in sets] == [
        ("without scorecam", 2),
        ("with scorecam", 4),
    ]
    assert [label for label, _, _ in choice_sets(scores, frozenset())] == ["all"]
