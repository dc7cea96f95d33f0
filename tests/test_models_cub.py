"""CUB-200: class names, zero-shot head on CLIP, trained linear heads on timm/open_clip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from model_fixtures import (
    NotATensor,
    register_tiny_clip,
    save_random_clip,
    tiny_timm_eva,
    tiny_timm_vit,
)
from PIL import Image
from safetensors.torch import save_file

from app.config import Settings
from app.models.adapters.backbones import TimmBackbone, build_backbone, parse_spec
from app.models.adapters.clip import load_open_clip
from app.models.adapters.linear_head import LinearHeadModel, load_head, load_linear_model, save_head
from app.models.weights import WeightsFileError, load_tensor_file
from app.models.zoo.cub import CUB_TEMPLATE, build_linear, clean_cub_name, cub_class_names


def test_cub_class_names_are_clean_and_complete():
    names = cub_class_names()
    assert len(names) == 200 == len(set(names))
    assert names[0] == "Black-footed Albatross"
    assert names[8] == "Brewer's Blackbird"
    assert names[21] == "Chuck-will's-widow"
    assert names[140] == "Arctic Tern"
    assert names[199] == "Common Yellowthroat"
    assert all("_" not in n and not n[0].isdigit() for n in names)


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("001.Black_footed_Albatross", "Black-footed Albatross"),
        ("126.Nelson_Sharp_tailed_Sparrow", "Nelson's Sharp-tailed Sparrow"),
        ("159.Black_and_white_Warbler", "Black-and-white Warbler"),
        ("187.American_Three_toed_Woodpecker", "American Three-toed Woodpecker"),
        ("124.Le_Conte_Sparrow", "Le Conte's Sparrow"),
        ("105.Whip_poor_Will", "Whip-poor-will"),
        ("038.Great_Crested_Flycatcher", "Great Crested Flycatcher"),
    ],
)
def test_clean_cub_name(raw, clean):
    assert clean_cub_name(raw) == clean


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cubclip")
    name = register_tiny_clip(folder, "finercam-test-cub-clip")
    return load_open_clip(name, str(save_random_clip(name, folder / "w.safetensors")), "cpu")


def test_zero_shot_head_rows_are_the_class_name_embeddings(tiny_clip):
    names = cub_class_names()
    view = tiny_clip.view("cub200-clip-zeroshot", names, CUB_TEMPLATE)
    assert list(view.labels) == names
    assert view.texts[0] == "a photo of a Black-footed Albatross, a type of bird."
    rows = view.class_embeddings()
    assert rows.shape == (200, 32)
    assert torch.allclose(rows.norm(dim=-1), torch.ones(200), atol=1e-5)
    with torch.no_grad():
        tern = tiny_clip.model.encode_text(tiny_clip.tokenizer([view.texts[140]]), normalize=True)
    assert torch.allclose(rows[140], tern[0], atol=1e-5)
    x = torch.randn(1, 3, 64, 64)
    _, logits = view.split_forward(x)
    assert logits.shape == (1, 200)
    assert view.class_index("arctic tern") == 140


# --------------------------------------------------------------------------- timm backbone


@pytest.mark.parametrize(
    "build, kwargs, fast",
    [
        (tiny_timm_vit, {}, True),
        (tiny_timm_vit, {"reg_tokens": 4, "no_embed_class": True}, True),
        (tiny_timm_vit, {"qk_norm": True}, True),
        (tiny_timm_vit, {"global_pool": "avg"}, False),
        (tiny_timm_eva, {}, True),
        (tiny_timm_eva, {"global_pool": "avg"}, False),
    ],
    ids=["dinov2-like", "registers", "qk-norm", "avg-pool", "eva02", "eva02-avg-pool"],
)
@pytest.mark.parametrize("target", ["norm1", "residual"])
def test_timm_split_equals_unsplit_model(build, kwargs, fast, target):
    model = build(**kwargs)
    backbone = TimmBackbone(model, "tiny", input_size=(56, 56), target=target)
    assert backbone.split.fast is fast and backbone.split.target == target
    for height, width in [(56, 56), (42, 70), (70, 42), (84, 28)]:
        x = torch.randn(2, 3, height, width)
        activation = backbone.trunk(x)
        with torch.no_grad():
            expected = model(x)
        assert torch.allclose(backbone.features(activation), expected, atol=1e-5)
        assert backbone.to_grid(activation).shape == (2, 48, height // 14, width // 14)
        assert backbone.grid_size(height, width) == (height // 14, width // 14)


def test_timm_norm1_target_matches_a_hook_on_blocks_norm1():
    """The activation and gradient pytorch-grad-cam sees at ``blocks[-1].norm1``."""
    model = tiny_timm_vit(reg_tokens=2)
    backbone = TimmBackbone(model, "tiny", input_size=(56, 70))
    captured = {}

    def hook(module, inputs, output):
        output.retain_grad()
        captured["out"] = output

    x = torch.randn(1, 3, 56, 70)
    handle = model.blocks[-1].norm1.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            model(x.clone().requires_grad_(True))[0, 5].backward()
    finally:
        handle.remove()
    hooked = captured["out"]
    activation = backbone.trunk(x).requires_grad_(True)
    (grad,) = torch.autograd.grad(backbone.features(activation)[0, 5], activation)

    def grid(tokens):  # 3 prefix tokens (class + 2 registers), then a 4x5 patch grid
        return tokens[:, 3:].reshape(1, 4, 5, 48).permute(0, 3, 1, 2)

    assert torch.allclose(backbone.to_grid(activation.detach()), grid(hooked.detach()), atol=1e-5)
    assert torch.allclose(backbone.to_grid(grad), grid(hooked.grad), atol=1e-5)


def test_cam_of_a_head_on_an_eva02_backbone_equals_hooks_on_timms_forward():
    """Every gradient CAM method, plain and Finer, of a linear head on an EVA-02 backbone (our
    split, rotary attention by hand) equals the same method through hooks on
    ``blocks[-1].norm1`` of timm's own forward, on a non-square input."""
    from app.explain.combine import Contrast
    from app.explain.engine import HookedLayerModel
    from app.explain.gradients import compute_entry
    from app.explain.methods import METHODS, ModelInput

    eva = tiny_timm_eva()
    torch.manual_seed(1)
    head = torch.nn.Linear(48, 5)
    backbone = TimmBackbone(eva, "tiny-eva", input_size=(42, 70))
    ours = LinearHeadModel(backbone, head.weight, head.bias, [f"c{i}" for i in range(5)])

    def grid(tokens):  # class token, then the 3 x 5 patch grid
        return tokens[:, 1:].reshape(tokens.shape[0], 3, 5, 48).permute(0, 3, 1, 2)

    hooked = HookedLayerModel(torch.nn.Sequential(eva, head), eva.blocks[-1].norm1, grid)
    x = torch.randn(1, 3, 42, 70)
    entries = [compute_entry(split, x, ()) for split in (ours, hooked)]
    np.testing.assert_allclose(entries[0].logits, entries[1].logits, atol=1e-5)
    methods = [m for m in METHODS.values() if m.uses_gradients and not m.needs_attention_view]
    for method in methods:
        for gamma in (0.0, 0.7):
            contrast = Contrast(target=1, references=(0, 3), weights=(0.5, 0.5), gamma=gamma)
            ours_map, reference = (
                method.raw_map(entry, contrast, ModelInput(split, x))
                for entry, split in zip(entries, (ours, hooked), strict=True)
            )
            assert ours_map.shape == (1, 3, 5) and np.abs(reference).max() > 1e-4, method.name
            np.testing.assert_allclose(ours_map, reference, rtol=1e-4, atol=1e-6)


def test_a_timm_eva02_is_a_backbone_through_the_spec():
    """``timm:eva02_*`` builds the real architecture (random weights, offline) split as an EVA."""
    from app.models.adapters.eva import EvaSplit

    backbone = build_backbone("timm:eva02_tiny_patch14_224.mim_in22k@random", input_size=56)
    assert isinstance(backbone.split, EvaSplit) and backbone.input_size == (56, 56)
    x = torch.randn(1, 3, 56, 84)
    activation = backbone.trunk(x)
    assert backbone.to_grid(activation).shape == (1, backbone.feature_dim, 4, 6)
    with torch.no_grad():
        expected = backbone.model(x)
    assert torch.allclose(backbone.features(activation), expected, atol=1e-5)


@pytest.mark.parametrize("name, kind", [("resnet18", "ResNet"), ("convnext_atto", "ConvNeXt")])
def test_a_timm_cnn_is_refused_as_a_backbone_before_any_download(name, kind):
    """Hub weights are not cached (HF_HUB_OFFLINE): the refusal comes from the architecture."""
    import timm

    refusal = f"{kind} cannot be a linear head's backbone: .*EVA-02.*--model timm:NAME"
    with pytest.raises(ValueError, match=refusal):
        build_backbone(f"timm:{name}")
    with pytest.raises(ValueError, match=refusal):
        TimmBackbone(timm.create_model(name, num_classes=0), "cnn")


def _timm_weights(tmp_path):
    model = tiny_timm_vit()
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model, path


def test_linear_head_from_safetensors_equals_unsplit_model(tmp_path, monkeypatch):
    """A head saved as safetensors + classes.json on a timm backbone loaded from a file."""
    reference, weights = _timm_weights(tmp_path)
    torch.manual_seed(1)
    weight, bias = torch.randn(5, 48), torch.randn(5)
    classes = ["Alpha Bird", "Beta Bird", "Gamma Bird", "Delta Bird", "Epsilon Bird"]
    spec = f"timm:vit_small_patch14_dinov2@{weights}"
    head = save_head(tmp_path / "head", weight, bias, classes, spec, (56, 56))
    # the backbone spec names a real timm architecture; build the tiny one instead
    monkeypatch.setattr(
        "app.models.adapters.linear_head.build_backbone",
        lambda s, device, settings, size: TimmBackbone(tiny_timm_vit(), s, device, size),
    )
    model = load_linear_model(str(head), "cpu")
    assert list(model.labels) == classes
    assert torch.equal(model.class_embeddings(), weight)
    x = torch.randn(1, 3, 70, 42)
    leaf, logits = model.split_forward(x)
    with torch.no_grad():
        expected = reference(x) @ weight.T + bias
    assert torch.allclose(logits.detach(), expected, atol=1e-5)
    assert model.to_grid(leaf).shape == (1, 48, 5, 3)
    assert model.preprocess(Image.new("RGB", (200, 90))).shape == (1, 3, 56, 56)
    (grad,) = torch.autograd.grad(logits[0, 2], leaf)
    assert grad[:, 1:].abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in model.backbone.model.parameters())
    title = "trained 5-class head (Alpha Bird, Beta Bird, Gamma Bird, …) on " + spec
    assert model.description.startswith(title) and "CUB" not in model.description


def test_a_trained_head_is_named_after_its_classes_and_backbone(tmp_path):
    """The cub200-linear slot and a head given by path say what the head is, before loading."""
    from app.models.adapters.linear_head import head_spec
    from app.models.zoo.cub import linear_summary

    classes = [f"Warbler {i}" for i in range(15)]
    save_head(tmp_path, torch.zeros(15, 8), None, classes, "timm:vit_small_patch14_dinov2", 224)
    own = "trained 15-class head (Warbler 0, Warbler 1, Warbler 2, …) on "
    assert linear_summary(Settings(cub_head=str(tmp_path))) == own + "timm:vit_small_patch14_dinov2"
    overridden = Settings(cub_head=str(tmp_path / "head.safetensors"), cub_backbone="clip")
    assert linear_summary(overridden) == own + "clip"
    assert head_spec(str(tmp_path)).summary == own + "timm:vit_small_patch14_dinov2"
    for unknown in (Settings(), Settings(cub_head="org/head-repo")):
        summary = linear_summary(unknown)
        assert "FINERCAM_CUB_HEAD" in summary and "CUB" not in summary.replace("CUB_HEAD", "")


def test_linear_head_on_open_clip_backbone(tiny_clip):
    torch.manual_seed(2)
    weight, bias = torch.randn(3, 32), torch.randn(3)
    model = LinearHeadModel(tiny_clip, weight, bias, ["a", "b", "c"])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = tiny_clip.model.encode_image(x, normalize=True)
    assert torch.allclose(model.logits(x), features @ weight.T + bias, atol=1e-5)
    assert model.trunk_key == tiny_clip.key  # shares cached trunks with the zero-shot head


def test_timm_local_weights_load_through_the_spec(tmp_path):
    """``timm:NAME@file`` loads a real timm architecture from a local safetensors file."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    path = tmp_path / "vit_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    backbone = build_backbone(f"timm:vit_tiny_patch16_224@{path}", "cpu", input_size=64)
    assert backbone.input_size == (64, 64)
    x = torch.randn(1, 3, 64, 96)
    assert torch.equal(backbone.model.blocks[1].attn.qkv.weight, model.blocks[1].attn.qkv.weight)
    activation = backbone.trunk(x)
    assert backbone.to_grid(activation).shape == (1, 192, 4, 6)
    with torch.no_grad():
        expected = backbone.model(x)
    assert torch.allclose(backbone.features(activation), expected, atol=1e-5)


def test_class_count_must_match_head_rows(tmp_path):
    head = save_head(tmp_path, torch.zeros(3, 8), torch.zeros(3), ["a", "b", "c"], "clip", 224)
    (tmp_path / "classes.json").write_text(json.dumps(["a", "b"]))
    with pytest.raises(ValueError, match="lists 2 class names but the head .* has 3 rows"):
        load_head(str(head))
    backbone = TimmBackbone(tiny_timm_vit(), "tiny")
    with pytest.raises(ValueError, match="2 class names but the head has 3 rows"):
        LinearHeadModel(backbone, torch.zeros(3, 48), None, ["a", "b"])
    with pytest.raises(ValueError, match="expects 8 features"):
        LinearHeadModel(backbone, torch.zeros(3, 8), None, ["a", "b", "c"])


def test_head_class_names_fall_back_to_metadata(tmp_path):
    save_head(tmp_path, torch.zeros(2, 8), None, ["x", "y"], "clip", 224)
    (tmp_path / "classes.json").unlink()
    weight, bias, classes, metadata = load_head(str(tmp_path))  # a folder works too
    assert classes == ["x", "y"] and bias is None and metadata["backbone"] == "clip"


def test_missing_head_file_and_unset_setting(tmp_path):
    with pytest.raises(WeightsFileError, match="does not exist"):
        load_head(str(tmp_path / "nope.safetensors"))
    with pytest.raises(ValueError, match="FINERCAM_CUB_HEAD"):
        build_linear(Settings(cub_head=""))


def test_hub_head_unreachable_names_the_repo(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError) as info:
        load_head("someone/cub-head-that-is-not-cached")
    message = str(info.value)
    assert "someone/cub-head-that-is-not-cached" in message
    assert "cached in" in message and "demo" in message


def test_pickle_checkpoint_with_objects_is_refused(tmp_path):
    path = tmp_path / "head.pt"
    torch.save({"weight": torch.zeros(2, 8), "evil": NotATensor()}, path)
    with pytest.raises(WeightsFileError, match="refusing to load .*weights_only=True"):
        load_tensor_file(path)
    with pytest.raises(WeightsFileError, match="refusing"):
        load_head(str(path))
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.ones(2, 8)}, plain)  # tensors only: accepted
    assert torch.equal(load_tensor_file(plain)["weight"], torch.ones(2, 8))


def test_backbone_specs():
    assert parse_spec("timm:vit_base_patch14_dinov2.lvd142m") == (
        "timm",
        "vit_base_patch14_dinov2.lvd142m",
        None,
    )
    assert parse_spec("open_clip:hf-hub:imageomics/bioclip") == (
        "open_clip",
        "hf-hub:imageomics/bioclip",
        None,
    )
    assert parse_spec("open_clip:ViT-B-16@openai") == ("open_clip", "ViT-B-16", "openai")
    assert parse_spec("demo-tinyclip") == ("demo-tinyclip", "demo-tinyclip", None)
    with pytest.raises(ValueError, match="unknown backbone"):
        parse_spec("resnet")
    with pytest.raises(ValueError, match="unknown timm model"):
        build_backbone("timm:not_a_model_at_all@random")
