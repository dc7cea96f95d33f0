"""Choosing γ per image: the relative confidence drop of a γ grid, in one batched forward.

The Finer-CAM paper leaves γ to the user ("adaptively determining γ could lead to further
improvements"). Maps for a grid of γ cost nothing once the per-class gradients are cached; to
rank them this module masks the top ``top_fraction`` pixels of every candidate map (replaced by
the blurred image, the paper's "remove" setting) and runs the model **once** on the stacked
masked images. The relative confidence ``rc = p_c / (p_c + Σ_d p_d)`` before masking comes from
the cached logits, so no other forward is needed. The chosen γ is the one whose most salient
pixels carry most of what separates the target from its references: the largest drop of
``rc``. Ties go to the γ nearest the paper's default.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from app.explain.metrics import baseline_image

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


def mask_top(
    x: torch.Tensor, maps: np.ndarray, top_fraction: float, baseline: torch.Tensor
) -> torch.Tensor:
    """``(N, C, H, W)``: ``x`` with each map's top ``top_fraction`` pixels replaced by ``baseline``.

    Maps ``(N, h, w)`` are resized to the input's grid first; ties rank by row-major index.
    """
    height, width = x.shape[-2:]
    saliency = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32)).to(x.device)
    saliency = F.interpolate(saliency[:, None], size=(height, width), mode="bilinear")[:, 0]
    count = max(1, int(np.floor(top_fraction * height * width + 0.5)))
    order = torch.sort(-saliency.flatten(1), dim=1, stable=True).indices[:, :count]
    keep = torch.ones(len(maps), height * width, device=x.device)
    keep.scatter_(1, order, 0.0)
    keep = keep.view(len(maps), 1, height, width)
    return x * keep + baseline * (1 - keep)


def relative_log_confidence(
    logits: torch.Tensor, target: int, references: Sequence[int]
) -> torch.Tensor:
    """``log rc`` per row: the target's log-softmax over the logits of ``{target} ∪ references``."""
    subset = logits[:, [target, *references]]
    return torch.log_softmax(subset.float(), dim=1)[:, 0]


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
    masked = mask_top(x, maps, top_fraction, baseline_image(x, "blur"))
    after = relative_log_confidence(logits_fn(masked), target, references)
    before = relative_log_confidence(
        torch.as_tensor(logits_before, device=after.device)[None], target, references
    )
    drops = (-torch.expm1(after - before)).cpu().numpy().astype(np.float64)
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
