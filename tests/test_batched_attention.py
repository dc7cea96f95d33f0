"""The ViT attention methods (LeGrad, attention-gradient) on a prepared batch: one pass of the
model and one backward per gradient path for N images, with each image's entry giving the maps
of that image explained alone — then and for directions asked for later."""

from __future__ import annotations

import gc
from dataclasses import replace

import numpy as np
import pytest
import torch

from app.cli import main
from app.config import Settings
from app.explain import attention
from app.explain.attention import trunk_bytes
from app.explain.combine import Contrast
from app.explain.methods import get_method
from app.explain.service import ExplainSettings, ExplanationService
from app.models.adapters.backbones import TimmBackbone
from app.models.adapters.clip import ClipEngine
from app.models.adapters.linear_head import LinearHeadModel
from app.models.registry import ModelRegistry
from app.synthbirds import render_sample
from tests.model_fixtures import register_tiny_clip, tiny_timm_vit

KINDS = ("attention-gradient", "legrad")
MODELS = ("demo-vit", "timm-avg", "clip-avg")
#: Batched matrix products may sum in another order than single ones.
TOLERANCE = 1e-5
CONTRAST = Contrast(0, (1, 2), (0.5, 0.5), 0.5)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """demo-vit (class token), a linear head on an average-pooled tiny timm ViT, and a tiny
    CLIP's average-pooled prompt view."""
    import open_clip

    registry = ModelRegistry(Settings(device="cpu", offline=True, models=("demo-vit",)))
    trunk = tiny_timm_vit(patch_size=8, img_size=48, global_pool="avg", class_token=False)
    generator = torch.Generator().manual_seed(3)
    timm_avg = LinearHeadModel(
        TimmBackbone(trunk, "test:batch-timm-avg", input_size=(40, 64)),
        torch.randn(5, trunk.num_features, generator=generator),
        torch.randn(5, generator=generator),
        [f"class {i}" for i in range(5)],
        name="timm-avg",
    )
    name = register_tiny_clip(
        tmp_path_factory.mktemp("clip"), "batch-tiny-clip", image_size=[40, 64], patch_size=8
    )
    torch.manual_seed(1)
    clip = open_clip.create_model(name, pretrained=None)
    engine = ClipEngine(clip.eval(), open_clip.get_tokenizer(name), "test:batch-tiny-clip")
    prompts = ("a red crown", "a blue bird", "a yellow wing", "a black beak")
    clip_avg = engine.with_pooling("avg").view("concepts", prompts, template=None)
    return {"demo-vit": registry.get("demo-vit"), "timm-avg": timm_avg, "clip-avg": clip_avg}


class Passes:
    """One view per model for the test, counting its passes into the explained blocks and
    the trunk, and every batched backward (the rows and directions of its cotangents)."""

    def __init__(self, model, monkeypatch) -> None:
        view = model.attention_view()
        monkeypatch.setattr(model, "attention_view", lambda: view)
        self.calls: list[tuple[str, int]] = []
        for name in ("tokens_before", "attention_blocks", "record_blocks"):
            original = getattr(view.split, name)

            def counted(tokens, *args, _name=name, _original=original, **kwargs):
                self.calls.append((_name, len(tokens)))
                return _original(tokens, *args, **kwargs)

            monkeypatch.setattr(view.split, name, counted)
        self.backwards: list[dict] = []
        row_gradients = attention.row_gradients

        def counted_backward(output, inputs, directions):
            self.backwards.append({row: len(ds) for row, ds in directions.items()})
            return row_gradients(output, inputs, directions)

        monkeypatch.setattr(attention, "row_gradients", counted_backward)


def _images() -> list:
    images = [render_sample(i, 7).image for i in range(3)]
    return [images[0], images[1].resize((96, 80)), images[2].resize((140, 100))]


def _paths(kind: str, blocks: int) -> int:
    """Gradient paths of an entry: one per block for LeGrad, one for attention-gradient."""
    return blocks if kind == "legrad" else 1


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", MODELS)
def test_a_batch_runs_the_blocks_once_and_maps_equal_one_at_a_time(models, name, kind, monkeypatch):
    model = models[name]
    settings = ExplainSettings(method=kind, gamma=0.4, top_t=3, attention_blocks=2)
    images = _images()
    alone = ExplanationService(lambda _: model)
    expected = {
        gamma: [alone.explain(name, image, replace(settings, gamma=gamma)) for image in images]
        for gamma in (0.4, 1.0)
    }
    passes = Passes(model, monkeypatch)
    batched = ExplanationService(lambda _: model)
    batched.prepare_batch(name, images, settings)
    first = "record_blocks" if kind == "legrad" else "attention_blocks"
    assert passes.calls == [("tokens_before", 3), (first, 3)]
    assert passes.backwards == [{0: 2, 1: 2, 2: 2}] * _paths(kind, 2)  # target and references
    for gamma, explanations in expected.items():
        for image, want in zip(images, explanations, strict=True):
            got = batched.explain(name, image, replace(settings, gamma=gamma))
            assert got.cached and got.target.index == want.target.index
            assert [r.index for r in got.references] == [r.index for r in want.references]
            np.testing.assert_allclose(got.cam, want.cam, atol=TOLERANCE)
            np.testing.assert_allclose(got.finer, want.finer, atol=TOLERANCE)
    assert len(passes.calls) == 2 and len(passes.backwards) == _paths(kind, 2)

    new_t = replace(settings, top_t=1, gamma=0.8)  # a new references direction
    got = batched.explain(name, images[1], new_t)
    assert passes.backwards[_paths(kind, 2) :] == [{1: 1}] * _paths(kind, 2)  # its row alone
    assert len(passes.calls) == 2
    want = alone.explain(name, images[1], new_t)
    np.testing.assert_allclose(got.finer, want.finer, atol=TOLERANCE)


@pytest.mark.parametrize("kind", KINDS)
def test_batched_entries_keep_their_own_rows_and_share_the_graph(models, kind):
    """What an entry keeps is its image's row alone (a copy, not a view of the batch); the
    batch's graph is counted once over the entries alive, wholly by the last one left."""
    model = models["timm-avg"]
    source = get_method(kind).entry_source(model, ExplainSettings(method=kind, attention_blocks=2))
    x = torch.cat([model.preprocess(image) for image in _images()])
    entries = source.compute_batch(x)
    get_method(kind).prepare_batch([(entry, CONTRAST) for entry in entries])
    alone = source.compute(x[2:3], None)
    for entry in entries:
        kept = [*entry.attentions, *(g for gs in entry._grads.values() for g in gs)]
        trunk = entry.trunk_output
        kept += [trunk] if isinstance(trunk, torch.Tensor) else [t.tokens for t in trunk]
        assert all(t.untyped_storage().nbytes() == trunk_bytes(t) for t in kept)
    assert trunk_bytes(entries[2].trunk_output) == trunk_bytes(alone.trunk_output)
    graph = entries[2]._graph.share_bytes()
    assert graph == alone._graph.share_bytes()  # a third of three images' graph
    del entries[:2]
    gc.collect()
    assert entries[0]._graph.share_bytes() == 3 * graph


def test_class_token_legrad_of_a_batch_counts_the_attention_its_rows_pin(models):
    """LeGrad's class-token leaves are row views of the batch's attention probabilities: the
    entries' shares count those whole tensors, which no entry's own row copies hold."""
    model = models["demo-vit"]
    source = get_method("legrad").entry_source(model, ExplainSettings(method="legrad"))
    x = torch.cat([model.preprocess(image) for image in _images()])
    entries = source.compute_batch(x)
    maps = [a for _, path in entries[0]._graph.paths for a in path]
    assert all(a.shape[2] == 1 for a in maps)  # class-token rows
    whole = sum(
        {a.untyped_storage().data_ptr(): a.untyped_storage().nbytes() for a in maps}.values()
    )
    rows = sum(trunk_bytes(a) for a in maps)
    assert whole > 10 * rows
    assert sum(entry._graph.share_bytes() for entry in entries) >= whole - rows + 4 * rows - 2


@pytest.mark.parametrize("kind", KINDS)
def test_a_view_that_cannot_run_a_batch_is_explained_one_image_at_a_time(models, kind, monkeypatch):
    model = models["demo-vit"]
    settings = ExplainSettings(method=kind, gamma=0.7)
    images = _images()
    expected = [ExplanationService(lambda _: model).explain("v", i, settings) for i in images]
    passes = Passes(model, monkeypatch)
    split = model.attention_view().split
    tokens_before = split.tokens_before

    def one_image_only(x, *args):
        if len(x) > 1:
            raise RuntimeError("this view runs one image at a time")
        return tokens_before(x, *args)

    monkeypatch.setattr(split, "tokens_before", one_image_only)
    service = ExplanationService(lambda _: model)
    service.prepare_batch("v", images, settings)
    assert len(service.entries) == 3
    assert len(passes.backwards) == 3 * _paths(kind, get_method(kind).default_blocks)
    for image, want in zip(images, expected, strict=True):
        got = service.explain("v", image, settings)
        assert got.cached
        np.testing.assert_allclose(got.finer, want.finer, atol=TOLERANCE)


def test_cli_batches_write_the_files_of_one_at_a_time(tmp_path):
    folder = tmp_path / "birds"
    folder.mkdir()
    for index in range(4):
        render_sample(index, 11).image.save(folder / f"bird{index}.png")
    outputs = {}
    for size in ("1", "3"):
        out = tmp_path / f"batch{size}"
        argv = ["explain", str(folder), "--model", "demo-vit", "--device", "cpu"]
        argv += ["--method", "attention-gradient,legrad", "--gamma", "0.3,1", "--out", str(out)]
        argv += ["--no-overlays", "--faithfulness-k", "0", "--workers", "0", "--no-progress"]
        assert main([*argv, "--batch-size", size]) == 0
        outputs[size] = {p.relative_to(out): np.load(p) for p in out.rglob("*.npy")}
    assert sorted(outputs["3"]) == sorted(outputs["1"])
    assert len(outputs["1"]) == 4 * 2 * (1 + 2)  # images x methods x (CAM, Finer at each γ)
    for path, array in outputs["3"].items():
        np.testing.assert_allclose(array, outputs["1"][path], atol=1e-6)
