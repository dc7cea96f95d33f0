"""HiResCAM: activations times gradients element-wise, summed over channels."""

import numpy as np
from pytorch_grad_cam import HiResCAM

from app.explain.methods.feature_grid import GradientWeighting
from app.explain.methods.registry import register


class HiResCamMethod(GradientWeighting):
    """The element-wise weights are the gradients themselves."""

    def weights_from_gradient(self, activations: np.ndarray, grads: np.ndarray) -> np.ndarray:
        return grads


register(HiResCamMethod(
    "hirescam", "HiResCAM", HiResCAM, "activations times gradients, element-wise"
))  # fmt: skip
