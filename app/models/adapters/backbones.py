"""Frozen image backbones for linear heads, named by a short spec string.

A backbone turns a PIL image into a trunk activation (target layer) and that activation into a
feature vector (with autograd); a linear head on the features gives the logits. Specs:

* ``clip`` — the CLIP of the settings (``FINERCAM_CLIP_MODEL`` / ``FINERCAM_CLIP_PRETRAINED``).
* ``demo-tinyclip`` — the offline tiny CLIP shipped in ``assets/demo/``.
* ``open_clip:NAME[@PRETRAINED]`` — any open_clip model; ``PRETRAINED`` is a tag (``openai``),
  a local checkpoint file, or ``random``. ``NAME`` may be ``hf-hub:org/repo``.
* ``timm:NAME[@WEIGHTS]`` — a timm ViT or EVA / EVA-02, e.g.
  ``timm:vit_base_patch14_dinov2.lvd142m`` or ``timm:eva02_base_patch14_224.mim_in22k``; weights
  from the Hub by default, a local safetensors file, or ``random``. Other timm models (CNNs,
  Swin, LeViT ...) are refused with a ValueError before any download: their last block is not
  what the split reproduces (:func:`backbone_split`).

open_clip features are the image embedding (the head sees it L2-normalised, like CLIP's own
logits); timm features are ``forward_head(pre_logits=True)`` (DINOv2: the normed class token).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from PIL import Image
from torch import nn

from app.config import Settings
from app.models.adapters.timm_splits import timm_vit_split
from app.models.adapters.vit import TimmVitSplit, timm_vit_layers
from app.models.hub.downloads import hf_cache_dir, hub_error
from app.models.preprocess import to_tensor
from app.models.sharing import shared_instance
from app.models.weights import WeightsFileError, freeze, load_tensor_file

DEFAULT_TIMM_INPUT = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(Protocol):
    """What a linear head needs of its backbone."""

    key: str
    description: str
    device: torch.device
    input_size: tuple[int, int]
    normalize_features: bool

    def preprocess(self, image: Image.Image) -> torch.Tensor: ...
    def trunk(self, x: torch.Tensor) -> torch.Tensor: ...
    def features(self, activation: torch.Tensor) -> torch.Tensor: ...
    def to_grid(self, activation: torch.Tensor) -> torch.Tensor: ...
    def grid_size(self, height: int, width: int) -> tuple[int, int]: ...

    @property
    def feature_dim(self) -> int: ...


def backbone_split(model: nn.Module, target: str = "norm1") -> TimmVitSplit:
    """The split of a linear head's timm backbone (ValueError saying which models can be one)."""
    try:
        return timm_vit_split(model, target)
    except ValueError as error:
        raise ValueError(
            f"timm model {type(model).__name__} cannot be a linear head's backbone: {error}. "
            "A backbone is a timm ViT (vit_*, DINOv2, DeiT, SigLIP ...) or EVA / EVA-02 "
            "(eva02_*); other timm classifiers are explained as models of their own "
            "(--model timm:NAME)"
        ) from error


class TimmBackbone:
    """A timm VisionTransformer or Eva (EVA, EVA-02) split at the input of its last block.

    Args:
        model: A timm ``VisionTransformer`` or ``Eva`` (``num_classes=0``; ideally
            ``dynamic_img_size``).
        key: Identifies model + weights (``trunk_key``).
        input_size: ``(height, width)`` the whole image is resized to.
        mean, std, interpolation: Normalisation of the model's pretraining (pretrained_cfg).
        target: ViT target layer, ``norm1`` (default) or ``residual``
            (:mod:`app.models.adapters.vit`).
    """

    normalize_features = False

    def __init__(
        self,
        model: nn.Module,
        key: str,
        device: torch.device | str = "cpu",
        input_size: tuple[int, int] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        interpolation: str | None = None,
        description: str = "",
        target: str = "norm1",
    ) -> None:
        self.device = torch.device(device)
        self.model = freeze(model.to(self.device))
        self.split = backbone_split(self.model, target)
        cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
        if input_size is None:
            if getattr(model, "dynamic_img_size", False):
                input_size = (DEFAULT_TIMM_INPUT, DEFAULT_TIMM_INPUT)
            else:
                input_size = tuple(int(s) for s in model.patch_embed.img_size)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.mean = tuple(mean or cfg.get("mean") or IMAGENET_MEAN)
        self.std = tuple(std or cfg.get("std") or IMAGENET_STD)
        self.interpolation = interpolation or str(cfg.get("interpolation", "bicubic"))
        self.key = f"{key}@{self.input_size[0]}x{self.input_size[1]}#{self.split.target}"
        self.description = description or key

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        height, width = self.input_size
        return to_tensor(
            image, (width, height), self.mean, self.std, self.device, self.interpolation
        )

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.split.trunk(x)

    def features(self, activation: torch.Tensor) -> torch.Tensor:
        return self.split.features(activation)

    def to_grid(self, activation: torch.Tensor) -> torch.Tensor:
        return self.split.to_grid(activation)

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        ph, pw = self.split.patch_size
        return height // ph, width // pw

    @property
    def feature_dim(self) -> int:
        return int(self.model.num_features)

    def cascade_layers(self) -> list[tuple[str, nn.Module]]:
        """Final norms, then each block from the last, then the patch embedding."""
        return timm_vit_layers(self.model)


def load_timm(
    name: str,
    weights: str | None = None,
    device: torch.device | str = "cpu",
    input_size: int | tuple[int, int] | None = None,
) -> TimmBackbone:
    """A timm ViT or EVA backbone; ``weights``: None = the Hub's pretrained weights, ``random``,
    or a local safetensors/torch file (``weights_only``)."""
    import timm

    if not timm.is_model(name.split(".")[0]) and not timm.list_models(name.split(".")[0]):
        raise ValueError(f"unknown timm model {name!r}")
    with torch.device("meta"):  # the architecture alone: no memory, no weights, no download
        backbone_split(timm.create_model(name, pretrained=False, num_classes=0).eval())
    random = weights == "random"
    local = weights not in (None, "", "random")
    try:
        model = timm.create_model(
            name, pretrained=not (random or local), num_classes=0, dynamic_img_size=True
        )
    except (RuntimeError, OSError, ValueError) as error:
        if random or local:
            raise
        raise hub_error(
            f"timm model {name}", f"the Hugging Face Hub (timm/{name})", hf_cache_dir(), error
        ) from error
    except Exception as error:  # noqa: BLE001 - hub errors come in many types
        raise hub_error(
            f"timm model {name}", f"the Hugging Face Hub (timm/{name})", hf_cache_dir(), error
        ) from error
    if local:
        state = {k: v for k, v in load_tensor_file(weights).items() if not k.startswith("head.")}
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise WeightsFileError(
                f"weights file {weights} does not fit timm model {name}: "
                f"{str(error).splitlines()[0]}"
            ) from error
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    tag = "random" if random else (weights if local else "hub")
    device = torch.device(device)
    return TimmBackbone(
        model,
        f"timm:{name}@{tag}",
        device,
        input_size,
        description=f"timm {name} ({'random weights' if random else tag}, {device})",
    )


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    """``kind:name@weights`` -> (kind, name, weights)."""
    spec = spec.strip()
    if spec in ("clip", "demo-tinyclip"):
        return spec, spec, None
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in ("open_clip", "timm") or not rest:
        raise ValueError(
            f"unknown backbone {spec!r}; use clip, demo-tinyclip, open_clip:NAME[@PRETRAINED] or "
            "timm:NAME[@WEIGHTS]"
        )
    name, at, weights = rest.rpartition("@") if "@" in rest else (rest, "", "")
    return kind, name, weights or None


def build_backbone(
    spec: str,
    device: torch.device | str = "cpu",
    settings: Settings | None = None,
    input_size: int | tuple[int, int] | None = None,
) -> Backbone:
    """The backbone named by ``spec`` (shared process-wide unless it has random weights)."""
    from app.models.adapters import clip

    device = torch.device(device)
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    kind, name, weights = parse_spec(spec)
    if kind == "clip":
        settings = settings or Settings.from_env()
        return clip.shared_engine(settings.clip_model, settings.clip_pretrained, device)
    if kind == "demo-tinyclip":
        return clip.tinyclip_engine(device)
    if kind == "open_clip":
        if weights == "random":
            return clip.load_open_clip(name, None, device)
        return clip.shared_engine(name, weights, device)
    if weights == "random":
        return load_timm(name, "random", device, input_size)
    return shared_instance(
        ("timm", name, weights, str(device), input_size),
        lambda: load_timm(name, weights, device, input_size),
    )
