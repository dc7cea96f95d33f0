"""The Finer-CAM combination: one linear objective y^c - γ·Σ_d w_d·y^d over classes.

Gradients (and Score-CAM's masked-input logits) are linear in the objective, so the Finer
gradient is the same combination of per-class gradients. Combining happens here, before any
CAM weighting or ReLU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: A score as ``(class, weight)`` pairs: Σ weight·y^class.
Direction = tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class Contrast:
    """The objective y^target - gamma · Σ weights[i] · y^references[i]."""

    target: int
    references: tuple[int, ...] = ()
    weights: tuple[float, ...] = ()
    gamma: float = 0.0

    def coefficients(self) -> dict[int, float]:
        """Class index -> coefficient in the objective (γ=0 or no references: target only)."""
        coefficients = {self.target: 1.0}
        if self.gamma == 0.0:
            return coefficients
        for reference, weight in zip(self.references, self.weights, strict=True):
            coefficients[reference] = coefficients.get(reference, 0.0) - self.gamma * weight
        return coefficients

    def classes(self) -> tuple[int, ...]:
        return (self.target, *self.references)

    def directions(self) -> dict[Direction, float]:
        """The objective over two scores: the target's, and the references' weighted sum,
        ``{direction: coefficient}`` = ``{y^target: 1, Σ_d w_d·y^d: −γ}``.

        A gradient is linear in the score it differentiates, so a method that keeps one
        gradient per direction renders both panels and every γ from two backward passes
        instead of one per class. The references' direction is there even at γ = 0 (a later γ
        move then needs no backward pass).
        """
        target: Direction = ((self.target, 1.0),)
        if not self.references:
            return {target: 1.0}
        summed: dict[int, float] = {}
        for reference, weight in zip(self.references, self.weights, strict=True):
            summed[reference] = summed.get(reference, 0.0) + float(weight)
        return {target: 1.0, tuple(sorted(summed.items())): -self.gamma}


def combine(per_class: Mapping[int, np.ndarray], coefficients: Mapping[int, float]) -> np.ndarray:
    """Σ_k coefficients[k] · per_class[k], for gradients ``(1, C, h, w)`` of each class."""
    total = None
    for index, coefficient in coefficients.items():
        term = per_class[index] * np.float32(coefficient)
        total = term if total is None else total + term
    return total


def objective_vector(coefficients: Mapping[int, float], num_classes: int) -> np.ndarray:
    """Coefficients as a dense ``(K,)`` vector, for scoring all-class logits at once."""
    vector = np.zeros(num_classes, dtype=np.float32)
    for index, coefficient in coefficients.items():
        vector[index] = coefficient
    return vector


def contrast_for(
    target: int, references: Sequence[int], weights: np.ndarray, gamma: float
) -> Contrast:
    """Build a :class:`Contrast` from numpy weights (kept as plain floats for hashing)."""
    return Contrast(target, tuple(references), tuple(float(w) for w in weights), float(gamma))
