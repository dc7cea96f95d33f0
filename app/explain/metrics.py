"""Faithfulness and localization metrics for saliency maps, batched on the model's device.

Every perturbation metric takes a plain ``logits_fn: Tensor (B, C, H, W) -> Tensor (B, K)`` (an
adapter's ``ExplainableModel.logits`` fits), runs it under ``torch.no_grad`` on chunks of at most
``batch_size`` perturbed images, and never leaves the image's device. Several maps can be scored
against one image (CAM and Finer-CAM side by side): pass ``image`` as ``(1, C, H, W)`` and
``saliency`` as ``(N, H, W)``.

Definitions (``H·W = P`` pixels; ``p_k(x) = softmax(logits_fn(x))_k``):

* **Pixel order.** Pixels are ranked by saliency, highest first; ties go to the lower row-major
  index (a stable sort), so the order is deterministic on every device. Curves need the whole
  order; the confidence drop needs only its first ``n`` pixels, selected without a full sort.
* **Baseline** ``b``: what a removed pixel becomes. ``"blur"`` is the image under a Gaussian blur
  (sigma 5 px, reflect padding, see :func:`baseline_image`), ``"mean"`` the image's per-channel
  mean colour; a tensor broadcastable to the image gives any other (e.g. zeros).
* **Perturbation curve.** For ``s = 0..steps`` let ``n_s = floor(s·P / steps)`` and ``M_s`` the
  first ``n_s`` pixels in the order. Deletion evaluates ``x_s = x`` with ``M_s`` replaced by
  ``b``; insertion evaluates ``x_s = b`` with ``M_s`` taken from ``x``. The curve is
  ``p_c(x_s)`` against the fraction ``f_s = n_s / P``.
* **Deletion / insertion AUC**: the trapezoidal area under that curve over ``f`` in [0, 1]
  (between 0 and 1). Lower deletion AUC and higher insertion AUC mean a more faithful map.
* **Relative confidence drop at k.** Remove (replace by ``b``) the top ``n = max(1, floor(k·P +
  1/2))`` pixels. With references ``D`` (classes the target is contrasted with), the relative
  confidence is ``rc(x) = p_c / (p_c + Σ_{d∈D} p_d)`` — the softmax over the logits of
  ``{c} ∪ D`` only, so classes outside it do not matter. Each drop is ``(before − after) /
  before`` of the quantity (``p_c`` and ``rc``): 1 means it vanished, 0 unchanged, negative means
  it rose. It is not clipped at 0. A map that points at what separates ``c`` from ``D`` (Finer-CAM)
  should drop ``rc`` more than a map of everything that supports ``c`` (CAM).
* **Energy inside**: ``Σ_{mask} max(s, 0) / Σ max(s, 0)``, in [0, 1]; 0 when the map has no
  positive value.
* **Pointing game**: a hit when the map's maximum pixel (first in row-major order among ties)
  lies within Euclidean distance ``tolerance_px`` of a mask pixel (0: inside the mask). A flat
  map (max = min, e.g. all zero) points nowhere and is a miss; an empty mask is a miss.

pytorch-grad-cam's ``pytorch_grad_cam.metrics`` score one image per call on the CPU, threshold at
a percentile (so the number of removed pixels depends on ties) and call ``model`` with target
callables; none of that fits one batched pass per curve, so only the definitions are shared.
``tests/test_metrics.py`` checks the confidence change against its ``CamMultImageConfidenceChange``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

LogitsFn = Callable[[torch.Tensor], torch.Tensor]
ArrayLike = torch.Tensor | np.ndarray
Baseline = Literal["blur", "mean"] | torch.Tensor
Mode = Literal["deletion", "insertion"]

DEFAULT_BLUR_SIGMA = 5.0
DEFAULT_BATCH_SIZE = 64


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class PerturbationCurve:
    """Target probability while pixels are deleted from (or inserted into) the image.

    Attributes:
        mode: ``"deletion"`` or ``"insertion"``.
        fractions: ``(steps + 1,)`` fraction of pixels removed / inserted, from 0 to 1.
        probabilities: ``(N, steps + 1)`` softmax probability of the target at each fraction.
    """

    mode: Mode
    fractions: torch.Tensor
    probabilities: torch.Tensor

    @property
    def auc(self) -> torch.Tensor:
        """``(N,)`` trapezoidal area under ``probabilities`` over ``fractions``."""
        return torch.trapezoid(self.probabilities, self.fractions, dim=-1)


@dataclass(frozen=True)
class ConfidenceDrop:
    """What masking the top pixels of each map did to the target. All fields are ``(N,)``.

    Attributes:
        pixels_masked: How many pixels were replaced by the baseline in every image.
        probability_before / probability_after: ``p_c`` of the original / masked image.
        probability_drop: ``(before - after) / before`` of ``p_c``.
        relative_before / relative_after: ``rc = p_c / (p_c + Σ_d p_d)`` over the references.
        relative_drop: ``(before - after) / before`` of ``rc``.
    """

    pixels_masked: int
    probability_before: torch.Tensor
    probability_after: torch.Tensor
    probability_drop: torch.Tensor
    relative_before: torch.Tensor
    relative_after: torch.Tensor
    relative_drop: torch.Tensor


# --------------------------------------------------------------------------------------------
# Faithfulness


def baseline_image(
    image: torch.Tensor, baseline: Baseline = "blur", *, blur_sigma: float = DEFAULT_BLUR_SIGMA
) -> torch.Tensor:
    """The image that removed pixels are replaced by, same shape and device as ``image``.

    Args:
        image: ``(N, C, H, W)`` or ``(C, H, W)`` float tensor (the model's input space).
        baseline: ``"blur"``: Gaussian blur with ``blur_sigma`` pixels, kernel ``2·⌈3σ⌉ + 1``
            (capped at the image size), reflect padding. ``"mean"``: every pixel set to the
            image's per-channel mean. A tensor: broadcast to the image's shape.
        blur_sigma: Standard deviation of the blur in pixels, > 0.
    """
    image = _check_image(image)
    if isinstance(baseline, torch.Tensor):
        try:
            shape = torch.broadcast_shapes(baseline.shape, image.shape)
        except RuntimeError:
            shape = None
        if shape != image.shape:
            raise ValueError(
                f"baseline of shape {tuple(baseline.shape)} does not broadcast to the image's "
                f"shape {tuple(image.shape)}"
            )
        return baseline.to(device=image.device, dtype=image.dtype).expand_as(image)
    if baseline == "mean":
        return image.mean(dim=(2, 3), keepdim=True).expand_as(image)
    if baseline == "blur":
        if not (isinstance(blur_sigma, (int, float)) and blur_sigma > 0):
            raise ValueError(f"blur_sigma must be a positive number of pixels, got {blur_sigma!r}")
        height, width = image.shape[-2:]
        kernel = min(2 * math.ceil(3 * blur_sigma) + 1, 2 * min(height, width) - 1)
        return TF.gaussian_blur(image, [kernel, kernel], [float(blur_sigma)] * 2)
    raise ValueError(f"baseline must be 'blur', 'mean' or a tensor, got {baseline!r}")


def perturbation_curve(
    logits_fn: LogitsFn,
    image: torch.Tensor,
    saliency: ArrayLike,
    target: int | Sequence[int] | torch.Tensor,
    *,
    mode: Mode = "deletion",
    steps: int = 20,
    baseline: Baseline = "blur",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> PerturbationCurve:
    """Target probability as the most salient pixels are deleted (or inserted) step by step.

    Args:
        logits_fn: Batch ``(B, C, H, W)`` -> logits ``(B, K)``; called under ``torch.no_grad``
            with ``B <= batch_size``.
        image: ``(1, C, H, W)`` shared by every map, or ``(N, C, H, W)`` one per map; a
            ``(C, H, W)`` tensor is one image. Its device is where everything runs.
        saliency: ``(N, H, W)`` or ``(H, W)`` maps (tensor or numpy) at the image's resolution.
        target: The explained class: one int for every map, or ``N`` of them.
        mode: ``"deletion"`` (remove the most salient pixels first, starting from the image) or
            ``"insertion"`` (reveal them first, starting from the baseline).
        steps: Number of equal steps from 0 to all pixels, >= 1; the model sees
            ``N · (steps + 1)`` images.
        baseline: See :func:`baseline_image`.
        batch_size: Most images per ``logits_fn`` call, >= 1.

    Returns:
        A :class:`PerturbationCurve`; ``.auc`` is the metric.

    Raises:
        ValueError: Bad shapes, ``steps``/``batch_size`` < 1, unknown ``mode``/``baseline``, a
            target outside the logits, non-finite saliency.
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    steps = _positive_int(steps, "steps")
    batch_size = _positive_int(batch_size, "batch_size")
    image, maps, targets = _prepare(image, saliency, target)
    base = baseline_image(image, baseline)
    pixels = maps.shape[1] * maps.shape[2]
    counts = torch.arange(steps + 1, device=image.device) * pixels // steps
    ranks = _ranks(maps)
    logits = _perturbed_logits(
        logits_fn,
        image,
        base,
        lambda which, step: ranks[which] < counts[step, None],
        (maps.shape[0], steps + 1),
        insert=mode == "insertion",
        batch_size=batch_size,
    )
    probabilities = _log_softmax_at(logits, targets).exp()
    return PerturbationCurve(mode, counts.to(probabilities.dtype) / pixels, probabilities)


def deletion_auc(
    logits_fn: LogitsFn,
    image: torch.Tensor,
    saliency: ArrayLike,
    target: int | Sequence[int] | torch.Tensor,
    *,
    steps: int = 20,
    baseline: Baseline = "blur",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> torch.Tensor:
    """``(N,)`` deletion AUC (lower is better); see :func:`perturbation_curve`."""
    return perturbation_curve(
        logits_fn,
        image,
        saliency,
        target,
        mode="deletion",
        steps=steps,
        baseline=baseline,
        batch_size=batch_size,
    ).auc


def insertion_auc(
    logits_fn: LogitsFn,
    image: torch.Tensor,
    saliency: ArrayLike,
    target: int | Sequence[int] | torch.Tensor,
    *,
    steps: int = 20,
    baseline: Baseline = "blur",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> torch.Tensor:
    """``(N,)`` insertion AUC (higher is better); see :func:`perturbation_curve`."""
    return perturbation_curve(
        logits_fn,
        image,
        saliency,
        target,
        mode="insertion",
        steps=steps,
        baseline=baseline,
        batch_size=batch_size,
    ).auc


def relative_confidence_drop(
    logits_fn: LogitsFn,
    image: torch.Tensor,
    saliency: ArrayLike,
    target: int | Sequence[int] | torch.Tensor,
    references: Sequence[int] | Sequence[Sequence[int]] | torch.Tensor,
    *,
    top_fraction: float = 0.05,
    baseline: Baseline = "blur",
    batch_size: int = DEFAULT_BATCH_SIZE,
    logits_before: ArrayLike | None = None,
) -> ConfidenceDrop:
    """Mask each map's top ``top_fraction`` pixels; how much do ``p_c`` and ``rc`` fall?

    ``rc = p_c / (p_c + Σ_{d ∈ references} p_d)``, the target's share of the probability held by
    it and its look-alikes. Drops are ``(before - after) / before``, computed from log
    probabilities so they stay exact when a probability is tiny. See the module docstring.

    Args:
        logits_fn, image, saliency, target, baseline, batch_size: As :func:`perturbation_curve`.
        references: Classes to contrast with: ``T`` ints for every map, or ``(N, T)``. Non-empty,
            without repeats, never the target.
        top_fraction: Fraction ``k`` in (0, 1] of pixels to mask; ``max(1, round(k·H·W))``
            pixels (halves round up).
        logits_before: The unmasked image's logits, ``(K,)``, ``(1, K)`` or one row per image,
            when they are already known (a cache): then ``logits_fn`` sees only the masked
            images, in one call when ``N <= batch_size``.

    Returns:
        A :class:`ConfidenceDrop` with ``(N,)`` tensors on the image's device.
    """
    if isinstance(top_fraction, bool) or not (
        isinstance(top_fraction, (int, float, np.floating)) and 0 < top_fraction <= 1
    ):
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction!r}")
    batch_size = _positive_int(batch_size, "batch_size")
    image, maps, targets = _prepare(image, saliency, target)
    refs = _references(references, targets)
    base = baseline_image(image, baseline)
    pixels = maps.shape[1] * maps.shape[2]
    masked = max(1, math.floor(top_fraction * pixels + 0.5))

    if logits_before is None:
        before = _batched_logits(logits_fn, lambda rows: image[rows], image.shape[0], batch_size)
    else:
        before = _known_logits(logits_before, image)
    before = before.expand(maps.shape[0], -1) if image.shape[0] == 1 else before
    top = _top_mask(maps, masked)
    after = _perturbed_logits(
        logits_fn,
        image,
        base,
        lambda which, step: top[which],
        (maps.shape[0], 1),
        insert=False,
        batch_size=batch_size,
    )[:, 0]
    _check_classes(torch.cat([targets[:, None], refs], dim=1), before.shape[-1])

    def log_rc(logits: torch.Tensor) -> torch.Tensor:
        subset = torch.cat([logits.gather(1, targets[:, None]), logits.gather(1, refs)], dim=1)
        return torch.log_softmax(subset, dim=1)[:, 0]

    p_before, p_after = _log_softmax_at(before, targets), _log_softmax_at(after, targets)
    rc_before, rc_after = log_rc(before), log_rc(after)
    return ConfidenceDrop(
        pixels_masked=masked,
        probability_before=p_before.exp(),
        probability_after=p_after.exp(),
        probability_drop=-torch.expm1(p_after - p_before),
        relative_before=rc_before.exp(),
        relative_after=rc_after.exp(),
        relative_drop=-torch.expm1(rc_after - rc_before),
    )


# --------------------------------------------------------------------------------------------
# Localization


def box_to_mask(
    box: Sequence[float] | ArrayLike,
    height: int,
    width: int,
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Box ``(x0, y0, x1, y1)`` in pixels -> boolean mask ``(H, W)``; ``(N, 4)`` -> ``(N, H, W)``.

    Pixel ``(row r, column c)`` is inside when its centre ``(c + 0.5, r + 0.5)`` lies in
    ``[x0, x1] × [y0, y1]``; for integer corners that is ``mask[y0:y1, x0:x1]``. Parts outside
    the image are ignored. Needs ``x0 <= x1`` and ``y0 <= y1``.
    """
    height, width = _positive_int(height, "height"), _positive_int(width, "width")
    boxes = torch.as_tensor(box if isinstance(box, torch.Tensor) else np.asarray(box))
    single = boxes.shape == (4,)
    if not single and (boxes.dim() != 2 or boxes.shape[1] != 4):
        raise ValueError(f"box must be (x0, y0, x1, y1) or (N, 4), got shape {tuple(boxes.shape)}")
    boxes = boxes.reshape(-1, 4)
    boxes = boxes.to(device=device or boxes.device, dtype=torch.float64)
    if not torch.isfinite(boxes).all():
        raise ValueError("box must hold finite coordinates")
    x0, y0, x1, y1 = boxes.unbind(-1)
    if (x1 < x0).any() or (y1 < y0).any():
        raise ValueError(f"box needs x0 <= x1 and y0 <= y1, got {boxes.tolist()}")
    cols = torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5
    rows = torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5
    inside_x = (cols >= x0[:, None]) & (cols <= x1[:, None])
    inside_y = (rows >= y0[:, None]) & (rows <= y1[:, None])
    masks = inside_y[:, :, None] & inside_x[:, None, :]
    return masks[0] if single else masks


def energy_inside(saliency: ArrayLike, mask: ArrayLike) -> torch.Tensor:
    """``(N,)`` share of each map's positive energy inside the mask: ``Σ_mask s⁺ / Σ s⁺``.

    Args:
        saliency: ``(N, H, W)`` or ``(H, W)`` maps; negative values count as 0.
        mask: ``(H, W)`` for every map or ``(N, H, W)``; boolean, or numbers where > 0.5 is
            inside. Use :func:`box_to_mask` for a box.

    Returns:
        Values in [0, 1] on the saliency's device; 0 for a map with no positive value.
    """
    maps, masks = _maps_and_masks(saliency, mask)
    positive = maps.clamp_min(0).flatten(1)
    total = positive.sum(dim=1)
    inside = (positive * masks.flatten(1)).sum(dim=1)
    return torch.where(total > 0, inside / total, 0.0)


def pointing_game(
    saliency: ArrayLike, mask: ArrayLike, *, tolerance_px: float = 0.0
) -> torch.Tensor:
    """``(N,)`` booleans: does each map's maximum fall on the mask (within ``tolerance_px``)?

    The maximum is the first maximal pixel in row-major order. A hit needs a mask pixel within
    Euclidean distance ``tolerance_px`` of it (``0``: the pixel itself is in the mask; the
    original pointing game uses 15). A flat map (max == min) and an empty mask are misses.

    Args:
        saliency, mask: As :func:`energy_inside`.
        tolerance_px: Distance in pixels, >= 0.
    """
    if isinstance(tolerance_px, bool) or not (
        isinstance(tolerance_px, (int, float, np.number)) and 0 <= tolerance_px < math.inf
    ):
        raise ValueError(f"tolerance_px must be a finite number >= 0, got {tolerance_px!r}")
    maps, masks = _maps_and_masks(saliency, mask)
    n, height, width = maps.shape
    flat = maps.flatten(1)
    index = torch.arange(height * width, device=maps.device).expand(n, -1)
    peak = torch.where(flat == flat.amax(dim=1, keepdim=True), index, height * width).amin(dim=1)
    rows = torch.arange(height, device=maps.device)
    cols = torch.arange(width, device=maps.device)
    dist2 = (rows[:, None] - (peak // width)[:, None, None]) ** 2 + (
        cols[None, :] - (peak % width)[:, None, None]
    ) ** 2
    near = (dist2 <= float(tolerance_px) ** 2) & masks
    flat_map = flat.amax(dim=1) == flat.amin(dim=1)
    return near.flatten(1).any(dim=1) & ~flat_map


# --------------------------------------------------------------------------------------------
# Internals


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _check_image(image: torch.Tensor) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"image must be a torch.Tensor, got {type(image).__name__}")
    if image.dim() == 3:
        image = image[None]
    if image.dim() != 4 or not image.is_floating_point() or image.shape[0] < 1:
        raise ValueError(
            f"image must be a float (N, C, H, W) or (C, H, W) tensor, got {image.dtype} "
            f"of shape {tuple(image.shape)}"
        )
    return image


def _as_maps(values: ArrayLike, name: str, device: torch.device | None) -> torch.Tensor:
    """Tensor or numpy ``(N, H, W)`` / ``(H, W)`` -> float tensor ``(N, H, W)`` on ``device``."""
    if not isinstance(values, (torch.Tensor, np.ndarray)):
        raise ValueError(f"{name} must be a tensor or numpy array, got {type(values).__name__}")
    if isinstance(values, np.ndarray):
        values = np.ascontiguousarray(values)
    maps = torch.as_tensor(values, device=device)
    if maps.dim() == 2:
        maps = maps[None]
    if maps.dim() != 3 or maps.numel() == 0:
        raise ValueError(f"{name} must be (N, H, W) or (H, W), got shape {tuple(maps.shape)}")
    return maps


def _as_saliency(values: ArrayLike, device: torch.device | None) -> torch.Tensor:
    maps = _as_maps(values, "saliency", device)
    maps = maps.to(torch.promote_types(maps.dtype, torch.float32))  # ints/bools -> float32
    if not torch.isfinite(maps).all():
        raise ValueError("saliency contains NaN or infinite values")
    return maps


def _prepare(
    image: torch.Tensor, saliency: ArrayLike, target: int | Sequence[int] | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validated ``image (1 or N, C, H, W)``, ``maps (N, H, W)``, ``targets (N,)`` on one device."""
    image = _check_image(image)
    maps = _as_saliency(saliency, image.device)
    if maps.shape[1:] != image.shape[2:]:
        raise ValueError(
            f"saliency maps are {tuple(maps.shape[1:])} but the image is {tuple(image.shape[2:])}; "
            "resize the maps to the model input first"
        )
    if image.shape[0] not in (1, maps.shape[0]):
        raise ValueError(
            f"image holds {image.shape[0]} images for {maps.shape[0]} saliency maps; "
            "pass one image or one per map"
        )
    return image, maps, _targets(target, maps.shape[0], image.device)


def _targets(
    target: int | Sequence[int] | torch.Tensor, n: int, device: torch.device
) -> torch.Tensor:
    values = _int_tensor(target, "target", device)
    if values.dim() == 0:
        values = values.expand(n)
    if values.shape != (n,):
        raise ValueError(f"target must be one int or {n} of them, got shape {tuple(values.shape)}")
    return values


def _references(
    references: Sequence[int] | Sequence[Sequence[int]] | torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """``(N, T)`` reference classes, checked against ``targets``."""
    refs = _int_tensor(references, "references", targets.device)
    n = targets.shape[0]
    if refs.dim() == 1:
        refs = refs.expand(n, -1)
    if refs.dim() != 2 or refs.shape[0] != n or refs.shape[1] == 0:
        raise ValueError(
            f"references must be T >= 1 classes for every map or (N={n}, T), "
            f"got shape {tuple(refs.shape)}"
        )
    if (refs == targets[:, None]).any():
        raise ValueError("references must not contain the target class")
    ordered = refs.sort(dim=1).values
    if (ordered[:, 1:] == ordered[:, :-1]).any():
        raise ValueError("references must not repeat a class")
    return refs


def _int_tensor(values: object, name: str, device: torch.device) -> torch.Tensor:
    if isinstance(values, bool):
        raise ValueError(f"{name} must be class indices, got {values!r}")
    try:
        tensor = torch.as_tensor(values, device=device)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{name} must be class indices, got {values!r}") from error
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"{name} must be integer class indices, got {tensor.dtype}")
    if (tensor < 0).any():
        raise ValueError(f"{name} must be non-negative class indices, got {values!r}")
    return tensor.long()


def _check_classes(classes: torch.Tensor, num_classes: int) -> None:
    if (classes >= num_classes).any():
        raise ValueError(
            f"target/references {sorted(set(classes.flatten().tolist()))} name a class outside "
            f"the {num_classes} logits"
        )


def _maps_and_masks(saliency: ArrayLike, mask: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    device = (
        saliency.device
        if isinstance(saliency, torch.Tensor)
        else (mask.device if isinstance(mask, torch.Tensor) else None)
    )
    maps = _as_saliency(saliency, device)
    masks = _as_maps(mask, "mask", maps.device)
    masks = masks if masks.dtype == torch.bool else masks > 0.5
    if masks.shape[1:] != maps.shape[1:] or masks.shape[0] not in (1, maps.shape[0]):
        raise ValueError(
            f"mask of shape {tuple(masks.shape)} does not fit saliency of shape "
            f"{tuple(maps.shape)}; pass (H, W) or (N, H, W)"
        )
    return maps, masks.expand_as(maps)


def _ranks(maps: torch.Tensor) -> torch.Tensor:
    """``(N, P)`` rank of every pixel, 0 = most salient, ties to the lower row-major index."""
    flat = maps.flatten(1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def _top_mask(maps: torch.Tensor, count: int) -> torch.Tensor:
    """``(N, P)`` booleans: the first ``count`` pixels of each map's order, i.e. exactly
    ``_ranks(maps) < count``, without sorting every pixel (a full sort costs about one forward
    of a small CNN). Pixels above the ``count``-th largest value are in; of those equal to it,
    the lowest row-major indices fill what is left."""
    flat = maps.flatten(1)
    threshold = flat.topk(count, dim=1).values[:, -1:]
    above = flat > threshold
    tied = flat == threshold
    room = count - above.sum(dim=1, keepdim=True)
    return above | (tied & (tied.cumsum(dim=1) <= room))


def _batched_logits(
    logits_fn: LogitsFn, rows: Callable[[torch.Tensor], torch.Tensor], total: int, batch_size: int
) -> torch.Tensor:
    """``(total, K)`` float logits of the inputs ``rows(indices)``, ``batch_size`` at a time,
    on the inputs' device."""
    chunks = []
    with torch.no_grad():
        for start in range(0, total, batch_size):
            batch = rows(torch.arange(start, min(start + batch_size, total)))
            logits = logits_fn(batch)
            if not (
                isinstance(logits, torch.Tensor)
                and logits.dim() == 2
                and logits.shape[0] == batch.shape[0]
            ):
                got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
                raise ValueError(
                    f"logits_fn must return logits of shape ({batch.shape[0]}, K) for a batch "
                    f"of {batch.shape[0]}, got {got}"
                )
            dtype = torch.promote_types(logits.dtype, torch.float32)
            chunks.append(logits.to(device=batch.device, dtype=dtype))
    return torch.cat(chunks)


def _perturbed_logits(
    logits_fn: LogitsFn,
    image: torch.Tensor,
    base: torch.Tensor,
    selected: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shape: tuple[int, int],
    *,
    insert: bool,
    batch_size: int,
) -> torch.Tensor:
    """``(N, S, K)`` logits of every map ``n`` and step ``s`` with the pixels
    ``selected(n, s)`` (``(B, P)`` booleans for ``B`` index pairs) deleted (or inserted)."""
    n, steps = shape
    height, width = image.shape[-2:]
    shared = image.shape[0] == 1

    def rows(indices: torch.Tensor) -> torch.Tensor:
        indices = indices.to(image.device)
        which, step = indices // steps, indices % steps
        source = torch.zeros_like(which) if shared else which
        chosen = selected(which, step).view(-1, 1, height, width)
        start, fill = (base, image) if insert else (image, base)
        return torch.where(chosen, fill[source], start[source])

    return _batched_logits(logits_fn, rows, n * steps, batch_size).view(n, steps, -1)


def _known_logits(logits: ArrayLike, image: torch.Tensor) -> torch.Tensor:
    """Given logits of the unmasked image(s) as a float ``(1 or N, K)`` tensor on its device."""
    known = torch.as_tensor(logits, device=image.device)
    known = known[None] if known.dim() == 1 else known
    if known.dim() != 2 or known.shape[0] != image.shape[0]:
        raise ValueError(
            f"logits_before must be (K,) or ({image.shape[0]}, K) for {image.shape[0]} image(s), "
            f"got shape {tuple(known.shape)}"
        )
    return known.to(torch.promote_types(known.dtype, torch.float32))


def _log_softmax_at(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``log p_target`` from logits ``(N, ..., K)`` and ``targets (N,)``; shape ``(N, ...)``."""
    _check_classes(targets, logits.shape[-1])
    log_p = torch.log_softmax(logits, dim=-1)
    index = targets.view(-1, *(1,) * (log_p.dim() - 1)).expand(*log_p.shape[:-1], 1)
    return log_p.gather(-1, index).squeeze(-1)


__all__ = [
    "ConfidenceDrop",
    "PerturbationCurve",
    "baseline_image",
    "box_to_mask",
    "deletion_auc",
    "energy_inside",
    "insertion_auc",
    "perturbation_curve",
    "pointing_game",
    "relative_confidence_drop",
]
