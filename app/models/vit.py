"""Splitting Vision Transformers at their last block, for CAM.

Target layer. By default (``target="norm1"``) the CAM weights the output of the last block's
first LayerNorm (open_clip ``resblocks[-1].ln_1``, timm ``blocks[-1].norm1``): the layer
pytorch-grad-cam's ViT recipes hook, so maps match the anchor's. ``target="residual"`` weights
the residual stream entering the last block instead. On the shipped tiny CLIP the norm1 target
gives fewer empty maps and more of the map on the bird (see the issue notes).

The trunk runs patch embedding and every block but the last without autograd; the tail runs the
rest with it. With the norm1 target the trunk also applies the last block's first norm and
returns ``[normed tokens | raw residual rows]`` along the token axis: the normed tokens are the
target activation (keys, values and queries of the last attention), the raw rows carry the skip
connection around it (only the class token's when class-token pooling makes the other rows
irrelevant). ``to_grid`` keeps only the normed patch tokens.

Class-token pooling fast path: only the class token's output of the last block reaches the
logits, so the tail computes attention for the class-token query alone and the MLP on that one
token. That is exact — the same arithmetic as the full block for the row that matters — and
several times cheaper than the full block, forward and backward.

Supported: open_clip ``VisionTransformer`` (``tok`` pooling: fast path; ``avg``: full last
block), open_clip ``TimmModel`` towers whose trunk is a timm ViT (SigLIP), and timm
``VisionTransformer`` (``token`` pooling with the standard ``Attention``: fast path; other
poolings incl. attention-pool 'map': full last block). Blocks of other types fall back to the
residual target with the full last block. Attentional pooling in open_clip (CoCa) and rotary
position models are refused with a ValueError.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

TARGETS = ("norm1", "residual")


class TokenGrids:
    """Remembers the patch grid behind each token count the trunk produced (any input size)."""

    def __init__(self, default: tuple[int, int], total: Callable[[int], int]) -> None:
        self._total = total  # patch count -> tokens in the trunk's output
        self._grids: dict[int, tuple[int, int]] = {}
        self.record(default)

    def record(self, grid: tuple[int, int]) -> None:
        self._grids[self._total(grid[0] * grid[1])] = (int(grid[0]), int(grid[1]))

    def grid_for(self, num_tokens: int) -> tuple[int, int]:
        if num_tokens in self._grids:
            return self._grids[num_tokens]
        for side in range(1, math.isqrt(num_tokens) + 1):
            if self._total(side * side) == num_tokens:
                return side, side
        raise ValueError(f"unknown patch grid for {num_tokens} tokens; run the trunk first")


class _ViTSplit(ABC):
    """Shared trunk/tail logic; subclasses supply embedding, blocks and the block arithmetic."""

    prefix: int  # class (+ register) tokens before the patch tokens
    fast: bool  # class-token-only last block
    target: str
    patch_size: tuple[int, int]

    def _setup(self, grid: tuple[int, int], target: str, standard_block: bool) -> None:
        if target not in TARGETS:
            raise ValueError(f"ViT target must be one of {', '.join(TARGETS)}, got {target!r}")
        if not standard_block:
            target = "residual"  # unknown block arithmetic: only its input can be the leaf
        self.target = target
        self.grids = TokenGrids(grid, self._total)

    def _total(self, patches: int) -> int:
        tokens = self.prefix + patches
        if self.target == "residual":
            return tokens
        return tokens + (1 if self.fast else tokens)

    # subclass hooks ------------------------------------------------------------------------

    @abstractmethod
    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Image batch -> (tokens with class/register prefix and position embeddings, grid)."""

    @abstractmethod
    def _blocks(self) -> nn.ModuleList | nn.Sequential:
        """The transformer blocks, in order."""

    @abstractmethod
    def _norm1(self, tokens: torch.Tensor) -> torch.Tensor:
        """The last block's first norm (the CAM target layer)."""

    @abstractmethod
    def _attend(self, normed: torch.Tensor, cls_only: bool) -> torch.Tensor:
        """The last block's attention, for the class-token query only when ``cls_only``."""

    @abstractmethod
    def _finish(self, raw: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """Residual, MLP and layer scale of the last block after attention."""

    # split -----------------------------------------------------------------------------------

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        tokens, grid = self._embed(x)
        self.grids.record(grid)
        for block in self._blocks()[:-1]:
            tokens = block(tokens)
        if self.target == "residual":
            return tokens
        raw = tokens[:, :1] if self.fast else tokens
        return torch.cat([self._norm1(tokens), raw], dim=1)

    def last_block(self, activation: torch.Tensor) -> torch.Tensor:
        """Output of the last block: the class token's row only on the fast path."""
        if self.target == "residual":
            if self.fast:
                return self._finish(activation[:, :1], self._attend(self._norm1(activation), True))
            return self._blocks()[-1](activation)
        rows = 1 if self.fast else (activation.shape[1] // 2)
        normed, raw = activation[:, :-rows], activation[:, -rows:]
        return self._finish(raw, self._attend(normed, self.fast))

    def to_grid(self, activation: torch.Tensor) -> torch.Tensor:
        """Target activation (or its gradient) -> ``(N, C, h, w)`` over the patch tokens."""
        h, w = self.grids.grid_for(activation.shape[1])
        patches = activation[:, self.prefix : self.prefix + h * w, :]
        return patches.reshape(activation.shape[0], h, w, activation.shape[2]).permute(0, 3, 1, 2)


def _single_query_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, head_dim: int, scale: float
) -> torch.Tensor:
    """Softmax attention of one query row over all keys, heads merged: ``(N, 1, heads*dim)``."""
    n, length = k.shape[0], k.shape[1]
    q = q.reshape(n, 1, heads, head_dim).transpose(1, 2)
    k = k.reshape(n, length, heads, head_dim).transpose(1, 2)
    v = v.reshape(n, length, heads, head_dim).transpose(1, 2)
    attended = ((q * scale) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
    return attended.transpose(1, 2).reshape(n, 1, heads * head_dim)


# --------------------------------------------------------------------------- open_clip


def check_open_clip_visual(visual: nn.Module) -> tuple[bool, bool]:
    """(class-token fast path possible, last block is a standard ResidualAttentionBlock).

    Raises ValueError (naming the reason) for towers that cannot be split exactly."""
    from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

    if not isinstance(visual, VisionTransformer):
        raise ValueError(
            f"cannot split the vision tower {type(visual).__name__}: only ViT towers are "
            "supported (open_clip VisionTransformer: ViT-B-16, BioCLIP ...; timm ViTs: SigLIP)"
        )
    if getattr(visual, "attn_pool", None) is not None:
        raise ValueError(
            "cannot split a vision tower with attentional pooling (CoCa-style attn_pool): the "
            "pooled output depends on all tokens through a separate attention stack"
        )
    if visual.pool_type not in ("tok", "avg"):
        raise ValueError(f"cannot split a vision tower with pool_type={visual.pool_type!r}")
    if not getattr(visual.transformer, "batch_first", True):
        raise ValueError("cannot split a sequence-first (batch_first=False) transformer")
    last = visual.transformer.resblocks[-1]
    mha = getattr(last, "attn", None)
    standard = (
        type(last) is ResidualAttentionBlock
        and not hasattr(last, "ln_1_kv")
        and isinstance(mha, nn.MultiheadAttention)
        and mha.batch_first
        and mha._qkv_same_embed_dim
        and mha.in_proj_weight is not None
        and mha.bias_k is None
        and not mha.add_zero_attn
    )
    return bool(standard and visual.pool_type == "tok"), bool(standard)


def resample_positions(
    pos: torch.Tensor, old: tuple[int, int], new: tuple[int, int], prefix: int
) -> torch.Tensor:
    """Bicubic resampling of a learned ``(prefix + h*w, C)`` position table to another grid."""
    head, table = pos[:prefix], pos[prefix:]
    table = table.reshape(1, old[0], old[1], -1).permute(0, 3, 1, 2)
    table = F.interpolate(table.float(), size=new, mode="bicubic", align_corners=False)
    table = table.to(pos.dtype).permute(0, 2, 3, 1).reshape(new[0] * new[1], -1)
    return torch.cat([head, table], dim=0)


class OpenClipVisionSplit(_ViTSplit):
    """Trunk/tail of an open_clip ``VisionTransformer`` at its last block."""

    prefix = 1

    def __init__(self, visual: nn.Module, target: str = "norm1") -> None:
        self.visual = visual
        self.fast, standard = check_open_clip_visual(visual)
        self.patch_size = tuple(visual.patch_size)
        self.last = visual.transformer.resblocks[-1]
        self._setup(tuple(visual.grid_size), target, standard)

    def _blocks(self) -> nn.ModuleList:
        return self.visual.transformer.resblocks

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch + class embeddings + positions (resampled for a non-native grid) + ln_pre."""
        visual = self.visual
        native = tuple(visual.grid_size)
        patches = visual.conv1(x)
        grid = (int(patches.shape[-2]), int(patches.shape[-1]))
        tokens = patches.flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(tokens.dtype).view(1, 1, -1)
        tokens = torch.cat([cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        pos = visual.positional_embedding.to(tokens.dtype)
        if grid != native:
            pos = resample_positions(pos, native, grid, prefix=1)
        tokens = visual.patch_dropout(tokens + pos)
        return visual.ln_pre(tokens), grid

    def _norm1(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.last.ln_1(tokens)

    def _attend(self, normed: torch.Tensor, cls_only: bool) -> torch.Tensor:
        mha: nn.MultiheadAttention = self.last.attn
        if not cls_only:
            return mha(normed, normed, normed, need_weights=False)[0]
        width = normed.shape[-1]
        weight, bias = mha.in_proj_weight, mha.in_proj_bias
        q = F.linear(normed[:, :1], weight[:width], None if bias is None else bias[:width])
        kv = F.linear(normed, weight[width:], None if bias is None else bias[width:])
        k, v = kv.split(width, dim=-1)
        head_dim = width // mha.num_heads
        attended = _single_query_attention(q, k, v, mha.num_heads, head_dim, head_dim**-0.5)
        return mha.out_proj(attended)

    def _finish(self, raw: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        block = self.last
        x = raw + block.ls_1(attended)
        return x + block.ls_2(block.mlp(block.ln_2(x)))

    def features(self, activation: torch.Tensor) -> torch.Tensor:
        """Target activation -> image embedding (before normalisation), like ``visual(x)``."""
        visual = self.visual
        out = self.last_block(activation)
        if self.fast:
            pooled = visual.ln_post(out[:, 0])
        elif visual.final_ln_after_pool:
            pooled = visual.ln_post(visual._global_pool(out)[0])
        else:
            pooled = visual._global_pool(visual.ln_post(out))[0]
        return pooled @ visual.proj if visual.proj is not None else pooled


# --------------------------------------------------------------------------- timm


class TimmVitSplit(_ViTSplit):
    """Trunk/tail of a timm ``VisionTransformer`` at its last block."""

    def __init__(self, model: nn.Module, target: str = "norm1") -> None:
        from timm.layers import Attention
        from timm.models.vision_transformer import Block, VisionTransformer

        if not isinstance(model, VisionTransformer):
            raise ValueError(
                f"cannot split timm model {type(model).__name__}: only timm VisionTransformer "
                "models (vit_*, DINOv2 vit_*_dinov2, deit, SigLIP ...) are supported"
            )
        for attribute in ("rope", "pos_embed_rope"):
            if getattr(model, attribute, None) is not None:
                raise ValueError("cannot split a ViT with rotary position embeddings")
        self.model = model
        self.prefix = int(model.num_prefix_tokens)
        self.last = model.blocks[-1]
        attn = getattr(self.last, "attn", None)
        standard = (
            type(self.last) is Block
            and type(attn) is Attention
            and getattr(attn, "gate", None) is None
        )
        self.fast = (
            standard and model.global_pool == "token" and getattr(model, "attn_pool", None) is None
        )
        self.patch_size = tuple(int(p) for p in model.patch_embed.patch_size)
        grid = tuple(int(g) for g in model.patch_embed.grid_size)
        self._setup(grid, target, standard)

    def _blocks(self) -> nn.Sequential:
        return self.model.blocks

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        model = self.model
        patches = model.patch_embed(x)
        if patches.ndim == 4:  # dynamic image size: (N, h, w, C)
            grid = (int(patches.shape[1]), int(patches.shape[2]))
        else:
            grid = tuple(int(g) for g in model.patch_embed.grid_size)
        return model.norm_pre(model.patch_drop(model._pos_embed(patches))), grid

    def _norm1(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.last.norm1(tokens)

    def _attend(self, normed: torch.Tensor, cls_only: bool) -> torch.Tensor:
        attn = self.last.attn
        if not cls_only:
            return attn(normed)
        heads, head_dim, inner = attn.num_heads, attn.head_dim, attn.attn_dim
        n, length = normed.shape[0], normed.shape[1]
        weight, bias = attn.qkv.weight, attn.qkv.bias
        q = F.linear(normed[:, :1], weight[:inner], None if bias is None else bias[:inner])
        kv = F.linear(normed, weight[inner:], None if bias is None else bias[inner:])
        k, v = kv.split(inner, dim=-1)
        # q_norm / k_norm act per head; apply them in the (N, heads, tokens, dim) layout
        q = attn.q_norm(q.reshape(n, 1, heads, head_dim).transpose(1, 2))
        k = attn.k_norm(k.reshape(n, length, heads, head_dim).transpose(1, 2))
        q = q.transpose(1, 2).reshape(n, 1, inner)
        k = k.transpose(1, 2).reshape(n, length, inner)
        attended = _single_query_attention(q, k, v, heads, head_dim, attn.scale)
        return attn.proj_drop(attn.proj(attn.norm(attended)))

    def _finish(self, raw: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        block = self.last
        x = raw + block.drop_path1(block.ls1(attended))
        return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))

    def features(self, activation: torch.Tensor, pre_logits: bool = True) -> torch.Tensor:
        """Target activation -> ``forward_head(norm(last_block), pre_logits)``."""
        model = self.model
        return model.forward_head(model.norm(self.last_block(activation)), pre_logits=pre_logits)


class OpenClipTimmSplit:
    """An open_clip ``TimmModel`` tower (e.g. SigLIP) whose timm trunk is a VisionTransformer.

    The trunk's own head (the projection when ``timm_proj`` is empty) and open_clip's ``head``
    run in the tail; attention-pool ('map') trunks use the full last block.
    """

    def __init__(self, visual: nn.Module, target: str = "norm1") -> None:
        self.visual = visual
        self.inner = TimmVitSplit(visual.trunk, target)
        self.fast = self.inner.fast
        self.target = self.inner.target
        self.patch_size = self.inner.patch_size

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.trunk(x)

    def features(self, activation: torch.Tensor) -> torch.Tensor:
        return self.visual.head(self.inner.features(activation, pre_logits=False))

    def to_grid(self, activation: torch.Tensor) -> torch.Tensor:
        return self.inner.to_grid(activation)


def open_clip_split(
    visual: nn.Module, target: str = "norm1"
) -> OpenClipVisionSplit | OpenClipTimmSplit:
    """The split of an open_clip vision tower (ValueError when it cannot be split exactly)."""
    from open_clip.timm_model import TimmModel

    if isinstance(visual, TimmModel):
        return OpenClipTimmSplit(visual, target)
    return OpenClipVisionSplit(visual, target)
