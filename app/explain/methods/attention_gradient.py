"""Attention-gradient (Chefer et al., 2021, "Generic attention-model explainability").

∇A^l = ∂y_c/∂A^l of the model's own logits; R ← R + mean_heads(ReLU(∇A^l ⊙ A^l))·R over the
blocks, starting from the identity; the map is the class-token row of R over the patches (the
mean of the patch rows for average-pooled models). The explained blocks run once with autograd.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from app.explain.attention import AttentionEntry, AttentionRecording, BlockGradients, grid_of
from app.explain.methods.attention_base import AttentionMethod
from app.explain.methods.registry import register
from app.models.adapters.vit import AttentionView


class AttentionGradientMethod(AttentionMethod):
    name, label = "attention-gradient", "Attention-gradient"
    help = "ViTs: attention weighted by its gradient, rolled out over the last blocks"
    #: Chosen by measurement (bench.concepts).
    default_blocks = 4

    def record(
        self,
        view: AttentionView,
        x: torch.Tensor,
        start: int,
        trunk: torch.Tensor | None,
    ) -> AttentionRecording:
        tokens_in = trunk if trunk is not None else view.tokens_before(x, start)[0]
        leaf = tokens_in.detach().requires_grad_(True)
        with torch.enable_grad():
            logits, attentions = view.final_scores(leaf, start, grid_of(view, x))
        return AttentionRecording(
            paths=[(logits, list(attentions))],
            logits=logits,
            attentions=[a.detach() for a in attentions],
            tokens=int(tokens_in.shape[1]),
            trunk_output=tokens_in.detach(),
        )

    def relevance(self, entry: AttentionEntry, gradients: BlockGradients) -> torch.Tensor:
        return attention_gradient_relevance(
            gradients, entry.attentions, entry.prefix, entry.pooling
        )


def attention_gradient_relevance(
    gradients: BlockGradients, attentions: Sequence[torch.Tensor], prefix: int, pooling: str
) -> torch.Tensor:
    """``(tokens,)``: the pooled row of R after R ← R + mean_heads(ReLU(∇A ⊙ A))·R per block.

    R ends as (I + W_L)···(I + W_1) and only one row of it (the class token's, or the mean of the
    patch rows) is read, so that row is carried from the last block back: v ← v + v·W_l — a
    vector-matrix product per block instead of a matrix product. A last block recorded for the
    class-token query alone has that one row of W_L: the only row the class-token start vector
    reads.
    """
    tokens = attentions[0].shape[-1]
    # float64: the identity dominates, the map is small
    row = torch.zeros(tokens, dtype=torch.float64, device=attentions[0].device)
    if pooling == "token":
        row[0] = 1.0
    else:
        row[prefix:] = 1.0 / (tokens - prefix)
    for gradient, attention in zip(reversed(gradients), reversed(attentions), strict=True):
        weighted = (gradient * attention).clamp_(min=0).mean(dim=0, dtype=torch.float64)
        row = row + row[: weighted.shape[0]] @ weighted
    return row


register(AttentionGradientMethod())
