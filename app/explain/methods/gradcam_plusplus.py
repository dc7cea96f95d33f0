"""Grad-CAM++: second- and third-order gradient terms weight the positive gradients."""

from pytorch_grad_cam import GradCAMPlusPlus

from app.explain.methods.feature_grid import GradientWeighting
from app.explain.methods.registry import register

register(GradientWeighting(
    "gradcam++", "Grad-CAM++", GradCAMPlusPlus, "higher-order weights of the positive gradients"
))  # fmt: skip
