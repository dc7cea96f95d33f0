"""Layer-CAM: activations times the positive gradients, element-wise."""

import numpy as np
from pytorch_grad_cam import LayerCAM

from app.explain.methods.feature_grid import GradientWeighting
from app.explain.methods.registry import register


class LayerCamMethod(GradientWeighting):
    """The element-wise weights are the positive part of the gradients."""

    def weights_from_gradient(self, activations: np.ndarray, grads: np.ndarray) -> np.ndarray:
        return np.maximum(grads, 0)


register(LayerCamMethod(
    "layercam", "Layer-CAM", LayerCAM, "activations times the positive gradients"
))  # fmt: skip
