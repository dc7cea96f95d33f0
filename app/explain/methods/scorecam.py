"""Score-CAM: channels weighted by the softmax of the contrastive score of each masked input."""

from __future__ import annotations

import numpy as np

from app.explain.combine import Contrast, objective_vector
from app.explain.gradients import GradientEntry
from app.explain.methods.base import NO_INPUT, ModelInput
from app.explain.methods.feature_grid import FeatureGridMethod
from app.explain.methods.registry import register


class ScoreCamMethod(FeatureGridMethod):
    """No gradients: the input masked by each channel is scored once per image (cached in the
    entry), and every contrast is a linear combination of those scores."""

    name, label = "scorecam", "Score-CAM"
    help = "channels weighted by the score of the input they mask"
    uses_gradients = False

    def is_ready(self, entry: GradientEntry, contrast: Contrast) -> bool:
        return entry.has_score_logits

    def prepare(self, entry: GradientEntry, contrast: Contrast) -> None:
        return None  # the masked-input scores are computed with the first map

    def needs_input(self, entry: GradientEntry) -> bool:
        return not entry.has_score_logits

    def raw_map(
        self, entry: GradientEntry, contrast: Contrast, given: ModelInput = NO_INPUT
    ) -> np.ndarray:
        weights = self.channel_weights(entry, contrast, given)
        return (weights[:, :, None, None] * entry.activations).sum(axis=1)

    def channel_weights(
        self, entry: GradientEntry, contrast: Contrast, given: ModelInput = NO_INPUT
    ) -> np.ndarray:
        if not entry.has_score_logits and (given.model is None or given.x is None):
            raise ValueError("Score-CAM needs the model and input the first time an entry is used")
        scores = entry.score_logits(given.model, given.x, given.progress) @ objective_vector(
            contrast.coefficients(), entry.num_classes
        )
        return score_weights(scores[None, :])


def score_weights(channel_scores: np.ndarray) -> np.ndarray:
    """Score-CAM channel weights ``(N, C)``: softmax over channels of the masked-input scores.

    ``channel_scores`` ``(N, C)`` is the (contrastive) score of each channel-masked input,
    exactly what pytorch-grad-cam's ``ScoreCAM.get_cam_weights`` softmaxes.
    """
    shifted = channel_scores - channel_scores.max(axis=-1, keepdims=True)
    weights = np.exp(shifted)
    return weights / weights.sum(axis=-1, keepdims=True)


register(ScoreCamMethod())
