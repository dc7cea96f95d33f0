"""How faithful are the maps on screen: the relative confidence drop at k, in one batched forward.

The maps a user sees (CAM and Finer-CAM, or every method in the compare view) are scored with
:func:`app.explain.metrics.relative_confidence_drop`: each map's top ``k`` pixels are replaced
by the blurred image and the masked images run through the model together, once. The unmasked
image's logits come from the cache entry the maps were made from, so no other forward runs. The
maps are resized to the model input exactly as ``python -m app.cli evaluate`` does, so the live
numbers are the CLI's numbers. :func:`score_images` scores the maps of many images in the same
way, their masked images stacked into one forward, for a batch of the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from app.explain import metrics
from app.explain.metrics import ConfidenceDrop

#: The paper's k: the share of pixels removed from each map.
DEFAULT_TOP_FRACTION = 0.05
#: Bytes one image's forward needs on a GPU, as a multiple of its input's bytes (a ViT-B/16 or
#: ResNet-50 at 224 px peaks well under this in inference).
ACTIVATIONS_PER_INPUT = 64


@dataclass(frozen=True)
class MapScore:
    """What removing the top ``k`` of one map did to the target.

    Attributes:
        label: The map's name on screen (``CAM``, ``Finer-CAM``, ``Finer Layer-CAM``).
        method: The registry name of the method that made it.
        finer: Whether it is the Finer map (target − γ·references) or plain CAM.
        fgcam: Whether FG-CAM raised it to pixels.
        relative_drop: Drop of the target's share against its references (1: gone; < 0: rose).
        probability_drop: Drop of the target's probability.
        empty: The map is zero everywhere (its "top pixels" are the first in row-major order).
    """

    label: str
    method: str
    finer: bool
    relative_drop: float
    probability_drop: float
    empty: bool
    fgcam: bool = False


@dataclass(frozen=True)
class Faithfulness:
    """The two maps on screen scored together; :meth:`sentence` says it in words."""

    target: str
    references: tuple[str, ...]
    top_fraction: float
    pixels_masked: int
    cam: MapScore
    finer: MapScore
    reference_noun: str = "look-alike"
    cached: bool = False

    def sentence(self) -> str:
        """One plain sentence: how much removing each map's top pixels lowers the target."""
        k = f"{self.top_fraction * 100:g} %"
        count = len(self.references)
        noun = self.reference_noun + "s" * (count != 1)
        share = f"{self.target}'s share against its {count} {noun}"
        finer, cam = self.finer, self.cam
        first = f"Removing {finer.label}'s top {k} {_moves(finer.relative_drop, share)}"
        if finer.relative_drop >= 0 and cam.relative_drop >= 0:
            second = f"removing {cam.label}'s top {k}: {_percent(cam.relative_drop)}"
        else:
            second = f"removing {cam.label}'s top {k} {_moves(cam.relative_drop, 'it')}"
        probability = (
            f"Its probability {_falls(finer.probability_drop)} and "
            f"{_falls(cam.probability_drop)} respectively."
        )
        empty = [s.label for s in (finer, cam) if s.empty]
        note = f" The {' and '.join(empty)} map is empty, so its score means nothing."
        note = note if empty else ""
        return f"{first}; {second}. {probability}{note}"

    def nbytes(self) -> int:
        """Bytes held (for the service's bounded cache): a few strings and numbers."""
        return 1024


@dataclass(frozen=True)
class MethodComparison:
    """Every method's CAM and Finer maps of one image, scored together, highest relative drop first.

    Attributes:
        scores: One per map, sorted by relative drop, highest first.
        maps: The finished maps ``(H, W)`` in [0, 1] at the image size, in ``scores`` order.
        image: The RGB image the maps explain.
        on_request: Labels of the slower candidates left out (Score-CAM, FG-CAM), computed
            when asked for.
        device: Where the model runs: the overlays of the grid are coloured there on the
            tensor path (:func:`app.explain.render.overlay_maps`).
    """

    target: str
    target_index: int
    references: tuple[str, ...]
    top_fraction: float
    scores: tuple[MapScore, ...]
    maps: np.ndarray
    image: np.ndarray
    on_request: tuple[str, ...] = ()
    cached: bool = False
    device: torch.device | None = None

    def nbytes(self) -> int:
        return int(self.maps.nbytes + self.image.nbytes) + 1024


def map_label(method_label: str, finer: bool, fgcam: bool = False) -> str:
    """A map's name in the compare view: ``Grad-CAM``, ``Finer Grad-CAM + FG-CAM``."""
    return f"{'Finer ' if finer else ''}{method_label}{' + FG-CAM' if fgcam else ''}"


def maps_at_input(maps: np.ndarray, x: torch.Tensor) -> torch.Tensor:
    """Finished maps ``(N, H, W)`` at the image size -> ``(N, h, w)`` on the input's grid
    (bilinear, as ``evaluate`` scores them), on the input's device."""
    stack = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32)).to(x.device)
    if stack.shape[-2:] == x.shape[-2:]:
        return stack
    size = tuple(x.shape[-2:])
    return F.interpolate(stack[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def masked_batch_size(x: torch.Tensor, count: int) -> int:
    """How many masked images run in one forward: up to 64 on the CPU; on a GPU as many as fit
    in half of its free memory (so a long compare grid or a curve is chunked, never out of
    memory)."""
    if x.device.type != "cuda":
        return max(1, min(count, metrics.DEFAULT_BATCH_SIZE))
    free, _ = torch.cuda.mem_get_info(x.device)
    per_image = x[0].numel() * x.element_size() * ACTIVATIONS_PER_INPUT
    return max(1, min(count, free // 2 // per_image))


def score_maps(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    maps: np.ndarray,
    target: int,
    references: Sequence[int],
    top_fraction: float = DEFAULT_TOP_FRACTION,
    logits_before: Any = None,
    baseline: metrics.Baseline = "blur",
) -> ConfidenceDrop:
    """Relative and plain confidence drops of every finished map, the masked images in one
    forward (chunked on a GPU); ``logits_before`` (cached) spares the unmasked image's."""
    return metrics.relative_confidence_drop(
        logits_fn, x, maps_at_input(maps, x), target, list(references),
        top_fraction=top_fraction, baseline=baseline,
        batch_size=masked_batch_size(x, len(maps)), logits_before=logits_before,
    )  # fmt: skip


@dataclass(frozen=True)
class MaskingTask:
    """One image's maps to score, with what :func:`score_maps` takes besides them.

    Attributes:
        logits_fn: The model's no-grad logits (tasks share a forward only with the same one).
        x: The preprocessed input ``(1, C, h, w)``.
        blurred: What its removed pixels become (the blurred ``x``).
        maps: Finished maps ``(N, H, W)`` at the image size.
        target: The explained class.
        references: The classes it is contrasted with.
        logits_before: The unmasked input's logits ``(K,)`` (from the cache).
    """

    logits_fn: Callable[[torch.Tensor], torch.Tensor]
    x: torch.Tensor
    blurred: torch.Tensor
    maps: np.ndarray
    target: int
    references: tuple[int, ...]
    logits_before: np.ndarray


def score_images(
    tasks: Sequence[MaskingTask], top_fraction: float = DEFAULT_TOP_FRACTION
) -> list[ConfidenceDrop]:
    """:func:`score_maps` of every task, the masked images of all tasks that share a model, an
    input size and a number of references in one forward (chunked by :func:`masked_batch_size`, as
    the compare view's): the same masked images and numbers, with the device kept busy."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for index, task in enumerate(tasks):
        key = (task.logits_fn, tuple(task.x.shape), len(task.references))
        groups.setdefault(key, []).append(index)
    drops: dict[int, ConfidenceDrop] = {}
    for indices in groups.values():
        group = [tasks[i] for i in indices]
        drop = _score_group(group, top_fraction)
        start = 0
        for index, task in zip(indices, group, strict=True):
            drops[index] = _rows(drop, start, start + len(task.maps))
            start += len(task.maps)
    return [drops[index] for index in range(len(tasks))]


def _score_group(group: Sequence[MaskingTask], top_fraction: float) -> ConfidenceDrop:
    """The drops of a group's maps, one row per map: each map beside its own image, baseline,
    target, references and unmasked logits."""
    x = _each_map(group, [t.x for t in group])
    maps = torch.cat([maps_at_input(t.maps, t.x) for t in group])
    before = [torch.as_tensor(t.logits_before).reshape(1, -1) for t in group]
    return metrics.relative_confidence_drop(
        group[0].logits_fn, x, maps,
        [t.target for t in group for _ in t.maps],
        [list(t.references) for t in group for _ in t.maps],
        top_fraction=top_fraction, baseline=_each_map(group, [t.blurred for t in group]),
        batch_size=masked_batch_size(x, len(maps)), logits_before=_each_map(group, before),
    )  # fmt: skip


def _each_map(group: Sequence[MaskingTask], tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """One row per map: each task's ``(1, ...)`` tensor repeated for its maps, stacked."""
    pairs = zip(group, tensors, strict=True)
    return torch.cat([tensor.expand(len(t.maps), *tensor.shape[1:]) for t, tensor in pairs])


def _rows(drop: ConfidenceDrop, start: int, stop: int) -> ConfidenceDrop:
    """The drops of maps ``start:stop`` of ``drop``."""
    return ConfidenceDrop(
        drop.pixels_masked,
        *(getattr(drop, f.name)[start:stop] for f in fields(ConfidenceDrop)[1:]),
    )


def _percent(drop: float) -> str:
    return f"{abs(drop) * 100:.0f} %"


def _moves(drop: float, what: str) -> str:
    return f"{'lowers' if drop >= 0 else 'raises'} {what} by {_percent(drop)}"


def _falls(drop: float) -> str:
    return f"{'falls' if drop >= 0 else 'rises'} by {_percent(drop)}"
