"""Models from the Hugging Face Hub by id: timm, `transformers` and open_clip models.

Ids (see :mod:`app.models.hub.policy`), usable wherever a registry name is (UI, CLI ``--model``,
API):

* ``timm:resnet50.a1_in1k`` / ``timm:org/repo`` — a timm classifier from its Hub repo (config +
  safetensors). Class names: the pretrained config's ``label_names`` (ImageNet synsets become
  their descriptions), else the ImageNet names when the head has 1000 rows.
* ``org/repo`` — whatever library the repo's files name (:mod:`app.models.hub.detect`): a
  `transformers` image classifier (``AutoModelForImageClassification``; class names from
  ``id2label``), a timm classifier, or an open_clip model.
* ``hf-hub:org/repo`` — an open_clip model as a concept model (free-text prompts).
* ``hf-hub:org/repo@LIST`` — the same model as a zero-shot classifier over a class list:
  ``cub200``, ``birds525``, ``cars196``, ``imagenet`` (shipped) or ``list-<hash>`` registered by
  :func:`register_class_list` (a list typed in the UI or given to the API / CLI).

Every load checks the allow-list and, when the Hub answers, the size and the safetensors rule
from the Hub's metadata before downloading; it repairs broken cache entries first. Nothing
here runs remote code: timm and `transformers` build their own architectures (a repo that
asks for custom code is refused), open_clip reads a JSON config.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image

from app.config import Settings
from app.models.adapters.clip import DEFAULT_TEMPLATE, ClipEngine, ClipPromptView
from app.models.adapters.timm_splits import timm_splits
from app.models.adapters.vit import AttentionView, fold_tokens
from app.models.base import ExplainableModel
from app.models.hub import cache_bound
from app.models.hub import policy as hub
from app.models.hub.detect import detect_library
from app.models.hub.downloads import hf_cache_dir, hub_error
from app.models.hub.hints import attention_hint
from app.models.preprocess import to_tensor
from app.models.registry import ModelSpec, register_resolver
from app.models.weights import freeze

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parents[3] / "assets"
BIRD_TEMPLATE = "a photo of a {}, a type of bird."
#: Shipped class lists: name -> (file in assets/, prompt template, summary).
CLASS_LISTS: dict[str, tuple[str, str, str]] = {
    "cub200": ("cub200_classes.txt", BIRD_TEMPLATE, "the 200 CUB-200 bird species"),
    "birds525": ("birds525_classes.txt", BIRD_TEMPLATE, "the 525 Birds-525 species"),
    "cars196": ("cars196_classes.txt", "a photo of a {}, a type of car.", "the 196 Stanford Cars"),
    "imagenet": ("imagenet_classes.txt", DEFAULT_TEMPLATE, "the 1000 ImageNet classes"),
}
MAX_CUSTOM_LISTS = 64
MAX_CUSTOM_CLASSES = 2000
_CUSTOM: OrderedDict[str, tuple[str, ...]] = OrderedDict()


def class_list(name: str) -> tuple[list[str], str]:
    """(class names, prompt template) of a shipped or registered class list."""
    if name in CLASS_LISTS:
        filename, template, _ = CLASS_LISTS[name]
        lines = (ASSETS / filename).read_text(encoding="utf-8").splitlines()
        names = [line.strip() for line in lines if line.strip()]
        if name == "cub200":
            from app.models.zoo.cub import clean_cub_name

            names = [clean_cub_name(n) for n in names]
        return names, template
    if name in _CUSTOM:
        return list(_CUSTOM[name]), DEFAULT_TEMPLATE
    raise ValueError(
        f"unknown class list {name!r}; use {', '.join(CLASS_LISTS)} or register one "
        "(one class name per line)"
    )


def register_class_list(names: Sequence[str]) -> str:
    """Register a user's class list; returns its name ``list-<hash>`` (kept LRU-bounded)."""
    clean = tuple(dict.fromkeys(n.strip() for n in names if n and n.strip()))
    if len(clean) < 2:
        raise ValueError("give at least two class names (one per line or comma-separated)")
    if len(clean) > MAX_CUSTOM_CLASSES:
        raise ValueError(f"at most {MAX_CUSTOM_CLASSES} class names, got {len(clean)}")
    key = "list-" + hashlib.blake2b("\n".join(clean).encode(), digest_size=5).hexdigest()
    _CUSTOM[key] = clean
    _CUSTOM.move_to_end(key)
    while len(_CUSTOM) > MAX_CUSTOM_LISTS:
        _CUSTOM.popitem(last=False)
    return key


# --------------------------------------------------------------------------- timm


class TimmClassifier(ExplainableModel):
    """A timm classifier split for CAM: ViTs and EVA-02 at the last block (:func:`timm_splits`),
    other models at the output of ``forward_features`` (the last stage; LeViT's final tokens
    folded into their grid), with ``forward_head`` as the tail."""

    def __init__(
        self,
        model: torch.nn.Module,
        name: str,
        labels: Sequence[str],
        device: torch.device,
        key: str,
        description: str,
    ) -> None:
        from timm.data import resolve_data_config

        self.name, self.labels, self.device = name, tuple(labels), device
        self.model = freeze(model.to(device))
        cfg = resolve_data_config({}, model=self.model)
        self.input_size = (int(cfg["input_size"][1]), int(cfg["input_size"][2]))
        self.mean, self.std = tuple(cfg["mean"]), tuple(cfg["std"])
        self.interpolation = str(cfg.get("interpolation", "bicubic"))
        self.split, self.attention_split = timm_splits(self.model)
        self.trunk_key = key
        self.description = description

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        height, width = self.input_size
        return to_tensor(
            image, (width, height), self.mean, self.std, self.device, self.interpolation
        )

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.split.trunk(x) if self.split else self.model.forward_features(x)

    def tail(self, activation: torch.Tensor) -> torch.Tensor:
        if self.split:
            return self.split.features(activation, pre_logits=False)
        return self.model.forward_head(activation)

    def to_grid(self, activation: torch.Tensor) -> torch.Tensor:
        if self.split:
            return self.split.to_grid(activation)
        if activation.ndim == 3 and str(getattr(self.model, "global_pool", "avg")) != "token":
            return fold_tokens(
                activation, self.input_size, int(getattr(self.model, "num_prefix_tokens", 0) or 0)
            )
        if activation.ndim != 4:
            raise ValueError(f"{self.name}: the last stage gives no spatial map to explain")
        channels = int(self.model.num_features)
        if activation.shape[1] != channels and activation.shape[-1] == channels:
            return activation.permute(0, 3, 1, 2)  # channels-last stages (Swin, ...)
        return activation

    def attention_view(self) -> AttentionView | None:
        split = self.attention_split
        if split is None:
            return None
        return AttentionView(split, split.logits, f"{self.trunk_key}#attention")

    def class_embeddings(self) -> torch.Tensor | None:
        head = self.model.get_classifier()
        weight = getattr(head, "weight", None)
        if (
            isinstance(weight, torch.Tensor)
            and weight.ndim == 2
            and weight.shape[0] == len(self.labels)
        ):
            return weight
        return None


def timm_labels(model: torch.nn.Module) -> list[str]:
    """Class names of a timm model: its config's label names, else ImageNet's when they fit."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    count = int(getattr(model, "num_classes", 0) or 0)
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    names = list(cfg.get("label_names") or [])
    if len(names) == count and names:
        if all(n[:1] == "n" and n[1:].isdigit() for n in names):  # WordNet synsets
            info = ImageNetInfo("imagenet-22k")
            return [info.label_name_to_description(n) for n in names]
        return [str(n) for n in names]
    subset = infer_imagenet_subset(model)
    if subset:
        return list(ImageNetInfo(subset).label_descriptions())
    if count == 1000:
        return class_list("imagenet")[0]
    raise ValueError(f"{count}-class timm model without label names in its config")


def load_timm_classifier(hub_id: hub.HubId, device: torch.device) -> TimmClassifier:
    """A timm classifier from its Hub repo (policy checked, cache repaired first)."""
    prepare(hub_id)
    import timm  # slow to import: only once the weights are known to be reachable

    try:
        model = timm.create_model(f"hf-hub:{hub_id.repo}", pretrained=True)
    except Exception as error:  # noqa: BLE001 - every failure becomes one clear message
        raise load_error(hub_id, error) from error
    if int(getattr(model, "num_classes", 0) or 0) == 0:
        raise ValueError(f"{hub_id.name} has no classifier head (num_classes=0)")
    labels = timm_labels(model)
    return TimmClassifier(
        model,
        hub_id.name,
        labels,
        device,
        f"timm-hub:{hub_id.repo}",
        f"timm {hub_id.repo} ({len(labels)} classes, {device})",
    )


# --------------------------------------------------------------------------- transformers


def load_transformers_classifier(hub_id: hub.HubId, device: torch.device) -> ExplainableModel:
    """An ``AutoModelForImageClassification`` model from its Hub snapshot (policy checked,
    safetensors only, no remote code); `transformers` is imported only here."""
    prepare(hub_id)
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(hub_id.repo, allow_patterns=["*.json", "*.safetensors"]))
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if config.get("auto_map"):
            raise hub.HubPolicyError(
                f"{hub_id.name} needs its own code (auto_map in config.json); remote code is "
                "never run"
            )
        processor = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
        from transformers import AutoModelForImageClassification

        model = AutoModelForImageClassification.from_pretrained(
            folder, use_safetensors=True, trust_remote_code=False
        )
    except hub.HubPolicyError:
        raise
    except Exception as error:  # noqa: BLE001 - every failure becomes one clear message
        raise load_error(hub_id, error) from error
    from app.models.adapters.hf_transformers import Preprocessing, TransformersClassifier

    native = int(getattr(model.config, "image_size", 224))
    preprocessing = Preprocessing.from_config(processor, native)
    return TransformersClassifier(
        model,
        hub_id.name,
        preprocessing,
        device,
        f"transformers-hub:{hub_id.repo}",
        f"transformers {hub_id.repo} ({model.config.model_type}, {model.config.num_labels} "
        f"classes, {device})",
    )


# --------------------------------------------------------------------------- open_clip

_ENGINES: dict[tuple[str, str], ClipEngine] = {}


def _open_clip_weights(repo: str) -> str:
    """Download (or find in the cache) the repo's weights: safetensors, else a vetted pickle."""
    from huggingface_hub import hf_hub_download

    names = ["open_clip_model.safetensors"]
    if repo in hub.VETTED_PICKLE_REPOS:
        names.append("open_clip_pytorch_model.bin")
    errors = []
    for filename in names:
        try:
            return hf_hub_download(repo, filename)
        except Exception as error:  # noqa: BLE001 - try the next allowed file
            errors.append(error)
    raise errors[-1]


def load_open_clip_hub(
    hub_id: hub.HubId, device: torch.device, allow_list: bool = True
) -> ClipEngine:
    """An open_clip engine for ``hf-hub:org/repo`` from the Hub snapshot (local-dir loading,
    so a missing weight file is an error, never a randomly initialised model).

    ``allow_list=False`` for models the Space owner registered in code (BioCLIP)."""
    key = (hub_id.repo, str(device))
    if key in _ENGINES:
        return _ENGINES[key]
    import open_clip
    from huggingface_hub import hf_hub_download

    prepare(hub_id, allow_list)
    try:
        weights = _open_clip_weights(hub_id.repo)
        snapshot = Path(hf_hub_download(hub_id.repo, "open_clip_config.json")).parent
        if Path(weights).parent != snapshot:
            raise OSError("config and weights come from different snapshots; retry")
        model, _, _ = open_clip.create_model_and_transforms(
            f"local-dir:{snapshot}", device="cpu", weights_only=True
        )
        tokenizer = open_clip.get_tokenizer(f"local-dir:{snapshot}")
    except Exception as error:  # noqa: BLE001 - every failure becomes one clear message
        raise load_error(hub_id, error) from error
    engine = ClipEngine(
        model,
        tokenizer,
        f"open_clip-hub:{hub_id.repo}",
        device,
        f"open_clip {hub_id.name} ({device})",
    )
    _ENGINES[key] = engine
    return engine


def release_engine(repo: str) -> None:
    """Forget the engines of ``repo`` (its views still hold theirs until they go)."""
    for key in [k for k in _ENGINES if k[0] == repo]:
        del _ENGINES[key]


def clip_view(
    hub_id: hub.HubId,
    list_name: str | None,
    device: torch.device,
    settings: Settings,
    name: str,
    template: str | None = None,
    allow_list: bool = True,
) -> ClipPromptView:
    """A concept view (``list_name`` None) or a zero-shot classifier over a class list."""
    engine = load_open_clip_hub(hub_id, device, allow_list)
    if list_name is None:
        return engine.view(name, (), settings.clip_template if template is None else template)
    classes, list_template = class_list(list_name)
    view = engine.view(
        name,
        classes,
        template or list_template,
        description=f"{len(classes)}-class zero-shot on {engine.description}",
    )
    view.text_embeddings()  # encode the class names now, not on the first request
    return view


# --------------------------------------------------------------------------- registry


def prepare(hub_id: hub.HubId, allow_list: bool = True) -> None:
    """Before a Hub load: allow-list, cache repair, size and safetensors from the metadata."""
    if allow_list:
        hub.check_allowed(hub_id)
    removed = hub.repair_cache(hub_id.repo)
    if hub.hub_online():
        hub.check_metadata(hub_id)  # then the removed files download again now
    elif removed:
        raise OSError(_incomplete(hub_id, removed))
    elif not hub.cached_weights(hub_id):  # fail in milliseconds, before building the network
        raise OSError(
            f"{hub_id.name} is not in the Hub cache ({hf_cache_dir()}) and the Hub cannot be "
            f"reached ({hub.unreachable_reason()})"
        )


def _incomplete(hub_id: hub.HubId, removed: list[str]) -> str:
    return (
        f"the cached download of {hub_id.name} was incomplete ({', '.join(removed)}); it "
        "was removed and is downloaded again on the next try"
    )


def load_error(hub_id: hub.HubId, error: BaseException) -> OSError:
    removed = hub.repair_cache(hub_id.repo)
    if removed:
        return OSError(_incomplete(hub_id, removed))
    source = f"the Hugging Face Hub ({hub_id.repo})"
    return hub_error(hub_id.name, source, hf_cache_dir(), error)


def resolve_hub_id(text: str) -> hub.HubId | None:
    """The Hub model ``text`` names (a prefixed id, or a plain ``org/repo`` whose library its
    files tell, allow-list checked before any file is read); None for other names."""
    hub_id = hub.parse_hub_id(text)
    if hub_id is not None:
        return hub_id
    repo = hub.plain_repo_id(text)
    if repo is None:
        return None
    hub.check_allowed(hub.HubId("transformers", repo))
    return hub.HubId(detect_library(repo), repo)


def split_name(name: str) -> tuple[hub.HubId, str | None] | None:
    """``(hub id, class list or None)`` for a Hub registry name, None for other names."""
    base, _, list_name = name.partition("@")
    hub_id = resolve_hub_id(base)
    if hub_id is None:
        return None
    if list_name and hub_id.kind != "open_clip":
        raise ValueError(f"{name!r}: a class list applies to open_clip (hf-hub:) models only")
    return hub_id, list_name or None


def hub_spec(name: str) -> ModelSpec | None:
    """The registry entry of a Hub id (allow-list checked at once), None for other names."""
    parsed = split_name(name)
    if parsed is None:
        return None
    hub_id, list_name = parsed
    hub.check_allowed(hub_id)
    canonical = hub_id.name + (f"@{list_name}" if list_name else "")
    if list_name is not None:
        class_list(list_name)  # unknown list: a clear error now
    build: Callable[[Settings], ExplainableModel]
    if hub_id.kind == "timm":
        task, summary = "classifier", f"timm classifier {hub_id.repo} from the Hub"
        build = lambda s: load_timm_classifier(hub_id, s.torch_device)  # noqa: E731
    elif hub_id.kind == "transformers":
        task, summary = "classifier", f"transformers classifier {hub_id.repo} from the Hub"
        build = lambda s: load_transformers_classifier(hub_id, s.torch_device)  # noqa: E731
    elif list_name is None:
        task, summary = "concepts", f"open_clip {hub_id.repo} from the Hub: concept prompts"
        build = lambda s: clip_view(hub_id, None, s.torch_device, s, canonical)  # noqa: E731
    else:
        task, summary = "classifier", f"open_clip {hub_id.repo}: zero-shot over {list_name}"
        build = lambda s: clip_view(hub_id, list_name, s.torch_device, s, canonical)  # noqa: E731
    return ModelSpec(
        canonical,
        summary,
        task,
        _bounded(hub_id.repo, build),
        attention=attention_hint(hub_id),
        release=lambda: _unload(hub_id.repo),
    )


def _bounded(
    repo: str, build: Callable[[Settings], ExplainableModel]
) -> Callable[[Settings], ExplainableModel]:
    """``build``, with ``repo`` kept from the cache bound while it loads and stays loaded, and
    the cache trimmed to ``FINERCAM_HUB_CACHE_MB`` once it has loaded."""

    def load(settings: Settings) -> ExplainableModel:
        cache_bound.mark_in_use(repo)
        try:
            model = build(settings)
        except BaseException:
            cache_bound.release(repo)
            raise
        cache_bound.trim_cache()
        return model

    return load


def _unload(repo: str) -> None:
    release_engine(repo)
    cache_bound.release(repo)


register_resolver(hub_spec)
