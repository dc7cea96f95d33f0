"""The offline demo ViT: a small hybrid timm VisionTransformer trained on the synthetic birds.

The model is a timm ``VisionTransformer`` (class-token pooling, 4 blocks, width 128) whose patch
embedding is a convolutional stem, as in timm's hybrid ViTs (``vit_*_r26_s32``): the first three
stages of the demo ResNet (stride 8) and a 2x2 projection, so each token covers a 16-px patch
(an 8x8 grid at 128 px). The stem starts from the trained demo CNN's weights and stays frozen
while the transformer trains: on 2 CPU cores a ViT trained from pixels does not get near the
demo CNN's accuracy in the time budget (see ``app.train.demo_vit``). The app splits it with
:class:`app.models.adapters.backbones.TimmBackbone` and
:class:`app.models.adapters.linear_head.LinearHeadModel`, the adapters of every timm ViT classifier
(split by :class:`app.models.adapters.vit.TimmVitSplit`), so the ViT target layer and the
ViT-native methods run on a trained classifier.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import torch
from torch import nn

from app.models.adapters.backbones import TimmBackbone
from app.models.adapters.linear_head import LinearHeadModel
from app.models.zoo.demo_assets import (
    DEMO_VIT_META,
    DEMO_VIT_NAME,
    DEMO_VIT_WEIGHTS,
    require_files,
)
from app.models.zoo.demo_cnn import DEFAULT_BLOCKS, DEFAULT_WIDTHS, DemoResNet

IMAGE_SIZE = 128
#: Transformer shape (the stem's widths come from the demo CNN).
DEFAULT_VIT = {"embed_dim": 128, "depth": 4, "num_heads": 4, "mlp_ratio": 2.0}


class ConvStemEmbed(nn.Module):
    """Patch embedding from a conv stem (stride 8) and a 2x2 projection: 16-px tokens.

    Has the attributes timm and :class:`~app.models.adapters.vit.TimmVitSplit` read of a patch
    embedding (``patch_size``, ``grid_size``, ``num_patches``) with ``patch_size`` the effective
    stride.
    """

    def __init__(
        self,
        img_size=IMAGE_SIZE,
        patch_size=16,
        in_chans=3,
        embed_dim=128,
        bias=True,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        blocks: Sequence[int] = DEFAULT_BLOCKS,
        **_unused,
    ):
        super().__init__()
        resnet = DemoResNet(1, widths, blocks)
        names = ("conv1", "bn1", "relu", "layer1", "layer2", "layer3")
        self.stem = nn.Sequential(OrderedDict((n, getattr(resnet, n)) for n in names))
        self.proj = nn.Conv2d(int(widths[2]), embed_dim, 2, stride=2, bias=bias)
        side = int(img_size if isinstance(img_size, int) else img_size[0])
        self.img_size = (side, side)
        self.patch_size = (16, 16)
        self.grid_size = (side // 16, side // 16)
        self.num_patches = self.grid_size[0] * self.grid_size[1]

    def feat_ratio(self, as_scalar: bool = True):
        return 16 if as_scalar else self.patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.stem(x)).flatten(2).transpose(1, 2)


def build_demo_vit(num_classes: int, config: dict | None = None) -> nn.Module:
    """The demo ViT with freshly initialised weights."""
    from timm.models.vision_transformer import VisionTransformer

    config = {**DEFAULT_VIT, **(config or {})}
    return VisionTransformer(
        img_size=IMAGE_SIZE,
        patch_size=16,
        num_classes=num_classes,
        global_pool="token",
        class_token=True,
        embed_layer=partial(ConvStemEmbed),
        **config,
    )


def load_demo_vit(
    device: torch.device | str = "cpu",
    weights: str | Path = DEMO_VIT_WEIGHTS,
    meta: str | Path = DEMO_VIT_META,
) -> LinearHeadModel:
    """The shipped demo ViT (safetensors + JSON of labels, shape and normalisation)."""
    from safetensors.torch import load_file

    weights, meta = Path(weights), Path(meta)
    require_files((weights, meta), "app.train.demo_vit")
    info = json.loads(meta.read_text())
    model = build_demo_vit(len(info["labels"]), info["vit"])
    model.load_state_dict(load_file(str(weights)))
    weight, bias = model.head.weight.detach().clone(), model.head.bias.detach().clone()
    model.reset_classifier(0)
    accuracy = info.get("test_accuracy")
    note = f", test acc {accuracy:.1%}" if accuracy is not None else ""
    device = torch.device(device)
    description = f"demo-vit: hybrid ViT on synthetic birds{note} ({device})"
    backbone = TimmBackbone(
        model,
        DEMO_VIT_NAME,
        device,
        (IMAGE_SIZE, IMAGE_SIZE),
        info["mean"],
        info["std"],
        "bilinear",
        description,
    )
    return LinearHeadModel(backbone, weight, bias, info["labels"], DEMO_VIT_NAME, description)
