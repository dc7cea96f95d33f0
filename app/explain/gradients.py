"""The per-(model, image) gradients cache entry: one trunk pass, one small backward.

The trunk runs once without autograd. Its activation becomes a leaf that requires grad, only the
tail runs with autograd, and gradients of the target and its candidate references come from one
batched ``torch.autograd.grad`` call into that leaf — never into model parameters. The tail's
graph is kept so gradients of classes picked later (a new target, manual references, a larger
T) cost one tail backward, not a model call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np
import torch

from app.explain.combine import Direction

log = logging.getLogger(__name__)

ProgressFn = Callable[[float, str], None]
T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


@dataclass
class GradientEntry:
    """Logits, activations and per-class gradients of one image under one model.

    Attributes:
        logits: ``(K,)`` float32 logits.
        probabilities: ``(K,)`` softmax of ``logits``.
        activations: ``(1, C, h, w)`` float32 feature grid at the target layer.
        input_size: ``(height, width)`` of the model input.
    """

    logits: np.ndarray
    probabilities: np.ndarray
    activations: np.ndarray
    input_size: tuple[int, int]
    _leaf: torch.Tensor
    _graph_logits: torch.Tensor
    _to_grid: Callable[[torch.Tensor], torch.Tensor]
    _grads: dict[int, np.ndarray] = field(default_factory=dict)
    _score_logits: np.ndarray | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def trunk_output(self) -> torch.Tensor:
        """The trunk's activation (no graph), reusable by another head on the same trunk."""
        return self._leaf.detach()

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[0])

    def gradients(self, classes: Iterable[int]) -> dict[int, np.ndarray]:
        """``{class: (1, C, h, w) gradient}``; computes the missing ones in one batched call."""
        return fill_missing(self._grads, self._lock, map(int, classes), self._backward)

    def has_gradients(self, classes: Iterable[int]) -> bool:
        """Whether :meth:`gradients` of ``classes`` would run no backward pass."""
        return all_cached(self._grads, self._lock, map(int, classes))

    def _backward(self, classes: list[int]) -> dict[int, np.ndarray]:
        grads = class_gradients(self._graph_logits, self._leaf, classes)
        grid = self._to_grid(grads).detach().float().cpu().numpy()
        return {k: grid[i : i + 1] for i, k in enumerate(classes)}

    @property
    def has_score_logits(self) -> bool:
        """Whether Score-CAM's masked-input logits are cached (then no input is needed)."""
        return self._score_logits is not None

    def score_logits(
        self, model: SplitModel | None, x: torch.Tensor | None, progress: ProgressFn | None = None
    ) -> np.ndarray:
        """``(C, K)`` logits of the input masked by each channel (Score-CAM), computed once.

        Every contrastive score is a linear combination of these columns, so any γ, T or
        reference change afterwards is free. ``model`` and ``x`` are used only on the first call.
        """
        with self._lock:
            if self._score_logits is None:
                self._score_logits = masked_input_logits(model, x, self.activations, progress)
            return self._score_logits

    def nbytes(self) -> int:
        """Approximate memory held, for the cache's byte bound (graph counted as 4 leaves)."""
        leaf_bytes = self._leaf.numel() * self._leaf.element_size()
        grads = sum(g.nbytes for g in self._grads.values())
        scores = 0 if self._score_logits is None else self._score_logits.nbytes
        return self.activations.nbytes + grads + scores + 4 * leaf_bytes + self.logits.nbytes * 2


class SplitModel(Protocol):
    """What the gradients cache needs of a model (ExplainableModel and HookedLayerModel)."""

    def split_forward(
        self, x: torch.Tensor, activation: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def to_grid(self, activation: torch.Tensor) -> torch.Tensor: ...

    def logits(self, x: torch.Tensor) -> torch.Tensor: ...


def compute_entry(
    model: SplitModel,
    x: torch.Tensor,
    classes: Iterable[int] | Callable[[np.ndarray], Iterable[int]],
    activation: torch.Tensor | None = None,
) -> GradientEntry:
    """Run the model once on ``x`` (batch of one) and cache gradients for ``classes``.

    Args:
        model: The split model.
        x: ``(1, 3, H, W)`` preprocessed input.
        classes: Classes whose gradients are computed eagerly, or a function of the logits
            returning them (the target and references depend on the prediction).
        activation: The trunk output for ``x`` when already cached (CLIP prompt changes);
            the trunk is skipped then.
    """
    leaf, graph_logits = model.split_forward(x, activation)
    logits = graph_logits.detach().float()[0]
    entry = GradientEntry(
        logits=logits.cpu().numpy(),
        probabilities=torch.softmax(logits, dim=-1).cpu().numpy(),
        activations=model.to_grid(leaf.detach()).float().cpu().numpy(),
        input_size=(int(x.shape[-2]), int(x.shape[-1])),
        _leaf=leaf,
        _graph_logits=graph_logits,
        _to_grid=model.to_grid,
    )
    eager = classes(entry.logits) if callable(classes) else classes
    entry.gradients(eager)
    return entry


def class_gradients(logits: torch.Tensor, leaf: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """∂logits[0, k]/∂leaf for each k, stacked ``(len(classes), *leaf.shape[1:])``."""
    return gradients_per_class(logits, [leaf], classes)[0]


def gradients_per_class(
    output: torch.Tensor, inputs: Sequence[torch.Tensor], classes: list[int]
) -> list[torch.Tensor]:
    """∂output[0, k]/∂input for each k and each input (a batch of one): one
    ``(len(classes), *input.shape[1:])`` tensor per input."""
    return gradients_along(output, inputs, [((int(k), 1.0),) for k in classes])


def gradients_along(
    output: torch.Tensor, inputs: Sequence[torch.Tensor], directions: Sequence[Direction]
) -> list[torch.Tensor]:
    """∂(Σ w·output[0, k])/∂input for each direction ``((k, w), ...)`` and each input (a batch
    of one): one ``(len(directions), *input.shape[1:])`` tensor per input.

    One vectorised backward (``is_grads_batched``) when the graph supports it, else a loop of
    backward passes over the (small) graph. The graph is retained for later directions.
    """
    cotangents = torch.zeros(
        (len(directions), *output.shape), dtype=output.dtype, device=output.device
    )
    for row, direction in enumerate(directions):
        for k, weight in direction:
            cotangents[row, 0, k] += weight
    try:
        grads = torch.autograd.grad(
            output, list(inputs), grad_outputs=cotangents, retain_graph=True, is_grads_batched=True
        )
        return [g[:, 0] for g in grads]
    except RuntimeError as error:
        log.debug("batched gradients unavailable (%s); looping over directions", error)
    per_row = [
        torch.autograd.grad(output, list(inputs), grad_outputs=cotangent, retain_graph=True)
        for cotangent in cotangents
    ]
    return [torch.cat([grads[i] for grads in per_row]) for i in range(len(inputs))]


def fill_missing(
    cache: dict[K, T],
    lock: threading.Lock,
    keys: Iterable[K],
    compute: Callable[[list[K]], dict[K, T]],
) -> dict[K, T]:
    """``{key: cache[key]}`` for ``keys`` (classes, directions), computing the missing ones in
    one call."""
    wanted = list(dict.fromkeys(keys))
    with lock:
        missing = [k for k in wanted if k not in cache]
        if missing:
            cache.update(compute(missing))
        return {k: cache[k] for k in wanted}


def all_cached(cache: dict[K, T], lock: threading.Lock, keys: Iterable[K]) -> bool:
    """Whether every key of ``keys`` is in ``cache`` (:func:`fill_missing` would compute
    nothing)."""
    with lock:
        return all(k in cache for k in keys)


def masked_input_logits(
    model: SplitModel,
    x: torch.Tensor,
    activations: np.ndarray,
    progress: ProgressFn | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Logits for ``x`` multiplied by each upsampled, min-max-normalised channel.

    Mirrors pytorch-grad-cam's ``ScoreCAM.get_cam_weights`` masking, but keeps all classes'
    logits instead of one target's score.
    """
    grid = torch.from_numpy(activations).to(x.device)
    upsampled = torch.nn.functional.interpolate(
        grid, size=x.shape[-2:], mode="bilinear", align_corners=True
    )[0]
    flat = upsampled.flatten(1)
    lows, highs = flat.min(dim=1).values, flat.max(dim=1).values
    masks = (upsampled - lows[:, None, None]) / (highs - lows + 1e-8)[:, None, None]
    outputs = []
    channels = masks.shape[0]
    for start in range(0, channels, batch_size):
        batch = x * masks[start : start + batch_size, None]
        outputs.append(model.logits(batch).float())
        if progress is not None:
            done = min(start + batch_size, channels)
            progress(done / channels, f"Score-CAM: {done}/{channels} masked passes")
    return torch.cat(outputs).cpu().numpy()
