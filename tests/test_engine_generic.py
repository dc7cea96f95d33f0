"""The library's generic (hooked) path: one tail backward per batch, whatever the tail supports.

A tail op without a batching rule makes ``is_grads_batched`` fail (torchvision's ViT attention
does); per-class gradients then cost one backward per class. ``contrastive_cam`` differentiates
each image's objective y^c − γ·Σ w_d y^d once instead — the same gradient, by linearity.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from app.explain import contrastive_cam
from app.explain.combine import combine
from app.explain.engine import HookedLayerModel
from app.explain.gradients import gradients_along
from app.explain.methods import get_method, gradient_cam
from app.explain.references import reference_weights
from app.explain.render import finish_maps


class CountingReLU(torch.autograd.Function):
    """ReLU whose backward counts its calls; as a custom Function it cannot be vmapped."""

    backward_calls = 0

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        CountingReLU.backward_calls += 1
        (x,) = ctx.saved_tensors
        return grad * (x > 0)


class Counting(nn.Module):
    def forward(self, x):
        return CountingReLU.apply(x)


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),  # target: [2]
        Counting(),
        nn.Conv2d(8, 12, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(12, 9),
    ).eval()


def _per_class_maps(model, x, targets, references, gamma, weighting, method) -> np.ndarray:
    """The reference computation: per-class gradients, combined, then the CAM weighting."""
    split = HookedLayerModel(model, model[2])
    raws = []
    for i in range(len(x)):
        leaf, logits = split.split_forward(x[i : i + 1])
        probabilities = torch.softmax(logits.detach(), -1)[0].numpy()
        weights = reference_weights(references[i], probabilities, weighting)
        classes = [targets[i], *references[i]]
        (grads,) = gradients_along(logits, [leaf], [((k, 1.0),) for k in classes])
        grads = grads.numpy()
        coefficients = {targets[i]: 1.0}
        for reference, weight in zip(references[i], weights, strict=True):
            coefficients[reference] = coefficients.get(reference, 0.0) - gamma * float(weight)
        combined = combine({k: grads[j : j + 1] for j, k in enumerate(classes)}, coefficients)
        raws.append(gradient_cam(get_method(method), leaf.detach().numpy(), combined))
    return finish_maps(np.concatenate(raws), (x.shape[-1], x.shape[-2]))


@pytest.mark.parametrize("method", ["gradcam", "layercam", "gradcam++"])
@pytest.mark.parametrize("weighting", ["uniform", "probability"])
def test_one_backward_per_batch_and_the_per_class_result(method, weighting):
    model = _model()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    targets, references = [1, 5], [[2, 3, 4], [0, 6, 8]]
    expected = _per_class_maps(model, x, targets, references, 0.7, weighting, method)
    assert CountingReLU.backward_calls > 1  # the per-class reference loops (no batching rule)

    CountingReLU.backward_calls = 0
    ours = contrastive_cam(model, model[2], x, targets, references, 0.7, method, weighting)
    assert CountingReLU.backward_calls == 1  # 2 images x (target + 3 references): one backward
    np.testing.assert_allclose(ours, expected, atol=1e-5)
