"""Small real architectures for the model-adapter tests (random weights, built offline)."""

from __future__ import annotations

import json
from pathlib import Path

import torch


class NotATensor:
    """An arbitrary object: a pickle holding it must be refused (weights_only=True)."""

    def __init__(self) -> None:
        self.payload = "anything"


#: The smallest text tower open_clip builds (its tokenizer's vocabulary, one layer).
TINY_TEXT_CFG = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}


def tiny_clip_config(**vision) -> dict:
    """An open_clip config small enough to build in well under a second."""
    vision_cfg = {
        "image_size": 64,
        "layers": 2,
        "width": 64,
        "head_width": 32,
        "patch_size": 16,
        "mlp_ratio": 2.0,
    }
    vision_cfg.update(vision)
    return {
        "embed_dim": 32,
        "quick_gelu": False,
        "vision_cfg": vision_cfg,
        "text_cfg": dict(TINY_TEXT_CFG),
    }


def register_tiny_clip(folder: Path, name: str, **vision) -> str:
    """Write a tiny config named ``name`` and register it with open_clip; returns the name."""
    import open_clip

    if name not in open_clip.list_models():
        path = folder / f"{name}.json"
        path.write_text(json.dumps(tiny_clip_config(**vision)))
        open_clip.add_model_config(path)
    return name


def save_random_clip(name: str, path: Path, seed: int = 0) -> Path:
    """Random-weight open_clip model ``name`` (pretrained=None) saved as safetensors."""
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    with torch.no_grad():  # a non-trivial logit scale, so logits are not all near zero
        model.logit_scale.fill_(4.6)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


#: A tiny timm backbone: 3 blocks of width 48, patch 14, no head, dynamic input size.
TINY_TIMM_BACKBONE = dict(
    img_size=56,
    patch_size=14,
    embed_dim=48,
    depth=3,
    num_heads=3,
    num_classes=0,
    dynamic_img_size=True,
)


def tiny_timm_vit(**kwargs):
    """A DINOv2-like timm ViT (patch 14, layer scale, dynamic size), random weights."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    config = {**TINY_TIMM_BACKBONE, "init_values": 0.1, **kwargs}
    return VisionTransformer(**config).eval()


def tiny_timm_eva(architecture: str = "eva02_tiny_patch14_224", seed: int = 0, **kwargs):
    """A tiny EVA-02 (rotary positions, SwiGLU, layer scales; by default a class-token backbone
    of dynamic size) with random q/v biases (timm starts them at zero, where errors hide)."""
    import timm

    torch.manual_seed(seed)
    config = {**TINY_TIMM_BACKBONE, "init_values": 0.5, "global_pool": "token", **kwargs}
    model = timm.create_model(architecture, **config)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.q_bias.normal_(std=0.5)
            block.attn.v_bias.normal_(std=0.5)
    assert model.rope is not None
    return model.eval()
