"""Which split a timm classifier gets: one place for the classifier and for the Hub hint."""

from __future__ import annotations

from torch import nn

from app.models.adapters.eva import EvaSplit
from app.models.adapters.levit import LevitSplit
from app.models.adapters.vit import TimmVitSplit


def timm_splits(
    model: nn.Module,
) -> tuple[TimmVitSplit | None, TimmVitSplit | LevitSplit | None]:
    """(CAM split, attention split) of a timm classifier: ViTs and EVA / EVA-02 (rotary
    positions) split at their last block, which is also what LeGrad and attention-gradient read;
    LeViT's last stage offers only the attention path; other models (CNNs, Swin ...) neither."""
    from timm.models.eva import Eva

    try:
        split = EvaSplit(model) if isinstance(model, Eva) else TimmVitSplit(model)
        return split, split
    except ValueError:
        pass
    try:
        return None, LevitSplit(model)
    except ValueError:
        return None, None
