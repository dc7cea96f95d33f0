"""The shipped offline demo models through the registry and the generic adapters."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from app.config import Settings
from app.models.adapters.clip import ClipPromptView, tinyclip_engine
from app.models.registry import ModelRegistry
from app.models.zoo.demo_assets import tinyclip_meta


@pytest.fixture(scope="module")
def models() -> ModelRegistry:
    return ModelRegistry(Settings(device="cpu", offline=True))


def test_offline_mode_offers_only_the_demo_models(models):
    assert set(models.names()) == {"demo-cnn", "demo-vit", "demo-tinyclip", "demo-tinyclip-species"}
    assert models.names("concepts") == ["demo-tinyclip"]


def test_offline_mode_serves_hub_models_by_their_fallback(models):
    assert models.get("clip-vit-b16").name == "demo-tinyclip"
    assert "Offline mode" in models.notice("clip-vit-b16")


def test_tinyclip_goes_through_the_generic_open_clip_adapter(models):
    concepts = models.get("demo-tinyclip")
    assert isinstance(concepts, ClipPromptView)
    engine = concepts.engine
    assert engine is tinyclip_engine("cpu")
    assert engine.key.startswith("open_clip:synthbirds-tinyclip@")
    view = concepts.with_prompts(["a bird with a red crown", "a bird"])
    x = view.preprocess(Image.new("RGB", (150, 90)))
    assert x.shape[-2:] == engine.input_size
    leaf, logits = view.split_forward(x)
    with torch.no_grad():
        image = engine.model.encode_image(x, normalize=True)
        text = engine.model.encode_text(engine.tokenizer(list(view.texts)), normalize=True)
        expected = engine.model.logit_scale.exp() * image @ text.T
    assert torch.allclose(logits.detach(), expected, atol=1e-4)
    h, w = engine.input_size
    assert view.to_grid(leaf).shape[-2:] == engine.grid_size(h, w)


def test_tinyclip_species_classifier(models):
    species = models.get("demo-tinyclip-species")
    meta = tinyclip_meta()
    assert list(species.labels) == meta["labels"]
    assert species.trunk_key == models.get("demo-tinyclip").trunk_key
    rows = species.class_embeddings()
    assert rows.shape[0] == len(meta["labels"])


def test_demo_cnn_loads(models):
    cnn = models.get("demo-cnn")
    assert cnn.fgcam_layers() is not None and cnn.num_classes == len(cnn.labels)


def test_demo_vit_is_a_timm_vit_split_at_its_last_block(models):
    from timm.models.vision_transformer import VisionTransformer

    from app.models.adapters.vit import TimmVitSplit

    vit = models.get("demo-vit")
    assert isinstance(vit.backbone.model, VisionTransformer)
    assert isinstance(vit.backbone.split, TimmVitSplit) and vit.backbone.split.fast
    assert vit.num_classes == len(vit.labels) == len(models.get("demo-cnn").labels)
    x = vit.preprocess(Image.new("RGB", (150, 90)))
    leaf, logits = vit.split_forward(x)
    with torch.no_grad():
        head = vit.backbone.model.forward_features(x)
        expected = torch.nn.functional.linear(
            vit.backbone.model.forward_head(head, pre_logits=True), vit.weight, vit.bias
        )
    assert torch.allclose(logits.detach(), expected, atol=1e-4)
    assert vit.to_grid(leaf).shape[-2:] == vit.grid_size(128, 128) == (8, 8)
