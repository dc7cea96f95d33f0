"""The attention entry shared by ViT-native methods (LeGrad, attention-gradient), with Finer.

They read a ViT's post-softmax attention probabilities A^l of its last blocks and the gradient
of an explained score with respect to them. Gradients are linear in the score, so the gradient of
the Finer score y^c − γ·Σ w_d y^d is the gradient of y^c minus γ times the gradient of
Σ w_d y^d: two score directions (:meth:`app.explain.combine.Contrast.directions`), two backward
passes for both panels whatever T is. The combination happens *before* each method's ReLU, so
Finer-LeGrad and Finer attention-gradient are exact and every γ re-renders from the two cached
gradients.

The cache entry mirrors :class:`app.explain.gradients.GradientEntry`: what does not depend on
the head is cached per image, and gradients per direction are asked for in one batched call per
gradient path (a method's :class:`AttentionRecording` says which scores are differentiated
against which maps), never into the parameters. A batch of images shares one pass: each entry is
one row of the batch's graph (:class:`SharedGraph`), and one cotangent carries a direction of
every row, so the directions of N images take as many backward passes as one image's
(:func:`fill_attention_gradients`). The methods themselves are
:mod:`app.explain.methods.legrad` and :mod:`app.explain.methods.attention_gradient`.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from app.explain.combine import Contrast, Direction
from app.explain.gradients import all_cached, fill_rows, row_gradients
from app.models.adapters.vit import AttentionView, BlockState, own_row

BlockGradients = list[torch.Tensor]  # one (heads, rows, tokens) float32 tensor per explained block

#: A score and the attention maps it is differentiated against, in block order.
GradientPath = tuple[torch.Tensor, list[torch.Tensor]]


@dataclass
class AttentionEntry:
    """Logits, attention maps and per-class attention gradients of one image under one model.

    Attributes:
        kind: The method that recorded it (``legrad`` or ``attention-gradient``).
        logits: ``(K,)`` float32 logits of the model (the last block's read-out).
        probabilities: ``(K,)`` softmax of ``logits``.
        attentions: One ``(heads, rows, tokens)`` tensor per explained block, on the model's
            device (attention-gradient weights its gradients by them; empty for LeGrad, which
            does not need them).
        grid: Patch grid ``(h, w)``.
        prefix: Class/register tokens before the patch tokens.
        tokens: Token count (prefix + h·w).
        pooling: How the model pools its tokens (``token`` keeps only the class-token rows).
        input_size: ``(height, width)`` of the model input.
        trunk_output: What the model computed that does not depend on the head, reusable for
            another head on the same image (CLIP prompts): the recorded blocks (LeGrad) or the
            tokens entering the first explained block (attention-gradient).

    Everything above is the image's own (a copy of its row when it came from a batch); the
    graph may hold a whole batch, the image being row ``_row`` of it.
    """

    kind: str
    logits: np.ndarray
    probabilities: np.ndarray
    attentions: list[torch.Tensor]
    grid: tuple[int, int]
    prefix: int
    tokens: int
    pooling: str
    input_size: tuple[int, int]
    trunk_output: torch.Tensor | list[BlockState]
    _graph: SharedGraph
    _row: int = 0
    _grads: dict[Direction, BlockGradients] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[0])

    def gradients(self, directions: Sequence[Direction]) -> dict[Direction, BlockGradients]:
        """``{direction: per-block gradients}``; the missing ones in one batched call per path
        (over the batch's retained graph, with cotangents on this image's row alone)."""
        return fill_attention_gradients([(self, directions)])[0]

    def has_gradients(self, directions: Iterable[Direction]) -> bool:
        """Whether :meth:`gradients` of ``directions`` would run no backward pass."""
        return all_cached(self._grads, self._lock, directions)

    def nbytes(self) -> int:
        """Approximate memory held, for the cache's byte bound: the entry's own tensors and its
        share of the graph (:meth:`SharedGraph.share_bytes`)."""
        grads = sum(tensor_bytes(g) for blocks in self._grads.values() for g in blocks)
        kept = sum(tensor_bytes(a) for a in self.attentions) + self.logits.nbytes * 2
        return grads + self._graph.share_bytes() + kept + trunk_bytes(self.trunk_output)


@dataclass(eq=False)
class SharedGraph:
    """The autograd graph of one pass over a batch of images (of one image explained alone):
    :attr:`AttentionRecording.paths`, retained for directions asked for later.

    The byte bound counts it explicitly shared: the entries of a batch are evicted from the
    cache independently and the graph lives as long as any of them, so each entry still alive
    counts an equal share — the graph is counted once while all are cached, and wholly against
    the last one left.
    """

    paths: list[GradientPath]
    _holders: list[weakref.ReferenceType[AttentionEntry]] = field(default_factory=list)

    def join(self, entry: AttentionEntry) -> None:
        """Count ``entry`` among the graph's holders while it is alive."""
        self._holders.append(weakref.ref(entry))

    def share_bytes(self) -> int:
        """The graph's bytes over the entries still alive: 4 maps per explained block, and for
        a batch the rest of the storages its maps are views of (LeGrad's class-token rows pin
        the batch's whole attention probabilities; an entry of one image counts those in its
        own trunk output)."""
        maps = [a for _, path in self.paths for a in path]
        graph = 4 * sum(tensor_bytes(a) for a in maps)
        if len(self._holders) > 1:
            graph += pinned_bytes(maps)
        alive = sum(holder() is not None for holder in self._holders)
        return graph // max(1, alive)


@dataclass(frozen=True)
class AttentionRecording:
    """What an attention method's pass over the explained blocks of a batch of N images leaves
    for their entries (row i of every tensor is image i's).

    Attributes:
        paths: The scores to differentiate and the attention maps each is differentiated
            against (LeGrad: each block's read-out against its own map; attention-gradient:
            the logits against every explained block's map).
        logits: ``(N, K)`` logits of the model.
        attentions: ``(N, heads, rows, tokens)`` attention maps (no graph) the relevance needs
            besides the gradients.
        tokens: Token count.
        trunk_output: Reusable output for another head on the same images: ``(N, tokens, dim)``
            tokens or the recorded blocks of the batch.
    """

    paths: list[GradientPath]
    logits: torch.Tensor
    attentions: list[torch.Tensor]
    tokens: int
    trunk_output: torch.Tensor | list[BlockState]


def attention_entries(
    kind: str, view: AttentionView, x: torch.Tensor, recording: AttentionRecording
) -> list[AttentionEntry]:
    """The cache entry of each image of the batch ``x`` from a method's recording: the image's
    own rows of what the entry keeps, and a share of the batch's graph."""
    logits = recording.logits.detach().float()
    probabilities = torch.softmax(logits, dim=-1).cpu().numpy()
    logits_np = logits.cpu().numpy()
    graph = SharedGraph(recording.paths)
    entries = []
    for row in range(len(logits_np)):
        entry = AttentionEntry(
            kind=kind,
            logits=logits_np[row].copy(),
            probabilities=probabilities[row].copy(),
            attentions=[own_row(a, row)[0].float() for a in recording.attentions],
            grid=grid_of(view, x),
            prefix=view.prefix,
            tokens=recording.tokens,
            pooling=view.pooling,
            input_size=(int(x.shape[-2]), int(x.shape[-1])),
            trunk_output=_trunk_row(recording.trunk_output, row),
            _graph=graph,
            _row=row,
        )
        graph.join(entry)
        entries.append(entry)
    return entries


def _trunk_row(trunk: torch.Tensor | list[BlockState], row: int) -> torch.Tensor | list[BlockState]:
    """Image ``row``'s part of a batch's :attr:`AttentionRecording.trunk_output`."""
    if isinstance(trunk, torch.Tensor):
        return own_row(trunk, row)
    return [state.row(row) for state in trunk]


def fill_attention_gradients(
    requests: Sequence[tuple[AttentionEntry, Iterable[Direction]]],
) -> list[dict[Direction, BlockGradients]]:
    """``{direction: per-block gradients}`` for each (entry, directions) request; the missing
    ones of entries that share a batch's graph in one batched backward per gradient path."""
    return fill_rows(
        [(entry, list(dict.fromkeys(directions))) for entry, directions in requests],
        lambda entry: entry._graph,
        _backward_rows,
    )


def _backward_rows(group: list[AttentionEntry], missing: Mapping[int, list[Direction]]) -> None:
    """Gradients of each entry's missing directions, for entries sharing one graph (cotangent
    j carries the j-th direction of every row), kept where the model runs. A row of a batch's
    gradients is copied out: a view would keep every row's alive."""
    directions = {entry._row: missing[id(entry)] for entry in group}
    per_block = [  # (M, N, heads, rows, tokens) each
        grads.detach()
        for score, maps in group[0]._graph.paths
        for grads in row_gradients(score, maps, directions)
    ]
    for entry in group:
        for j, direction in enumerate(missing[id(entry)]):
            entry._grads[direction] = [
                block[j, entry._row].to(torch.float32, copy=block.shape[1] > 1)
                for block in per_block
            ]


def tensor_bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def pinned_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the storages under ``tensors`` beyond the tensors' own elements: what views of
    a larger tensor keep alive besides themselves (each storage counted once)."""
    storages: dict[int, tuple[int, int]] = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        size, used = storages.get(storage.data_ptr(), (storage.nbytes(), 0))
        storages[storage.data_ptr()] = (size, used + tensor_bytes(tensor))
    return sum(max(0, size - used) for size, used in storages.values())


def trunk_bytes(trunk: torch.Tensor | list[BlockState]) -> int:
    """Bytes of an entry's :attr:`AttentionEntry.trunk_output`."""
    if isinstance(trunk, torch.Tensor):
        return tensor_bytes(trunk)
    return sum(state.nbytes() for state in trunk)


def compute_attention_entry(
    view: AttentionView,
    x: torch.Tensor,
    kind: str,
    blocks: int,
    trunk: torch.Tensor | list[BlockState] | None = None,
) -> AttentionEntry:
    """Explain the last ``blocks`` blocks of ``view`` on ``x`` with the attention method named
    ``kind``, running the model once (``trunk``: what an earlier entry of the same image and
    view left in :attr:`AttentionEntry.trunk_output`, so the model is not run again for it)."""
    from app.explain.methods import METHODS  # the methods build on this module

    method = METHODS.get(kind)
    if method is None or not method.needs_attention_view:
        names = [m.name for m in METHODS.values() if m.needs_attention_view]
        raise ValueError(f"attention method must be one of {', '.join(names)}, got {kind!r}")
    return method.record_entry(view, x, first_block(view, blocks), trunk)


def first_block(view: AttentionView, blocks: int) -> int:
    """Index of the first explained block; ValueError outside 1..number of blocks."""
    if isinstance(blocks, bool) or not isinstance(blocks, (int, np.integer)):
        raise ValueError(f"blocks must be a whole number, got {blocks!r}")
    if not 1 <= blocks <= view.num_blocks:
        raise ValueError(f"blocks must be between 1 and {view.num_blocks}, got {blocks}")
    return view.num_blocks - int(blocks)


def grid_of(view: AttentionView, x: torch.Tensor) -> tuple[int, int]:
    """Grid of the explained blocks' patch tokens for the input ``x``."""
    return view.split.input_grid(int(x.shape[-2]), int(x.shape[-1]))


def combine_blocks(
    gradients: Mapping[Direction, BlockGradients], coefficients: Mapping[Direction, float]
) -> BlockGradients:
    """Σ_d coefficients[d] · gradients[d], block by block (before any ReLU)."""
    blocks = len(next(iter(gradients.values())))
    combined = []
    for block in range(blocks):
        total = None
        for direction, coefficient in coefficients.items():
            term = gradients[direction][block] * float(np.float32(coefficient))
            total = term if total is None else total.add_(term)
        combined.append(total)
    return combined


def raw_attention_map(entry: AttentionEntry, contrast: Contrast) -> np.ndarray:
    """Pre-normalisation map ``(1, h, w)`` of ``contrast`` from a cached entry (no model call)."""
    from app.explain.methods import get_method  # the methods build on this module

    return get_method(entry.kind).raw_map(entry, contrast)


def patch_map(entry: AttentionEntry, tokens: torch.Tensor) -> np.ndarray:
    """``(1, h, w)`` float32 of a per-token relevance: the patch tokens laid out on the grid
    (the one copy back from the model's device)."""
    h, w = entry.grid
    patches = tokens[entry.prefix : entry.prefix + h * w].reshape(1, h, w)
    return patches.float().cpu().numpy()
