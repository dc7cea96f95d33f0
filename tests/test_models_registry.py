"""The registry entries of the model adapters, their errors and offline fallbacks."""

from __future__ import annotations

import pytest
import torch

from app.config import Settings
from app.models import registry
from app.models.registry import ModelRegistry, ModelSpec, get_spec, model_specs, register_model

EXPECTED = {
    "clip-vit-b16": ("concepts", False, "demo-tinyclip"),
    "cub200-clip-zeroshot": ("classifier", False, "demo-cnn"),
    "cub200-linear": ("classifier", False, "demo-cnn"),
    "vgg16bn-imagenet": ("classifier", False, "demo-cnn"),
    "resnet50-imagenet": ("classifier", False, "demo-cnn"),
    "demo-cnn": ("classifier", True, None),
    "demo-vit": ("classifier", True, None),
    "demo-tinyclip": ("concepts", True, None),
    "demo-tinyclip-species": ("classifier", True, None),
}


def test_registered_models():
    specs = {spec.name: spec for spec in model_specs()}
    assert set(EXPECTED) <= set(specs)
    for name, (task, offline, fallback) in EXPECTED.items():
        spec = specs[name]
        assert (spec.task, spec.offline, spec.fallback) == (task, offline, fallback), name
        assert spec.summary
    assert {s.name for s in model_specs("concepts")} >= {"clip-vit-b16", "demo-tinyclip"}


def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(ValueError) as info:
        get_spec("clip-vit-b99")
    message = str(info.value)
    assert "clip-vit-b99" in message
    assert all(name in message for name in EXPECTED)


@pytest.fixture
def isolated_specs(monkeypatch):
    monkeypatch.setattr(registry, "_SPECS", dict(registry._SPECS))


def _stand_in(name: str, task: str = "classifier"):
    """An offline stand-in for a demo model (tiny real CNN adapter)."""
    from app.models.adapters.torchvision_cnn import TorchvisionCNN

    def build(settings: Settings):
        torch.manual_seed(0)
        trunk = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
        tail = torch.nn.Sequential(
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2)
        )
        model = torch.nn.Sequential(trunk, tail)
        return TorchvisionCNN(name, model, trunk, tail, ["a", "b"], (0.5,) * 3, (0.5,) * 3)

    return ModelSpec(name=name, summary="stand-in", task=task, build=build, offline=True)


@pytest.mark.parametrize("name", ["clip-vit-b16", "cub200-clip-zeroshot", "resnet50-imagenet"])
def test_hub_unreachable_falls_back_with_a_notice(name, isolated_specs, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", "/nonexistent/torch-home")  # nothing cached there
    fallback = get_spec(name).fallback
    register_model(_stand_in(fallback, get_spec(name).task))
    models = ModelRegistry(Settings(device="cpu"))
    model = models.get(name)
    assert model.name == fallback
    notice = models.notice(name)
    assert (
        notice == f"{name} unavailable (offline mode, not in the local cache); serving {fallback}."
    )
    assert "cached in" in models.details()  # the full error, on demand


def test_cub_linear_without_a_head_falls_back(isolated_specs):
    register_model(_stand_in("demo-cnn"))
    models = ModelRegistry(Settings(device="cpu", cub_head=""))
    assert models.get("cub200-linear").name == "demo-cnn"
    assert "FINERCAM_CUB_HEAD" in models.notice("cub200-linear")


def test_torchvision_offline_error_names_weights_and_cache(monkeypatch, tmp_path):
    from app.models.zoo.imagenet import build_vgg16bn

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(OSError) as info:
        build_vgg16bn(Settings(device="cpu"))
    message = str(info.value)
    assert "vgg16_bn" in message and "vgg16_bn-6c64b313.pth" in message
    assert str(tmp_path) in message and "FINERCAM_OFFLINE=1" in message


def test_clip_settings_are_honoured(monkeypatch):
    monkeypatch.setenv("FINERCAM_CLIP_TEMPLATE", "a close-up photo of {}")
    monkeypatch.setenv("FINERCAM_CUB_BACKBONE", "timm:vit_small_patch14_dinov2.lvd142m")
    settings = Settings.from_env()
    assert settings.clip_template == "a close-up photo of {}"
    assert settings.cub_backbone == "timm:vit_small_patch14_dinov2.lvd142m"
