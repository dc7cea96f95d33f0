"""ViT-native explanations from attention gradients: LeGrad and attention-gradient, with Finer.

Both read a ViT's post-softmax attention probabilities A^l of its last blocks and the gradient
of an explained score with respect to them. Gradients are linear in the score, so the gradient of
the Finer score y^c − γ·Σ w_d y^d is the same combination of per-class gradients; the
combination happens here *before* each method's ReLU, so Finer-LeGrad and Finer
attention-gradient are exact and γ, T and references re-render from cached per-class gradients.

- **LeGrad** (Bousselham et al., 2024): for each block l of the last ones, the logits read out
  from that block's tokens (pooled, final norm, head — "intermediate predictions") give
  s^l; E^l = mean over heads and query rows of ReLU(∂s^l_c/∂A^l); the map is Σ_l E^l over the
  patch columns (min-max scaled later). With class-token pooling only the class-token query row
  of A^l reaches s^l, so only that row is differentiated (the mean still divides by the token
  count), and since A^l reaches s^l only through block l, each block gets its own small graph
  after one no-grad pass.
- **Attention-gradient** (Chefer et al., 2021, "Generic attention-model explainability"):
  ∇A^l = ∂y_c/∂A^l of the model's own logits; R ← R + mean_heads(ReLU(∇A^l ⊙ A^l))·R over the
  blocks, starting from the identity; the map is the class-token row of R over the patches
  (the mean of the patch rows for average-pooled models).

The cache entry mirrors :class:`app.explain.gradients.GradientEntry`: what does not depend on
the head is cached per image, and per-class gradients are asked for in one batched call per
block (LeGrad) or one for all blocks (attention-gradient), never into the parameters.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from app.explain.combine import Contrast
from app.explain.gradients import all_cached, fill_missing, gradients_per_class
from app.models.adapters.vit import AttentionView, BlockState

LEGRAD = "legrad"
ATTENTION_GRADIENT = "attention-gradient"
KINDS = (LEGRAD, ATTENTION_GRADIENT)

#: Blocks explained when the caller does not say, chosen by measurement (README, bench.concepts).
DEFAULT_BLOCKS = {LEGRAD: 3, ATTENTION_GRADIENT: 4}

BlockGradients = list[np.ndarray]  # one (heads, rows, tokens) array per explained block


@dataclass
class AttentionEntry:
    """Logits, attention maps and per-class attention gradients of one image under one model.

    Attributes:
        kind: ``legrad`` or ``attention-gradient`` (which score each block's gradient is of).
        logits: ``(K,)`` float32 logits of the model (the last block's read-out).
        probabilities: ``(K,)`` softmax of ``logits``.
        attentions: One ``(heads, tokens, tokens)`` array per explained block (attention-gradient
            weights its gradients by them; empty for LeGrad, which does not need them).
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
    attentions: list[np.ndarray]
    grid: tuple[int, int]
    prefix: int
    tokens: int
    pooling: str
    input_size: tuple[int, int]
    trunk_output: torch.Tensor | list[BlockState]
    _scores: list[torch.Tensor]
    _graph_attentions: list[torch.Tensor]
    _grads: dict[int, BlockGradients] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[0])

    def gradients(self, classes: Sequence[int]) -> dict[int, BlockGradients]:
        """``{class: per-block gradients}``; the missing ones in one batched call per block."""
        return fill_missing(self._grads, self._lock, classes, self._backward)

    def has_gradients(self, classes: Iterable[int]) -> bool:
        """Whether :meth:`gradients` of ``classes`` would run no model."""
        return all_cached(self._grads, self._lock, classes)

    def _backward(self, classes: list[int]) -> dict[int, BlockGradients]:
        if self.kind == LEGRAD:
            per_block = [
                gradients_per_class(score, [attention], classes)[0]
                for score, attention in zip(self._scores, self._graph_attentions, strict=True)
            ]
        else:
            per_block = gradients_per_class(self._scores[-1], self._graph_attentions, classes)
        arrays = [grads.float().cpu().numpy() for grads in per_block]
        return {k: [block[i] for block in arrays] for i, k in enumerate(classes)}

    def nbytes(self) -> int:
        """Approximate memory held, for the cache's byte bound (graph counted as 4 maps/block)."""
        grads = sum(g.nbytes for blocks in self._grads.values() for g in blocks)
        maps = sum(a.numel() * a.element_size() for a in self._graph_attentions)
        kept = sum(a.nbytes for a in self.attentions) + self.logits.nbytes * 2
        return grads + 4 * maps + kept + trunk_bytes(self.trunk_output)


def trunk_bytes(trunk: torch.Tensor | list[BlockState]) -> int:
    """Bytes of an entry's :attr:`AttentionEntry.trunk_output`."""
    if isinstance(trunk, torch.Tensor):
        return trunk.numel() * trunk.element_size()
    return sum(state.nbytes() for state in trunk)


def compute_attention_entry(
    view: AttentionView,
    x: torch.Tensor,
    kind: str,
    blocks: int,
    trunk: torch.Tensor | list[BlockState] | None = None,
) -> AttentionEntry:
    """Explain the last ``blocks`` blocks of ``view`` on ``x``, running the model once.

    LeGrad needs ∂s^l/∂A^l only, whose path stays inside block l: one no-grad pass records each
    block's input, attention and values, and each block gets its own small graph from its
    attention (only the class-token row with class-token pooling) through its second half and
    the read-out. Attention-gradient needs ∂y/∂A^l through every later block: the explained
    blocks run once with autograd.

    Args:
        view: The model's attention view.
        x: ``(1, 3, H, W)`` preprocessed input.
        kind: ``legrad`` or ``attention-gradient``.
        blocks: How many of the last blocks are explained (1..number of blocks).
        trunk: What an earlier entry of the same image and view left in
            :attr:`AttentionEntry.trunk_output` (CLIP prompt changes): the model is not run
            again for it.
    """
    if kind not in KINDS:
        raise ValueError(f"attention method must be one of {', '.join(KINDS)}, got {kind!r}")
    start = first_block(view, blocks)
    if kind == LEGRAD:
        states = trunk if trunk is not None else view.record(x, start)
        rows = slice(0, 1) if view.pooling == "token" else slice(None)
        leaves, scores = zip(*(view.block_readout(state, rows) for state in states), strict=True)
        attentions, kept, trunk_output = list(leaves), [], list(states)
        tokens = int(states[0].tokens.shape[1])
    else:
        tokens_in = trunk if trunk is not None else view.tokens_before(x, start)[0]
        leaf = tokens_in.detach().requires_grad_(True)
        with torch.enable_grad():
            scores, attentions = view.block_scores(leaf, start)
        kept = [a.detach()[0].float().cpu().numpy() for a in attentions]
        trunk_output, tokens = tokens_in.detach(), int(tokens_in.shape[1])
    logits = scores[-1].detach().float()[0]
    return AttentionEntry(
        kind=kind,
        logits=logits.cpu().numpy(),
        probabilities=torch.softmax(logits, dim=-1).cpu().numpy(),
        attentions=kept,
        grid=grid_of(view, x),
        prefix=view.prefix,
        tokens=tokens,
        pooling=view.pooling,
        input_size=(int(x.shape[-2]), int(x.shape[-1])),
        trunk_output=trunk_output,
        _scores=list(scores),
        _graph_attentions=attentions,
    )


def first_block(view: AttentionView, blocks: int) -> int:
    """Index of the first explained block; ValueError outside 1..number of blocks."""
    if isinstance(blocks, bool) or not isinstance(blocks, (int, np.integer)):
        raise ValueError(f"blocks must be a whole number, got {blocks!r}")
    if not 1 <= blocks <= view.num_blocks:
        raise ValueError(f"blocks must be between 1 and {view.num_blocks}, got {blocks}")
    return view.num_blocks - int(blocks)


def grid_of(view: AttentionView, x: torch.Tensor) -> tuple[int, int]:
    """Patch grid of an input (the patch size divides it, remainders dropped like the conv)."""
    ph, pw = view.split.patch_size
    return int(x.shape[-2]) // int(ph), int(x.shape[-1]) // int(pw)


def combine_blocks(
    per_class: Mapping[int, BlockGradients], coefficients: Mapping[int, float]
) -> BlockGradients:
    """Σ_k coefficients[k] · per_class[k], block by block (before any ReLU)."""
    blocks = len(next(iter(per_class.values())))
    combined = []
    for block in range(blocks):
        total = None
        for index, coefficient in coefficients.items():
            term = per_class[index][block] * np.float32(coefficient)
            total = term if total is None else total + term
        combined.append(total)
    return combined


def raw_attention_map(entry: AttentionEntry, contrast: Contrast) -> np.ndarray:
    """Pre-normalisation map ``(1, h, w)`` of ``contrast`` from a cached entry (no model call)."""
    coefficients = contrast.coefficients()
    gradients = combine_blocks(entry.gradients(list(coefficients)), coefficients)
    if entry.kind == LEGRAD:
        tokens = legrad_relevance(gradients, entry.tokens)
    else:
        tokens = attention_gradient_relevance(
            gradients, entry.attentions, entry.prefix, entry.pooling
        )
    h, w = entry.grid
    return tokens[entry.prefix : entry.prefix + h * w].reshape(1, h, w).astype(np.float32)


def legrad_relevance(gradients: BlockGradients, tokens: int) -> np.ndarray:
    """``(tokens,)``: Σ over blocks of the mean over heads and query rows of ReLU(gradient)."""
    total = np.zeros(gradients[0].shape[-1], dtype=np.float32)
    for gradient in gradients:
        total += np.maximum(gradient, 0).sum(axis=1).mean(axis=0) / tokens
    return total


def attention_gradient_relevance(
    gradients: BlockGradients, attentions: Sequence[np.ndarray], prefix: int, pooling: str
) -> np.ndarray:
    """``(tokens,)``: the pooled row of R after R ← R + mean_heads(ReLU(∇A ⊙ A))·R per block.

    R ends as (I + W_L)···(I + W_1) and only one row of it (the class token's, or the mean of the
    patch rows) is read, so that row is carried from the last block back: v ← v + v·W_l — a
    vector-matrix product per block instead of a matrix product.
    """
    tokens = attentions[0].shape[-1]
    row = np.zeros(tokens, dtype=np.float64)  # float64: the identity dominates, the map is small
    if pooling == "token":
        row[0] = 1.0
    else:
        row[prefix:] = 1.0 / (tokens - prefix)
    for gradient, attention in zip(reversed(gradients), reversed(attentions), strict=True):
        weighted = np.maximum(gradient * attention, 0).mean(axis=0, dtype=np.float64)
        row = row + row @ weighted
    return row
