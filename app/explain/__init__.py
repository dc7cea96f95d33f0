"""The shared explanation service: gradients cache, references, methods, Finer combination."""

from app.explain.engine import contrastive_cam

__all__ = ["contrastive_cam"]
