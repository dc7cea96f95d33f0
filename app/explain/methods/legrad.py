"""LeGrad (Bousselham et al., 2024): gradients of each block's own read-out.

For each block l of the last ones, the logits read out from that block's tokens give s^l;
E^l = mean over heads and query rows of ReLU(∂s^l_c/∂A^l); the map is Σ_l E^l over the patch
columns. A^l reaches s^l only through block l, so one no-grad pass records every block and each
block gets its own small graph (only the class-token row with class-token pooling).
"""

from __future__ import annotations

import torch

from app.explain.attention import AttentionEntry, AttentionRecording, BlockGradients
from app.explain.methods.attention_base import AttentionMethod
from app.explain.methods.registry import register
from app.models.adapters.vit import AttentionView, BlockState


class LeGradMethod(AttentionMethod):
    name, label = "legrad", "LeGrad"
    help = "ViTs: gradients of each block's read-out with respect to its attention"
    #: Chosen by measurement (bench.concepts).
    default_blocks = 3

    def record(
        self,
        view: AttentionView,
        x: torch.Tensor,
        start: int,
        trunk: list[BlockState] | None,
    ) -> AttentionRecording:
        states = trunk if trunk is not None else view.record(x, start)
        rows = slice(0, 1) if view.pooling == "token" else slice(None)
        leaves, scores = zip(*(view.block_readout(state, rows) for state in states), strict=True)
        return AttentionRecording(
            paths=[(score, [leaf]) for score, leaf in zip(scores, leaves, strict=True)],
            logits=scores[-1],
            attentions=[],
            tokens=int(states[0].tokens.shape[1]),
            trunk_output=list(states),
        )

    def relevance(self, entry: AttentionEntry, gradients: BlockGradients) -> torch.Tensor:
        return legrad_relevance(gradients, entry.tokens)


def legrad_relevance(gradients: BlockGradients, tokens: int) -> torch.Tensor:
    """``(tokens,)``: Σ over blocks of the mean over heads and query rows of ReLU(gradient)."""
    total = torch.zeros(gradients[0].shape[-1], dtype=torch.float32, device=gradients[0].device)
    for gradient in gradients:
        total += gradient.clamp(min=0).sum(dim=1).mean(dim=0) / tokens
    return total


register(LeGradMethod())
