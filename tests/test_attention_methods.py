"""LeGrad and attention-gradient (plain and Finer) against naive full-autograd references.

The references below share nothing with app/explain/attention.py or the explicit blocks of
app/models/vit.py: attention probabilities are captured from the models' *own* forward passes
(open_clip's MultiheadAttention asked for its per-head weights, timm's non-fused attention at
its dropout), every score is differentiated through the whole network, and the methods'
formulas are written out again from the papers.
"""

from __future__ import annotations

import threading
import types
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from app.explain import inputs
from app.explain.attention import compute_attention_entry, raw_attention_map
from app.explain.combine import Contrast
from app.explain.service import ExplainSettings, ExplanationService
from app.models.adapters.backbones import TimmBackbone
from app.models.adapters.clip import ClipEngine
from app.models.adapters.linear_head import LinearHeadModel
from app.models.adapters.vit import AttentionView
from app.models.hub.loading import TimmClassifier
from tests.model_fixtures import register_tiny_clip, tiny_timm_eva, tiny_timm_vit

KINDS = ("legrad", "attention-gradient")


# --------------------------------------------------------------------------- models


@pytest.fixture(scope="module")
def clip_engine(tmp_path_factory) -> ClipEngine:
    import open_clip

    name = register_tiny_clip(
        tmp_path_factory.mktemp("clip"),
        "attn-tiny-clip",
        image_size=[40, 64],
        patch_size=8,
        layers=3,
    )
    torch.manual_seed(1)
    model = open_clip.create_model(name, pretrained=None)
    with torch.no_grad():
        model.logit_scale.fill_(4.6)
    return ClipEngine(model.eval(), open_clip.get_tokenizer(name), "test:attn-tiny-clip")


PROMPTS = ("a red crown", "a blue bird", "a yellow wing", "a black beak")


def clip_view(engine: ClipEngine, pooling: str):
    return engine.with_pooling(pooling).view("concepts", PROMPTS, template=None)


def timm_model(pooling: str, architecture: str = "timm") -> LinearHeadModel:
    """A linear head on a tiny timm ViT (``timm``) or EVA-02 (``eva``) backbone."""
    if architecture == "eva":
        trunk = tiny_timm_eva(patch_size=8, img_size=48, global_pool=pooling)
    else:
        trunk = tiny_timm_vit(
            patch_size=8, img_size=48, global_pool=pooling, class_token=pooling == "token"
        )
    backbone = TimmBackbone(trunk, f"test:{architecture}-{pooling}", input_size=(40, 64))
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(5, trunk.num_features, generator=generator)
    return LinearHeadModel(
        backbone,
        weight,
        torch.randn(5, generator=generator),
        [f"class {i}" for i in range(5)],
        name=f"{architecture}-{pooling}",
    )


def random_input(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- naive references


def naive_open_clip(view, x: torch.Tensor, pooling: str):
    """(per-block logits, per-block attention) through open_clip's own forward."""
    visual = view.engine.model.visual
    attentions, outputs = [], []

    def attention(block, q_x, k_x=None, v_x=None, attn_mask=None):
        out, weights = block.attn(q_x, q_x, q_x, need_weights=True, average_attn_weights=False)
        attentions.append(weights._base)  # the (batch*heads, q, k) tensor that reached `out`
        return out

    blocks = visual.transformer.resblocks
    saved = visual.pool_type
    hooks = [b.register_forward_hook(lambda m, i, o: outputs.append(o)) for b in blocks]
    try:
        for block in blocks:
            block.attention = types.MethodType(attention, block)
        visual.pool_type = "tok" if pooling == "token" else "avg"
        with torch.enable_grad():  # frozen weights: the graph starts at the input
            embedding = visual(x.clone().requires_grad_(True))
            scores = []
            for out in outputs:
                pooled, _ = visual._global_pool(visual.ln_post(out))
                scores.append(view._similarities(pooled @ visual.proj))
    finally:
        visual.pool_type = saved
        for block in blocks:
            del block.attention
        for hook in hooks:
            hook.remove()
    final = view._similarities(embedding)
    torch.testing.assert_close(final, scores[-1], atol=1e-5, rtol=1e-5)
    return scores, attentions


def record_timm_blocks(blocks, attentions: list, outputs: list) -> list:
    """Hooks that record each timm block's attention probabilities (non-fused attention, at its
    dropout) and output, in order."""
    hooks = []
    for block in blocks:
        block.attn.fused_attn = False
        hooks.append(
            block.attn.attn_drop.register_forward_hook(lambda m, i, o: attentions.append(o))
        )
        hooks.append(block.register_forward_hook(lambda m, i, o: outputs.append(o)))
    return hooks


def naive_timm(model: LinearHeadModel, x: torch.Tensor):
    vit = model.backbone.model
    attentions, outputs = [], []
    hooks = record_timm_blocks(vit.blocks, attentions, outputs)
    try:
        with torch.enable_grad():
            features = vit.forward_head(
                vit.forward_features(x.clone().requires_grad_(True)), pre_logits=True
            )
            scores = [
                F.linear(vit.forward_head(vit.norm(o), pre_logits=True), model.weight, model.bias)
                for o in outputs
            ]
    finally:
        for hook in hooks:
            hook.remove()
    torch.testing.assert_close(F.linear(features, model.weight, model.bias), scores[-1])
    return scores, attentions


def objective(scores: torch.Tensor, coefficients: dict[int, float]) -> torch.Tensor:
    return sum(c * scores[0, k] for k, c in coefficients.items())


def per_head(attention: torch.Tensor) -> torch.Tensor:
    """``(heads, q, k)`` of the one image, from timm's (1, heads, q, k) or torch's (heads, q, k)."""
    return attention[0] if attention.ndim == 4 else attention


def naive_map(kind, scores, attentions, coefficients, blocks, prefix, grid, pooling):
    scores, attentions = scores[-blocks:], attentions[-blocks:]
    tokens = attentions[0].shape[-1]
    if kind == "legrad":
        relevance = torch.zeros(tokens)
        for score, attention in zip(scores, attentions, strict=True):
            (grad,) = torch.autograd.grad(
                objective(score, coefficients), attention, retain_graph=True
            )
            relevance += per_head(grad).clamp(min=0).mean(dim=0).mean(dim=0)
    else:
        grads = torch.autograd.grad(
            objective(scores[-1], coefficients), attentions, retain_graph=True
        )
        rollout = torch.eye(tokens, dtype=torch.float64)
        for grad, attention in zip(grads, attentions, strict=True):
            weighted = (per_head(grad) * per_head(attention)).clamp(min=0).mean(dim=0)
            rollout = rollout + weighted.double() @ rollout
        relevance = rollout[0] if pooling == "token" else rollout[prefix:].mean(dim=0)
    h, w = grid
    return relevance[prefix : prefix + h * w].reshape(1, h, w).detach().float().numpy()


def scaled(raw: np.ndarray) -> np.ndarray:
    raw = np.maximum(raw, 0)
    return (raw - raw.min()) / (raw.max() - raw.min() + 1e-12)


#: (model, pooling): a CLIP tower, linear heads on a timm ViT and on an EVA-02 backbone.
CASES = [(m, p) for m in ("clip", "timm", "eva") for p in ("token", "avg")]
#: timm models read through their own attention arithmetic: (input size, explained grid).
TOKEN_CASES = {
    ("eva02", "token"): ((40, 64), (5, 8)),
    ("eva02", "avg"): ((40, 64), (5, 8)),
    ("levit", "avg"): ((128, 256), (2, 4)),
}


def eva02_classifier(pooling: str, dynamic_img_size: bool = False) -> TimmClassifier:
    """A 3-block EVA-02 (rotary positions on a 5 x 8 grid, or any grid with
    ``dynamic_img_size``; SwiGLU, layer scales) with random q/v biases."""
    model = tiny_timm_eva(
        "eva02_tiny_patch14_336",
        seed=4,
        num_classes=5,
        img_size=(40, 64),
        patch_size=8,
        embed_dim=32,
        num_heads=2,
        global_pool=pooling,
        dynamic_img_size=dynamic_img_size,
    )
    return _timm_classifier(model, "eva02")


def levit_classifier() -> TimmClassifier:
    """A LeViT whose last stage has 3 blocks on a 2 x 4 grid, with random attention biases and
    BatchNorm scales, its statistics taken from random images (timm's own initialisation leaves
    the biases and the residual branches at zero, and the last stage's tokens nearly equal)."""
    import timm

    torch.manual_seed(5)
    model = timm.create_model(
        "levit_128s",
        num_classes=5,
        img_size=(128, 256),
        embed_dim=(16, 32, 48),
        key_dim=8,
        num_heads=(2, 2, 2),
        depth=(1, 1, 3),
    )
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.weight.uniform_(0.5, 1.5)
                module.momentum = None  # a plain average over the calibration batches
            if hasattr(module, "attention_biases"):
                module.attention_biases.normal_()
        model.train()
        for _ in range(3):
            model(torch.randn(8, 3, 128, 256))
    return _timm_classifier(model, "levit")


def _timm_classifier(model: torch.nn.Module, name: str) -> TimmClassifier:
    """Heads at unit scale (timm initialises them near zero, where any error hides)."""
    model.eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.out_features == 5:
                module.weight.normal_()
    for module in model.modules():
        if hasattr(module, "attention_bias_cache"):
            module.attention_bias_cache = {}
    labels = [f"class {i}" for i in range(5)]
    return TimmClassifier(model, name, labels, torch.device("cpu"), f"test:{name}", name)


def naive_eva(model: TimmClassifier, x: torch.Tensor):
    """(per-block logits, per-block attention) through timm's own (non-fused) EvaAttention."""
    eva = model.model
    attentions, outputs = [], []
    hooks = record_timm_blocks(eva.blocks, attentions, outputs)
    try:
        with torch.enable_grad():
            final = eva(x.clone().requires_grad_(True))
            scores = [eva.forward_head(eva.norm(o)) for o in outputs]
    finally:
        for hook in hooks:
            hook.remove()
    torch.testing.assert_close(final, scores[-1])
    return scores, attentions


def naive_levit(model: TimmClassifier, x: torch.Tensor, monkeypatch):
    """(per-block logits, per-block attention) of LeViT's last stage through timm's own forward:
    the attention probabilities are the last softmax outputs of the pass (one per block)."""
    levit = model.model
    blocks = list(levit.stages[-1].blocks)
    softmaxes, outputs = [], []
    softmax = torch.Tensor.softmax

    def recorded(tensor, *args, **kwargs):
        out = softmax(tensor, *args, **kwargs)
        softmaxes.append(out)
        return out

    hooks = [b.register_forward_hook(lambda m, i, o: outputs.append(o)) for b in blocks]
    try:
        with monkeypatch.context() as patch, torch.enable_grad():
            patch.setattr(torch.Tensor, "softmax", recorded)
            final = levit(x.clone().requires_grad_(True))
            scores = [levit.forward_head(o) for o in outputs]
    finally:
        for hook in hooks:
            hook.remove()
    torch.testing.assert_close(final, scores[-1])
    return scores, softmaxes[-len(blocks) :]


def token_case(name: str, pooling: str, monkeypatch):
    if name == "eva02":
        model = eva02_classifier(pooling)
        return model, lambda x: naive_eva(model, x)
    model = levit_classifier()
    return model, lambda x: naive_levit(model, x, monkeypatch)


def case_model(kind_of_model, pooling, clip_engine):
    if kind_of_model == "clip":
        view = clip_view(clip_engine, pooling)
        return view, view.attention_view(), lambda x: naive_open_clip(view, x, pooling)
    model = timm_model(pooling, kind_of_model)
    return model, model.attention_view(), lambda x: naive_timm(model, x)


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("kind_of_model,pooling", CASES)
@pytest.mark.parametrize("gamma", [0.0, 0.7])
def test_cached_maps_equal_naive_full_autograd(kind, kind_of_model, pooling, gamma, clip_engine):
    """Non-square input, 2 of 3 blocks; plain (γ=0) and Finer (linearity of the score)."""
    model, view, naive = case_model(kind_of_model, pooling, clip_engine)
    x = random_input(40, 64)  # 5 x 8 patch grid
    entry = compute_attention_entry(view, x, kind, blocks=2)
    contrast = Contrast(target=1, references=(0, 3), weights=(0.5, 0.5), gamma=gamma)
    ours = raw_attention_map(entry, contrast)
    scores, attentions = naive(x)
    reference = naive_map(
        kind, scores, attentions, contrast.coefficients(), 2, view.prefix, (5, 8), pooling
    )
    assert ours.shape == (1, 5, 8)
    np.testing.assert_allclose(scaled(ours), scaled(reference), atol=1e-5)
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(entry.logits, scores[-1].detach()[0].numpy(), atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name,pooling", list(TOKEN_CASES))
@pytest.mark.parametrize("gamma", [0.0, 0.7])
def test_eva02_and_levit_maps_equal_naive_full_autograd(kind, name, pooling, gamma, monkeypatch):
    """EVA-02's rotary attention and LeViT's biased attention read by hand give the model's own
    probabilities: the logits through them are ``model(x)`` and the maps (plain and Finer, 2 of
    3 blocks) equal those differentiated through timm's own forward."""
    model, naive = token_case(name, pooling, monkeypatch)
    size, grid = TOKEN_CASES[(name, pooling)]
    view = model.attention_view()
    x = random_input(*size)
    with torch.no_grad():
        logits = model.model(x)
    assert logits.abs().max() > 0.5
    for start in range(view.num_blocks):
        tokens, embedded = view.tokens_before(x, start)
        assert embedded == grid
        through_ours, _ = view.final_scores(tokens, start, grid)
        torch.testing.assert_close(through_ours, logits, atol=1e-5, rtol=1e-5)
    entry = compute_attention_entry(view, x, kind, blocks=2)
    contrast = Contrast(target=1, references=(0, 3), weights=(0.5, 0.5), gamma=gamma)
    ours = raw_attention_map(entry, contrast)
    scores, attentions = naive(x)
    reference = naive_map(
        kind, scores, attentions, contrast.coefficients(), 2, view.prefix, grid, pooling
    )
    assert ours.shape == (1, *grid) and np.abs(reference).max() > 1e-3
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(entry.logits, logits[0].numpy(), atol=1e-5)


def assert_eva_entry_is_naive(model: TimmClassifier, x: torch.Tensor, entry, kind: str) -> None:
    """An entry of the dynamic-size EVA-02 (2 of 3 blocks, Finer) against timm's own forward on
    ``x``: the logits and the map, on the grid of ``x``."""
    contrast = Contrast(target=1, references=(0, 3), weights=(0.5, 0.5), gamma=0.7)
    scores, attentions = naive_eva(model, x)
    grid = (x.shape[-2] // 8, x.shape[-1] // 8)
    reference = naive_map(kind, scores, attentions, contrast.coefficients(), 2, 1, grid, "token")
    np.testing.assert_allclose(entry.logits, scores[-1].detach()[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(raw_attention_map(entry, contrast), reference, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("kind", KINDS)
def test_dynamic_eva02_keeps_the_rotary_embedding_of_each_grid(kind):
    """5 x 8 and 8 x 5 grids have as many tokens but other rotary embeddings: an EVA-02 of
    dynamic size explained on one, then the other, then the first again from its cached trunk
    output gives timm's own maps each time."""
    model = eva02_classifier("token", dynamic_img_size=True)
    view = model.attention_view()
    wide, tall = random_input(40, 64), random_input(64, 40, seed=1)
    first = compute_attention_entry(view, wide, kind, blocks=2)
    second = compute_attention_entry(view, tall, kind, blocks=2)
    again = compute_attention_entry(view, wide, kind, blocks=2, trunk=first.trunk_output)
    assert (first.grid, second.grid, again.grid) == ((5, 8), (8, 5), (5, 8))
    for x, entry in ((wide, first), (tall, second), (wide, again)):
        assert_eva_entry_is_naive(model, x, entry, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_concurrent_passes_on_transposed_grids_keep_their_own_rotary_embedding(kind, monkeypatch):
    """Two threads inside their passes at once (both embedded before either attends), on 5 x 8
    and 8 x 5 inputs: each pass uses its own grid's rotary embedding."""
    model = eva02_classifier("token", dynamic_img_size=True)
    view = model.attention_view()
    split = view.split
    barrier, waited = threading.Barrier(2, timeout=60), threading.local()
    attention_parts = split._attention_parts

    def meeting_first(*args, **kwargs):
        if not getattr(waited, "done", False):
            waited.done = True
            barrier.wait()
        return attention_parts(*args, **kwargs)

    monkeypatch.setattr(split, "_attention_parts", meeting_first)
    inputs = (random_input(40, 64), random_input(64, 40, seed=1))
    with ThreadPoolExecutor(2) as pool:
        entries = list(pool.map(lambda x: compute_attention_entry(view, x, kind, 2), inputs))
    for x, entry in zip(inputs, entries, strict=True):
        assert_eva_entry_is_naive(model, x, entry, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_gamma_zero_is_the_plain_method(kind, clip_engine):
    view = clip_view(clip_engine, "token").attention_view()
    entry = compute_attention_entry(view, random_input(40, 64), kind, blocks=3)
    plain = raw_attention_map(entry, Contrast(target=2))
    finer_zero = raw_attention_map(entry, Contrast(2, (0, 1), (0.5, 0.5), 0.0))
    finer = raw_attention_map(entry, Contrast(2, (0, 1), (0.5, 0.5), 1.0))
    np.testing.assert_array_equal(plain, finer_zero)
    assert not np.allclose(scaled(plain), scaled(finer), atol=1e-3)


def test_class_token_legrad_keeps_only_the_rows_that_matter(clip_engine):
    """With class-token pooling only the class token's query row reaches each read-out."""
    view = clip_view(clip_engine, "token").attention_view()
    entry = compute_attention_entry(view, random_input(40, 64), "legrad", blocks=3)
    class_zero = ((0, 1.0),)
    grads = entry.gradients([class_zero])[class_zero]
    assert all(g.shape[1] == 1 for g in grads)
    avg_entry = compute_attention_entry(
        clip_view(clip_engine, "avg").attention_view(), random_input(40, 64), "legrad", blocks=3
    )
    assert all(g.shape[1] == g.shape[2] for g in avg_entry.gradients([class_zero])[class_zero])


class Counting:
    """Counts trunk and explicit-block runs of an attention view's split."""

    def __init__(self, view: AttentionView) -> None:
        self.calls = 0
        split = view.split
        for name in ("tokens_before", "attention_blocks", "record_blocks"):
            original = getattr(split, name)

            def counted(*args, _original=original, **kwargs):
                self.calls += 1
                return _original(*args, **kwargs)

            setattr(split, name, counted)


def test_moving_gamma_t_references_and_weighting_never_runs_the_model():
    model = timm_model("token")
    counter = Counting(model.attention_view())
    view = model.attention_view()
    model.attention_view = lambda: view  # one counted view
    service = ExplanationService(lambda name: model)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), np.uint8))
    for kind in KINDS:
        first = service.explain("m", image, ExplainSettings(method=kind, gamma=0.6, top_t=2))
        calls = counter.calls
        assert calls >= 1 and not first.cached
        variants = [
            ExplainSettings(method=kind, gamma=0.0),
            ExplainSettings(method=kind, gamma=1.0, top_t=4),
            ExplainSettings(method=kind, gamma=0.3, weighting="probability"),
            ExplainSettings(method=kind, reference_mode="weights", top_t=3),
            ExplainSettings(method=kind, reference_mode="manual", manual_references=(0, 4)),
            ExplainSettings(method=kind, target=3, gamma=0.8),
        ]
        maps = [service.explain("m", image, settings) for settings in variants]
        assert counter.calls == calls, "a re-render ran the model"
        assert all(m.cached for m in maps)
        assert not np.allclose(maps[0].finer, maps[1].finer)


@pytest.mark.parametrize("kind,runs", [("legrad", 0), ("attention-gradient", 1)])
def test_concept_prompts_reuse_what_the_image_computed(kind, runs, clip_engine):
    """New prompts: LeGrad re-reads the recorded blocks (no model run); attention-gradient
    re-runs only the explained blocks from the cached tokens (the trunk is not run)."""
    view = clip_view(clip_engine, "token")
    counter = Counting(view.attention_view())
    service = ExplanationService(lambda name: view)
    image = Image.new("RGB", (60, 40), (200, 30, 30))
    settings = ExplainSettings(method=kind, gamma=1.0)
    service.explain_concepts("c", image, "a red crown", "a blue bird", settings)
    first = counter.calls
    explanation = service.explain_concepts("c", image, "a red crown", "a bird, a wing", settings)
    assert explanation.target.name == "a red crown"
    assert [r.name for r in explanation.references] == ["a bird", "a wing"]
    assert counter.calls == first + runs


def test_pooling_choice_is_explained_and_named(clip_engine):
    view = clip_view(clip_engine, "token")
    service = ExplanationService(lambda name: view)
    image = Image.new("RGB", (48, 48), (20, 90, 200))
    token = service.explain_concepts(
        "c", image, "a red crown", "a blue bird", ExplainSettings(method="gradcam")
    )
    avg = service.explain_concepts(
        "c", image, "a red crown", "a blue bird", ExplainSettings(method="gradcam", pooling="avg")
    )
    assert (token.pooling, avg.pooling) == ("token", "avg")
    assert not np.allclose(token.target.logit, avg.target.logit)
    with pytest.raises(inputs.InvalidInputError, match="pooling must be one of"):
        service.explain_concepts(
            "c", image, "a red crown", "a blue bird", ExplainSettings(pooling="max")
        )


def test_methods_show_where_they_apply_and_cnns_get_a_clear_message(tiny_adapter, clip_engine):
    vit = timm_model("token")
    service = ExplanationService({"cnn": tiny_adapter, "vit": vit}.__getitem__)
    names = lambda model: [m.name for m in service.methods_for(model)]  # noqa: E731
    assert "legrad" in names("vit") and "attention-gradient" in names("vit")
    assert "legrad" not in names("cnn") and "gradcam" in names("cnn")
    image = Image.new("RGB", (48, 48), (20, 90, 200))
    with pytest.raises(inputs.InvalidInputError, match="attention maps; .* has none"):
        service.explain("cnn", image, ExplainSettings(method="legrad"))
    with pytest.raises(inputs.InvalidInputError, match="Turn off high resolution"):
        service.explain("vit", image, ExplainSettings(method="legrad", fgcam=True))
    with pytest.raises(inputs.InvalidInputError, match="blocks must be between 1 and 3"):
        service.explain("vit", image, ExplainSettings(method="legrad", attention_blocks=9))
    with pytest.raises(inputs.InvalidInputError, match="pooling choice applies to CLIP"):
        service.explain("vit", image, ExplainSettings(pooling="avg"))
    ok = service.explain(
        "vit", image, ExplainSettings(method="attention-gradient", attention_blocks=3)
    )
    assert ok.finer.shape == (48, 48) and ok.method == "Attention-gradient"


@pytest.mark.parametrize("blocks", [1, 3])
def test_legrad_matches_torchcam_where_the_definitions_agree(blocks, clip_engine):
    """torchcam 0.5.0's LeGrad with our class-token read-out as its ``score_projection``.

    torchcam hooks torchvision-style blocks (a ``self_attention`` MultiheadAttention child), so
    a copy of the CLIP tower gets that alias. Its default projection (torchvision ViTs) reads the
    mean of *all* tokens, a surrogate; with the model's own read-out the maps agree.
    """
    import copy

    from torchcam.methods import LeGrad

    view = clip_view(clip_engine, "token")
    x = random_input(40, 64)
    ours = raw_attention_map(
        compute_attention_entry(view.attention_view(), x, "legrad", blocks), Contrast(2)
    )
    model = copy.deepcopy(clip_engine.model).requires_grad_(True)
    visual = model.visual
    for block in visual.transformer.resblocks:
        block.self_attention = block.attn

    def read_out(tokens: torch.Tensor) -> torch.Tensor:
        return view._similarities(visual.ln_post(tokens[:, 0]) @ visual.proj)

    targets = list(visual.transformer.resblocks)[-blocks:]
    with LeGrad(model, targets, score_projection=read_out, grid_shape=(5, 8)) as extractor:
        scores = view._similarities(model.encode_image(x))
        anchor = extractor(2, scores)[0].detach().numpy().reshape(5, 8)
    np.testing.assert_allclose(scaled(ours[0]), scaled(anchor), atol=1e-5)


def test_method_dropdown_offers_vit_native_methods_only_for_vits():
    from app.models.registry import ModelRegistry
    from app.ui.tab_glue import method_choices

    registry = ModelRegistry()
    service = ExplanationService(registry.get)
    names = lambda model, **kw: [name for _, name in method_choices(service, model, **kw)]  # noqa: E731
    assert "legrad" in names("demo-tinyclip") and "attention-gradient" in names("demo-tinyclip")
    assert "legrad" not in names("vgg16bn-imagenet")  # from the registry's hint: nothing loads
    assert "legrad" not in names("demo-cnn", loaded=True) and "gradcam" in names("demo-cnn")
    assert "legrad" in names("demo-tinyclip-species", loaded=True)
