"""CAM methods: one object per method behind :class:`CamMethod`, one registry.

Adding a method is one module that builds its object and calls :func:`register`; the built-in
ones are imported below, which fixes the order the UI, API and CLI list them in.
"""

from __future__ import annotations

import numpy as np

from app.explain.methods.base import CamMethod, EntrySource
from app.explain.methods.registry import (
    METHODS,
    available_methods,
    get_method,
    methods_help,
    register,
    unregister,
)

from app.explain.methods import gradcam  # noqa: E402,F401  isort: skip
from app.explain.methods import hirescam  # noqa: E402,F401  isort: skip
from app.explain.methods import gradcam_plusplus  # noqa: E402,F401  isort: skip
from app.explain.methods import xgradcam  # noqa: E402,F401  isort: skip
from app.explain.methods import layercam  # noqa: E402,F401  isort: skip
from app.explain.methods import gradcam_elementwise  # noqa: E402,F401  isort: skip
from app.explain.methods import scorecam  # noqa: E402,F401  isort: skip
from app.explain.methods import legrad  # noqa: E402,F401  isort: skip
from app.explain.methods import attention_gradient  # noqa: E402,F401  isort: skip

__all__ = [
    "METHODS",
    "CamMethod",
    "EntrySource",
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
