"""`transformers` image classifiers (``AutoModelForImageClassification``) split for CAM.

Each supported family has a target layer chosen for it (:data:`FAMILIES`):

* ViT, DeiT (class and distillation tokens), BEiT (relative position bias, mean pooling),
  DINOv2 and DINOv2 with registers: the last layer's first LayerNorm, like timm ViTs
  (:class:`TransformersViTSplit`). Every block runs through the same hand-written attention, so
  these models also offer LeGrad and attention-gradient through an :class:`AttentionView`.
* ResNet, RegNet, ConvNeXt (v1, v2), EfficientNet, MobileViT: the last stage's feature map;
  Swin (v1, v2): the tokens after the final LayerNorm, folded back into the last stage's window
  grid (:class:`FeatureMapSplit`).

The input is the model's native size from its preprocessor config (position embeddings and
relative position tables are fixed to it); the whole image is resized to it, never cropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import nn

from app.models.adapters.vit import AttentionView, ViTSplit, _merge_heads, fold_tokens
from app.models.base import ExplainableModel, layers_with_parameters
from app.models.preprocess import to_tensor
from app.models.weights import freeze

VIT_FAMILIES = ("vit", "deit", "beit", "dinov2", "dinov2_with_registers")
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}


@dataclass(frozen=True)
class Preprocessing:
    """What the repo's ``preprocessor_config.json`` asks for, as the adapter applies it."""

    size: tuple[int, int]  # (height, width) the model takes
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    bgr: bool  # MobileViT's checkpoints take BGR

    @classmethod
    def from_config(cls, config: dict, default_size: int) -> Preprocessing:
        """Size (the crop when the processor crops, else the resize), resample, mean/std."""
        size = config.get("crop_size") if config.get("do_center_crop") else config.get("size")
        height, width = _height_width(size, default_size)
        normalize = config.get("do_normalize", True)
        mean = tuple(config.get("image_mean") or (0.5, 0.5, 0.5)) if normalize else (0.0,) * 3
        std = tuple(config.get("image_std") or (0.5, 0.5, 0.5)) if normalize else (1.0,) * 3
        resample = _PIL_RESAMPLE.get(int(config.get("resample", 2)), "bilinear")
        return cls(
            (height, width),
            mean,
            std,
            resample,  # type: ignore[arg-type]
            bool(config.get("do_flip_channel_order", False)),
        )


def _height_width(size: object, default: int) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if isinstance(size, dict):
        if "height" in size and "width" in size:
            return int(size["height"]), int(size["width"])
        edge = size.get("shortest_edge") or size.get("longest_edge")
        if edge:
            return int(edge), int(edge)
    return default, default


def _submodule(model: nn.Module, path: str) -> nn.Module:
    """``model.a.b[-1].c`` for the path ``a.b.-1.c``."""
    module = model
    for part in path.split("."):
        module = module[int(part)] if part.lstrip("-").isdigit() else getattr(module, part)
    return module


# --------------------------------------------------------------------------- ViT families


def _norm_before(block: nn.Module) -> nn.Module:
    return block.layernorm_before if hasattr(block, "layernorm_before") else block.norm1


def _norm_after(block: nn.Module) -> nn.Module:
    return block.layernorm_after if hasattr(block, "layernorm_after") else block.norm2


def _layer_scale(block: nn.Module, which: int, hidden: torch.Tensor) -> torch.Tensor:
    """DINOv2's ``layer_scale1/2`` modules, BEiT's ``lambda_1/2`` (a float 1.0 when off)."""
    scale = getattr(block, f"layer_scale{which}", None)
    if scale is not None:
        return scale(hidden)
    return getattr(block, f"lambda_{which}", 1.0) * hidden


class TransformersViTSplit(ViTSplit):
    """Trunk/tail of a `transformers` ViT-family classifier at its last layer's first norm.

    The full last block runs in the tail (``fast`` off): pooling reads the distillation token
    (DeiT) or the mean of the patch tokens (DINOv2, BEiT), not the class token alone.
    """

    fast = False

    def __init__(self, model: nn.Module, size: tuple[int, int]) -> None:
        config = model.config
        self.model = model
        self.family = str(config.model_type)
        self.base = getattr(model, model.base_model_prefix)
        layers = "layers" if hasattr(self.base, "layers") else "encoder.layer"
        self.layers = _submodule(self.base, layers)
        norm = "layernorm_before" if hasattr(self.layers[-1], "layernorm_before") else "norm1"
        self.target_path = f"{model.base_model_prefix}.{layers}.-1.{norm}"
        distilled = hasattr(self.base.embeddings, "distillation_token")
        self.prefix = 1 + int(distilled) + int(getattr(config, "num_register_tokens", 0) or 0)
        patch = int(config.patch_size)
        self.patch_size = (patch, patch)
        self.window = (size[0] // patch, size[1] // patch)
        self.teacher = hasattr(model, "distillation_classifier")
        self.pooling = "token" if self._class_token_only() else "avg"
        self._setup(self.window, "norm1", standard_block=True)

    def _class_token_only(self) -> bool:
        if self.family == "beit":
            return getattr(self.base, "pooler", None) is None or self.base.pooler.layernorm is None
        return self.family in ("vit", "deit") and not self.teacher

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        tokens = self.base.embeddings(x)
        if isinstance(tokens, tuple):  # BEiT: (tokens, patch grid)
            tokens = tokens[0]
        height, width = int(x.shape[-2]), int(x.shape[-1])
        return tokens, (height // self.patch_size[0], width // self.patch_size[1])

    def _blocks(self) -> nn.ModuleList:
        return self.layers

    def _run_block(self, block: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        return self._attention_output(block, tokens, *self._attention_parts(block, tokens))

    def _norm1(self, tokens: torch.Tensor) -> torch.Tensor:
        return _norm_before(self.layers[-1])(tokens)

    def _position_bias(self, block: nn.Module, length: int) -> torch.Tensor | None:
        """BEiT's relative position bias (the layer's own plus the model's shared one)."""
        biases = [
            getattr(block, "relative_position_bias", None),
            getattr(self.base, "shared_position_bias", None),
        ]
        terms = [bias(self.window, False, dim_size=length) for bias in biases if bias is not None]
        return sum(terms) if terms else None  # type: ignore[return-value]

    def _probabilities(
        self, block: nn.Module, normed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        attention = block.attention
        n, length = normed.shape[0], normed.shape[1]

        def heads(projection: nn.Module) -> torch.Tensor:
            return projection(normed).view(n, length, -1, attention.head_dim).transpose(1, 2)

        q, k, v = heads(attention.q_proj), heads(attention.k_proj), heads(attention.v_proj)
        scores = (q @ k.transpose(-2, -1)) * attention.scaling
        bias = self._position_bias(block, length)
        if bias is not None:
            scores = scores + bias
        return scores.softmax(dim=-1), v

    def _attend(self, normed: torch.Tensor, cls_only: bool) -> torch.Tensor:
        last = self.layers[-1]
        return last.attention.o_proj(_merge_heads(*self._probabilities(last, normed)))

    def _finish(self, raw: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        return self._finish_block(self.layers[-1], raw, attended)

    @staticmethod
    def _finish_block(block: nn.Module, raw: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        hidden = raw + _layer_scale(block, 1, attended)
        return hidden + _layer_scale(block, 2, block.mlp(_norm_after(block)(hidden)))

    def _attention_parts(
        self, block: nn.Module, tokens: torch.Tensor, rows: slice = slice(None)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        attention, values = self._probabilities(block, _norm_before(block)(tokens))
        return attention[:, :, rows], values

    def _attention_output(
        self, block: nn.Module, tokens: torch.Tensor, attention: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        attended = block.attention.o_proj(_merge_heads(attention, values))
        return self._finish_block(block, tokens, attended)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens after a block -> the classifier's input, the way the family pools."""
        tokens = self.base.layernorm(tokens)
        if self.family == "beit" and getattr(self.base, "pooler", None) is not None:
            return self.base.pooler(tokens)
        if self.family.startswith("dinov2"):
            return torch.cat([tokens[:, 0], tokens[:, self.prefix :].mean(dim=1)], dim=1)
        if self.teacher:
            return torch.cat([tokens[:, 0], tokens[:, 1]], dim=1)
        return tokens[:, 0]

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        """Classifier input -> logits (DeiT with teacher: the mean of its two heads)."""
        if self.teacher:
            cls, dist = pooled.chunk(2, dim=1)
            return (self.model.cls_classifier(cls) + self.model.distillation_classifier(dist)) / 2
        return self.model.classifier(pooled)


# --------------------------------------------------------------------------- feature maps


@dataclass(frozen=True)
class FeatureMapFamily:
    """Where a convolutional / hierarchical family is split and how its head pools."""

    target: str  # module path (under the classifier) whose output the CAM weights
    pool: Callable[[nn.Module, torch.Tensor], torch.Tensor]  # (base model, target) -> features
    tokens: bool = False  # target is (N, L, C) tokens (Swin), not (N, C, h, w)


def _global_pool(base: nn.Module, feature_map: torch.Tensor) -> torch.Tensor:
    return base.pooler(feature_map).flatten(1)


def _convnext_pool(base: nn.Module, feature_map: torch.Tensor) -> torch.Tensor:
    return base.layernorm(feature_map.mean([-2, -1]))


def _swin_pool(base: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    return base.pooler(tokens.transpose(1, 2)).flatten(1)


FEATURE_MAP_FAMILIES: dict[str, FeatureMapFamily] = {
    "resnet": FeatureMapFamily("resnet.encoder.stages.-1", _global_pool),
    "regnet": FeatureMapFamily("regnet.encoder.stages.-1", _global_pool),
    "convnext": FeatureMapFamily("convnext.encoder.stages.-1", _convnext_pool),
    "convnextv2": FeatureMapFamily("convnextv2.encoder.stages.-1", _convnext_pool),
    "efficientnet": FeatureMapFamily("efficientnet.encoder.top_activation", _global_pool),
    "mobilevit": FeatureMapFamily("mobilevit.conv_1x1_exp", lambda base, fmap: fmap.mean([-2, -1])),
    "swin": FeatureMapFamily("swin.layernorm", _swin_pool, tokens=True),
    "swinv2": FeatureMapFamily("swinv2.layernorm", _swin_pool, tokens=True),
}
FAMILIES = (*VIT_FAMILIES, *FEATURE_MAP_FAMILIES)


class FeatureMapSplit:
    """Trunk = the base model's forward up to the target module (read by a forward hook);
    tail = the family's pooling and the classifier."""

    def __init__(self, model: nn.Module, family: FeatureMapFamily) -> None:
        self.model, self.family = model, family
        self.base = getattr(model, model.base_model_prefix)
        self.target = _submodule(model, family.target)
        self.target_path = family.target
        self._input: tuple[int, int] = (1, 1)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []
        hook = self.target.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            self.base(pixel_values=x)
        finally:
            hook.remove()
        self._input = (int(x.shape[-2]), int(x.shape[-1]))
        return captured[-1]

    def tail(self, activation: torch.Tensor) -> torch.Tensor:
        return self.model.classifier(self.family.pool(self.base, activation))

    def to_grid(self, activation: torch.Tensor) -> torch.Tensor:
        return fold_tokens(activation, self._input) if self.family.tokens else activation


# --------------------------------------------------------------------------- adapter


class TransformersClassifier(ExplainableModel):
    """An ``AutoModelForImageClassification`` model as an explainable classifier."""

    def __init__(
        self,
        model: nn.Module,
        name: str,
        preprocessing: Preprocessing,
        device: torch.device,
        key: str,
        description: str,
    ) -> None:
        family = str(model.config.model_type)
        if family not in FAMILIES:
            raise ValueError(
                f"{name}: no target layer is known for transformers model type {family!r}; "
                f"supported: {', '.join(FAMILIES)}"
            )
        self.name, self.device, self.family = name, device, family
        self.model = freeze(model.to(device))
        self.labels = tuple(labels_of(model.config))
        self.preprocessing = preprocessing
        self.trunk_key, self.description = key, description
        if family in VIT_FAMILIES:
            self.split: TransformersViTSplit | FeatureMapSplit = TransformersViTSplit(
                self.model, preprocessing.size
            )
        else:
            self.split = FeatureMapSplit(self.model, FEATURE_MAP_FAMILIES[family])
        self.target_layer = self.split.target_path  # the module the CAM weights, e.g. for hooks

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        p = self.preprocessing
        x = to_tensor(image, (p.size[1], p.size[0]), p.mean, p.std, self.device, p.interpolation)
        return x.flip(1) if p.bgr else x

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.split.trunk(x)

    def tail(self, activation: torch.Tensor) -> torch.Tensor:
        if isinstance(self.split, TransformersViTSplit):
            return self.split.head(self.split.pool(self.split.last_block(activation)))
        return self.split.tail(activation)

    def to_grid(self, activation: torch.Tensor) -> torch.Tensor:
        return self.split.to_grid(activation)

    def class_embeddings(self) -> torch.Tensor | None:
        head = getattr(self.model, "classifier", None)
        weight = getattr(head, "weight", None)
        rows = len(self.labels)
        if isinstance(weight, torch.Tensor) and weight.ndim == 2 and weight.shape[0] == rows:
            return weight
        return None

    def attention_view(self) -> AttentionView | None:
        if not isinstance(self.split, TransformersViTSplit):
            return None
        split = self.split
        return AttentionView(
            split, lambda tokens: split.head(split.pool(tokens)), f"{self.trunk_key}#attention"
        )

    def cascade_layers(self) -> list[tuple[str, nn.Module]]:
        """The classifier (DeiT's two heads as one layer), then the base model's parts from the
        output down, its encoder's blocks or stages one at a time. Bare parameters (class and
        position embeddings, layer scales, relative position tables) stay trained."""
        prefix = self.model.base_model_prefix
        outside = [module for name, module in self.model.named_children() if name != prefix]
        heads = layers_with_parameters(self.model, outside)[::-1]
        if len(heads) > 1:
            heads = [("+".join(name for name, _ in heads), nn.ModuleList(m for _, m in heads))]
        base = getattr(self.model, prefix)
        return [*heads, *layers_with_parameters(self.model, _parts_in_order(base))]


def _parts_in_order(module: nn.Module) -> list[nn.Module]:
    """``module``'s children in the order they were built (the forward order in every supported
    family), each list of blocks and the ``encoder`` opened up into their parts."""
    parts: list[nn.Module] = []
    for name, child in module.named_children():
        if isinstance(child, nn.ModuleList):
            parts += list(child)
        elif name == "encoder":
            parts += _parts_in_order(child)
        else:
            parts.append(child)
    return parts


def labels_of(config: object) -> Sequence[str]:
    """Class names from ``id2label``, in logit order."""
    id2label = dict(getattr(config, "id2label", {}) or {})
    count = int(getattr(config, "num_labels", len(id2label)))
    if sorted(int(k) for k in id2label) != list(range(count)):
        raise ValueError(f"id2label does not name every one of the {count} classes")
    return [str(id2label[k] if k in id2label else id2label[str(k)]) for k in range(count)]
