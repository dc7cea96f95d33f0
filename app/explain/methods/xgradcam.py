"""XGrad-CAM: gradients weighted by the normalised activations."""

from pytorch_grad_cam import XGradCAM

from app.explain.methods.feature_grid import GradientWeighting
from app.explain.methods.registry import register

register(GradientWeighting(
    "xgradcam", "XGrad-CAM", XGradCAM, "gradients weighted by the normalised activations"
))  # fmt: skip
