"""The offline demo classifier: a small torchvision ResNet trained on the synthetic birds.

``DemoResNet`` is a torchvision ``ResNet`` of ``BasicBlock``s with small widths and a stem sized
for 128-px birds (3x3 stride-2 conv, no max-pool, stride 1 in ``layer4``): its last block
outputs a 16x16 grid (stride 8), fine enough for a crown or an eye ring. The app wraps it with
the same adapter and trunk/tail split as the ImageNet ResNet-50
(:func:`app.models.adapters.torchvision_cnn.resnet_split`), so CAM, Finer-CAM and FG-CAM's
ResNet path run on trained weights.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from app.models.adapters.torchvision_cnn import TorchvisionCNN, resnet_split
from app.models.zoo.demo_assets import (
    DEMO_CNN_META,
    DEMO_CNN_NAME,
    DEMO_CNN_WEIGHTS,
    require_files,
)

#: Channels of the stem / layer1 .. layer4, and blocks per layer.
DEFAULT_WIDTHS: tuple[int, ...] = (24, 48, 96, 160)
DEFAULT_BLOCKS: tuple[int, ...] = (1, 1, 1, 1)
#: Input side and the trunk's stride (16x16 grid at 128 px).
IMAGE_SIZE = 128
STRIDE = 8


class DemoResNet(ResNet):
    """A torchvision ``ResNet`` (BasicBlock) with small widths and a stride-8 trunk."""

    def __init__(
        self,
        num_classes: int,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        blocks: Sequence[int] = DEFAULT_BLOCKS,
    ):
        super().__init__(BasicBlock, [1, 1, 1, 1], num_classes=num_classes)
        self.widths, self.blocks = [int(w) for w in widths], [int(b) for b in blocks]
        self.inplanes = self.widths[0]
        self.conv1 = nn.Conv2d(3, self.widths[0], 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.widths[0])
        self.maxpool = nn.Identity()
        strides = (1, 2, 2, 1)
        for index, (width, count, stride) in enumerate(
            zip(self.widths, self.blocks, strides, strict=True)
        ):
            setattr(self, f"layer{index + 1}", self._make_layer(BasicBlock, width, count, stride))
        self.fc = nn.Linear(self.widths[-1], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        for module in self.modules():  # residual branches start near identity
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)


def demo_cnn_adapter(
    model: DemoResNet,
    labels: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str = "cpu",
    description: str = "",
) -> TorchvisionCNN:
    """``DemoResNet`` behind the ImageNet ResNet's adapter: any image is resized to 128 px."""
    trunk, tail = resnet_split(model)
    return TorchvisionCNN(
        DEMO_CNN_NAME,
        model,
        trunk,
        tail,
        labels,
        mean,
        std,
        device,
        fgcam=trunk,
        key=DEMO_CNN_NAME,
        description=description,
        short_side=IMAGE_SIZE,
        max_long_side=IMAGE_SIZE,
        stride=STRIDE,
    )


def load_demo_cnn(
    device: torch.device | str = "cpu",
    weights: str | Path = DEMO_CNN_WEIGHTS,
    meta: str | Path = DEMO_CNN_META,
) -> TorchvisionCNN:
    """The shipped demo CNN (safetensors + JSON of labels, widths and normalisation)."""
    from safetensors.torch import load_file

    weights, meta = Path(weights), Path(meta)
    require_files((weights, meta), "app.train.demo_cnn")
    info = json.loads(meta.read_text())
    model = DemoResNet(len(info["labels"]), info["widths"], info["blocks"])
    model.load_state_dict(load_file(str(weights)))
    accuracy = info.get("test_accuracy")
    note = f", test acc {accuracy:.1%}" if accuracy is not None else ""
    return demo_cnn_adapter(
        model,
        info["labels"],
        info["mean"],
        info["std"],
        device,
        f"demo-cnn: small ResNet on synthetic birds{note} ({torch.device(device)})",
    )
