"""The named torchvision ImageNet classifiers: ``vgg16bn-imagenet`` and ``resnet50-imagenet``.

Weights come through torchvision's cache; the offline ``demo-cnn`` serves when they cannot load.
"""

from __future__ import annotations

from app.config import Settings
from app.models.adapters.torchvision_cnn import (
    TorchvisionCNN,
    imagenet_class_names,
    load_torchvision,
    resnet50,
    vgg16bn,
)
from app.models.registry import ModelSpec, register_model


def build_vgg16bn(settings: Settings) -> TorchvisionCNN:
    from torchvision.models import VGG16_BN_Weights, vgg16_bn

    weights = VGG16_BN_Weights.IMAGENET1K_V1
    device = settings.torch_device
    model = load_torchvision(vgg16_bn, weights)
    return vgg16bn(
        model,
        imagenet_class_names(),
        device,
        f"torchvision:vgg16_bn@{weights.name}",
        f"vgg16bn-imagenet: torchvision VGG16-BN {weights.name} ({device})",
    )


def build_resnet50(settings: Settings) -> TorchvisionCNN:
    from torchvision.models import ResNet50_Weights
    from torchvision.models import resnet50 as tv_resnet50

    weights = ResNet50_Weights.IMAGENET1K_V2
    device = settings.torch_device
    model = load_torchvision(tv_resnet50, weights)
    return resnet50(
        model,
        imagenet_class_names(),
        device,
        f"torchvision:resnet50@{weights.name}",
        f"resnet50-imagenet: torchvision ResNet-50 {weights.name} ({device})",
    )


register_model(
    ModelSpec(
        name="vgg16bn-imagenet",
        summary="VGG16-BN ImageNet (torchvision): 1000 classes, FG-CAM capable",
        task="classifier",
        build=build_vgg16bn,
        fallback="demo-cnn",
        attention=False,
    )
)
register_model(
    ModelSpec(
        name="resnet50-imagenet",
        summary="ResNet-50 ImageNet (torchvision): 1000 classes",
        task="classifier",
        build=build_resnet50,
        fallback="demo-cnn",
        attention=False,
    )
)
