"""timm LeViT seen through the attention of its last stage, for LeGrad and attention-gradient.

LeViT has no class token: its stages shrink the token grid with attention-downsampling blocks
(queries from a subsampled grid), and the head reads the mean of the last stage's tokens. Inside
a stage every block attends over the same grid, with a learned bias per head and relative
offset added before the softmax. The explained blocks are the last stage's (after its
downsampling): their queries and keys are the tokens the head averages, so the relevance lies
on the last stage's grid (4×4 for a 224 input), the grid LeViT's CAM uses too. Earlier blocks
attend over other grids and widths the head cannot read, so LeGrad and attention-gradient stop
at the stage boundary.

The explicit attention does what timm's ``levit.Attention`` does (``qkv`` linear + BatchNorm,
per-head split into key, key, value widths, ``q·kᵀ·scale + bias``, softmax, activation and the
projection's linear + BatchNorm); blocks add the attention and the MLP back. Convolutional
LeViTs (``levit_conv_*``) are refused with a ValueError.
"""

from __future__ import annotations

import torch
from torch import nn

from app.models.adapters.vit import AttentionSplit, _merge_heads


class LevitSplit(AttentionSplit):
    """A timm ``Levit`` (or ``LevitDistilled``) run by hand through its last stage's blocks."""

    prefix = 0
    fast = False
    pooling = "avg"

    def __init__(self, model: nn.Module) -> None:
        from timm.models.levit import Attention, Levit, LevitBlock

        if not isinstance(model, Levit):
            raise ValueError(f"cannot split timm model {type(model).__name__}: not a LeViT")
        if model.use_conv:
            raise ValueError("cannot read the attention of a convolutional LeViT (levit_conv_*)")
        if model.global_pool != "avg":
            raise ValueError(f"cannot split a LeViT pooled by {model.global_pool!r}")
        self.model = model
        self.stage = model.stages[-1]
        blocks = list(self.stage.blocks)
        if not blocks or any(
            type(b) is not LevitBlock or type(b.attn) is not Attention for b in blocks
        ):
            raise ValueError("the last LeViT stage has no standard attention blocks")
        self.grid = tuple(int(r) for r in blocks[0].attn.resolution)

    def input_grid(self, height: int, width: int) -> tuple[int, int]:
        """The last stage's grid (the attention biases fix it to the model's input size)."""
        return self.grid  # type: ignore[return-value]

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Stem, every stage but the last, and the last stage's downsampling."""
        model = self.model
        tokens = model.stem(x).flatten(2).transpose(1, 2)
        for stage in model.stages[:-1]:
            tokens = stage(tokens)
        return self.stage.downsample(tokens), self.grid  # type: ignore[return-value]

    def _blocks(self) -> nn.Sequential:
        return self.stage.blocks

    def _attention_parts(
        self, block: nn.Module, tokens: torch.Tensor, rows: slice = slice(None)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        attn = block.attn
        n, length = tokens.shape[0], tokens.shape[1]
        widths = [attn.key_dim, attn.key_dim, attn.val_dim]
        q, k, v = attn.qkv(tokens).view(n, length, attn.num_heads, -1).split(widths, dim=3)
        q, k, v = (part.permute(0, 2, 1, 3) for part in (q, k, v))
        bias = attn.get_attention_biases(tokens.device)[:, rows]
        scores = (q[:, :, rows] @ k.transpose(-2, -1)) * attn.scale + bias
        return scores.softmax(dim=-1), v

    def _attention_output(
        self, block: nn.Module, tokens: torch.Tensor, attention: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        x = tokens + block.drop_path1(block.attn.proj(_merge_heads(attention, values)))
        return x + block.drop_path2(block.mlp(x))

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(tokens, pre_logits=True)

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """The model's logits from the last stage's tokens (both heads averaged, as in eval)."""
        return self.model.forward_head(tokens)
