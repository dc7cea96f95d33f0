"""A test-only CAM method, added exactly as a new method is: this one file and its registration."""

from __future__ import annotations

import numpy as np

from app.explain.combine import Contrast
from app.explain.gradients import GradientEntry
from app.explain.methods import register
from app.explain.methods.base import NO_INPUT, ModelInput
from app.explain.methods.feature_grid import FeatureGridMethod, combined_gradient


class GradientSumMethod(FeatureGridMethod):
    """Activations times the combined (Finer) gradient, summed over channels."""

    name, label = "toy-gradient-sum", "Toy gradient sum"
    help = "test only: activations times the combined gradient, summed over channels"

    def raw_map(
        self, entry: GradientEntry, contrast: Contrast, given: ModelInput = NO_INPUT
    ) -> np.ndarray:
        return (combined_gradient(entry, contrast) * entry.activations).sum(axis=1)


TOY = register(GradientSumMethod())
