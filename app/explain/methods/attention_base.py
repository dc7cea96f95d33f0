"""Methods that read a ViT's attention maps through the model's attention view.

The entry (:class:`app.explain.attention.AttentionEntry`) keeps gradients of score directions
(the target's score, the references' weighted sum) with respect to the attention probabilities
of the last blocks; a method says what it records (:meth:`AttentionMethod.record`) and how
combined gradients become per-token relevance (:meth:`AttentionMethod.relevance`). The Finer
combination happens before the relevance's ReLU.

A batch of images runs through the model in one pass (:meth:`AttentionSource.compute_batch`) and
the score directions of all its images take one batched backward per gradient path
(:meth:`AttentionMethod.prepare_batch`).
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from app.explain.attention import (
    AttentionEntry,
    AttentionRecording,
    BlockGradients,
    attention_entries,
    combine_blocks,
    fill_attention_gradients,
    first_block,
    patch_map,
)
from app.explain.combine import Contrast
from app.explain.inputs import InvalidInputError
from app.explain.methods.base import NO_INPUT, CamMethod, EntrySource, ModelInput
from app.models.adapters.vit import AttentionView, BlockState

if TYPE_CHECKING:
    from app.explain.settings import ExplainSettings
    from app.models.base import ExplainableModel

log = logging.getLogger(__name__)


class AttentionSource(EntrySource):
    """An attention entry: which method recorded it, through which view, over how many blocks."""

    def __init__(self, method: AttentionMethod, view: AttentionView, head_key: str, blocks: int):
        self.method, self.view, self.head_key, self.blocks = method, view, head_key, blocks

    def entry_key(self, digest: str) -> tuple[str, ...]:
        return (self.view.key, self.head_key, digest, self.method.name, str(self.blocks))

    def trunk_key(self, digest: str) -> tuple[str, ...]:
        return (self.view.key, self.method.name, f"blocks:{self.blocks}", digest)

    def compute(
        self, x: torch.Tensor, trunk: torch.Tensor | list[BlockState] | None
    ) -> AttentionEntry:
        start = first_block(self.view, self.blocks)
        return self.method.record_entry(self.view, x, start, trunk)

    def compute_batch(self, x: torch.Tensor) -> list[AttentionEntry]:
        """One pass for the batch: the trunk to the first explained block, then the explained
        blocks; one by one where the view cannot run a batch."""
        start = first_block(self.view, self.blocks)
        try:
            return self.method.record_entries(self.view, x, start)
        except (ValueError, RuntimeError) as error:
            if len(x) == 1:
                raise
            log.debug("%s cannot run a batch (%s); one image at a time", self.view.key, error)
        return super().compute_batch(x)


class AttentionMethod(CamMethod):
    """A method over a ViT's attention probabilities (offered for models with an attention view)."""

    needs_attention_view = True

    def entry_source(self, model: ExplainableModel, settings: ExplainSettings) -> AttentionSource:
        if settings.fgcam:
            raise InvalidInputError(
                f"FG-CAM raises a CNN's feature-grid CAM to pixels; {self.label} reads a ViT's "
                "attention maps. Turn off high resolution for this method."
            )
        view = model.attention_view()
        if view is None:
            raise InvalidInputError(
                f"{self.label} reads a Vision Transformer's attention maps; {model.name} has none "
                "we can read. Pick Grad-CAM or another CAM method for this model."
            )
        blocks = settings.attention_blocks
        if blocks is None:
            blocks = min(self.default_blocks, view.num_blocks)
        try:
            first_block(view, blocks)
        except ValueError as error:
            raise InvalidInputError(f"{self.label}: {error}") from error
        return AttentionSource(self, view, model.head_key, int(blocks))

    def record_entry(
        self,
        view: AttentionView,
        x: torch.Tensor,
        start: int,
        trunk: torch.Tensor | list[BlockState] | None = None,
    ) -> AttentionEntry:
        """The entry of ``x`` explaining blocks ``start..`` of ``view``, running the model once."""
        return self.record_entries(view, x, start, trunk)[0]

    def record_entries(
        self,
        view: AttentionView,
        x: torch.Tensor,
        start: int,
        trunk: torch.Tensor | list[BlockState] | None = None,
    ) -> list[AttentionEntry]:
        """The entry of each image of the batch ``x``, from one pass over the batch."""
        return attention_entries(self.name, view, x, self.record(view, x, start, trunk))

    @abstractmethod
    def record(
        self,
        view: AttentionView,
        x: torch.Tensor,
        start: int,
        trunk: torch.Tensor | list[BlockState] | None,
    ) -> AttentionRecording:
        """Run the explained blocks on the batch ``x`` (from ``trunk`` when given) and keep
        what the maps need."""

    @abstractmethod
    def relevance(self, entry: AttentionEntry, gradients: BlockGradients) -> torch.Tensor:
        """``(tokens,)`` relevance from the combined per-block gradients."""

    def is_ready(self, entry: AttentionEntry, contrast: Contrast) -> bool:
        return entry.has_gradients(contrast.directions())

    def prepare(self, entry: AttentionEntry, contrast: Contrast) -> None:
        """Two backward passes whatever T is: the target's score and the references' weighted
        sum (:meth:`Contrast.directions`)."""
        entry.gradients(list(contrast.directions()))

    def prepare_batch(self, requests: Sequence[tuple[AttentionEntry, Contrast]]) -> None:
        """:meth:`prepare` of every request at once: entries of one batch share one backward per
        gradient path, cotangent j carrying the j-th direction of every image."""
        fill_attention_gradients([(entry, contrast.directions()) for entry, contrast in requests])

    def raw_map(
        self, entry: AttentionEntry, contrast: Contrast, given: ModelInput = NO_INPUT
    ) -> np.ndarray:
        coefficients = {d: c for d, c in contrast.directions().items() if c != 0.0}
        gradients = combine_blocks(entry.gradients(list(coefficients)), coefficients)
        return patch_map(entry, self.relevance(entry, gradients))
