"""Shared fixtures: offline, deterministic, small real models."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest
import torch
from torch import nn

torch.set_num_threads(2)


def _tiny_cnn(num_classes: int = 6) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, num_classes),
    ).eval()


@pytest.fixture
def tiny_cnn() -> nn.Module:
    """A conv net whose target layer is index 5 (last ReLU, 16 channels at half resolution)."""
    return _tiny_cnn()


@pytest.fixture
def tiny_vit():
    """A two-block timm ViT (patch 8 on 32 px -> 4x4 grid) and its reshape transform."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=7
    ).eval()

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        grid = tokens[:, 1:, :].reshape(tokens.size(0), 4, 4, tokens.size(2))
        return grid.permute(0, 3, 1, 2)

    return model, model.blocks[-1].norm1, reshape


@pytest.fixture
def image_batch() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 3, 32, 32)


class TinyAdapter:
    """Test-only adapter over ``_tiny_cnn`` that counts trunk runs (model calls)."""

    def __new__(cls, *args, **kwargs):
        from app.models.base import ExplainableModel

        class _Adapter(ExplainableModel):
            name = "tiny-test-cnn"
            labels = [f"Class {i}" for i in range(6)]
            device = torch.device("cpu")
            trunk_key = "tiny-test-cnn"

            def __init__(self) -> None:
                self.net = _tiny_cnn()
                self.trunk_calls = 0

            def preprocess(self, image):
                import numpy as np

                resized = image.convert("RGB").resize((32, 32))
                array = torch.from_numpy(np.asarray(resized, dtype="float32") / 255.0)
                return array.permute(2, 0, 1)[None] * 2 - 1

            def trunk(self, x):
                self.trunk_calls += 1
                return self.net[:6](x)

            def tail(self, activation):
                return self.net[6:](activation)

            def class_embeddings(self):
                return self.net[-1].weight

        return _Adapter()


@pytest.fixture
def tiny_adapter():
    return TinyAdapter()


@pytest.fixture
def rgb_image():
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
