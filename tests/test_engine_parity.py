"""Our engine against the installed pytorch-grad-cam, map for map (max abs diff <= 1e-4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import FinerCAM, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget, FinerWeightedTarget

from app.explain import contrastive_cam
from app.explain.methods import METHODS

GRADIENT_METHODS = [m for m in METHODS.values() if m.uses_gradients and not m.is_attention]


def _anchor(method, model, layer, x, targets, reshape=None):
    with method.cam_class(model, [layer], reshape_transform=reshape) as cam:
        return cam(input_tensor=x, targets=targets)


def _closest_logit(model, x, target):
    with torch.no_grad():
        logits = model(x)[0]
    distance = (logits - logits[target]).abs()
    distance[target] = float("inf")
    return int(distance.argmin())


@pytest.mark.parametrize("method", GRADIENT_METHODS, ids=lambda m: m.name)
def test_plain_cam_matches_anchor_on_cnn(method, tiny_cnn, image_batch):
    targets = [2, 4]
    expected = _anchor(
        method, tiny_cnn, tiny_cnn[5], image_batch, [ClassifierOutputTarget(t) for t in targets]
    )
    ours = contrastive_cam(tiny_cnn, tiny_cnn[5], image_batch, targets, [], 0.7, method.name)
    assert ours.shape == (2, 32, 32)
    np.testing.assert_allclose(ours, expected, atol=1e-4)


@pytest.mark.parametrize("method", GRADIENT_METHODS, ids=lambda m: m.name)
def test_plain_cam_matches_anchor_on_vit(method, tiny_vit, image_batch):
    model, layer, reshape = tiny_vit
    expected = _anchor(method, model, layer, image_batch, [ClassifierOutputTarget(3)] * 2, reshape)
    ours = contrastive_cam(
        model, layer, image_batch, 3, [1, 2], 0.0, method.name, reshape_transform=reshape
    )
    np.testing.assert_allclose(ours, expected, atol=1e-4)


@pytest.mark.parametrize("method", GRADIENT_METHODS, ids=lambda m: m.name)
@pytest.mark.parametrize("gamma", [0.4, 1.0])
def test_one_reference_matches_finer_cam(method, gamma, tiny_cnn, image_batch):
    x = image_batch[:1]
    reference = _closest_logit(tiny_cnn, x, 1)
    finer = FinerCAM(tiny_cnn, [tiny_cnn[5]], base_method=method.cam_class)
    expected = finer(x, targets=[FinerWeightedTarget(1, [reference], gamma)])
    ours = contrastive_cam(tiny_cnn, tiny_cnn[5], x, 1, [reference], gamma, method.name)
    np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_one_reference_matches_finer_cam_on_vit_with_automatic_targets(tiny_vit, image_batch):
    model, layer, reshape = tiny_vit
    x = image_batch[1:]
    target = int(model(x).argmax())
    reference = _closest_logit(model, x, target)
    finer = FinerCAM(model, [layer], reshape_transform=reshape)
    expected = finer(x, alpha=0.6, comparison_categories=[1], target_idx=target)
    ours = contrastive_cam(model, layer, x, target, [reference], 0.6, reshape_transform=reshape)
    np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_score_cam_matches_anchor_plain_and_finer(tiny_cnn, image_batch):
    x = image_batch[:1]
    reference = _closest_logit(tiny_cnn, x, 0)
    with ScoreCAM(tiny_cnn, [tiny_cnn[5]]) as cam:
        plain = cam(input_tensor=x, targets=[ClassifierOutputTarget(0)])
        finer = cam(input_tensor=x, targets=[FinerWeightedTarget(0, [reference], 0.8)])
    np.testing.assert_allclose(
        contrastive_cam(tiny_cnn, tiny_cnn[5], x, 0, [], 0.8, "scorecam"), plain, atol=1e-4
    )
    np.testing.assert_allclose(
        contrastive_cam(tiny_cnn, tiny_cnn[5], x, 0, [reference], 0.8, "scorecam"), finer, atol=1e-4
    )


def test_combining_gradients_differs_from_subtracting_heatmaps(tiny_cnn, image_batch):
    """The paper's point: Finer-CAM is not CAM(c) - γ·CAM(d) of finished maps."""
    x = image_batch[:1]
    reference = _closest_logit(tiny_cnn, x, 1)
    finer = contrastive_cam(tiny_cnn, tiny_cnn[5], x, 1, [reference], 1.0)
    cam_target = contrastive_cam(tiny_cnn, tiny_cnn[5], x, 1, [], 0.0)
    cam_reference = contrastive_cam(tiny_cnn, tiny_cnn[5], x, reference, [], 0.0)
    difference = np.maximum(cam_target - cam_reference, 0)
    difference = difference / max(difference.max(), 1e-7)
    assert np.abs(finer - difference).max() > 0.05


def test_gamma_zero_and_no_references_give_plain_cam(tiny_cnn, image_batch):
    plain = contrastive_cam(tiny_cnn, tiny_cnn[5], image_batch, 3, [], 0.5)
    assert np.array_equal(
        plain, contrastive_cam(tiny_cnn, tiny_cnn[5], image_batch, 3, [1, 2], 0.0)
    )


def test_no_hooks_left_and_parameters_untouched(tiny_cnn, image_batch):
    contrastive_cam(tiny_cnn, tiny_cnn[5], image_batch, 1, [2], 1.0, "layercam")
    with pytest.raises(ValueError):
        contrastive_cam(tiny_cnn, tiny_cnn[5], image_batch, 99, [2], 1.0)
    assert all(not module._forward_hooks for module in tiny_cnn.modules())
    assert all(p.grad is None for p in tiny_cnn.parameters())
