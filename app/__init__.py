"""Finer-CAM Studio: see why a fine-grained classifier chose one class over a look-alike."""

__version__ = "0.1.0"
