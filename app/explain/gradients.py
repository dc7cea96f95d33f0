"""The per-(model, image) gradients cache entry: one trunk pass, one small backward.

The trunk runs once without autograd. Its activation becomes a leaf that requires grad, only the
tail runs with autograd, and gradients of the target and its candidate references come from one
batched ``torch.autograd.grad`` call into that leaf — never into model parameters. The tail's
graph is kept so gradients of classes picked later (a new target, manual references, a larger
T) cost one tail backward, not a model call.

A batch of images shares one pass: each image's entry is one row of the batch's leaf and graph,
and since the rows of an eval-mode model are independent, one cotangent carries a class of every
row — the gradients of N images' targets and references take as many backward passes as one
image's (:func:`fill_gradients`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from contextlib import ExitStack
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

    ``_leaf`` and ``_graph_logits`` may hold a whole batch; the image is row ``_row`` of them.
    """

    logits: np.ndarray
    probabilities: np.ndarray
    activations: np.ndarray
    input_size: tuple[int, int]
    _leaf: torch.Tensor
    _graph_logits: torch.Tensor
    _to_grid: Callable[[torch.Tensor], torch.Tensor]
    _row: int = 0
    _grads: dict[int, np.ndarray] = field(default_factory=dict)
    _score_logits: np.ndarray | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def trunk_output(self) -> torch.Tensor:
        """The trunk's activation (no graph), reusable by another head on the same trunk: a
        copy of the image's row when the leaf holds a batch (a view would keep the batch)."""
        row = self._leaf.detach()[self._row : self._row + 1]
        return row if self._batch_size == 1 else row.clone()

    @property
    def _batch_size(self) -> int:
        return int(self._leaf.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[0])

    def gradients(self, classes: Iterable[int]) -> dict[int, np.ndarray]:
        """``{class: (1, C, h, w) gradient}``; computes the missing ones in one batched call."""
        return fill_gradients([(self, classes)])[0]

    def has_gradients(self, classes: Iterable[int]) -> bool:
        """Whether :meth:`gradients` of ``classes`` would run no backward pass."""
        return all_cached(self._grads, self._lock, map(int, classes))

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
        """Approximate memory held, for the cache's byte bound (graph counted as 4 leaves; a
        batch's graph shared out over its rows)."""
        leaf_bytes = self._leaf.numel() * self._leaf.element_size() // self._batch_size
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


Classes = Iterable[int] | Callable[[np.ndarray], Iterable[int]]


def compute_entry(
    model: SplitModel,
    x: torch.Tensor,
    classes: Classes,
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
    return compute_entries(model, x, classes, activation)[0]


def compute_entries(
    model: SplitModel,
    x: torch.Tensor,
    classes: Classes,
    activation: torch.Tensor | None = None,
) -> list[GradientEntry]:
    """:func:`compute_entry` of every image of the batch ``x`` ``(N, 3, H, W)``: one forward,
    and one batched backward for the eager ``classes`` of all images."""
    leaf, graph_logits = model.split_forward(x, activation)
    logits = graph_logits.detach().float()
    probabilities = torch.softmax(logits, dim=-1).cpu().numpy()
    logits_np = logits.cpu().numpy()
    grid = model.to_grid(leaf.detach()).float().cpu().numpy()
    entries = [
        GradientEntry(
            logits=logits_np[row],
            probabilities=probabilities[row],
            activations=_own_row(grid, row),
            input_size=(int(x.shape[-2]), int(x.shape[-1])),
            _leaf=leaf,
            _graph_logits=graph_logits,
            _to_grid=model.to_grid,
            _row=row,
        )
        for row in range(len(grid))
    ]
    fill_gradients(
        [(entry, classes(entry.logits) if callable(classes) else classes) for entry in entries]
    )
    return entries


def _own_row(array: np.ndarray, row: int) -> np.ndarray:
    """``array[row : row + 1]``, copied out of a batch so it does not keep the batch alive."""
    part = array[row : row + 1]
    return part if len(array) == 1 else part.copy()


def fill_gradients(
    requests: Sequence[tuple[GradientEntry, Iterable[int]]],
) -> list[dict[int, np.ndarray]]:
    """``{class: (1, C, h, w) gradient}`` for each (entry, classes) request; the missing
    gradients of entries that share a batch's graph come from one batched backward call."""
    wanted = [list(dict.fromkeys(int(k) for k in classes)) for _, classes in requests]
    return fill_rows(
        [(entry, classes) for (entry, _), classes in zip(requests, wanted, strict=True)],
        lambda entry: entry._leaf,
        _backward_rows,
    )


class RowEntry(Protocol[K, T]):
    """An entry that is one row of a (possibly shared) graph and caches what it computed."""

    _grads: dict[K, T]
    _lock: threading.Lock


E = TypeVar("E", bound=RowEntry)


def fill_rows(
    requests: Sequence[tuple[E, list[K]]],
    graph_of: Callable[[E], object],
    backward: Callable[[list[E], Mapping[int, list[K]]], None],
) -> list[dict[K, T]]:
    """``{key: entry._grads[key]}`` for each (entry, keys) request. The keys missing from the
    entries are computed by ``backward(group, missing)`` once per group of entries sharing
    ``graph_of(entry)`` (``missing`` maps ``id(entry)`` to its keys), under every entry's lock."""
    entries = list({id(entry): entry for entry, _ in requests}.values())
    with ExitStack() as stack:
        for entry in sorted(entries, key=id):  # one order: batches cannot deadlock each other
            stack.enter_context(entry._lock)
        missing: dict[int, list[K]] = {id(entry): [] for entry in entries}
        for entry, keys in requests:
            todo = missing[id(entry)]
            todo += [k for k in keys if k not in entry._grads and k not in todo]
        graphs: dict[int, list[E]] = {}
        for entry in entries:
            if missing[id(entry)]:
                graphs.setdefault(id(graph_of(entry)), []).append(entry)
        for group in graphs.values():
            backward(group, missing)
        return [{k: entry._grads[k] for k in keys} for entry, keys in requests]


def _backward_rows(group: list[GradientEntry], missing: Mapping[int, list[int]]) -> None:
    """Gradients of each entry's missing classes, for entries sharing one graph, in one call."""
    head = group[0]
    rows = [entry._row for entry in group]
    (grads,) = row_gradients(
        head._graph_logits,
        [head._leaf],
        {entry._row: [((k, 1.0),) for k in missing[id(entry)]] for entry in group},
    )
    picked = grads[:, rows]  # (M, R, *leaf row shape)
    grid = head._to_grid(picked.flatten(0, 1)).detach().float().cpu().numpy()
    grid = grid.reshape(picked.shape[0], len(rows), *grid.shape[1:])
    for column, entry in enumerate(group):
        for j, k in enumerate(missing[id(entry)]):
            entry._grads[k] = grid[j, column : column + 1].copy()


def gradients_along(
    output: torch.Tensor, inputs: Sequence[torch.Tensor], directions: Sequence[Direction]
) -> list[torch.Tensor]:
    """∂(Σ w·output[0, k])/∂input for each direction ``((k, w), ...)`` and each input (a batch
    of one): one ``(len(directions), *input.shape[1:])`` tensor per input."""
    return [g[:, 0] for g in row_gradients(output, inputs, {0: directions})]


def row_gradients(
    output: torch.Tensor,
    inputs: Sequence[torch.Tensor],
    directions: Mapping[int, Sequence[Direction]],
) -> list[torch.Tensor]:
    """∂(Σ w·output[row, k])/∂input for the directions ``directions[row]`` of every row, at
    once: one ``(M, *input.shape)`` tensor per input, M the longest list, whose ``[j, row]`` is
    the gradient along ``directions[row][j]`` (zero past the end of a row's list).

    The rows of a batch are independent, so cotangent j carries the j-th direction of every row.
    One vectorised backward (``is_grads_batched``) when the graph supports it, else a loop of
    backward passes over the (small) graph. The graph is retained for later directions.
    """
    count = max(len(ds) for ds in directions.values())
    cotangents = torch.zeros((count, *output.shape), dtype=output.dtype, device=output.device)
    for row, row_directions in directions.items():
        for j, direction in enumerate(row_directions):
            for k, weight in direction:
                cotangents[j, row, k] += weight
    try:
        return list(
            torch.autograd.grad(
                output,
                list(inputs),
                grad_outputs=cotangents,
                retain_graph=True,
                is_grads_batched=True,
            )
        )
    except RuntimeError as error:
        log.debug("batched gradients unavailable (%s); looping over directions", error)
    per_direction = [
        torch.autograd.grad(output, list(inputs), grad_outputs=cotangent, retain_graph=True)
        for cotangent in cotangents
    ]
    return [torch.stack([grads[i] for grads in per_direction]) for i in range(len(inputs))]


def all_cached(cache: dict[K, T], lock: threading.Lock, keys: Iterable[K]) -> bool:
    """Whether every key of ``keys`` is in ``cache`` (:func:`fill_rows` would compute
    nothing for them)."""
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
