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
