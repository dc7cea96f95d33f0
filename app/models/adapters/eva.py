"""timm EVA / EVA-02 (``timm.models.eva.Eva``) split at its last block, with rotary positions.

EVA-02 rotates each query and key by its patch's rotary position embedding (RoPE) inside the
attention; the class token is not rotated. The explicit attention here does what timm's
``EvaAttention`` does, in its order: q/k/v projection (fused with the separate q and v biases,
or three projections), per-head q/k norms, RoPE on the patch rows (``apply_rot_embed_cat``,
interleaved or half layout as the module says), softmax(q·kᵀ·scale), the inner norm and the
output projection. Blocks add the attention and the MLP back with EVA's ``gamma_1``/``gamma_2``
layer scales. So the probabilities LeGrad and attention-gradient read are the model's own and
the logits through them equal ``model(x)``.

The rotary embedding depends on the patch grid ``(h, w)``, not only on the token count (5×8 and
8×5 grids have as many tokens): each pass of blocks builds it for the grid of its tokens and
keeps it in a context variable for that pass alone (:meth:`AttentionSplit.on_grid`), so
requests on different grids, concurrent ones included, never share one. The trunk, LeGrad and
attention-gradient know their grid (from the input); the CAM tail sees only the trunk's
activation and takes the grid the trunk last recorded for that many tokens, as ``to_grid``
does. The app resizes every input of a model to one size, so a model sees one grid.

Supported: pre-norm ``EvaBlock`` with ``EvaAttention`` (EVA, EVA-02, timm's SBB RoPE ViTs of
that layout). Gated attention, ``AttentionRope`` blocks, post-norm blocks and depth-mixed
RoPE are refused with a ValueError (the classifier then explains the final tokens only).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn

from app.models.adapters.vit import TimmVitSplit, _attention_probabilities, _merge_heads

#: The rotary embedding of the pass of blocks running in this context (thread, task).
_PASS_ROPE: ContextVar[torch.Tensor | None] = ContextVar("eva_pass_rope")


def eva_block_problem(block: nn.Module) -> str | None:
    """Why ``block``'s arithmetic is not reproduced here (None when it is)."""
    from timm.models.eva import EvaAttention, EvaBlock

    attn = getattr(block, "attn", None)
    if type(block) is not EvaBlock or type(attn) is not EvaAttention:
        return f"{type(block).__name__} is not a pre-norm EvaBlock with EvaAttention"
    if attn.gate is not None:
        return "gated attention"
    return None


class EvaSplit(TimmVitSplit):
    """Trunk/tail of a timm ``Eva`` at its last block; RoPE applied as ``EvaAttention`` does."""

    def _check(self, model: nn.Module) -> bool:
        from timm.models.eva import Eva

        if not isinstance(model, Eva):
            raise ValueError(f"cannot split timm model {type(model).__name__}: not an Eva")
        if getattr(model, "rope_mixed", False):
            raise ValueError("cannot split an Eva with depth-mixed rotary embeddings")
        problems = [eva_block_problem(block) for block in model.blocks]
        if any(problems):
            raise ValueError(f"cannot split this Eva: {next(p for p in problems if p)}")
        return True

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        model = self.model
        patches, grid = self._patches(x)
        tokens, _ = model._pos_embed(patches)  # the rotary embedding comes from on_grid
        return model.norm_pre(tokens), grid

    @contextmanager
    def on_grid(self, grid: tuple[int, int]) -> Iterator[None]:
        """The rotary embedding of ``grid``, as ``Eva._pos_embed`` builds it, for this pass."""
        rope = self.model.rope
        token = _PASS_ROPE.set(None if rope is None else rope.get_embed(shape=list(grid)))
        try:
            yield
        finally:
            _PASS_ROPE.reset(token)

    @staticmethod
    def _rope() -> torch.Tensor | None:
        """The rotary embedding of the running pass (LookupError outside :meth:`on_grid`)."""
        return _PASS_ROPE.get()

    def _run_block(self, block: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        return block(tokens, rope=self._rope())

    def _qkv(
        self, attn: nn.Module, normed: torch.Tensor, rows: slice
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-head q (query ``rows``), k and v of ``EvaAttention`` on normed tokens, RoPE
        applied to the patch rows of q and k."""
        from timm.layers import apply_rot_embed_cat

        n, length = normed.shape[0], normed.shape[1]
        if attn.qkv is not None:
            if attn.q_bias is None:
                qkv = attn.qkv(normed)
            else:
                bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
                if attn.qkv_bias_separate:
                    qkv = attn.qkv(normed) + bias
                else:
                    qkv = F.linear(normed, weight=attn.qkv.weight, bias=bias)
            q, k, v = qkv.reshape(n, length, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            q, k, v = (
                proj(normed).reshape(n, length, attn.num_heads, -1).transpose(1, 2)
                for proj in (attn.q_proj, attn.k_proj, attn.v_proj)
            )
        q, k = attn.q_norm(q), attn.k_norm(k)
        rope = self._rope()
        if rope is not None:
            npt, half = attn.num_prefix_tokens, bool(getattr(attn, "rotate_half", False))
            q, k = (
                torch.cat(
                    [t[:, :, :npt], apply_rot_embed_cat(t[:, :, npt:], rope, half=half)], dim=2
                ).type_as(v)
                for t in (q, k)
            )
        return q[:, :, rows], k, v

    def _attention_parts(
        self, block: nn.Module, tokens: torch.Tensor, rows: slice = slice(None)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        problem = eva_block_problem(block)
        if problem:
            raise ValueError(f"attention maps need standard Eva blocks: {problem}")
        q, k, v = self._qkv(block.attn, block.norm1(tokens), rows)
        return _attention_probabilities(q, k, block.attn.scale), v

    def _project(self, attn: nn.Module, attention: torch.Tensor, values: torch.Tensor):
        """Attention output: heads merged, inner norm, output projection."""
        return attn.proj_drop(attn.proj(attn.norm(_merge_heads(attention, values))))

    def _attention_output(
        self, block: nn.Module, tokens: torch.Tensor, attention: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        return _eva_finish(block, tokens, self._project(block.attn, attention, values))

    def _attend(self, normed: torch.Tensor, cls_only: bool) -> torch.Tensor:
        attn = self.last.attn
        q, k, v = self._qkv(attn, normed, slice(0, 1) if cls_only else slice(None))
        return self._project(attn, _attention_probabilities(q, k, attn.scale), v)

    def _finish(self, raw: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        return _eva_finish(self.last, raw, attended)


def _eva_finish(block: nn.Module, raw: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
    """Residuals, MLP, layer scales (``gamma_1``/``gamma_2``) and drop paths of an ``EvaBlock``."""
    if block.gamma_1 is not None:
        attended = block.gamma_1 * attended
    x = raw + block.drop_path1(attended)
    mlp = block.mlp(block.norm2(x))
    if block.gamma_2 is not None:
        mlp = block.gamma_2 * mlp
    return x + block.drop_path2(mlp)
