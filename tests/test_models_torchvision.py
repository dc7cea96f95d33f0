"""torchvision CNN adapters: real VGG16-BN / ResNet-50 architectures with weights=None."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.models import ResNet50_Weights, VGG16_BN_Weights, resnet50, vgg16_bn

from app.models.adapters import torchvision_cnn
from app.models.preprocess import aspect_size


@pytest.fixture(scope="module")
def labels():
    return torchvision_cnn.imagenet_class_names()


@pytest.fixture(scope="module")
def vgg(labels):
    torch.manual_seed(0)
    return torchvision_cnn.vgg16bn(vgg16_bn(weights=None), labels, "cpu", "vgg-random")


@pytest.fixture(scope="module")
def resnet(labels):
    torch.manual_seed(0)
    return torchvision_cnn.resnet50(resnet50(weights=None), labels, "cpu", "resnet-random")


def test_shipped_class_names_match_the_weights(labels):
    assert len(labels) == 1000 == len(set(labels))
    assert labels == VGG16_BN_Weights.IMAGENET1K_V1.meta["categories"]
    assert labels == ResNet50_Weights.IMAGENET1K_V2.meta["categories"]


@pytest.mark.parametrize("which", ["vgg", "resnet"])
def test_split_logits_equal_the_whole_network(which, request):
    adapter = request.getfixturevalue(which)
    x = torch.randn(1, 3, 64, 96)
    leaf, logits = adapter.split_forward(x)
    with torch.no_grad():
        expected = adapter.model(x)
    assert torch.allclose(logits.detach(), expected, atol=1e-5)
    assert adapter.to_grid(leaf).shape[-2:] == (2, 3) == adapter.grid_size(64, 96)
    assert logits.shape == (1, 1000) and adapter.num_classes == 1000
    rows = adapter.class_embeddings()
    assert rows.shape[0] == 1000 and torch.equal(
        rows, adapter.model.state_dict()["classifier.6.weight" if which == "vgg" else "fc.weight"]
    )


@pytest.mark.parametrize("which", ["vgg", "resnet"])
def test_gradients_flow_only_in_the_tail(which, request):
    adapter = request.getfixturevalue(which)
    leaf, logits = adapter.split_forward(torch.randn(1, 3, 64, 64))
    (grad,) = torch.autograd.grad(logits[0, 7], leaf)
    assert grad.shape == leaf.shape and grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in adapter.model.parameters())


def test_grid_sizes_for_non_square_inputs(vgg):
    for width, height in [(300, 170), (170, 300), (224, 224), (1000, 90), (640, 480)]:
        x = vgg.preprocess(Image.new("RGB", (width, height), (10, 200, 30)))
        h, w = x.shape[-2:]
        assert min(h, w) == 224 and max(h, w) <= 448 and h % 32 == 0 and w % 32 == 0
        assert (w >= h) == (width >= height)  # aspect kept, no crop
        assert aspect_size(width, height) == (w, h)
        assert vgg.grid_size(h, w) == (h // 32, w // 32)
    with torch.no_grad():
        assert vgg.trunk(torch.randn(1, 3, 224, 320)).shape == (1, 512, 7, 10)


def test_vgg_fgcam_layers_are_the_plain_feature_stack(vgg, resnet):
    layers = vgg.fgcam_layers()
    assert layers is vgg.model.features
    allowed = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d)
    assert all(isinstance(m, allowed) for m in layers)
    assert not any(isinstance(m, nn.ReLU) and m.inplace for m in layers)
    from app.explain.fgcam import named_stack

    stack = resnet.fgcam_layers()  # stem + Bottleneck blocks, ending at the target layer
    assert [name for name, _ in named_stack(stack)][:5] == [
        "conv1",
        "bn1",
        "relu",
        "maxpool",
        "layer1.0",
    ]
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 64)
        assert torch.equal(stack(x), resnet.trunk(x))


def test_normalisation_comes_from_the_weights(vgg):
    assert vgg.mean == pytest.approx((0.485, 0.456, 0.406))
    assert vgg.std == pytest.approx((0.229, 0.224, 0.225))


def test_class_count_mismatch_is_refused():
    with pytest.raises(ValueError, match="3 class names for a 1000-way classifier"):
        torchvision_cnn.resnet50(resnet50(weights=None), ["a", "b", "c"], "cpu", "k")
