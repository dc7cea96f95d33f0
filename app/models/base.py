"""The adapter protocol every explainable model implements.

The explanation engine never sees a raw network. It sees a model split at its target layer:
``trunk`` (input -> activation, run once without autograd) and ``tail`` (activation -> logits,
run with autograd). Splitting is what makes CAM and Finer-CAM cheap: gradients for the target
and every reference class come from one small backward pass over the tail only.

What a model can do beyond that is declared here, so the explanation service asks no model
what it happens to have: :meth:`ExplainableModel.attention_view` (LeGrad, attention-gradient),
``notices`` and ``pooling`` on every model, and the protocols :class:`PromptedModel` (free-text
classes, CLIP), :class:`PoolingChoice` (what a CLIP model's maps explain) and
:class:`CascadeLayers` (the layers a sanity check re-initialises).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from PIL import Image
from torch import nn

if TYPE_CHECKING:
    from app.models.adapters.vit import AttentionView


class ExplainableModel(ABC):
    """A classifier split at the layer whose activations the CAM weights.

    Attributes:
        name: Registry name, e.g. ``"demo-cnn"``.
        labels: One human-readable name per logit, in logit order.
        device: Where tensors from ``preprocess`` live and the model runs.
        trunk_key: Identifies the trunk. Adapters that share a trunk (one CLIP image encoder
            under several prompt heads) share it, so cached activations are reused across them.
        head_key: Identifies the head (e.g. the prompt list); the cache key of gradients is
            ``(trunk_key, head_key, image)``.
        description: One line for the UI status bar (weights source, device).
        notices: Messages for the user about this model's answers (e.g. truncated prompts).
        pooling: How the explained score pools tokens (``token`` | ``avg``) where the model
            lets it be chosen (see :class:`PoolingChoice`); ``None`` when it pools its own way.
    """

    name: str
    labels: Sequence[str]
    device: torch.device
    trunk_key: str
    head_key: str = ""
    description: str = ""
    notices: tuple[str, ...] = ()
    pooling: str | None = None

    @abstractmethod
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> normalised batch ``(1, 3, H, W)`` on ``device``.

        Resize the whole image (no centre crop) so the map covers everything the user sees.
        """

    @abstractmethod
    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Input batch -> activation at the target layer. Called under ``torch.no_grad``."""

    @abstractmethod
    def tail(self, activation: torch.Tensor) -> torch.Tensor:
        """Activation at the target layer -> logits ``(N, K)``. Called with autograd on."""

    def to_grid(self, activation: torch.Tensor) -> torch.Tensor:
        """Activation or gradient in the trunk's layout -> ``(N, C, h, w)`` feature grid.

        CNNs return it unchanged; ViTs drop the class token and fold tokens into a grid.
        """
        return activation

    def class_embeddings(self) -> torch.Tensor | None:
        """``(K, D)`` classifier weight rows (or text embeddings), for weight-similarity
        references; ``None`` when the model has no linear head."""
        return None

    def attention_view(self) -> AttentionView | None:
        """The model seen through its attention maps (LeGrad, attention-gradient); ``None``
        when it has none we can reproduce (CNNs)."""
        return None

    def fgcam_layers(self) -> torch.nn.Sequential | None:
        """The plain conv/BN/ReLU/pool stack ending at the target layer, for FG-CAM; ``None``
        when FG-CAM does not apply (ViTs, residual networks it cannot handle)."""
        return None

    def split_forward(
        self, x: torch.Tensor, activation: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Trunk without autograd, then the tail with it: ``(activation leaf, logits)``.

        ``activation`` skips the trunk when its output for ``x`` is already cached.
        """
        if activation is None:
            with torch.no_grad():
                activation = self.trunk(x)
        leaf = activation.detach().requires_grad_(True)
        with torch.enable_grad():
            return leaf, self.tail(leaf)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Plain no-grad logits for an input batch (Score-CAM, metrics)."""
        with torch.no_grad():
            return self.tail(self.trunk(x))

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def class_index(self, name_or_index: str | int) -> int:
        """Resolve a class given by index or (case-insensitive) name; ValueError otherwise."""
        if isinstance(name_or_index, (int,)) and not isinstance(name_or_index, bool):
            if 0 <= name_or_index < self.num_classes:
                return int(name_or_index)
            raise ValueError(
                f"class index {name_or_index} is out of range for {self.name} "
                f"({self.num_classes} classes)"
            )
        wanted = str(name_or_index).strip().lower()
        for index, label in enumerate(self.labels):
            if label.lower() == wanted:
                return index
        close = [label for label in self.labels if wanted and wanted in label.lower()][:5]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown class name {name_or_index!r} for {self.name}{hint}")


@runtime_checkable
class PromptedModel(Protocol):
    """A model whose classes are free-text prompts (CLIP): each prompt list is a new head."""

    def with_prompts(
        self, prompts: Sequence[str], template: str | None = None
    ) -> ExplainableModel: ...


@runtime_checkable
class PoolingChoice(Protocol):
    """A model whose explained score can pool its tokens another way (CLIP's ``token``/``avg``);
    ValueError naming the choices for one it does not have."""

    def with_pooling(self, pooling: str | None) -> ExplainableModel | PoolingChoice: ...


@runtime_checkable
class CascadeLayers(Protocol):
    """A model whose layers the sanity check (cascading model randomisation, Adebayo et al.
    2018) re-initialises one after another: ``(name, module)`` pairs, the output layer (head)
    first, then each block towards the input. Re-initialising a module means calling
    ``reset_parameters`` on its parts (``nn.MultiheadAttention``'s own initialisation for it),
    so each module holds its parameters in modules that have one (``nn.Linear``,
    ``nn.Conv2d``, norms); a bare weight tensor is declared through :func:`linear_over`.
    Bare parameters of other modules (class tokens, position embeddings, layer scales) stay
    trained."""

    def cascade_layers(self) -> Sequence[tuple[str, nn.Module]]: ...


def linear_over(weight: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Linear:
    """An ``nn.Linear`` whose parameters are ``weight`` ``(out, in)`` and ``bias`` themselves
    (views, no copy), so re-initialising it re-initialises a head kept as bare tensors."""
    out_features, in_features = weight.shape
    linear = nn.Linear(in_features, out_features, bias=bias is not None, device="meta")
    linear.weight = nn.Parameter(weight, requires_grad=False)
    if bias is not None:
        linear.bias = nn.Parameter(bias, requires_grad=False)
    return linear


def layers_with_parameters(
    owner: nn.Module, modules: Sequence[nn.Module]
) -> list[tuple[str, nn.Module]]:
    """``modules`` that hold parameters, named as in ``owner`` and in reverse order (output
    first): what :meth:`CascadeLayers.cascade_layers` returns for a stack of blocks."""
    names = {id(module): name for name, module in owner.named_modules()}
    return [
        (names.get(id(module), type(module).__name__), module)
        for module in reversed(modules)
        if any(True for _ in module.parameters())
    ]
