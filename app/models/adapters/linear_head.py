"""A linear head on a frozen backbone, and its head files (``head.safetensors`` + ``classes.json``).

``logits = W · features(trunk(x)) + b``: the backbone (:mod:`app.models.adapters.backbones`)
is split at its target layer, so CAM methods see the trunk activation and the head's rows are
the class weights. Head files are written by ``python -m app.train.head`` and loaded from a
local file or folder or a Hub repo id; the file's metadata names its backbone and input size.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from app.config import Settings
from app.models.adapters.backbones import Backbone, build_backbone
from app.models.adapters.vit import AttentionView, ViTSplit
from app.models.base import CascadeLayers, ExplainableModel, linear_over
from app.models.hub.downloads import hf_cache_dir, hub_error
from app.models.registry import ModelSpec, register_resolver
from app.models.weights import WeightsFileError, load_tensor_file

HEAD_FILE = "head.safetensors"
CLASSES_FILE = "classes.json"
HEAD_FORMAT = "finercam-linear-head/1"
DEFAULT_LINEAR_BACKBONE = "timm:vit_base_patch14_dinov2.lvd142m"


class LinearHeadModel(ExplainableModel):
    """``logits = W · features(trunk(x)) + b`` on a frozen backbone split at its target layer."""

    def __init__(
        self,
        backbone: Backbone,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        labels: Sequence[str],
        name: str = "cub200-linear",
        description: str = "",
    ) -> None:
        labels = [str(label) for label in labels]
        if weight.ndim != 2:
            raise ValueError(
                f"head weight must be 2-D (classes x features), got {tuple(weight.shape)}"
            )
        if len(labels) != weight.shape[0]:
            raise ValueError(
                f"{len(labels)} class names but the head has {weight.shape[0]} rows; the class "
                "names file must list one name per head row, in row order"
            )
        if weight.shape[1] != backbone.feature_dim:
            raise ValueError(
                f"head expects {weight.shape[1]} features but backbone {backbone.key} gives "
                f"{backbone.feature_dim}"
            )
        if bias is not None and bias.shape != (weight.shape[0],):
            raise ValueError(
                f"head bias has shape {tuple(bias.shape)}, expected ({weight.shape[0]},)"
            )
        self.backbone = backbone
        self.device = backbone.device
        self.weight = weight.detach().float().to(self.device)
        self.bias = None if bias is None else bias.detach().float().to(self.device)
        self.labels = tuple(labels)
        self.name = name
        self.trunk_key = backbone.key
        digest = hashlib.blake2b(self.weight.cpu().numpy().tobytes(), digest_size=8).hexdigest()
        self.head_key = f"linear:{weight.shape[0]}:{digest}"
        self.description = description or f"{name}: linear head on {backbone.description}"

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.backbone.preprocess(image)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.trunk(x)

    def _normalized(self, features: torch.Tensor) -> torch.Tensor:
        features = features.float()
        return F.normalize(features, dim=-1) if self.backbone.normalize_features else features

    def _head(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(self._normalized(features), self.weight, self.bias)

    def tail(self, activation: torch.Tensor) -> torch.Tensor:
        return self._head(self.backbone.features(activation))

    def attention_view(self) -> AttentionView | None:
        split = getattr(self.backbone, "split", None)
        if not isinstance(split, ViTSplit):
            return None
        return AttentionView(
            split, lambda tokens: self._head(split.pool(tokens)), f"{self.backbone.key}#attention"
        )

    def to_grid(self, activation: torch.Tensor) -> torch.Tensor:
        return self.backbone.to_grid(activation)

    def class_embeddings(self) -> torch.Tensor:
        return self.weight

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        return self.backbone.grid_size(height, width)

    def cascade_layers(self) -> list[tuple[str, nn.Module]]:
        """The head (an ``nn.Linear`` sharing the head's tensors, so re-initialising it
        re-initialises the head), then the backbone's layers where it declares them."""
        below = self.backbone.cascade_layers() if isinstance(self.backbone, CascadeLayers) else []
        return [("head", linear_over(self.weight, self.bias)), *below]


def save_head(
    folder: str | Path,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    classes: Sequence[str],
    backbone: str,
    input_size: int | tuple[int, int],
    extra: dict[str, str] | None = None,
) -> Path:
    """Write ``head.safetensors`` (weight, bias, metadata) and ``classes.json`` into ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if len(classes) != weight.shape[0]:
        raise ValueError(f"{len(classes)} class names for {weight.shape[0]} head rows")
    height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
    tensors = {"weight": weight.detach().float().cpu().contiguous()}
    if bias is not None:
        tensors["bias"] = bias.detach().float().cpu().contiguous()
    metadata = {
        "format": HEAD_FORMAT,
        "backbone": backbone,
        "input_size": f"{height}x{width}",
        "classes": json.dumps(list(classes)),
        **(extra or {}),
    }
    path = folder / HEAD_FILE
    save_file(tensors, str(path), metadata=metadata)
    (folder / CLASSES_FILE).write_text(json.dumps(list(classes), indent=1) + "\n")
    return path


def _read_classes(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise WeightsFileError(f"class names file {path} is not valid JSON: {error}") from error
    if isinstance(data, dict):
        data = data.get("classes", data.get("labels"))
    if not isinstance(data, list) or not all(isinstance(c, str) for c in data):
        raise WeightsFileError(f"class names file {path} must hold a JSON list of names")
    return data


def _read_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    if path.suffix != ".safetensors":
        return {}
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def resolve_head_files(source: str) -> tuple[Path, Path | None]:
    """(head file, class-names JSON or None) for a local path or a Hub repo id."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / HEAD_FILE
    local = (
        path.exists()
        or source.endswith((".safetensors", ".pt", ".pth", ".bin"))
        or (source.startswith((".", "/", "~")))
    )
    if local:
        if not path.is_file():
            raise WeightsFileError(
                f"head checkpoint file {path} does not exist (FINERCAM_CUB_HEAD)"
            )
        for candidate in (path.with_suffix(".json"), path.parent / CLASSES_FILE):
            if candidate.is_file():
                return path, candidate
        return path, None
    repo = source.removeprefix("hf-hub:")
    if repo.count("/") != 1:
        raise ValueError(
            f"FINERCAM_CUB_HEAD={source!r} is neither an existing file nor a Hub repo id (org/name)"
        )
    from huggingface_hub import hf_hub_download

    try:
        head = Path(hf_hub_download(repo, HEAD_FILE))
    except Exception as error:  # noqa: BLE001 - every hub failure gets the same clear message
        raise hub_error(
            f"CUB head {HEAD_FILE}",
            f"Hub repo {repo} ({source!r} is not an existing local path)",
            hf_cache_dir(),
            error,
        ) from error
    try:
        classes = Path(hf_hub_download(repo, CLASSES_FILE))
    except Exception:  # noqa: BLE001 - the names may live in the head's metadata instead
        classes = None
    return head, classes


def load_head(source: str) -> tuple[torch.Tensor, torch.Tensor | None, list[str], dict[str, str]]:
    """Weight, bias, class names and metadata of a trained head (local or Hub)."""
    head_path, classes_path = resolve_head_files(source)
    tensors = load_tensor_file(head_path)
    weight = tensors.get("weight", tensors.get("head.weight", tensors.get("fc.weight")))
    bias = tensors.get("bias", tensors.get("head.bias", tensors.get("fc.bias")))
    if weight is None:
        raise WeightsFileError(f"{head_path} has no 'weight' tensor (found: {', '.join(tensors)})")
    metadata = _read_metadata(head_path)
    if classes_path is not None:
        classes = _read_classes(classes_path)
    elif "classes" in metadata:
        classes = json.loads(metadata["classes"])
    else:
        raise WeightsFileError(
            f"no class names for {head_path}: put {CLASSES_FILE} (a JSON list) next to it"
        )
    if len(classes) != weight.shape[0]:
        where = classes_path or head_path
        raise ValueError(
            f"{where} lists {len(classes)} class names but the head in {head_path} has "
            f"{weight.shape[0]} rows"
        )
    return weight, bias, classes, metadata


def _input_size(metadata: dict[str, str]) -> tuple[int, int] | None:
    value = metadata.get("input_size")
    if not value:
        return None
    height, _, width = value.partition("x")
    return int(height), int(width or height)


def head_title(classes: Sequence[str], backbone: str) -> str:
    """What a trained head is, in its own words: its class count, first names and backbone."""
    shown = ", ".join(classes[:3]) + (", …" if len(classes) > 3 else "")
    return f"trained {len(classes)}-class head ({shown}) on {backbone}"


def local_head_title(source: str, backbone: str = "") -> str | None:
    """:func:`head_title` of a local head file or folder, read from its metadata alone (no
    backbone, no download; ``backbone`` replaces the one it names); None for Hub repos and
    heads that do not say their classes."""
    path = Path(source).expanduser()
    head = path / HEAD_FILE if path.is_dir() else path
    if head.suffix != ".safetensors" or not head.is_file():
        return None
    metadata = _read_metadata(head)
    if "classes" not in metadata:
        return None
    backbone = backbone or metadata.get("backbone") or DEFAULT_LINEAR_BACKBONE
    return head_title(json.loads(metadata["classes"]), backbone)


def load_linear_model(
    source: str,
    device: torch.device | str = "cpu",
    backbone: str = "",
    settings: Settings | None = None,
    name: str = "cub200-linear",
) -> LinearHeadModel:
    """A :class:`LinearHeadModel` from a head file or Hub repo (see :func:`load_head`)."""
    weight, bias, classes, metadata = load_head(source)
    spec = backbone or metadata.get("backbone") or DEFAULT_LINEAR_BACKBONE
    model = build_backbone(spec, device, settings, _input_size(metadata))
    return LinearHeadModel(
        model,
        weight,
        bias,
        classes,
        name,
        description=f"{head_title(classes, spec)} ({Path(source).name}, {model.description})",
    )


def head_spec(name: str) -> ModelSpec | None:
    """A trained head given by its local path (a folder holding ``head.safetensors``, or the
    file): the model is named by that path and has no fallback — it loads, or says why not."""
    path = Path(name).expanduser()
    head = path / HEAD_FILE if path.is_dir() else path
    if head.suffix != ".safetensors" or not head.is_file():
        return None
    return ModelSpec(
        name,
        local_head_title(str(path)) or f"trained linear head {head.name}",
        "classifier",
        lambda settings: load_linear_model(str(path), settings.torch_device, "", settings, name),
    )


register_resolver(head_spec)
