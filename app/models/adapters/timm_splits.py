"""Which split a timm model gets: one place for the classifier, the Hub hint and the backbones
of linear heads."""

from __future__ import annotations

from torch import nn

from app.models.adapters.eva import EvaSplit
from app.models.adapters.levit import LevitSplit
from app.models.adapters.vit import TimmVitSplit


def timm_vit_split(model: nn.Module, target: str = "norm1") -> TimmVitSplit:
    """A timm ViT or EVA / EVA-02 split at its last block, for CAM and the attention methods
    (ValueError naming why not: CNNs, Swin, LeViT, non-standard blocks ...)."""
    from timm.models.eva import Eva

    return EvaSplit(model, target) if isinstance(model, Eva) else TimmVitSplit(model, target)


def timm_splits(
    model: nn.Module,
) -> tuple[TimmVitSplit | None, TimmVitSplit | LevitSplit | None]:
    """(CAM split, attention split) of a timm classifier: ViTs and EVA / EVA-02 (rotary
    positions) split at their last block, which is also what LeGrad and attention-gradient read;
    LeViT's last stage offers only the attention path; other models (CNNs, Swin ...) neither."""
    try:
        split = timm_vit_split(model)
        return split, split
    except ValueError:
        pass
    try:
        return None, LevitSplit(model)
    except ValueError:
        return None, None
