"""CAM methods: one object per method behind :class:`CamMethod`, one registry.

Adding a method is one module that builds its object and calls :func:`register`; the built-in
ones are imported in the order of :data:`BUILT_IN`, the order the UI, API and CLI list them in.
"""

from __future__ import annotations

import importlib

import numpy as np

from app.explain.methods.base import NO_INPUT, CamMethod, EntrySource, ModelInput
from app.explain.methods.registry import (
    METHODS,
    available_methods,
    get_method,
    methods_help,
    register,
    unregister,
)

#: The built-in methods' modules, imported (so registered) in the order they are listed in.
BUILT_IN = (
    "gradcam",
    "hirescam",
    "gradcam_plusplus",
    "xgradcam",
    "layercam",
    "gradcam_elementwise",
    "scorecam",
    "legrad",
    "attention_gradient",
)
for _module in BUILT_IN:
    importlib.import_module(f"{__name__}.{_module}")

__all__ = [
    "METHODS",
    "NO_INPUT",
    "CamMethod",
    "EntrySource",
    "ModelInput",
    "available_methods",
    "get_method",
    "gradient_cam",
    "methods_help",
    "register",
    "unregister",
]


def gradient_cam(method: CamMethod, activations: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Raw (pre-ReLU) map ``(N, h, w)`` of a gradient method from activations and an
    already-combined gradient (pytorch-grad-cam's own ``get_cam_image``)."""
    return method.cam_from_gradient(activations, grads)
