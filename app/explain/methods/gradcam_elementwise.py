"""Element-wise Grad-CAM: the positive part of activations times gradients, per element."""

import numpy as np
from pytorch_grad_cam import GradCAMElementWise

from app.explain.methods.feature_grid import GradientWeighting
from app.explain.methods.registry import register


class ElementWiseMethod(GradientWeighting):
    """ReLU(G·A) written as w·A: w = ReLU(G·A)/A where A ≠ 0."""

    def weights_from_gradient(self, activations: np.ndarray, grads: np.ndarray) -> np.ndarray:
        positive = np.maximum(grads * activations, 0)
        return np.divide(positive, activations, out=np.zeros_like(positive), where=activations != 0)


register(ElementWiseMethod(
    "gradcam-elementwise", "Grad-CAM (element-wise)", GradCAMElementWise,
    "the positive part of activations times gradients",
))  # fmt: skip
