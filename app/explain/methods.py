"""CAM weightings, taken from pytorch-grad-cam rather than rewritten.

Each gradient method's own ``get_cam_image`` is called on our cached activations and a
*combined* gradient, so non-linear weightings (Grad-CAM++ powers, Layer-CAM's ReLU) see the
Finer gradient G^c - γ·Σ w_d G^d, never a difference of finished maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pytorch_grad_cam import (
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.base_cam import BaseCAM


@dataclass(frozen=True)
class CamMethod:
    """A CAM method: its pytorch-grad-cam class and whether it needs gradients.

    ``family`` is ``cam`` (weights a feature grid: any CNN or ViT) or ``attention`` (reads a
    ViT's attention probabilities: LeGrad, attention-gradient; ``cam_class`` is None then).
    """

    name: str
    label: str
    cam_class: type[BaseCAM] | None
    uses_gradients: bool = True
    family: str = "cam"

    @property
    def is_attention(self) -> bool:
        return self.family == "attention"

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


class _NoHooks:
    """Stands in for BaseCAM's hook holder on bare instances: nothing was registered."""

    def release(self) -> None:
        return None


METHODS: dict[str, CamMethod] = {
    method.name: method
    for method in (
        CamMethod("gradcam", "Grad-CAM", GradCAM),
        CamMethod("hirescam", "HiResCAM", HiResCAM),
        CamMethod("gradcam++", "Grad-CAM++", GradCAMPlusPlus),
        CamMethod("xgradcam", "XGrad-CAM", XGradCAM),
        CamMethod("layercam", "Layer-CAM", LayerCAM),
        CamMethod("gradcam-elementwise", "Grad-CAM (element-wise)", GradCAMElementWise),
        CamMethod("scorecam", "Score-CAM", ScoreCAM, uses_gradients=False),
        CamMethod("legrad", "LeGrad", None, family="attention"),
        CamMethod("attention-gradient", "Attention-gradient", None, family="attention"),
    )
}


def get_method(name: str) -> CamMethod:
    """Look a method up by name (case-insensitive); ValueError listing the valid names."""
    key = str(name).strip().lower()
    if key not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[key]


def gradient_cam(method: CamMethod, activations: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Raw (pre-ReLU) map ``(N, h, w)`` from activations and an already-combined gradient."""
    return method.weighting().get_cam_image(
        None, None, None, activations, grads, eigen_smooth=False
    )


def score_weights(channel_scores: np.ndarray) -> np.ndarray:
    """Score-CAM channel weights ``(N, C)``: softmax over channels of the masked-input scores.

    ``channel_scores`` ``(N, C)`` is the (contrastive) score of each channel-masked input,
    exactly what pytorch-grad-cam's ``ScoreCAM.get_cam_weights`` softmaxes.
    """
    shifted = channel_scores - channel_scores.max(axis=-1, keepdims=True)
    weights = np.exp(shifted)
    return weights / weights.sum(axis=-1, keepdims=True)


def component_weights(method: CamMethod, activations: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Weights w with ``Σ_k w_k·A_k`` = the method's map: ``(N, C)``, or element-wise
    ``(N, C, h, w)``.

    FG-CAM carries the components w_k·A_k down to pixels, so it needs the weights, not the map.
    """
    if method.name == "hirescam":
        return grads
    if method.name == "layercam":
        return np.maximum(grads, 0)
    if method.name == "gradcam-elementwise":
        positive = np.maximum(grads * activations, 0)
        return np.divide(positive, activations, out=np.zeros_like(positive), where=activations != 0)
    return method.weighting().get_cam_weights(None, None, None, activations, grads)
