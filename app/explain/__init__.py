"""The shared explanation service: gradients cache, references, methods, Finer combination."""

from app.explain.engine import contrastive_cam
from app.explain.service import ConceptPrompts, ExplainSettings, Explanation, ExplanationService

__all__ = [
    "ConceptPrompts",
    "ExplainSettings",
    "Explanation",
    "ExplanationService",
    "contrastive_cam",
]
