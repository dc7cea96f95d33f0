"""The offline demo classifier: a small VGG-style CNN trained on the synthetic birds.

``features`` holds only Conv2d/BatchNorm2d/ReLU/MaxPool2d, so FG-CAM applies; its last module
(a ReLU, 16x16 grid at 128 px) is the target layer. ``head`` is global average pooling plus
one linear layer, so CAM is exact class activation mapping.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from .base import ExplainableModel
from .demo_assets import DEMO_CNN_META, DEMO_CNN_NAME, DEMO_CNN_WEIGHTS

#: Channels per conv, "M" = 2x2 max-pool (VGG notation).
DEFAULT_LAYOUT: tuple[int | str, ...] = (16, "M", 32, "M", 64, "M", 96, 96)


class DemoCNN(nn.Module):
    """VGG-style CNN: ``forward(x) = head(features(x))``."""

    def __init__(self, num_classes: int, layout: Sequence[int | str] = DEFAULT_LAYOUT):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in layout:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [
                    nn.Conv2d(channels, int(item), 3, padding=1, bias=False),
                    nn.BatchNorm2d(int(item)),
                    nn.ReLU(inplace=False),
                ]
                channels = int(item)
        self.layout = list(layout)
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class DemoCNNAdapter(ExplainableModel):
    """``DemoCNN`` split at the end of ``features``."""

    def __init__(self, model: DemoCNN, labels: Sequence[str], mean: Sequence[float],
                 std: Sequence[float], image_size: int = 128,
                 device: torch.device | str = "cpu", name: str = DEMO_CNN_NAME,
                 description: str = ""):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.name = name
        self.labels = list(labels)
        self.image_size = int(image_size)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.trunk_key = name
        self.head_key = ""
        self.description = description or f"{name} (synthetic birds, {self.device})"

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL image, got {type(image).__name__}")
        image = image.convert("RGB")
        if image.size != (self.image_size, self.image_size):
            image = image.resize((self.image_size, self.image_size), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
        x = x.permute(2, 0, 1).unsqueeze(0).to(self.device)
        return (x - self.mean) / self.std

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)

    def tail(self, activation: torch.Tensor) -> torch.Tensor:
        return self.model.head(activation)

    def class_embeddings(self) -> torch.Tensor:
        return self.model.head[-1].weight.detach()

    def fgcam_layers(self) -> nn.Sequential:
        return self.model.features


def load_demo_cnn(device: torch.device | str = "cpu", weights: str | Path = DEMO_CNN_WEIGHTS,
                  meta: str | Path = DEMO_CNN_META) -> DemoCNNAdapter:
    """The shipped demo CNN (safetensors + JSON of labels, layout and normalisation)."""
    from safetensors.torch import load_file

    weights, meta = Path(weights), Path(meta)
    for path in (weights, meta):
        if not path.is_file():
            raise FileNotFoundError(
                f"demo CNN file {path} is missing; train it with `python -m "
                f"app.synthbirds.train_cnn`"
            )
    info = json.loads(meta.read_text())
    model = DemoCNN(len(info["labels"]), info["layout"])
    model.load_state_dict(load_file(str(weights)))
    accuracy = info.get("test_accuracy")
    note = f", test acc {accuracy:.1%}" if accuracy is not None else ""
    return DemoCNNAdapter(
        model, info["labels"], info["mean"], info["std"], info["image_size"], device,
        description=f"demo-cnn: VGG-style CNN on synthetic birds{note} ({torch.device(device)})",
    )
