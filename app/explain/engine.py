"""The public entry point for any torch model: Finer-CAM maps through a hooked layer."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence

import numpy as np
import torch

from app.explain.combine import Contrast, contrast_for, objective_vector
from app.explain.gradients import compute_entry
from app.explain.methods import CamMethod, ModelInput, get_method
from app.explain.references import reference_weights
from app.explain.render import finish_maps


class HookedLayerModel:
    """Any ``nn.Module`` split at ``target_layer`` with a per-call forward hook.

    The forward runs under ``no_grad``; the hook swaps the layer's output for a leaf that
    requires grad and turns autograd on for the rest of that forward, so only the tail is
    recorded. The hook ignores other threads and is removed even when the forward raises.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        target_layer: torch.nn.Module,
        reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not any(module is target_layer for module in model.modules()):
            raise ValueError("target_layer is not a submodule of model")
        self.model = model.eval()
        self.target_layer = target_layer
        self.reshape_transform = reshape_transform

    def split_forward(
        self, x: torch.Tensor, activation: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if activation is not None:
            raise ValueError("a hooked model recomputes its trunk; pass activation=None")
        owner = threading.get_ident()
        captured: list[torch.Tensor] = []

        def swap_in_leaf(_module, _inputs, output):
            if threading.get_ident() != owner or captured:
                return None
            leaf = output.detach().requires_grad_(True)
            captured.append(leaf)
            torch.set_grad_enabled(True)
            return leaf

        handle = self.target_layer.register_forward_hook(swap_in_leaf)
        try:
            with torch.no_grad():
                logits = self.model(x)
        finally:
            handle.remove()
        if not captured:
            raise ValueError("target_layer did not run during the model's forward pass")
        return captured[0], logits

    def to_grid(self, activation: torch.Tensor) -> torch.Tensor:
        return activation if self.reshape_transform is None else self.reshape_transform(activation)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model(x)


def contrastive_cam(
    model: torch.nn.Module,
    target_layer: torch.nn.Module,
    input_tensor: torch.Tensor,
    target: int | Sequence[int],
    references: Sequence[int] | Sequence[Sequence[int]] = (),
    gamma: float = 1.0,
    method: str = "gradcam",
    weighting: str = "uniform",
    reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> np.ndarray:
    """Finer-CAM map of y^target - gamma·Σ_d w_d·y^d for each image, for any torch model.

    Args:
        model: A classifier returning logits ``(N, K)``.
        target_layer: The module whose output the CAM weights (e.g. the last conv block, or
            ``blocks[-1].norm1`` of a ViT together with a ``reshape_transform``).
        input_tensor: ``(N, 3, H, W)`` preprocessed batch.
        target: The class to explain, one for all images or one per image.
        references: Reference classes (one list for all images, or one list per image).
            Empty, or ``gamma=0``, gives plain CAM.
        gamma: Contrast strength γ >= 0.
        method: One of :data:`app.explain.methods.METHODS`.
        weighting: ``"uniform"`` (1/T each) or ``"probability"`` (softmax weights renormalised
            over the references, treated as constants).
        reshape_transform: Turns the layer's output (and its gradient) into ``(N, C, h, w)``.

    Returns:
        ``(N, H, W)`` float32 maps in [0, 1], scaled like pytorch-grad-cam's output.
    """
    cam_method = get_method(method)
    if cam_method.needs_attention_view:
        raise ValueError(
            f"{cam_method.label} reads a ViT's attention maps, not a hooked layer: explain with "
            "ExplanationService and a ViT adapter (open_clip / timm) instead"
        )
    _check_input(input_tensor)
    gamma = _check_gamma(gamma)
    targets = _per_image(target, len(input_tensor), "target")
    reference_lists = _per_image_lists(references, len(input_tensor))
    split = HookedLayerModel(model, target_layer, reshape_transform)
    size = (int(input_tensor.shape[-1]), int(input_tensor.shape[-2]))
    if cam_method.from_combined_gradient:
        raw = _objective_gradient_maps(
            split, input_tensor, targets, reference_lists, gamma, weighting, cam_method
        )
        return finish_maps(raw, size)
    maps = []
    for index in range(len(input_tensor)):
        x = input_tensor[index : index + 1]
        entry = compute_entry(split, x, ())
        contrast = _contrast(
            entry.probabilities, targets[index], reference_lists[index], gamma, weighting
        )
        maps.append(cam_method.raw_map(entry, contrast, ModelInput(split, x)))
    return finish_maps(np.concatenate(maps), size)


def _objective_gradient_maps(
    split: HookedLayerModel,
    input_tensor: torch.Tensor,
    targets: list[int],
    reference_lists: list[list[int]],
    gamma: float,
    weighting: str,
    method: CamMethod,
) -> np.ndarray:
    """Raw maps ``(N, h, w)`` of a gradient method: one forward and one tail backward in all.

    The objective of each image is known once the logits are (its reference weights are
    constants), and the gradient is linear in it, so the tail is differentiated once with the
    objective vectors as cotangents: exactly G^c − γ·Σ w_d G^d, without a backward per class.
    """
    leaf, logits = split.split_forward(input_tensor)
    probabilities = torch.softmax(logits.detach().float(), dim=-1).cpu().numpy()
    objectives = [
        objective_vector(_contrast(p, t, refs, gamma, weighting).coefficients(), p.shape[0])
        for p, t, refs in zip(probabilities, targets, reference_lists, strict=True)
    ]
    cotangents = torch.as_tensor(np.stack(objectives), dtype=logits.dtype, device=logits.device)
    (grads,) = torch.autograd.grad(logits, leaf, grad_outputs=cotangents)
    activations = split.to_grid(leaf.detach()).float().cpu().numpy()
    combined = split.to_grid(grads).float().cpu().numpy()
    return np.concatenate(
        [
            method.cam_from_gradient(activations[i : i + 1], combined[i : i + 1])
            for i in range(len(combined))
        ]
    )


def _contrast(
    probabilities: np.ndarray, target: int, references: Sequence[int], gamma: float, weighting: str
) -> Contrast:
    num_classes = int(probabilities.shape[0])
    for name, index in [("target", target), *(("references", r) for r in references)]:
        if not 0 <= index < num_classes:
            raise ValueError(f"{name} class {index} is out of range (model has {num_classes})")
    weights = reference_weights(references, probabilities, weighting)
    return contrast_for(target, references, weights, gamma)


def _check_input(input_tensor: torch.Tensor) -> None:
    if not isinstance(input_tensor, torch.Tensor):
        raise TypeError(f"input_tensor must be a torch.Tensor, got {type(input_tensor).__name__}")
    if input_tensor.ndim != 4 or not input_tensor.is_floating_point():
        raise ValueError(
            f"input_tensor must be a float tensor (N, C, H, W), got {tuple(input_tensor.shape)} "
            f"{input_tensor.dtype}"
        )


def _check_gamma(gamma: float) -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
        raise TypeError(f"gamma must be a number, got {type(gamma).__name__}")
    if not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma}")
    return float(gamma)


def _per_image(value: int | Sequence[int], count: int, name: str) -> list[int]:
    values = [value] * count if isinstance(value, (int, np.integer)) else list(value)
    if len(values) != count or not all(isinstance(v, (int, np.integer)) for v in values):
        raise ValueError(f"{name} must be an int or one int per image ({count} images)")
    return [int(v) for v in values]


def _per_image_lists(references: Sequence, count: int) -> list[list[int]]:
    if len(references) and not isinstance(references[0], (int, np.integer)):
        if len(references) != count:
            raise ValueError(
                f"references must be one list for all images or one per image ({count})"
            )
        return [[int(r) for r in refs] for refs in references]
    return [[int(r) for r in references]] * count
