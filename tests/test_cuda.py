"""CUDA only (skipped cleanly on CPU machines): the service and a Hub-style model on the GPU."""

from __future__ import annotations

import pytest
import torch

from app.config import Settings
from app.explain.service import ExplainSettings
from app.models.registry import ModelRegistry

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_demo_models_explain_on_cuda(rgb_image):
    from app.ui.app import create_service

    registry = ModelRegistry(Settings(device="cuda", offline=True))
    service = create_service(registry)
    for name in ("demo-cnn", "demo-tinyclip-species"):
        assert registry.get(name).device.type == "cuda"
        explanation = service.explain(name, rgb_image, ExplainSettings(top_t=2))
        assert explanation.cam_overlay.shape[:2] == (rgb_image.height, rgb_image.width)
        cpu = create_service(ModelRegistry(Settings(device="cpu", offline=True)))
        reference = cpu.explain(name, rgb_image, ExplainSettings(top_t=2))
        assert explanation.target.name == reference.target.name
