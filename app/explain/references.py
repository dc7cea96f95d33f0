"""Which look-alike classes a Finer-CAM map contrasts the target against."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

REFERENCE_MODES = ("logits", "weights", "manual")
WEIGHTINGS = ("uniform", "probability")


@dataclass(frozen=True)
class ReferenceChoice:
    """The reference classes picked, and a notice when the request had to be adjusted."""

    indices: tuple[int, ...]
    notice: str | None = None


def select_references(
    mode: str,
    target: int,
    count: int,
    logits: np.ndarray,
    embeddings: np.ndarray | None = None,
    manual: Sequence[int] = (),
) -> ReferenceChoice:
    """Pick up to ``count`` reference classes for ``target``.

    Args:
        mode: ``"logits"`` (classes whose logit is closest to the target's, the paper's and
            pytorch-grad-cam's rule), ``"weights"`` (highest cosine similarity of classifier
            weight rows or text embeddings), or ``"manual"`` (``manual`` as given).
        target: Target class index.
        count: T, the number of references; clamped to the classes available.
        logits: ``(K,)`` logits of the image.
        embeddings: ``(K, D)`` class embeddings, required for ``"weights"``.
        manual: Class indices for ``"manual"``.
    """
    if mode not in REFERENCE_MODES:
        raise ValueError(f"reference mode {mode!r} is not one of {', '.join(REFERENCE_MODES)}")
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"T (number of references) must be an integer >= 1, got {count!r}")
    available = len(logits) - 1
    notice = None
    if count > available:
        notice = f"T={count} is more than the {available} other classes; using T={available}."
        count = available
    if mode == "manual":
        return _manual(target, manual, notice)
    ranking = (
        _closest_logits(target, logits)
        if mode == "logits"
        else _closest_weights(target, embeddings)
    )
    return ReferenceChoice(tuple(int(i) for i in ranking[:count]), notice)


def _closest_logits(target: int, logits: np.ndarray) -> np.ndarray:
    order = np.argsort(np.abs(logits - logits[target]), kind="stable")
    return order[order != target]


def _closest_weights(target: int, embeddings: np.ndarray | None) -> np.ndarray:
    if embeddings is None:
        raise ValueError("reference mode 'weights' needs class embeddings; this model has none")
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit[target]
    order = np.argsort(-similarity, kind="stable")
    return order[order != target]


def _manual(target: int, manual: Sequence[int], notice: str | None) -> ReferenceChoice:
    picked = tuple(dict.fromkeys(int(i) for i in manual if int(i) != target))
    if not picked:
        raise ValueError("manual reference mode needs at least one class other than the target")
    dropped = len(manual) - len(picked)
    if dropped:
        notice = "Ignored the target and repeated classes among the manual references."
    return ReferenceChoice(picked, notice)


def reference_weights(
    references: Sequence[int], probabilities: np.ndarray, weighting: str
) -> np.ndarray:
    """Weights w_d (summing to 1) of each reference, treated as constants.

    ``uniform`` is the paper's mean over references; ``probability`` renormalises the softmax
    probabilities over the references, like pytorch-grad-cam's FinerWeightedTarget (which also
    differentiates through them; with one reference both agree exactly).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting {weighting!r} is not one of {', '.join(WEIGHTINGS)}")
    if not references:
        return np.zeros(0, dtype=np.float64)
    if weighting == "uniform":
        return np.full(len(references), 1.0 / len(references))
    chosen = probabilities[list(references)].astype(np.float64)
    return chosen / max(chosen.sum(), 1e-30)
