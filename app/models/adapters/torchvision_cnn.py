"""torchvision ImageNet CNNs split at their last conv block: VGG16-BN and ResNet-50.

* ``vgg16bn-imagenet``: trunk = ``features`` (13 conv/BN/ReLU + 5 max-pools, the plain stack
  FG-CAM walks down), tail = ``avgpool`` + flatten + ``classifier``.
* ``resnet50-imagenet``: trunk = stem + ``layer1..layer4`` (FG-CAM follows its Bottleneck
  blocks, see :mod:`app.explain.fgcam`), tail = ``avgpool`` + ``fc``.

Preprocessing keeps the aspect ratio: the shorter side goes to 224 px, the longer side follows
(capped at 448 px), both snapped to multiples of 32 so each feature cell covers a whole
32-px block. CNNs take any size, and the adaptive average pool feeds the classifier the same
way, so the whole image is seen without distortion. Mean/std come from the weights' transforms.
Weights come through torchvision's cache (``$TORCH_HOME/hub/checkpoints``).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
from PIL import Image
from torch import nn

from app.models.base import ExplainableModel, layers_with_parameters
from app.models.hub.downloads import hub_error, torch_cache_dir
from app.models.preprocess import aspect_size, to_tensor
from app.models.weights import freeze

ASSETS = Path(__file__).resolve().parents[3] / "assets"
IMAGENET_CLASSES_FILE = ASSETS / "imagenet_classes.txt"
SHORT_SIDE = 224
MAX_LONG_SIDE = 448
STRIDE = 32


def imagenet_class_names() -> list[str]:
    lines = IMAGENET_CLASSES_FILE.read_text().splitlines()
    names = [line.strip() for line in lines if line.strip()]
    if len(names) != 1000:
        raise ValueError(f"{IMAGENET_CLASSES_FILE} lists {len(names)} classes, expected 1000")
    return names


class TorchvisionCNN(ExplainableModel):
    """A CNN given as (trunk module, tail module); the trunk ends at the target layer."""

    def __init__(
        self,
        name: str,
        model: nn.Module,
        trunk: nn.Module,
        tail: nn.Module,
        labels: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str = "cpu",
        fgcam: nn.Sequential | None = None,
        key: str = "",
        description: str = "",
        short_side: int = SHORT_SIDE,
        max_long_side: int = MAX_LONG_SIDE,
        stride: int = STRIDE,
    ) -> None:
        self.device = torch.device(device)
        self.model = freeze(model.to(self.device))
        self._trunk, self._tail, self._fgcam = trunk, tail, fgcam
        self.labels = tuple(labels)
        out = _out_features(tail)
        if out is not None and out != len(self.labels):
            raise ValueError(f"{len(self.labels)} class names for a {out}-way classifier")
        self.name = name
        self.mean, self.std = tuple(mean), tuple(std)
        self.short_side, self.max_long_side, self.stride = short_side, max_long_side, stride
        self.trunk_key = key or name
        self.head_key = ""
        self.description = description or f"{name} ({self.device})"

    def input_size_for(self, width: int, height: int) -> tuple[int, int]:
        """Model input (width, height) for an image of ``width x height``."""
        return aspect_size(width, height, self.short_side, self.max_long_side, self.stride)

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Feature grid of an input of ``height x width`` pixels (the trunk's stride, floor)."""
        return height // self.stride, width // self.stride

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL image, got {type(image).__name__}")
        size = self.input_size_for(*image.size)
        return to_tensor(image, size, self.mean, self.std, self.device, "bilinear")

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self._trunk(x)

    def tail(self, activation: torch.Tensor) -> torch.Tensor:
        return self._tail(activation)

    def class_embeddings(self) -> torch.Tensor | None:
        linear = _last_linear(self._tail)
        return None if linear is None else linear.weight

    def fgcam_layers(self) -> nn.Sequential | None:
        return self._fgcam

    def cascade_layers(self) -> list[tuple[str, nn.Module]]:
        """The tail's and the trunk's top-level modules with weights, output first."""
        return layers_with_parameters(self.model, [*self._trunk.children(), *self._tail.children()])


def _last_linear(module: nn.Module) -> nn.Linear | None:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def _out_features(module: nn.Module) -> int | None:
    linear = _last_linear(module)
    return None if linear is None else linear.out_features


def vgg16bn(model: nn.Module, labels: Sequence[str], device, key: str, description: str = ""):
    """Adapter for a torchvision ``vgg16_bn`` (any weights)."""
    from torchvision.models import VGG16_BN_Weights

    tail = nn.Sequential(model.avgpool, nn.Flatten(1), model.classifier)
    mean, std = _mean_std(VGG16_BN_Weights.IMAGENET1K_V1)
    return TorchvisionCNN(
        "vgg16bn-imagenet",
        model,
        model.features,
        tail,
        labels,
        mean,
        std,
        device,
        fgcam=model.features,
        key=key,
        description=description,
    )


def resnet_split(model: nn.Module) -> tuple[nn.Sequential, nn.Sequential]:
    """(trunk, tail) of a torchvision ``ResNet``: stem + ``layer1..layer4`` (the stack FG-CAM
    walks), then ``avgpool`` + flatten + ``fc``."""
    names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    trunk = nn.Sequential(OrderedDict((name, getattr(model, name)) for name in names))
    return trunk, nn.Sequential(model.avgpool, nn.Flatten(1), model.fc)


def resnet50(model: nn.Module, labels: Sequence[str], device, key: str, description: str = ""):
    """Adapter for a torchvision ``resnet50`` (any weights)."""
    from torchvision.models import ResNet50_Weights

    trunk, tail = resnet_split(model)
    mean, std = _mean_std(ResNet50_Weights.IMAGENET1K_V2)
    return TorchvisionCNN(
        "resnet50-imagenet",
        model,
        trunk,
        tail,
        labels,
        mean,
        std,
        device,
        fgcam=trunk,
        key=key,
        description=description,
    )


def _mean_std(weights) -> tuple[Sequence[float], Sequence[float]]:
    transforms = weights.transforms()
    return tuple(transforms.mean), tuple(transforms.std)


def load_torchvision(arch: Callable[..., nn.Module], weights) -> nn.Module:
    """``arch`` with ``weights`` from torchvision's cache, downloading them first if needed.

    The download happens before the (slow) model construction, so failures are quick. With
    ``HF_HUB_OFFLINE=1`` the network is not touched: only the cache is looked at.
    """
    cached = os.path.join(torch_cache_dir(), os.path.basename(urlparse(weights.url).path))
    try:
        if not os.path.isfile(cached) and _offline():
            raise FileNotFoundError(f"{cached} is not in the cache and HF_HUB_OFFLINE is set")
        state = weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except Exception as error:
        raise hub_error(
            f"torchvision {arch.__name__} ({weights})", weights.url, torch_cache_dir(), error
        ) from error
    model = arch(weights=None, num_classes=len(weights.meta["categories"]))
    model.load_state_dict(state)
    return model


def _offline() -> bool:
    """No network: ``HF_HUB_OFFLINE`` or the Hub probe failed (then nothing answers quickly)."""
    from app.models.hub.policy import hub_online

    return not hub_online()
