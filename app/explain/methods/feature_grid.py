"""Methods that weight a feature grid: the gradient entry, and pytorch-grad-cam's weightings.

Each gradient method's own ``get_cam_image`` is called on our cached activations and a
*combined* gradient, so non-linear weightings (Grad-CAM++ powers, Layer-CAM's ReLU) see the
Finer gradient G^c − γ·Σ w_d G^d, never a difference of finished maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from pytorch_grad_cam.base_cam import BaseCAM

from app.explain.combine import Contrast, combine
from app.explain.gradients import GradientEntry, compute_entries, compute_entry, fill_gradients
from app.explain.methods.base import NO_INPUT, CamMethod, EntrySource, ModelInput

if TYPE_CHECKING:
    from app.explain.settings import ExplainSettings
    from app.models.base import ExplainableModel


class GridSource(EntrySource):
    """A gradient entry at the model's target layer: activations, logits, per-class gradients."""

    def __init__(self, model: ExplainableModel) -> None:
        self.model = model

    def entry_key(self, digest: str) -> tuple[str, ...]:
        return (self.model.trunk_key, self.model.head_key, digest)

    def trunk_key(self, digest: str) -> tuple[str, ...]:
        return (self.model.trunk_key, digest)

    def compute(self, x: torch.Tensor, trunk: torch.Tensor | None) -> GradientEntry:
        return compute_entry(self.model, x, (), activation=trunk)

    def compute_batch(self, x: torch.Tensor) -> list[GradientEntry]:
        return compute_entries(self.model, x, ())


class FeatureGridMethod(CamMethod):
    """A method reading the feature grid at the target layer (any CNN or ViT adapter)."""

    def entry_source(self, model: ExplainableModel, settings: ExplainSettings) -> GridSource:
        return GridSource(model)


class GradientWeighting(FeatureGridMethod):
    """A pytorch-grad-cam gradient method, called on cached activations and a combined gradient.

    ``weights_from_gradient`` is overridden where the library computes its map without
    per-channel weights (HiResCAM, Layer-CAM, element-wise Grad-CAM): FG-CAM needs the weights.
    """

    from_combined_gradient = True

    def __init__(self, name: str, label: str, cam_class: type[BaseCAM], help: str) -> None:
        self.name, self.label, self.cam_class, self.help = name, label, cam_class, help

    def prepare_batch(self, requests: Sequence[tuple[GradientEntry, Contrast]]) -> None:
        fill_gradients([(entry, contrast.classes()) for entry, contrast in requests])

    def weighting(self) -> BaseCAM:
        """A bare instance whose weighting functions we call.

        ``BaseCAM.__init__`` registers forward hooks on a model; we have no model to hook (our
        activations and gradients are already computed), so the instance is created without it.
        The weighting methods read no instance state; ``BaseCAM.__del__`` releases hooks, so
        the instance gets a holder with nothing to release.
        """
        instance = self.cam_class.__new__(self.cam_class)
        instance.activations_and_grads = _NoHooks()
        return instance

    def cam_from_gradient(self, activations: np.ndarray, grads: np.ndarray) -> np.ndarray:
        """Raw (pre-ReLU) map ``(N, h, w)`` from activations and an already-combined gradient."""
        return self.weighting().get_cam_image(
            None, None, None, activations, grads, eigen_smooth=False
        )

    def weights_from_gradient(self, activations: np.ndarray, grads: np.ndarray) -> np.ndarray:
        """Weights ``(N, C)`` or element-wise ``(N, C, h, w)`` with Σ_k w_k·A_k = the map."""
        return self.weighting().get_cam_weights(None, None, None, activations, grads)

    def raw_map(
        self, entry: GradientEntry, contrast: Contrast, given: ModelInput = NO_INPUT
    ) -> np.ndarray:
        return self.cam_from_gradient(entry.activations, combined_gradient(entry, contrast))

    def channel_weights(
        self, entry: GradientEntry, contrast: Contrast, given: ModelInput = NO_INPUT
    ) -> np.ndarray:
        return self.weights_from_gradient(entry.activations, combined_gradient(entry, contrast))


class _NoHooks:
    """Stands in for BaseCAM's hook holder on bare instances: nothing was registered."""

    def release(self) -> None:
        return None


def combined_gradient(entry: GradientEntry, contrast: Contrast) -> np.ndarray:
    """The Finer gradient G^c − γ·Σ w_d G^d ``(1, C, h, w)`` from the entry's per-class grads."""
    coefficients = contrast.coefficients()
    return combine(entry.gradients(coefficients), coefficients)
