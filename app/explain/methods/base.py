"""The small protocol every CAM method implements.

A method says which cache entry it needs (:meth:`CamMethod.entry_source`), how an entry and a
contrast (y^c − γ·Σ w_d y^d, combined before any ReLU) become a pre-ReLU map
(:meth:`CamMethod.raw_map`) and, where the map is Σ_k w_k·A_k over channels, those weights
(:meth:`CamMethod.channel_weights`, what FG-CAM carries down to pixels). The service
orchestrates through this protocol only: it never asks which method or family it holds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from app.explain.combine import Contrast
from app.explain.gradients import ProgressFn, SplitModel
from app.explain.inputs import InvalidInputError

if TYPE_CHECKING:
    from app.explain.settings import ExplainSettings
    from app.models.base import ExplainableModel


@dataclass(frozen=True)
class ModelInput:
    """The model and preprocessed input, for a method that runs the model while mapping
    (Score-CAM the first time an entry is used); :data:`NO_INPUT` when the entry holds all."""

    model: SplitModel | None = None
    x: torch.Tensor | None = None
    progress: ProgressFn | None = None


NO_INPUT = ModelInput()


class EntrySource(ABC):
    """Where a method's cache entry comes from: the keys it is cached under and how it is made.

    The trunk key names what the model computed that does not depend on the head (reusable by
    another head on the same image); the entry key names the whole entry.
    """

    @abstractmethod
    def entry_key(self, digest: str) -> tuple[str, ...]:
        """Cache key of the entry of the image with content ``digest``."""

    @abstractmethod
    def trunk_key(self, digest: str) -> tuple[str, ...]:
        """Cache key of the entry's reusable trunk output."""

    @abstractmethod
    def compute(self, x: torch.Tensor, trunk: Any | None) -> Any:
        """The entry of input ``x``; ``trunk`` is a cached trunk output to start from, or None."""

    def compute_batch(self, x: torch.Tensor) -> list[Any]:
        """The entries of the images of the batch ``x`` ``(N, 3, H, W)``: one by one, unless
        the source can run them in one pass."""
        return [self.compute(x[row : row + 1], None) for row in range(len(x))]


class CamMethod(ABC):
    """One CAM method: its cache entry, its map, the models it runs on, its defaults.

    Attributes:
        name: Registry name, what the API, CLI and settings take (``gradcam``).
        label: Human-readable name for titles and dropdowns (``Grad-CAM``).
        help: One sentence for help texts: what the method weights.
        uses_gradients: The map reads per-class gradients of the entry (all but Score-CAM).
        needs_attention_view: The method reads a ViT's attention maps (the model's
            :meth:`~app.models.base.ExplainableModel.attention_view`), not a feature grid.
        from_combined_gradient: The map is ``cam_from_gradient(activations, combined
            gradient)`` alone, so a batch of images needs one backward with the Finer objectives
            as cotangents (:func:`app.explain.contrastive_cam`'s fast path).
        default_blocks: For attention methods, how many of the last blocks are read when the
            request does not say.
    """

    name: str
    label: str
    help: str
    uses_gradients: bool = True
    needs_attention_view: bool = False
    from_combined_gradient: bool = False
    default_blocks: int | None = None

    @property
    def is_attention(self) -> bool:
        """Reads attention maps (offered only for models with an attention view)."""
        return self.needs_attention_view

    def supports(self, model: ExplainableModel) -> bool:
        """Whether the method runs on ``model``."""
        return not self.needs_attention_view or model.attention_view() is not None

    def supports_hint(self, has_attention_view: bool) -> bool:
        """:meth:`supports` from a registry hint, before the model is loaded."""
        return not self.needs_attention_view or has_attention_view

    @abstractmethod
    def entry_source(self, model: ExplainableModel, settings: ExplainSettings) -> EntrySource:
        """The entry this method needs for ``model`` under ``settings``; InvalidInputError
        naming the setting when the method cannot run there."""

    def is_ready(self, entry: Any, contrast: Contrast) -> bool:
        """Whether maps of ``contrast`` at any γ need no model call (everything is cached)."""
        return entry.has_gradients(contrast.classes())

    def prepare(self, entry: Any, contrast: Contrast) -> None:
        """Compute what maps of ``contrast`` at any γ need, in one batched call (the gradients
        of its classes)."""
        entry.gradients(list(contrast.classes()))

    def prepare_batch(self, requests: Sequence[tuple[Any, Contrast]]) -> None:
        """:meth:`prepare` for several (entry, contrast): one by one, unless the method's
        entries of one batch can share the call."""
        for entry, contrast in requests:
            self.prepare(entry, contrast)

    def needs_input(self, entry: Any) -> bool:
        """Whether :meth:`raw_map` needs a :class:`ModelInput` (Score-CAM's first use)."""
        return False

    @abstractmethod
    def raw_map(self, entry: Any, contrast: Contrast, given: ModelInput = NO_INPUT) -> np.ndarray:
        """Pre-ReLU map ``(1, h, w)`` of ``contrast`` from a cached entry."""

    def channel_weights(
        self, entry: Any, contrast: Contrast, given: ModelInput = NO_INPUT
    ) -> np.ndarray:
        """Weights w with Σ_k w_k·A_k = :meth:`raw_map`: ``(1, C)`` or ``(1, C, h, w)``."""
        raise InvalidInputError(f"{self.label} has no channel weights to raise to pixels.")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
