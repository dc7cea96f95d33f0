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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from app.models.base import layers_with_parameters

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


class AttentionSplit(ABC):
    """A transformer's blocks run by hand with explicit attention probabilities, for LeGrad and
    attention-gradient; subclasses supply embedding, blocks, the attention arithmetic and
    pooling. Blocks attend over the tokens they receive (no downsampling inside them)."""

    prefix: int  # class (+ register) tokens before the patch tokens
    fast: bool  # the model reads the class token alone: a last block for that query only
    patch_size: tuple[int, int]
    pooling: str  # how the model pools its last block: ``token`` (class token), ``avg`` ...

    def input_grid(self, height: int, width: int) -> tuple[int, int]:
        """The grid of the explained blocks' patch tokens for an input of that size (the patch
        size divides it, remainders dropped like the patch convolution)."""
        return height // int(self.patch_size[0]), width // int(self.patch_size[1])

    @abstractmethod
    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Image batch -> (tokens with class/register prefix and position embeddings, grid)."""

    @abstractmethod
    def _blocks(self) -> nn.ModuleList | nn.Sequential:
        """The transformer blocks, in order."""

    @contextmanager
    def on_grid(self, grid: tuple[int, int]) -> Iterator[None]:
        """One pass of blocks over tokens of the patch ``grid``. Splits whose blocks depend on
        the grid (EVA's rotary positions) compute that here, for this pass and thread alone."""
        yield

    def _run_block(self, block: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        """One block before the explained ones (the module's own forward by default)."""
        return block(tokens)

    @abstractmethod
    def _attention_parts(
        self, block: nn.Module, tokens: torch.Tensor, rows: slice = slice(None)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One block's attention computed by hand for the query ``rows``: probabilities
        ``(N, heads, rows, tokens)`` and values ``(N, heads, tokens, dim)``. ValueError for
        non-standard blocks."""

    @abstractmethod
    def _attention_output(
        self, block: nn.Module, tokens: torch.Tensor, attention: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        """The block's output for the query rows of ``attention`` (``tokens`` holds the same
        rows of the block's input): attention output, residuals and MLP."""

    @abstractmethod
    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens after any block -> pooled features, the way the model pools its last block."""

    @property
    def num_blocks(self) -> int:
        return len(self._blocks())

    def tokens_before(self, x: torch.Tensor, start: int) -> tuple[torch.Tensor, tuple[int, int]]:
        """Tokens entering block ``start`` and the patch grid (call under ``torch.no_grad``)."""
        tokens, grid = self._embed(x)
        with self.on_grid(grid):
            for block in self._blocks()[:start]:
                tokens = self._run_block(block, tokens)
        return tokens, grid

    def attention_blocks(
        self,
        tokens: torch.Tensor,
        start: int,
        grid: tuple[int, int],
        last_rows: slice = slice(None),
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Run blocks ``start..`` by hand on tokens of the patch ``grid``: each block's output
        tokens and attention probabilities (in the caller's autograd mode: with it, the
        probabilities are part of the graph). The last block attends and outputs for its query
        ``last_rows`` only."""
        outputs, attentions = [], []
        blocks = self._blocks()
        with self.on_grid(grid):
            for index in range(start, len(blocks)):
                rows = last_rows if index == len(blocks) - 1 else slice(None)
                attention, values = self._attention_parts(blocks[index], tokens, rows)
                tokens = self._attention_output(blocks[index], tokens[:, rows], attention, values)
                outputs.append(tokens)
                attentions.append(attention)
        return outputs, attentions

    def record_blocks(
        self, tokens: torch.Tensor, start: int, grid: tuple[int, int]
    ) -> list[BlockState]:
        """Run blocks ``start..`` by hand without autograd on tokens of the patch ``grid``,
        keeping what each one attended with."""
        states = []
        with torch.no_grad(), self.on_grid(grid):
            for index, block in enumerate(self._blocks()[start:], start):
                attention, values = self._attention_parts(block, tokens)
                states.append(BlockState(index, tokens, attention, values))
                tokens = self._attention_output(block, tokens, attention, values)
        return states

    def replay_block(
        self, state: BlockState, attention_rows: torch.Tensor, rows: slice
    ) -> torch.Tensor:
        """The output ``rows`` of a recorded block recomputed from (some rows of) its attention:
        a graph from those attention rows alone, through the block's second half."""
        block = self._blocks()[state.index]
        return self._attention_output(block, state.tokens[:, rows], attention_rows, state.values)


class ViTSplit(AttentionSplit):
    """A ViT split at its last block for CAM, on top of the attention path; subclasses also
    supply the last block's arithmetic around its target layer."""

    target: str

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
        with self.on_grid(grid):
            for block in self._blocks()[:-1]:
                tokens = self._run_block(block, tokens)
        if self.target == "residual":
            return tokens
        raw = tokens[:, :1] if self.fast else tokens
        return torch.cat([self._norm1(tokens), raw], dim=1)

    def last_block(self, activation: torch.Tensor) -> torch.Tensor:
        """Output of the last block: the class token's row only on the fast path. Its patch
        grid is the one the trunk last recorded for that many tokens (:class:`TokenGrids`)."""
        with self.on_grid(self.grids.grid_for(activation.shape[1])):
            if self.target == "residual":
                if not self.fast:
                    return self._run_block(self._blocks()[-1], activation)
                attended = self._attend(self._norm1(activation), True)
                return self._finish(activation[:, :1], attended)
            rows = 1 if self.fast else (activation.shape[1] // 2)
            normed, raw = activation[:, :-rows], activation[:, -rows:]
            return self._finish(raw, self._attend(normed, self.fast))

    def to_grid(self, activation: torch.Tensor) -> torch.Tensor:
        """Target activation (or its gradient) -> ``(N, C, h, w)`` over the patch tokens."""
        h, w = self.grids.grid_for(activation.shape[1])
        patches = activation[:, self.prefix : self.prefix + h * w, :]
        return patches.reshape(activation.shape[0], h, w, activation.shape[2]).permute(0, 3, 1, 2)


def fold_tokens(tokens: torch.Tensor, input_size: tuple[int, int], prefix: int = 0) -> torch.Tensor:
    """``(N, prefix + h*w, C)`` tokens -> ``(N, C, h, w)``, with ``h:w`` as the input's
    height:width (Swin, EVA-02, LeViT outputs: a known grid only up to its aspect)."""
    n, length, channels = tokens.shape
    patches = length - prefix
    rows = max(1, round(math.sqrt(patches * input_size[0] / input_size[1])))
    if patches % rows:
        raise ValueError(f"cannot fold {patches} tokens into a grid of {input_size} aspect")
    grid = tokens[:, prefix:].reshape(n, rows, patches // rows, channels)
    return grid.permute(0, 3, 1, 2)


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


def _attention_probabilities(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """Softmax attention probabilities ``(N, heads, queries, keys)`` of per-head q and k."""
    return ((q * scale) @ k.transpose(-2, -1)).softmax(dim=-1)


def _merge_heads(attention: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``attention @ v`` with heads merged back: ``(N, queries, heads*dim)``."""
    n, heads, queries = attention.shape[:3]
    return (attention @ v).transpose(1, 2).reshape(n, queries, heads * v.shape[-1])


@dataclass(frozen=True)
class BlockState:
    """What one block attended with on one input (no graph): its index, input tokens,
    attention probabilities and values. Enough to recompute its output from its attention."""

    index: int
    tokens: torch.Tensor
    attention: torch.Tensor
    values: torch.Tensor

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.tokens, self.attention, self.values))

    def row(self, row: int) -> BlockState:
        """The state of image ``row`` of a batch's pass, on its own (:func:`own_row`)."""
        return BlockState(
            self.index,
            own_row(self.tokens, row),
            own_row(self.attention, row),
            own_row(self.values, row),
        )


def own_row(tensor: torch.Tensor, row: int) -> torch.Tensor:
    """``tensor[row : row + 1]`` without graph, copied out when ``tensor`` holds a batch (a view
    would keep the whole batch alive)."""
    part = tensor.detach()[row : row + 1]
    return part if len(tensor) == 1 else part.clone()


# --------------------------------------------------------------------------- open_clip


def check_open_clip_visual(visual: nn.Module) -> tuple[bool, bool]:
    """(class-token fast path possible, last block is a standard ResidualAttentionBlock).

    Raises ValueError (naming the reason) for towers that cannot be split exactly."""
    from open_clip.transformer import VisionTransformer

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
    standard = is_standard_open_clip_block(visual.transformer.resblocks[-1])
    return bool(standard and visual.pool_type == "tok"), bool(standard)


def is_standard_open_clip_block(block: nn.Module) -> bool:
    """A plain ``ResidualAttentionBlock`` whose attention arithmetic we can reproduce exactly."""
    from open_clip.transformer import ResidualAttentionBlock

    mha = getattr(block, "attn", None)
    return bool(
        type(block) is ResidualAttentionBlock
        and not hasattr(block, "ln_1_kv")
        and isinstance(mha, nn.MultiheadAttention)
        and mha.batch_first
        and mha._qkv_same_embed_dim
        and mha.in_proj_weight is not None
        and mha.bias_k is None
        and not mha.add_zero_attn
    )


def resample_positions(
    pos: torch.Tensor, old: tuple[int, int], new: tuple[int, int], prefix: int
) -> torch.Tensor:
    """Bicubic resampling of a learned ``(prefix + h*w, C)`` position table to another grid."""
    head, table = pos[:prefix], pos[prefix:]
    table = table.reshape(1, old[0], old[1], -1).permute(0, 3, 1, 2)
    table = F.interpolate(table.float(), size=new, mode="bicubic", align_corners=False)
    table = table.to(pos.dtype).permute(0, 2, 3, 1).reshape(new[0] * new[1], -1)
    return torch.cat([head, table], dim=0)


class OpenClipVisionSplit(ViTSplit):
    """Trunk/tail of an open_clip ``VisionTransformer`` at its last block."""

    prefix = 1

    def __init__(
        self, visual: nn.Module, target: str = "norm1", pooling: str | None = None
    ) -> None:
        self.visual = visual
        _, standard = check_open_clip_visual(visual)
        self.pooling = _open_clip_pooling(visual, pooling)
        self.fast = standard and self.pooling == "token"
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
        return _open_clip_finish(self.last, raw, attended)

    def _attention_parts(
        self, block: nn.Module, tokens: torch.Tensor, rows: slice = slice(None)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not is_standard_open_clip_block(block):
            raise ValueError(
                f"attention maps need standard attention blocks; {type(block).__name__} is not one"
            )
        mha: nn.MultiheadAttention = block.attn
        normed = block.ln_1(tokens)
        n, length, width = normed.shape
        heads = mha.num_heads
        if rows == slice(None):
            q, k, v = F.linear(normed, mha.in_proj_weight, mha.in_proj_bias).split(width, dim=-1)
        else:
            weight, bias = mha.in_proj_weight, mha.in_proj_bias
            q = F.linear(normed[:, rows], weight[:width], None if bias is None else bias[:width])
            kv = F.linear(normed, weight[width:], None if bias is None else bias[width:])
            k, v = kv.split(width, dim=-1)
        q, k, v = (part.reshape(n, -1, heads, width // heads).transpose(1, 2) for part in (q, k, v))
        return _attention_probabilities(q, k, (width // heads) ** -0.5), v

    def _attention_output(
        self, block: nn.Module, tokens: torch.Tensor, attention: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        return _open_clip_finish(
            block, tokens, block.attn.out_proj(_merge_heads(attention, values))
        )

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """Class token or mean of the patch tokens (``pooling``), ``ln_post`` and ``proj``.

        ``ln_post`` acts per token, so for the class token its order against pooling does not
        matter; for the average it follows the model's ``final_ln_after_pool``.
        """
        visual = self.visual
        if self.pooling == "token":
            pooled = visual.ln_post(tokens[:, 0])
        elif visual.final_ln_after_pool:
            pooled = visual.ln_post(tokens[:, 1:].mean(dim=1))
        else:
            pooled = visual.ln_post(tokens[:, 1:]).mean(dim=1)
        return pooled @ visual.proj if visual.proj is not None else pooled

    def features(self, activation: torch.Tensor) -> torch.Tensor:
        """Target activation -> image embedding (before normalisation), like ``visual(x)``."""
        return self.pool(self.last_block(activation))


POOLINGS = ("token", "avg")


def _open_clip_pooling(visual: nn.Module, pooling: str | None) -> str:
    """Our pooling name (``token`` | ``avg``): the model's own, or the requested surrogate."""
    if pooling is None:
        return "token" if visual.pool_type == "tok" else "avg"
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    return pooling


def _open_clip_finish(block: nn.Module, raw: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
    """Residual, MLP and layer scales of a ``ResidualAttentionBlock`` after its attention."""
    x = raw + block.ls_1(attended)
    return x + block.ls_2(block.mlp(block.ln_2(x)))


# --------------------------------------------------------------------------- timm


class TimmVitSplit(ViTSplit):
    """Trunk/tail of a timm ``VisionTransformer`` at its last block."""

    def __init__(self, model: nn.Module, target: str = "norm1") -> None:
        standard = self._check(model)
        self.model = model
        self.prefix = int(model.num_prefix_tokens)
        self.last = model.blocks[-1]
        self.fast = (
            standard
            and model.global_pool == "token"
            and getattr(model, "attn_pool", None) is None
            and getattr(model, "dist_token", None) is None  # DeiT-distilled reads two tokens
        )
        self.patch_size = tuple(int(p) for p in model.patch_embed.patch_size)
        grid = tuple(int(g) for g in model.patch_embed.grid_size)
        self._setup(grid, target, standard)

    def _check(self, model: nn.Module) -> bool:
        """Whether the last block is a standard one; ValueError for models not split here."""
        from timm.layers import Attention
        from timm.models.vision_transformer import Block, VisionTransformer

        if not isinstance(model, VisionTransformer):
            raise ValueError(
                f"cannot split timm model {type(model).__name__}: not a timm VisionTransformer "
                "(vit_*, DINOv2 vit_*_dinov2, deit, SigLIP ...)"
            )
        for attribute in ("rope", "pos_embed_rope"):
            if getattr(model, attribute, None) is not None:
                raise ValueError("cannot split a ViT with rotary position embeddings")
        attn = getattr(model.blocks[-1], "attn", None)
        return (
            type(model.blocks[-1]) is Block
            and type(attn) is Attention
            and getattr(attn, "gate", None) is None
        )

    def _blocks(self) -> nn.Sequential:
        return self.model.blocks

    def _patches(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch embeddings and their grid."""
        patches = self.model.patch_embed(x)
        if patches.ndim == 4:  # dynamic image size: (N, h, w, C)
            return patches, (int(patches.shape[1]), int(patches.shape[2]))
        return patches, tuple(int(g) for g in self.model.patch_embed.grid_size)

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        model = self.model
        patches, grid = self._patches(x)
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
        return _timm_finish(self.last, raw, attended)

    def _attention_parts(
        self, block: nn.Module, tokens: torch.Tensor, rows: slice = slice(None)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from timm.layers import Attention
        from timm.models.vision_transformer import Block

        attn = getattr(block, "attn", None)
        if type(block) is not Block or type(attn) is not Attention or attn.gate is not None:
            raise ValueError(
                f"attention maps need standard timm Blocks; {type(block).__name__} is not one"
            )
        normed = block.norm1(tokens)
        n, length = normed.shape[0], normed.shape[1]
        qkv = attn.qkv(normed).reshape(n, length, 3, attn.num_heads, attn.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        q = attn.q_norm(q[:, :, rows])
        return _attention_probabilities(q, attn.k_norm(k), attn.scale), v

    def _attention_output(
        self, block: nn.Module, tokens: torch.Tensor, attention: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        attn = block.attn
        attended = attn.proj_drop(attn.proj(attn.norm(_merge_heads(attention, values))))
        return _timm_finish(block, tokens, attended)

    @property
    def pooling(self) -> str:
        """timm's own pooling: ``token`` (class token), ``avg``, ``map`` (attention pool) ..."""
        return str(self.model.global_pool or "none")

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.features_of_tokens(tokens, pre_logits=True)

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """The classifier's logits from tokens after the last block (its own head, both heads
        of a distilled model)."""
        return self.features_of_tokens(tokens, pre_logits=False)

    def features_of_tokens(self, tokens: torch.Tensor, pre_logits: bool = True) -> torch.Tensor:
        """Tokens after any block -> ``forward_head(norm(tokens), pre_logits)``."""
        return self.model.forward_head(self.model.norm(tokens), pre_logits=pre_logits)

    def features(self, activation: torch.Tensor, pre_logits: bool = True) -> torch.Tensor:
        """Target activation -> ``forward_head(norm(last_block), pre_logits)``."""
        return self.features_of_tokens(self.last_block(activation), pre_logits)


def _timm_finish(block: nn.Module, raw: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
    """Residual, MLP, layer scales and drop paths of a timm ``Block`` after its attention."""
    x = raw + block.drop_path1(block.ls1(attended))
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


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
    visual: nn.Module, target: str = "norm1", pooling: str | None = None
) -> OpenClipVisionSplit | OpenClipTimmSplit:
    """The split of an open_clip vision tower (ValueError when it cannot be split exactly).

    ``pooling`` (``token`` | ``avg``) replaces the tower's own pooling: the average-pooled
    surrogate of a class-token CLIP is what the official Finer-CAM CLIP tutorial explains.
    """
    from open_clip.timm_model import TimmModel

    if isinstance(visual, TimmModel):
        if pooling is not None:
            raise ValueError("the pooling choice applies to open_clip ViT towers, not timm towers")
        return OpenClipTimmSplit(visual, target)
    return OpenClipVisionSplit(visual, target, pooling)


class AttentionView:
    """A split ViT seen through its attention maps, for LeGrad and attention-gradient.

    Args:
        split: The split (embedding, blocks, explicit attention, pooling).
        readout: Tokens after the last block -> logits ``(N, K)``: the model's own pooling and
            head (a linear head on the pooled features, CLIP's text similarities, a timm
            classifier's ``forward_head``).
        key: Identifies the image side (trunk weights and pooling), for caching tokens.
    """

    def __init__(
        self, split: AttentionSplit, readout: Callable[[torch.Tensor], torch.Tensor], key: str
    ) -> None:
        self.split = split
        self.readout = readout
        self.key = key

    @property
    def pooling(self) -> str:
        return self.split.pooling

    @property
    def prefix(self) -> int:
        return self.split.prefix

    @property
    def num_blocks(self) -> int:
        return self.split.num_blocks

    def tokens_before(self, x: torch.Tensor, start: int) -> tuple[torch.Tensor, tuple[int, int]]:
        with torch.no_grad():
            return self.split.tokens_before(x, start)

    def record(self, x: torch.Tensor, start: int) -> list[BlockState]:
        """One no-grad pass, keeping what blocks ``start..`` attended with (head-independent)."""
        tokens, grid = self.tokens_before(x, start)
        return self.split.record_blocks(tokens, start, grid)

    def block_readout(self, state: BlockState, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """(leaf = the block's attention ``rows``, logits read out after the block): a graph
        through that block's second half only — what LeGrad differentiates."""
        leaf = state.attention[:, :, rows].detach().requires_grad_(True)
        with torch.enable_grad():
            out = self.split.replay_block(state, leaf, rows)
            return leaf, self.readout(out)

    def final_scores(
        self, tokens: torch.Tensor, start: int, grid: tuple[int, int]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The model's logits from the tokens entering block ``start`` (patch ``grid``) and the
        attention probabilities of blocks ``start..``, in one autograd graph. When the model
        reads only the class token, the last block attends for the class-token query alone (its
        other rows never reach the logits): its probabilities are ``(N, heads, 1, tokens)``."""
        rows = slice(0, 1) if self.split.fast else slice(None)
        outputs, attentions = self.split.attention_blocks(tokens, start, grid, rows)
        return self.readout(outputs[-1]), attentions


def timm_vit_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """A timm ``VisionTransformer``'s layers for the sanity check, output first: the final
    norms, each block from the last, the patch embedding."""
    stack = [
        model.patch_embed,
        model.norm_pre,
        *model.blocks,
        model.norm,
        getattr(model, "attn_pool", None),
        model.fc_norm,
    ]
    return layers_with_parameters(model, [m for m in stack if m is not None])
