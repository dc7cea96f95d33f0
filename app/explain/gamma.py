"""Choosing γ per image: the relative confidence drop of a γ grid, in one batched forward.

The Finer-CAM paper leaves γ to the user ("adaptively determining γ could lead to further
improvements"). Maps for a grid of γ cost nothing once the per-class gradients are cached; to
rank them this module scores every candidate map as the live faithfulness line does
(:func:`app.explain.faithfulness.score_maps`): the top ``top_fraction`` pixels replaced by the
blurred image, the paper's "remove" setting, and the model run **once** on the stacked masked
images. The relative confidence ``rc = p_c / (p_c + Σ_d p_d)`` before masking comes from the
cached logits, so no other forward is needed. The chosen γ is the one whose most salient
pixels carry most of what separates the target from its references: the largest drop of
``rc``. Ties go to the γ nearest the paper's default.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from app.explain.faithfulness import score_maps

log = logging.getLogger(__name__)

#: γ values of the strip (small multiples under the panels).
GAMMA_GRID: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
#: The paper's (and the app's) fixed default.
DEFAULT_GAMMA = 0.6
#: Candidates auto-γ picks from: every strip γ that contrasts at all.
AUTO_CANDIDATES: tuple[float, ...] = GAMMA_GRID[1:]
#: Fraction of pixels masked per candidate map.
AUTO_TOP_FRACTION = 0.05


@dataclass(frozen=True)
class GammaChoice:
    """The γ auto-γ picked, every candidate's relative confidence drop, and why in one line."""

    gamma: float
    gammas: tuple[float, ...]
    drops: tuple[float, ...]
    reason: str


def choose_gamma(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    maps: np.ndarray,
    logits_before: np.ndarray,
    target: int,
    references: Sequence[int],
    gammas: Sequence[float],
    top_fraction: float = AUTO_TOP_FRACTION,
) -> GammaChoice:
    """Pick the γ whose map's top pixels, removed, drop ``rc`` the most (one batched forward).

    Args:
        logits_fn: The model's no-grad logits of an input batch (``ExplainableModel.logits``).
        x: The preprocessed image ``(1, C, H, W)``.
        maps: Finished Finer maps ``(N, h, w)`` in [0, 1], one per γ in ``gammas``.
        logits_before: The unmasked image's logits ``(K,)`` (cached; no forward here).
        target, references: The contrast's classes.
    """
    if not references:
        return GammaChoice(DEFAULT_GAMMA, tuple(gammas), (), "no references to contrast with")
    empty = np.array([not m.any() for m in maps])
    scored = score_maps(logits_fn, x, maps, target, references, top_fraction, logits_before)
    drops = scored.relative_drop.cpu().numpy().astype(np.float64)
    drops[empty] = -np.inf  # an empty map points nowhere
    if np.all(empty):
        return GammaChoice(
            DEFAULT_GAMMA, tuple(gammas), tuple(drops), "every candidate map is empty"
        )
    best = max(
        range(len(gammas)), key=lambda i: (round(drops[i], 6), -abs(gammas[i] - DEFAULT_GAMMA))
    )
    reason = (
        f"removing its top {top_fraction:.0%} pixels lowers the target's share against the "
        f"references most ({drops[best]:.0%}; at γ={DEFAULT_GAMMA:g}: "
        f"{_drop_at(drops, gammas, DEFAULT_GAMMA)})"
    )
    log.debug("auto gamma %s from drops %s", gammas[best], drops)
    return GammaChoice(float(gammas[best]), tuple(gammas), tuple(float(d) for d in drops), reason)


def _drop_at(drops: np.ndarray, gammas: Sequence[float], gamma: float) -> str:
    for value, drop in zip(gammas, drops, strict=True):
        if abs(value - gamma) < 1e-9:
            return f"{drop:.0%}" if np.isfinite(drop) else "empty map"
    return "not a candidate"
