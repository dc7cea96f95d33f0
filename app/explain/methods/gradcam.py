"""Grad-CAM: channels weighted by their spatially averaged gradient."""

from pytorch_grad_cam import GradCAM

from app.explain.methods.feature_grid import GradientWeighting
from app.explain.methods.registry import register

register(GradientWeighting(
    "gradcam", "Grad-CAM", GradCAM, "channels weighted by their mean gradient"
))  # fmt: skip
