"""Sanity check for saliency maps: cascading model randomisation (Adebayo et al., 2018).

A map that stays the same when the model's weights are replaced by random ones explains the
image, not the model. The check re-initialises the model's layers one after another, output
first (the head, then each block towards the input, as the adapter declares them through
:class:`~app.models.base.CascadeLayers`), and after each step compares every method's CAM and
Finer-CAM maps with the maps of the trained model:

* **Spearman rank correlation** of the two maps' pixels (ties share their average rank). A map
  with no positive value after the ReLU is flat: it keeps none of the original's ranking and
  scores 0.
* **SSIM** (Wang et al. 2004: 11-px Gaussian window, σ 1.5, data range 1, constants
  ``(0.01)²`` and ``(0.03)²``, mean over the valid windows) of the maps in [0, 1].

High values after the head is randomised mean the map does not depend on what the model learned.
Everything runs on a deep copy of the adapter with its own explanation service: the served
model, its weights and its caches are never touched. The target and the references of the
randomised models are those of the trained model, so each comparison is of the same contrast.
Each step's re-initialisation is seeded (``seed + step``), so the numbers are reproducible.
"""

from __future__ import annotations

import copy
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from app.explain.inputs import InvalidInputError
from app.explain.methods import get_method
from app.explain.service import Explanation, ExplanationService
from app.explain.settings import ExplainSettings
from app.models.base import CascadeLayers, ExplainableModel

log = logging.getLogger(__name__)

DEFAULT_SEED = 0
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5
SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2
MAP_KINDS = ("cam", "finer")


@dataclass(frozen=True)
class SanityScore:
    """One map of one image after ``step`` layers (the last being ``layer``) were re-initialised.

    Attributes:
        method: CAM method name.
        map: ``cam`` (plain CAM) or ``finer`` (Finer-CAM at the check's γ).
        step: How many layers are random (1 = the head only).
        layer: The layer re-initialised at this step, as the adapter names it.
        image: Index of the image in the checked list.
        spearman: Rank correlation with the trained model's map.
        ssim: Structural similarity with the trained model's map.
    """

    method: str
    map: str
    step: int
    layer: str
    image: int
    spearman: float
    ssim: float


def rank_correlation(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman's ρ of two maps' pixels, ties at their average rank; 0 when either is flat."""
    a, b = np.ravel(first).astype(np.float64), np.ravel(second).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"maps differ in size: {np.shape(first)} vs {np.shape(second)}")
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    norm = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / norm) if norm > 0 else 0.0


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts_group = np.r_[True, ordered[1:] != ordered[:-1]]
    starts = np.flatnonzero(starts_group)
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    ranks[order] = ((starts + ends - 1) / 2.0)[np.cumsum(starts_group) - 1]
    return ranks


def ssim(first: np.ndarray, second: np.ndarray) -> float:
    """Mean structural similarity of two ``(H, W)`` maps with values in [0, 1]."""
    if np.shape(first) != np.shape(second) or np.ndim(first) != 2:
        raise ValueError(
            f"ssim needs two maps of one (H, W) shape, got {np.shape(first)} and {np.shape(second)}"
        )
    x = torch.as_tensor(np.stack([first, second]), dtype=torch.float64)[:, None]
    size = min(SSIM_WINDOW, *x.shape[-2:])
    line = torch.exp(
        -((torch.arange(size, dtype=torch.float64) - (size - 1) / 2) ** 2) / (2 * SSIM_SIGMA**2)
    )
    line = line / line.sum()
    window = (line[:, None] * line[None, :])[None, None]

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window)

    mean = blur(x)
    mu_a, mu_b = mean[0], mean[1]
    var_a = blur(x[:1] ** 2)[0] - mu_a**2
    var_b = blur(x[1:] ** 2)[0] - mu_b**2
    covariance = blur(x[:1] * x[1:])[0] - mu_a * mu_b
    index = ((2 * mu_a * mu_b + SSIM_C1) * (2 * covariance + SSIM_C2)) / (
        (mu_a**2 + mu_b**2 + SSIM_C1) * (var_a + var_b + SSIM_C2)
    )
    return float(index.mean())


def reinitialise(module: torch.nn.Module, seed: int) -> int:
    """Every part of ``module`` re-initialised as PyTorch builds it, under ``seed`` (the global
    RNG is restored afterwards); returns how many parts were reset."""
    resets = [reset for reset in map(_initialiser, module.modules()) if reset is not None]
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for reset in resets:
            reset()
    return len(resets)


def _initialiser(part: torch.nn.Module) -> Callable[[], None] | None:
    """``reset_parameters``; ``nn.MultiheadAttention`` keeps its packed input projection (an
    open_clip block's Q, K, V) as a bare parameter that only its ``_reset_parameters`` draws."""
    if isinstance(part, torch.nn.MultiheadAttention):
        return part._reset_parameters
    reset = getattr(part, "reset_parameters", None)
    return reset if callable(reset) else None


def cascade(
    model: ExplainableModel, depth: int | None = None, seed: int = DEFAULT_SEED
) -> Iterator[tuple[str, ExplainableModel]]:
    """A deep copy of ``model`` with one more layer re-initialised at each step, output first:
    yields ``(layer name, the copy)``; the copy is the same object at every step."""
    if not isinstance(model, CascadeLayers):
        raise InvalidInputError(
            f"{model.name} declares no layers to randomise, so the sanity check cannot run on it"
        )
    randomised = copy.deepcopy(model)
    layers = randomised.cascade_layers()
    for step, (name, module) in enumerate(layers[:depth], start=1):
        if reinitialise(module, seed + step) == 0:
            raise ValueError(f"layer {name} of {model.name} has no part with reset_parameters")
        log.info("sanity: %s step %d re-initialised %s", model.name, step, name)
        yield name, randomised


def _fixed_contrast(settings: ExplainSettings, original: Explanation) -> ExplainSettings:
    """``settings`` with the target and references the trained model used for the image."""
    references = tuple(reference.index for reference in original.references)
    if not references:
        return ExplainSettings(method=settings.method, gamma=0.0, target=original.target.index)
    return ExplainSettings(
        method=settings.method,
        gamma=settings.gamma,
        top_t=len(references),
        target=original.target.index,
        reference_mode="manual",
        manual_references=references,
    )


def sanity_check(
    model: ExplainableModel,
    images: Sequence[Any],
    methods: Sequence[str],
    gamma: float = 0.6,
    top_t: int = 3,
    depth: int | None = None,
    seed: int = DEFAULT_SEED,
    slow_images: int | None = None,
) -> list[SanityScore]:
    """Scores of every method's CAM and Finer maps of ``images`` after each cascade step.

    Args:
        model: A model that declares :class:`~app.models.base.CascadeLayers`; it is not changed.
        images: Anything the explanation service takes (PIL images, paths, arrays).
        methods: CAM method names.
        gamma, top_t: Finer-CAM's γ and number of references (closest logits of the trained
            model, kept for the randomised copies).
        depth: Stop after this many layers (``None``: all the model declares).
        seed: Seed of the first step's re-initialisation.
        slow_images: Methods without gradients (Score-CAM: a forward per channel for every
            map) explain only the first ``slow_images`` images (``None``: all).
    """
    trained = ExplanationService(lambda _name: model, max_entries=len(images) + 1)
    originals = {
        (method, index): trained.explain(
            model.name, image, ExplainSettings(method=method, gamma=gamma, top_t=top_t)
        )
        for method in methods
        for index, image in enumerate(images[: image_count(method, len(images), slow_images)])
    }
    scores = []
    for step, (layer, randomised) in enumerate(cascade(model, depth, seed), start=1):
        service = ExplanationService(lambda _name, m=randomised: m, max_entries=len(images) + 1)
        for (method, index), original in originals.items():
            settings = _fixed_contrast(ExplainSettings(method=method, gamma=gamma), original)
            result = service.explain(model.name, images[index], settings)
            for kind in MAP_KINDS:
                before, after = getattr(original, kind), getattr(result, kind)
                scores.append(
                    SanityScore(
                        method,
                        kind,
                        step,
                        layer,
                        index,
                        rank_correlation(before, after),
                        ssim(before, after),
                    )
                )
    return scores


def is_slow(method: str) -> bool:
    """A method without gradients: Score-CAM runs a forward per channel for every map."""
    return not get_method(method).uses_gradients


def image_count(method: str, count: int, slow_images: int | None) -> int:
    """How many of ``count`` images ``method`` explains: all, or at most ``slow_images`` for a
    slow method (:func:`is_slow`)."""
    if slow_images is None or not is_slow(method):
        return count
    return min(count, slow_images)


def summarise(scores: Sequence[SanityScore]) -> list[dict[str, object]]:
    """Mean Spearman and SSIM per (method, map, step), in step order."""
    groups: dict[tuple[str, str, int, str], list[SanityScore]] = defaultdict(list)
    for score in scores:
        groups[(score.method, score.map, score.step, score.layer)].append(score)
    return [
        {
            "method": method,
            "map": kind,
            "step": step,
            "layer": layer,
            "n": len(items),
            "spearman": float(np.mean([s.spearman for s in items])),
            "ssim": float(np.mean([s.ssim for s in items])),
        }
        for (method, kind, step, layer), items in sorted(
            groups.items(), key=lambda pair: (pair[0][0], pair[0][1], pair[0][2])
        )
    ]


def markdown_table(summary: Sequence[dict[str, object]]) -> str:
    """One row per (method, map): ``ρ / SSIM`` after each step, the layers as columns; a method
    checked on fewer images than the others says on how many."""
    layers: dict[int, str] = {int(row["step"]): str(row["layer"]) for row in summary}
    steps = sorted(layers)
    most = max((int(row["n"]) for row in summary), default=0)
    cells: dict[tuple[str, str], dict[int, str]] = defaultdict(dict)
    for row in summary:
        n = int(row["n"])
        method = str(row["method"]) + (f" ({n} image{'s' * (n != 1)})" if n < most else "")
        cells[(method, str(row["map"]))][int(row["step"])] = (
            f"{row['spearman']:.2f} / {row['ssim']:.2f}"
        )
    heading = " | ".join(f"+ {layers[s]}" for s in steps)
    lines = [f"| method | map | {heading} |", "|---|---|" + "---|" * len(steps)]
    for (method, kind), by_step in cells.items():
        label = "CAM" if kind == "cam" else "Finer"
        lines.append(
            f"| {method} | {label} | " + " | ".join(by_step.get(s, "—") for s in steps) + " |"
        )
    return "\n".join(lines)
