"""FG-CAM: conservation, equality with CAM at the target layer, the reference's rules, shapes,
denoising, unsupported models and bad arguments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from app.explain.fgcam import (
    FGCAMUnsupported,
    explanation_components,
    fgcam,
    record,
    supported_layers,
    svd_denoise,
)


def _eval(model: nn.Module) -> nn.Module:
    """Eval mode with non-trivial BN statistics and affine parameters."""
    generator = torch.Generator().manual_seed(3)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(c, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(c, generator=generator) * 0.1)
    return model.eval()


def _bias_free_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),  # overlapping windows
        nn.Conv2d(8, 16, 3, padding=2, dilation=2, groups=2, bias=False),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(5),  # 16 -> 5: overlapping adaptive regions
        nn.Conv2d(16, 12, 3, stride=2, padding=1, bias=False),
        nn.ReLU(),
    ).eval()


def _mixed_cnn() -> nn.Sequential:
    """Biases, BN, every supported pooling, stride/dilation/groups, in-place ReLU."""
    torch.manual_seed(0)
    return _eval(
        nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
            nn.Conv2d(8, 16, 3, padding="same", dilation=2, groups=2),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(7),
            nn.Conv2d(16, 12, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AvgPool2d(3, stride=1, padding=1),
            nn.Dropout(),
            nn.Conv2d(12, 10, 1),
            nn.ReLU(),
            nn.AdaptiveMaxPool2d(3),
        )
    )


@pytest.fixture(scope="module")
def vgg():
    from torchvision.models import vgg16_bn

    torch.manual_seed(0)
    return vgg16_bn(weights=None).eval()


# --------------------------------------------------------------------------------------------
# Conservation


def test_conservation_layer_to_layer_without_biases_on_relu_positive_input():
    """Rule under test: conv = positive/negative split (z+ on ReLU-positive inputs), the input conv
    = bounded z^B rule, pools = proportional to the positive inputs, ReLU/BN = identity. For a
    bias-free model on a positive image every output with relevance has a positive contribution,
    so the sum over channels and positions of the relevance equals sum_k sum_hw w_k A_k at every
    stop layer."""
    model = _bias_free_cnn()
    torch.manual_seed(1)
    x = torch.rand(1, 3, 32, 32)  # ReLU-positive input
    trace = record(model, x)
    components = explanation_components(trace.activation, torch.randn(12))
    total = components.sum()
    sums = [trace.propagate(components, stop).sum() for stop in range(len(model) + 1)]
    torch.testing.assert_close(torch.stack(sums), total.expand(len(sums)), rtol=1e-5, atol=1e-5)
    # and per layer: what a layer sends down is what it received
    for stop in range(len(model)):
        torch.testing.assert_close(sums[stop], sums[stop + 1], rtol=1e-5, atol=1e-5)


def test_conservation_on_vgg16_bn_with_signed_normalised_input(vgg):
    """Same rules on torchvision VGG16-BN (bias-free at init) with a signed (normalised) input:
    the bounded rule at features[0] keeps the sum down to the pixels."""
    torch.manual_seed(2)
    x = torch.randn(1, 3, 32, 32)
    trace = record(vgg.features, x)
    components = explanation_components(trace.activation, torch.randn(512))
    for stop in (0, 1, 7, 24, 43, 44):
        torch.testing.assert_close(
            trace.propagate(components, stop).sum(), components.sum(), rtol=1e-4, atol=1e-4
        )


def test_resnet18_blocks_conserve_and_record_the_true_forward():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = _eval(resnet18(weights=None))
    x = torch.randn(1, 3, 32, 32)
    layers = supported_layers(model)
    assert len(layers) == 4 + 8
    trace = record(model, x)
    with torch.no_grad():
        expected = model.layer4(model.layer3(model.layer2(model.layer1(layers[:4](x)))))
    torch.testing.assert_close(trace.activation, expected)
    components = explanation_components(trace.activation, torch.randn(512).abs())
    for stop in (0, 3, 4, 6, 9, 12):  # input, stem, block boundaries (with and without downsample)
        torch.testing.assert_close(
            trace.propagate(components, stop).sum(), components.sum(), rtol=1e-4, atol=1e-4
        )
    assert fgcam(model, x, torch.randn(512)).shape == (32, 32)


# --------------------------------------------------------------------------------------------
# Equality with CAM at the target layer


def test_at_the_target_layer_fgcam_is_the_cam_sum(tiny_cnn, image_batch):
    layers = tiny_cnn[:6]
    x = image_batch[:1]
    with torch.no_grad():
        activation = layers(x)
    weights = torch.randn(16)
    expected = (weights[:, None, None] * activation[0]).sum(0)
    torch.testing.assert_close(fgcam(layers, x, weights, stop_at=6), expected)
    torch.testing.assert_close(
        fgcam(layers, x, weights, stop_at=6, relu=True), expected.clamp(min=0)
    )
    elementwise = torch.randn(16, 16, 16)
    torch.testing.assert_close(
        fgcam(layers, x, elementwise, stop_at=6), (elementwise * activation[0]).sum(0)
    )


def test_at_the_target_layer_fgcam_matches_pytorch_grad_cam(tiny_cnn, image_batch):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x, target = image_batch[:1], 4
    with torch.no_grad():
        activation = tiny_cnn[:6](x)
    activation.requires_grad_(True)
    (gradient,) = torch.autograd.grad(tiny_cnn[6:](activation)[0, target], activation)
    weights = gradient.mean(dim=(2, 3))[0]  # Grad-CAM's weights

    ours = fgcam(tiny_cnn[:6], x, weights, stop_at=6, relu=True).numpy()
    ours = scale_cam_image(scale_cam_image(ours[None], (32, 32)))  # grad-cam's resize + scaling
    with GradCAM(tiny_cnn, [tiny_cnn[5]]) as cam:
        expected = cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])
    np.testing.assert_allclose(ours, expected, atol=1e-5)


@pytest.mark.parametrize("references, gamma", [((), 0.0), ((1,), 0.7)])
def test_at_the_target_layer_fgcam_matches_the_engines_cam_and_finer_cam(
    references, gamma, tiny_cnn, image_batch
):
    """Finer weights alpha^c - gamma * alpha^d (Grad-CAM alphas) at stop_at=len(layers) give the
    engine's Finer-CAM map (same weights, same layer)."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    from app.explain import contrastive_cam

    x, target = image_batch[:1], 4
    with torch.no_grad():
        activation = tiny_cnn[:6](x)
    activation.requires_grad_(True)
    logits = tiny_cnn[6:](activation)[0]
    (gradient,) = torch.autograd.grad(
        logits[target] - gamma * sum(logits[d] for d in references), activation
    )
    weights = gradient.mean(dim=(2, 3))[0]

    ours = fgcam(tiny_cnn[:6], x, weights, stop_at=6, relu=True).numpy()
    ours = scale_cam_image(scale_cam_image(ours[None], (32, 32)))
    expected = contrastive_cam(tiny_cnn, tiny_cnn[5], x, target, list(references), gamma, "gradcam")
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_finer_weights_combine_linearly_before_the_relu(tiny_cnn, image_batch):
    layers, x = tiny_cnn[:6], image_batch[:1]
    target, reference = torch.randn(16), torch.randn(16)
    trace = record(layers, x)
    combined = trace.explain(target - 0.6 * reference)
    torch.testing.assert_close(
        combined, trace.explain(target) - 0.6 * trace.explain(reference), rtol=1e-4, atol=1e-5
    )
    both = trace.explain(torch.stack([target, reference]), stop_at=3)
    torch.testing.assert_close(both[1], trace.explain(reference, stop_at=3))


# --------------------------------------------------------------------------------------------
# The reference's rules, written as gradient x input (independent oracle)


def _safe(r, den):
    return torch.where(
        den == 0, torch.zeros_like(den), r / torch.where(den == 0, torch.ones_like(den), den)
    )


def _oracle(layers, x, relevance, stop_at):
    """The rules in the reference's autograd form:
    R_in = sum_t x_t * grad(y_t, x_t, R / sum_t y_t)."""
    inputs, h = [], x
    with torch.no_grad():
        for module in layers:
            inputs.append(h)
            h = module(h.clone())
    r = relevance
    for index in range(len(layers) - 1, stop_at - 1, -1):
        module, xin = layers[index], inputs[index]
        if isinstance(module, nn.Conv2d):
            kw = {
                "stride": module.stride,
                "padding": module.padding,
                "dilation": module.dilation,
                "groups": module.groups,
            }
            w, wp, wn = module.weight, module.weight.clamp(min=0), module.weight.clamp(max=0)
            if index == 0:
                xv = xin.clone().requires_grad_()
                low = (xin * 0 + xin.min()).requires_grad_()
                high = (xin * 0 + xin.max()).requires_grad_()
                y1, y2, y3 = (
                    F.conv2d(xv, w, **kw),
                    F.conv2d(low, wp, **kw),
                    F.conv2d(high, wn, **kw),
                )
                s = _safe(r, y1 - y2 - y3)
                g1, g2, g3 = torch.autograd.grad((y1, y2, y3), (xv, low, high), (s, s, s))
                r = xin * g1 - low.detach() * g2 - high.detach() * g3
            else:
                xp = xin.clamp(min=0).requires_grad_()
                xn = xin.clamp(max=0).requires_grad_()
                y1, y2 = F.conv2d(xp, wp, **kw), F.conv2d(xn, wn, **kw)
                s = _safe(r, y1 + y2)
                g1, g2 = torch.autograd.grad((y1, y2), (xp, xn), (s, s))
                r = xp.detach() * g1 + xn.detach() * g2
        elif isinstance(
            module, (nn.MaxPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
        ):
            xp = xin.clamp(min=0).requires_grad_()
            y = module(xp)
            (g,) = torch.autograd.grad(y, xp, _safe(r, y))
            r = xp.detach() * g
    return r.detach()


@pytest.mark.parametrize("stop_at", [0, 1, 3, 4, 8, 10, 13, 15])
def test_rules_match_the_gradient_times_input_form(stop_at):
    model = _mixed_cnn()
    torch.manual_seed(4)
    x = torch.randn(1, 3, 32, 32)
    trace = record(model, x)
    components = explanation_components(trace.activation, torch.randn(10))
    expected = _oracle(list(model), x, components, stop_at)
    torch.testing.assert_close(trace.propagate(components, stop_at), expected, rtol=1e-4, atol=1e-6)


def test_one_propagation_equals_carrying_each_component_separately():
    model = _mixed_cnn()
    x = torch.randn(1, 3, 32, 32)
    trace = record(model, x)
    components = explanation_components(trace.activation, torch.randn(10))  # (1, 10, 3, 3)
    separate = torch.diag_embed(components[0].permute(1, 2, 0)).permute(
        3, 2, 0, 1
    )  # (10, 10, 3, 3)
    assert torch.equal(separate.sum(0, keepdim=True), components)
    torch.testing.assert_close(
        trace.propagate(separate, 0).sum(0, keepdim=True),
        trace.propagate(components, 0),
        rtol=1e-4,
        atol=1e-6,
    )


def test_input_bounds_switch_the_bounded_rule_and_are_validated(tiny_cnn, image_batch):
    layers, x = tiny_cnn[:6], image_batch[:1]
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    bounds = (-mean / std, (1 - mean) / std)
    trace = record(layers, x)
    weights = torch.randn(16)
    bounded = trace.explain(weights, input_bounds=bounds)
    assert bounded.shape == (32, 32)
    assert not torch.allclose(bounded, trace.explain(weights))
    # x lies partly outside these bounds; widening keeps the rule conservative
    total = explanation_components(trace.activation, weights).sum()
    torch.testing.assert_close(bounded.sum(), total, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="input_bounds"):
        trace.explain(weights, input_bounds=(torch.zeros(5), torch.ones(5)))
    with pytest.raises(ValueError, match="input_bounds"):
        trace.explain(weights, input_bounds=(torch.ones(3), torch.zeros(3)))


# --------------------------------------------------------------------------------------------
# Shapes and denoising


@pytest.mark.parametrize("net", ["vgg16_bn", "mixed"])
def test_output_shape_at_every_stop_layer(net, vgg):
    layers = {
        "vgg16_bn": lambda: supported_layers(vgg),
        "mixed": _mixed_cnn,
    }[net]()
    x = torch.randn(1, 3, 32, 32)
    trace = record(layers, x)
    weights = torch.randn(trace.activation.shape[1])
    shapes, h = [], x
    with torch.no_grad():
        for module in layers:
            shapes.append(h.shape[2:])
            h = module(h.clone())
    shapes.append(h.shape[2:])
    # VGG16-BN: every stop's resolution, maps at one stop of each layer type and resolution
    explained = (
        (0, 1, 2, 3, 6, 7, 13, 14, 23, 33, 43, 44) if net == "vgg16_bn" else range(len(shapes))
    )
    for stop, shape in enumerate(shapes):
        assert trace.resolution(stop) == shape
        if stop in explained:
            assert trace.explain(weights, stop_at=stop).shape == shape
    assert shapes[0] == (32, 32)  # stop_at=0: the input resolution
    assert len(supported_layers(vgg)) == 44


def test_demo_cnn_stack_is_supported():
    from app.models.adapters.torchvision_cnn import resnet_split
    from app.models.zoo.demo_cnn import DemoResNet

    torch.manual_seed(0)
    model = _eval(DemoResNet(5))
    layers = supported_layers(resnet_split(model)[0])
    x = torch.randn(1, 3, 64, 64)
    assert fgcam(layers, x, torch.randn(model.widths[-1])).shape == (64, 64)
    assert fgcam(layers, x, torch.randn(model.widths[-1]), stop_at=len(layers)).shape == (8, 8)


def test_svd_denoise_is_the_best_centred_low_rank_projection():
    torch.manual_seed(5)
    components = torch.randn(16, 6, 5)
    denoised = svd_denoise(components, rank=1)
    matrix = denoised.reshape(16, 30)
    assert denoised.shape == components.shape
    assert torch.linalg.matrix_rank(matrix) == 1
    torch.testing.assert_close(
        svd_denoise(denoised, rank=1), denoised, rtol=1e-4, atol=1e-5
    )  # a projection
    centred = components.reshape(16, 30) - components.reshape(16, 30).mean(1, keepdim=True)
    singular = torch.linalg.svdvals(centred)
    torch.testing.assert_close(
        torch.linalg.norm(centred - matrix), singular[1:].norm(), rtol=1e-4, atol=1e-5
    )
    # default rank: 10 % of min(C, h*w), at least one
    assert torch.linalg.matrix_rank(svd_denoise(torch.randn(64, 10, 10)).reshape(64, 100)) == 6
    assert torch.linalg.matrix_rank(svd_denoise(components).reshape(16, 30)) == 1


def test_denoised_fgcam_shapes_and_target_layer_value(tiny_cnn, image_batch):
    layers, x = tiny_cnn[:6], image_batch[:1]
    trace = record(layers, x)
    weights = torch.randn(16)
    assert trace.explain(weights, denoise=True).shape == (32, 32)
    at_target = trace.explain(weights, stop_at=6, denoise=True, denoise_rank=1)
    components = explanation_components(trace.activation, weights)[0]
    torch.testing.assert_close(at_target, svd_denoise(components, 1).sum(0))


# --------------------------------------------------------------------------------------------
# Unsupported models and bad arguments


def test_vit_is_refused_with_the_module_named(tiny_vit):
    model, _, _ = tiny_vit
    with pytest.raises(
        FGCAMUnsupported, match=r"VisionTransformer.*'blocks\.0\.norm1' \(LayerNorm\)"
    ):
        supported_layers(model)
    with pytest.raises(FGCAMUnsupported, match="VisionTransformer"):
        fgcam(model, torch.randn(1, 3, 32, 32), torch.randn(32))


def test_unsupported_module_inside_a_sequential_is_named():
    stack = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Sequential(nn.GELU(), nn.Conv2d(4, 4, 1))
    ).eval()
    with pytest.raises(FGCAMUnsupported, match=r"'2\.0' \(GELU\)"):
        supported_layers(stack)
    with pytest.raises(FGCAMUnsupported, match=r"'4' \(Flatten\)"):
        fgcam(
            nn.Sequential(
                nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Identity(), nn.Flatten()
            ),
            torch.randn(1, 3, 8, 8),
            torch.randn(4),
        )
    assert issubclass(FGCAMUnsupported, ValueError)


def test_a_residual_block_fgcam_does_not_know_is_named():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return torch.relu(self.conv(x) + x)

    stack = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), Residual()).eval()
    with pytest.raises(FGCAMUnsupported, match=r"'2' \(Residual\): no contribution rule"):
        supported_layers(stack)


def test_custom_model_without_unsupported_leaves_is_refused():
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x) * 2

    with pytest.raises(FGCAMUnsupported, match=r"Custom\.forward is not a plain sequence"):
        supported_layers(Custom())


def test_training_mode_is_refused(tiny_cnn, image_batch):
    with pytest.raises(ValueError, match="eval"):
        fgcam(tiny_cnn[:6].train(), image_batch[:1], torch.randn(16))


@pytest.mark.parametrize("stop_at", [-1, 7, 2.0, True, None])
def test_stop_at_out_of_range_is_named(stop_at, tiny_cnn, image_batch):
    with pytest.raises(ValueError, match="stop_at"):
        fgcam(tiny_cnn[:6], image_batch[:1], torch.randn(16), stop_at=stop_at)


@pytest.mark.parametrize("shape", [(15,), (2, 15), (16, 8, 8), (1, 16, 1), (16, 16, 16, 1)])
def test_weights_of_the_wrong_shape_are_named(shape, tiny_cnn, image_batch):
    with pytest.raises(ValueError, match="weights"):
        fgcam(tiny_cnn[:6], image_batch[:1], torch.randn(*shape))


def test_bad_input_and_denoise_rank_are_named(tiny_cnn, image_batch):
    with pytest.raises(ValueError, match="x must"):
        fgcam(tiny_cnn[:6], image_batch, torch.randn(16))
    with pytest.raises(ValueError, match="denoise_rank"):
        fgcam(tiny_cnn[:6], image_batch[:1], torch.randn(16), denoise=True, denoise_rank=0)
