"""CLIP adapter: real open_clip architectures with random weights loaded from local files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from model_fixtures import TINY_TEXT_CFG, NotATensor, register_tiny_clip, save_random_clip
from PIL import Image

from app.models.adapters.clip import ClipEngine, apply_template, load_open_clip
from app.models.weights import WeightsFileError

TINY = "finercam-test-tiny-vit"


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory) -> ClipEngine:
    folder = tmp_path_factory.mktemp("tinyclip")
    register_tiny_clip(folder, TINY)
    weights = save_random_clip(TINY, folder / "tiny.safetensors")
    return load_open_clip(TINY, str(weights), "cpu")


def reference_logits(engine: ClipEngine, x: torch.Tensor, texts) -> torch.Tensor:
    """The un-split model: encode_image / encode_text and CLIP's own scaled cosine."""
    model = engine.model
    with torch.no_grad():
        image = model.encode_image(x, normalize=True)
        text = model.encode_text(engine.tokenizer(list(texts)), normalize=True)
        logits = model.logit_scale.exp() * image @ text.T
        bias = getattr(model, "logit_bias", None)
        return logits if bias is None else logits + bias


def test_vit_b16_split_logits_equal_encode_image():
    """The real ViT-B-16 architecture at 224 (pretrained=None: random weights).

    Loading from a saved state dict is exercised on the tiny config (same code path)."""
    torch.manual_seed(0)
    engine = load_open_clip("ViT-B-16", None, "cpu")
    with torch.no_grad():
        engine.model.logit_scale.fill_(4.6)  # CLIP's trained scale (~100), not the init 14.3
    assert engine.split.fast  # class-token-only last block
    view = engine.view("clip", ["a dog", "a red bird", "a cat"])
    torch.manual_seed(3)
    x = torch.randn(1, 3, 224, 224)
    leaf, logits = view.split_forward(x)
    with torch.no_grad():
        features = engine.model.encode_image(x)
        text = engine.model.encode_text(engine.tokenizer(list(view.texts)), normalize=True)
        expected = engine.model.logit_scale.exp() * F.normalize(features, dim=-1) @ text.T
    assert torch.allclose(logits.detach(), expected, atol=1e-5, rtol=0)
    assert torch.allclose(engine.image_features(leaf.detach()), features, atol=1e-5, rtol=0)
    assert view.to_grid(leaf).shape == (1, 768, 14, 14)
    assert engine.input_size == (224, 224)
    assert engine.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))


def test_tiny_split_logits_equal_unsplit_model(tiny_engine):
    view = tiny_engine.view("tiny", ["one", "two", "three", "four"])
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    _, logits = view.split_forward(x)
    assert torch.allclose(logits.detach(), reference_logits(tiny_engine, x, view.texts), atol=1e-5)
    assert torch.allclose(view.logits(x), logits.detach(), atol=1e-6)


@pytest.mark.parametrize(
    "vision, fast",
    [
        ({"ls_init_value": 0.5}, True),
        ({"pool_type": "avg"}, False),
        ({"final_ln_after_pool": True}, True),
        ({"no_ln_pre": True}, True),
    ],
    ids=["layer-scale", "avg-pool", "ln-after-pool", "no-ln-pre"],
)
def test_split_exact_for_vision_variants(tmp_path, vision, fast):
    name = register_tiny_clip(tmp_path, f"finercam-test-{'-'.join(vision)}", **vision)
    weights = str(save_random_clip(name, tmp_path / "w.safetensors"))
    for target in ("norm1", "residual"):
        engine = load_open_clip(name, weights, "cpu", target=target)
        assert engine.split.fast is fast and engine.split.target == target
        view = engine.view("v", ["a", "b"])
        x = torch.randn(1, 3, 64, 64)
        leaf, logits = view.split_forward(x)
        assert torch.allclose(logits.detach(), reference_logits(engine, x, view.texts), atol=1e-5)
        assert view.to_grid(leaf).shape == (1, 64, 4, 4)


@pytest.mark.parametrize("target", ["norm1", "residual"])
def test_target_activation_and_gradient_match_hooks_on_the_unsplit_model(tiny_engine, target):
    """norm1 = what pytorch-grad-cam sees hooking ``resblocks[-1].ln_1``; residual = the output
    of ``resblocks[-2]``. Activations and class gradients must be the same tensors."""
    engine = load_open_clip(TINY, None, "cpu", target=target)
    engine.model.load_state_dict(tiny_engine.model.state_dict())
    view = engine.view("tiny", ["a", "b", "c"])
    blocks = engine.model.visual.transformer.resblocks
    layer = blocks[-1].ln_1 if target == "norm1" else blocks[-2]
    captured = {}

    def hook(module, inputs, output):
        output.retain_grad()
        captured["out"] = output

    x = torch.randn(1, 3, 64, 64)
    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            features = engine.model.encode_image(x.requires_grad_(True))
            logits = engine.similarity_logits(features, view.text_embeddings())
            logits[0, 2].backward()
    finally:
        handle.remove()
    hooked = captured["out"]
    leaf, ours = view.split_forward(x.detach())
    (grad,) = torch.autograd.grad(ours[0, 2], leaf)

    def grid(tokens):  # (1, 17, 64) hooked tokens -> (1, 64, 4, 4) patch grid
        return tokens[:, 1:].reshape(1, 4, 4, 64).permute(0, 3, 1, 2)

    assert torch.allclose(view.to_grid(leaf), grid(hooked.detach()), atol=1e-5)
    assert torch.allclose(view.to_grid(grad), grid(hooked.grad), atol=1e-5)


def test_attentional_pooling_is_refused(tmp_path):
    name = register_tiny_clip(
        tmp_path,
        "finercam-test-attnpool",
        attentional_pool=True,
        attn_pooler_queries=4,
        attn_pooler_heads=2,
    )
    with pytest.raises(ValueError, match="attentional pooling"):
        load_open_clip(name, None, "cpu")


def test_grid_sizes_for_non_square_and_non_native_inputs(tiny_engine):
    view = tiny_engine.view("tiny", ["a bird"])
    for height, width in [(64, 64), (48, 80), (96, 32), (112, 160)]:
        x = torch.randn(1, 3, height, width)
        leaf, logits = view.split_forward(x)
        grid = view.to_grid(leaf)
        assert grid.shape == (1, 64, height // 16, width // 16)
        assert view.grid_size(height, width) == (height // 16, width // 16)
        assert logits.shape == (1, 1)
    # preprocess resizes the whole image (no crop) to the model's input size
    for size in [(300, 120), (50, 400), (64, 64)]:
        x = view.preprocess(Image.new("RGB", size, (200, 30, 30)))
        assert x.shape == (1, 3, 64, 64)


def test_preprocess_keeps_the_whole_image(tiny_engine):
    """A wide image's left and right edges survive (a centre crop would cut them)."""
    pixels = np.zeros((40, 200, 3), np.uint8)
    pixels[:, :20] = 255  # white strip at the far left
    x = tiny_engine.preprocess(Image.fromarray(pixels))
    mean = torch.tensor(tiny_engine.mean).view(3, 1, 1)
    std = torch.tensor(tiny_engine.std).view(3, 1, 1)
    restored = x[0] * std + mean
    assert restored[:, :, 0].mean() > 0.9 and restored[:, :, -1].mean() < 0.1


def test_gradients_flow_only_in_the_tail(tiny_engine):
    view = tiny_engine.view("tiny", ["a", "b", "c"])
    x = torch.randn(1, 3, 64, 64)
    leaf, logits = view.split_forward(x)
    assert leaf.requires_grad and leaf.is_leaf
    assert all(not p.requires_grad for p in tiny_engine.model.parameters())
    (grad,) = torch.autograd.grad(logits[0, 1], leaf, retain_graph=True)
    assert view.to_grid(grad).abs().sum() > 0  # patch tokens reach the class token
    assert all(p.grad is None for p in tiny_engine.model.parameters())
    # batched class gradients (the engine's one backward for target + references)
    cotangents = torch.eye(3).unsqueeze(1)
    (batched,) = torch.autograd.grad(
        logits, leaf, cotangents, retain_graph=True, is_grads_batched=True
    )
    assert torch.allclose(batched[1], grad, atol=1e-6)


def test_class_embeddings_line_up_with_prompts(tiny_engine):
    prompts = ["red bird", "blue bird", "dog"]
    view = tiny_engine.view("tiny", prompts, template="a photo of a {}.")
    assert list(view.labels) == prompts
    assert view.texts == tuple(f"a photo of a {p}." for p in prompts)
    emb = view.class_embeddings()
    assert emb.shape == (3, 32)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    with torch.no_grad():
        single = tiny_engine.model.encode_text(
            tiny_engine.tokenizer(["a photo of a dog."]), normalize=True
        )
    assert torch.allclose(emb[2], single[0], atol=1e-6)
    assert view.class_index("Blue Bird") == 1


def test_with_prompts_shares_the_trunk_and_caches_text(tiny_engine, monkeypatch):
    base = tiny_engine.view("concepts", (), "{}")
    a = base.with_prompts(["a red crown", "a bird"])
    b = base.with_prompts(["a red crown", "a blue wing"])
    c = base.with_prompts(["a red crown", "a bird"], template="a photo of a {}.")
    assert a.trunk_key == b.trunk_key == c.trunk_key == tiny_engine.key
    assert len({a.head_key, b.head_key, c.head_key}) == 3
    assert a.head_key == base.with_prompts(["a red crown", "a bird"]).head_key
    encoded: list[int] = []
    original = tiny_engine.model.encode_text

    def counting(tokens, normalize=False):
        encoded.append(tokens.shape[0])
        return original(tokens, normalize=normalize)

    monkeypatch.setattr(tiny_engine.model, "encode_text", counting)
    a.text_embeddings()
    b.text_embeddings()
    assert sum(encoded) == 3  # "a red crown" encoded once, then served from the cache
    x = torch.randn(1, 3, 64, 64)
    activation = a.trunk(x)
    assert torch.allclose(b.tail(activation)[0, 0], a.tail(activation)[0, 0])


def test_changing_prompts_reruns_only_the_tail(tiny_engine, monkeypatch):
    """Through the explanation service: a second prompt set reuses the cached trunk."""
    from app.explain.service import ExplanationService

    base = tiny_engine.view("concepts", (), "{}")
    service = ExplanationService(lambda name: base)
    calls = []
    original = tiny_engine.trunk
    monkeypatch.setattr(tiny_engine, "trunk", lambda x: calls.append(1) or original(x))
    image = Image.new("RGB", (90, 60), (120, 40, 200))
    first = service.explain_concepts("concepts", image, "a red crown", ["a bird"])
    second = service.explain_concepts("concepts", image, "a red crown", ["a blue wing", "a dog"])
    assert len(calls) == 1
    assert first.cam.shape == second.cam.shape == (60, 90)
    assert [r.name for r in second.references] == ["a blue wing", "a dog"]


def test_prompts_take_the_classifier_path_of_every_operation(tiny_engine):
    from app.explain.gamma import GAMMA_GRID
    from app.explain.service import ConceptPrompts, ExplainSettings, ExplanationService

    service = ExplanationService(lambda name: tiny_engine.view("concepts", (), "{}"))
    image = Image.new("RGB", (90, 60), (120, 40, 200))
    prompts = ConceptPrompts("a red crown", "a bird, a dog")
    settings = ExplainSettings(gamma=0.4)
    assert not service.cached("concepts", image, settings, prompts=prompts)
    shown = service.explain_concepts("concepts", image, "a red crown", "a bird, a dog", settings)
    assert service.cached("concepts", image, settings, prompts=prompts)
    again = service.explain("concepts", image, settings, prompts=prompts)
    np.testing.assert_array_equal(again.finer, shown.finer)
    strip = service.gamma_strip("concepts", image, settings, prompts=prompts)
    np.testing.assert_allclose(strip.maps[GAMMA_GRID.index(0.4)], shown.finer, atol=1e-6)
    line = service.faithfulness("concepts", image, settings, prompts=prompts)
    assert (line.target, line.references) == ("a red crown", ("a bird", "a dog"))
    assert line.reference_noun == "contrast"
    comparison = service.compare_methods("concepts", image, settings, prompts=prompts)
    assert (comparison.target, comparison.references) == (line.target, line.references)


def test_over_long_prompt_gets_a_notice(tiny_engine):
    long_prompt = " ".join(["red"] * 40)
    view = tiny_engine.view("tiny", ["short", long_prompt], template="{}")
    assert len(view.notices) == 1
    assert "truncated" in view.notices[0] and "16" in view.notices[0]
    assert view.with_prompts(["short"]).notices == ()
    x = torch.randn(1, 3, 64, 64)
    assert view.logits(x).shape == (1, 2)  # still works, on the truncated text


def test_templates():
    assert apply_template("dog", "a photo of a {}.") == "a photo of a dog."
    assert apply_template("{weird}", "a {}") == "a {weird}"
    assert apply_template("dog", "") == "dog" and apply_template("dog", None) == "dog"
    with pytest.raises(ValueError, match="must contain"):
        apply_template("dog", "a photo")


def test_bad_prompts_are_refused(tiny_engine):
    base = tiny_engine.view("tiny", ())
    with pytest.raises(ValueError, match="empty"):
        base.with_prompts(["ok", "  "])
    with pytest.raises(ValueError, match="at least one"):
        base.with_prompts([])
    with pytest.raises(ValueError, match="with_prompts"):
        base.tail(torch.zeros(1, 17, 64))


def test_unknown_model_missing_file_and_unknown_tag(tmp_path):
    with pytest.raises(ValueError, match="unknown open_clip model 'ViT-Nope'"):
        load_open_clip("ViT-Nope", None)
    with pytest.raises(WeightsFileError, match="does not exist"):
        load_open_clip(TINY, str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="unknown pretrained tag 'nope'"):
        load_open_clip("ViT-B-16", "nope")


def test_pickle_checkpoint_with_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"visual.proj": torch.zeros(2), "obj": NotATensor()}, path)
    with pytest.raises(WeightsFileError, match="could not load CLIP checkpoint"):
        load_open_clip(TINY, str(path))


def test_mismatched_checkpoint_is_a_clear_error(tmp_path):
    other = register_tiny_clip(tmp_path, "finercam-test-wide", width=96, head_width=32)
    path = save_random_clip(other, tmp_path / "wide.safetensors")
    with pytest.raises(WeightsFileError, match=f"into {TINY}"):
        load_open_clip(TINY, str(path))


def test_hub_unreachable_names_model_and_cache(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError) as info:
        load_open_clip("ViT-B-16", "openai")
    message = str(info.value)
    assert "ViT-B-16" in message and "cached in" in message and "FINERCAM_OFFLINE=1" in message


def test_logits_are_scaled_cosines(tiny_engine):
    view = tiny_engine.view("tiny", ["a", "b"])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        image = F.normalize(tiny_engine.model.encode_image(x), dim=-1)
    cosines = image @ view.class_embeddings().T
    assert torch.allclose(view.logits(x), tiny_engine.logit_scale() * cosines, atol=1e-5)


def test_hf_hub_model_unreachable_names_the_repo(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError) as info:
        load_open_clip("hf-hub:someone/clip-that-is-not-cached", None)
    message = str(info.value)
    assert "someone/clip-that-is-not-cached" in message and "cached in" in message


@pytest.mark.parametrize("pool, proj", [("token", "linear"), ("map", "")])
def test_timm_tower_split_is_exact(tmp_path, pool, proj):
    """open_clip models with a timm ViT image tower (SigLIP-style 'map' pooling included)."""
    import json

    import open_clip

    name = f"finercam-test-timm-{pool}-{proj or 'head'}"
    config = {
        "embed_dim": 192 if proj == "none" else 32,
        "vision_cfg": {
            "timm_model_name": "vit_tiny_patch16_224",
            "timm_model_pretrained": False,
            "timm_pool": pool,
            "timm_proj": proj,
            "image_size": 224,
        },
        "text_cfg": dict(TINY_TEXT_CFG),
    }
    (tmp_path / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    engine = load_open_clip(name, str(save_random_clip(name, tmp_path / "w.safetensors")), "cpu")
    assert engine.split.fast is (pool == "token")
    view = engine.view("timm", ["a", "b", "c"])
    x = view.preprocess(Image.new("RGB", (120, 80), (20, 90, 200)))
    leaf, logits = view.split_forward(x)
    assert torch.allclose(logits.detach(), reference_logits(engine, x, view.texts), atol=1e-5)
    assert view.to_grid(leaf).shape == (1, 192, 14, 14)
