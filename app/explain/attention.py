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
against which maps), never into the parameters. The methods themselves are
:mod:`app.explain.methods.legrad` and :mod:`app.explain.methods.attention_gradient`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from app.explain.combine import Contrast, Direction
from app.explain.gradients import all_cached, fill_missing, gradients_along
from app.models.adapters.vit import AttentionView, BlockState

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
    _paths: list[GradientPath]
    _grads: dict[Direction, BlockGradients] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[0])

    def gradients(self, directions: Sequence[Direction]) -> dict[Direction, BlockGradients]:
        """``{direction: per-block gradients}``; the missing ones in one batched call per path."""
        return fill_missing(self._grads, self._lock, directions, self._backward)

    def has_gradients(self, directions: Iterable[Direction]) -> bool:
        """Whether :meth:`gradients` of ``directions`` would run no backward pass."""
        return all_cached(self._grads, self._lock, directions)

    def _backward(self, directions: list[Direction]) -> dict[Direction, BlockGradients]:
        """Gradients per direction, kept as tensors where the model runs (no copy back)."""
        per_block = [
            grads.detach().float()
            for score, attentions in self._paths
            for grads in gradients_along(score, attentions, directions)
        ]
        return {d: [block[i] for block in per_block] for i, d in enumerate(directions)}

    def nbytes(self) -> int:
        """Approximate memory held, for the cache's byte bound (graph counted as 4 maps/block)."""
        grads = sum(tensor_bytes(g) for blocks in self._grads.values() for g in blocks)
        maps = sum(tensor_bytes(a) for _, path in self._paths for a in path)
        kept = sum(tensor_bytes(a) for a in self.attentions) + self.logits.nbytes * 2
        return grads + 4 * maps + kept + trunk_bytes(self.trunk_output)


@dataclass(frozen=True)
class AttentionRecording:
    """What an attention method's pass over the explained blocks leaves for its entry.

    Attributes:
        paths: The scores to differentiate and the attention maps each is differentiated
            against (LeGrad: each block's read-out against its own map; attention-gradient:
            the logits against every explained block's map).
        logits: ``(1, K)`` logits of the model.
        attentions: Attention maps the relevance needs besides the gradients.
        tokens: Token count.
        trunk_output: Reusable output for another head on the same image.
    """

    paths: list[GradientPath]
    logits: torch.Tensor
    attentions: list[torch.Tensor]
    tokens: int
    trunk_output: torch.Tensor | list[BlockState]


def attention_entry(
    kind: str, view: AttentionView, x: torch.Tensor, recording: AttentionRecording
) -> AttentionEntry:
    """The cache entry of ``x`` from a method's recording."""
    logits = recording.logits.detach().float()[0]
    return AttentionEntry(
        kind=kind,
        logits=logits.cpu().numpy(),
        probabilities=torch.softmax(logits, dim=-1).cpu().numpy(),
        attentions=recording.attentions,
        grid=grid_of(view, x),
        prefix=view.prefix,
        tokens=recording.tokens,
        pooling=view.pooling,
        input_size=(int(x.shape[-2]), int(x.shape[-1])),
        trunk_output=recording.trunk_output,
        _paths=recording.paths,
    )


def tensor_bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


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
