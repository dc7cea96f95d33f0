"""CLIP (open_clip) split at the input of the last vision block, with prompt heads.

One :class:`ClipEngine` per (model, weights, device) holds the open_clip model, its tokenizer
and a bounded cache of text embeddings per prompt text. Heads are light views over it
(:class:`ClipPromptView`): free-text concept prompts (``clip-vit-b16``), the 200 CUB species
names (``cub200-clip-zeroshot``, in :mod:`app.models.zoo.cub`), the synthetic species of the demo.
All views of one engine share its ``trunk_key``, so changing prompts re-runs only the tail and
the text encoder, never the image trunk.

Logits are the model's own scaled cosine similarities:
``logit_scale.exp() * normalize(image) @ normalize(text).T (+ logit_bias)``.

Preprocessing resizes the whole image to the model's input size (no centre crop, so the map
covers everything the user sees) and normalises with the model's own mean/std
(``model.visual.preprocess_cfg``).
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from app.config import Settings
from app.models.adapters.vit import (
    AttentionView,
    OpenClipVisionSplit,
    open_clip_split,
    timm_vit_layers,
)
from app.models.base import ExplainableModel, layers_with_parameters, linear_over
from app.models.hub.downloads import hf_cache_dir, hub_error
from app.models.preprocess import to_tensor
from app.models.sharing import LRUDict, shared_instance
from app.models.weights import WeightsFileError, freeze
from app.models.zoo.demo_assets import (
    TINYCLIP_META,
    TINYCLIP_WEIGHTS,
    register_tinyclip_config,
    tinyclip_meta,
)

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "a photo of a {}."
TEXT_CACHE_ENTRIES = 4096
_TEXT_BATCH = 256
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def apply_template(prompt: str, template: str | None) -> str:
    """``template`` with ``{}`` replaced by ``prompt``; ``""``/``"{}"`` leave the prompt as is."""
    if not template or template == "{}":
        return prompt
    if "{}" not in template:
        raise ValueError(f"prompt template {template!r} must contain '{{}}' where the prompt goes")
    return template.replace("{}", prompt, 1)


class ClipEngine:
    """An open_clip model split for CAM, with a cached text encoder.

    Args:
        model: An open_clip ``CLIP``/``CustomTextCLIP`` whose ``visual`` is a
            ``VisionTransformer`` without attentional pooling.
        tokenizer: The model's tokenizer (``open_clip.get_tokenizer``).
        key: Identifies model + weights (the ``trunk_key`` of every view).
        device: Where the model runs.
        description: One line: model, weights, device.
        target: ViT target layer: ``norm1`` (the last block's ``ln_1`` output, default) or
            ``residual`` (the residual stream entering the last block); see
            :mod:`app.models.adapters.vit`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        key: str,
        device: torch.device | str = "cpu",
        description: str = "",
        target: str = "norm1",
        pooling: str | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.model = freeze(model.to(self.device))
        self.tokenizer = tokenizer
        self.split = open_clip_split(self.model.visual, target, pooling)
        self.pooling = getattr(self.split, "pooling", "token")
        self.base_key = key
        self.key = f"{key}#{self.split.target}#{self.pooling}"
        self.description = description or key
        visual = self.model.visual
        cfg = dict(getattr(visual, "preprocess_cfg", {}) or {})
        size = cfg.get("size", visual.image_size)
        size = (size, size) if isinstance(size, int) else tuple(size)
        self.input_size: tuple[int, int] = (int(size[0]), int(size[1]))  # (height, width)
        self.mean = tuple(cfg.get("mean", getattr(visual, "image_mean", None) or OPENAI_MEAN))
        self.std = tuple(cfg.get("std", getattr(visual, "image_std", None) or OPENAI_STD))
        self.interpolation = str(cfg.get("interpolation", "bicubic"))
        self.context_length = int(getattr(tokenizer, "context_length", 77) or 77)
        self._texts: LRUDict[str, torch.Tensor] = LRUDict(TEXT_CACHE_ENTRIES)
        self._poolings: dict[str, ClipEngine] = {self.pooling: self}

    def with_pooling(self, pooling: str | None) -> ClipEngine:
        """This model explained with another pooling (``token`` | ``avg``); shares the weights
        and the text cache. ``None`` keeps this engine."""
        if pooling is None or pooling == self.pooling:
            return self
        if pooling not in self._poolings:
            sibling = ClipEngine(
                self.model,
                self.tokenizer,
                self.base_key,
                self.device,
                self.description,
                self.split.target,
                pooling,
            )
            sibling._texts = self._texts
            sibling._poolings = self._poolings
            self._poolings[pooling] = sibling
        return self._poolings[pooling]

    def attention_view(self, head) -> AttentionView:
        """The image tower seen through its attention maps, scored by ``head`` (features ->
        logits); ValueError for towers whose blocks we cannot reproduce (timm towers)."""
        if not isinstance(self.split, OpenClipVisionSplit):
            raise ValueError("attention maps are available for open_clip ViT towers only")
        split = self.split
        return AttentionView(
            split, lambda tokens: head(split.pool(tokens)), f"{self.key}#attention"
        )

    # ---------------------------------------------------------------- image side

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        height, width = self.input_size
        return to_tensor(
            image, (width, height), self.mean, self.std, self.device, self.interpolation
        )

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid of an input of ``height x width`` pixels."""
        ph, pw = self.split.patch_size
        return height // ph, width // pw

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.split.trunk(x)

    def image_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Residual stream at the target layer -> unnormalised image embedding ``(N, D)``."""
        return self.split.features(tokens)

    # A linear head on CLIP features sees them L2-normalised, like CLIP's own logits.
    normalize_features = True

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Backbone protocol (:mod:`app.models.adapters.backbones`): the image embedding."""
        return self.split.features(tokens)

    @property
    def feature_dim(self) -> int:
        return self.embed_dim

    def to_grid(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.split.to_grid(tokens)

    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp()

    def logit_bias(self) -> torch.Tensor | None:
        return getattr(self.model, "logit_bias", None)

    def similarity_logits(self, image_features: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        """The model's own logits from an image embedding and normalised text embeddings."""
        logits = self.logit_scale() * F.normalize(image_features, dim=-1) @ texts.T
        bias = self.logit_bias()
        return logits if bias is None else logits + bias

    def cascade_layers(self) -> list[tuple[str, nn.Module]]:
        """The image tower's layers for the sanity check, output first: the projection into the
        joint space, ``ln_post``, each block from the last, ``ln_pre``, the patch embedding
        (the class and position embeddings are bare parameters and stay trained). A timm
        tower (SigLIP): open_clip's head, then the timm ViT's layers."""
        visual = self.model.visual
        if not isinstance(self.split, OpenClipVisionSplit):
            head = layers_with_parameters(visual, [visual.head])
            return [*head, *timm_vit_layers(visual.trunk)]
        stack = [visual.conv1, visual.ln_pre, *visual.transformer.resblocks, visual.ln_post]
        proj = [] if visual.proj is None else [("proj", linear_over(visual.proj.T))]
        return [*proj, *layers_with_parameters(visual, stack)]

    # ---------------------------------------------------------------- text side

    def token_count(self, text: str) -> int | None:
        """Tokens ``text`` needs including start/end tokens; None when the tokenizer can't say."""
        encode = getattr(self.tokenizer, "encode", None)
        if callable(encode) and hasattr(self.tokenizer, "sot_token_id"):
            return len(encode(text)) + 2
        inner = getattr(self.tokenizer, "tokenizer", None)
        if inner is not None and callable(inner):
            try:
                return len(inner(text)["input_ids"])
            except Exception:  # noqa: BLE001 - best effort for exotic tokenizers
                return None
        return None

    def truncation_notices(self, texts: Sequence[str]) -> list[str]:
        notices = []
        for text in texts:
            count = self.token_count(text)
            if count is not None and count > self.context_length:
                notices.append(
                    f"The prompt {text!r} needs {count} tokens; the text encoder reads "
                    f"{self.context_length}, so it was truncated."
                )
        return notices

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Normalised text embeddings ``(K, D)``, cached per text (bounded LRU)."""
        if not texts:
            return torch.zeros(0, self.embed_dim, device=self.device)
        found = {text: self._texts.get(text) for text in dict.fromkeys(texts)}
        missing = [text for text, embedding in found.items() if embedding is None]
        for start in range(0, len(missing), _TEXT_BATCH):
            chunk = missing[start : start + _TEXT_BATCH]
            tokens = self.tokenizer(chunk).to(self.device)
            with torch.no_grad():
                embeddings = self.model.encode_text(tokens, normalize=True).float()
            for text, embedding in zip(chunk, embeddings, strict=True):
                found[text] = embedding
                self._texts.put(text, embedding)
        return torch.stack([found[text] for text in texts])

    @functools.cached_property
    def embed_dim(self) -> int:
        """Dimension of the joint image-text embedding."""
        return int(self.encode_texts(["a"]).shape[1])

    def view(
        self,
        name: str,
        prompts: Sequence[str] = (),
        template: str | None = DEFAULT_TEMPLATE,
        description: str = "",
    ) -> ClipPromptView:
        return ClipPromptView(self, name, prompts, template, description)


class ClipPromptView(ExplainableModel):
    """A CLIP head over a list of prompts: one logit per prompt (labels = the prompts).

    Shares the engine's trunk (``trunk_key``); ``head_key`` hashes the templated texts.
    ``notices`` says which prompts were truncated to the text encoder's context length.
    """

    def __init__(
        self,
        engine: ClipEngine,
        name: str,
        prompts: Sequence[str] = (),
        template: str | None = DEFAULT_TEMPLATE,
        description: str = "",
    ) -> None:
        prompts = [str(p) for p in prompts]
        for prompt in prompts:
            if not prompt.strip():
                raise ValueError("prompts must not be empty")
        self.engine = engine
        self.name = name
        self.labels = tuple(prompts)
        self.template = template
        self.texts = tuple(apply_template(p, template) for p in prompts)
        self.device = engine.device
        self.trunk_key = engine.key
        self.head_key = _texts_key(self.texts) if self.texts else ""
        self.description = description or engine.description
        self.notices: tuple[str, ...] = tuple(engine.truncation_notices(self.texts))
        for notice in self.notices:
            log.warning("%s: %s", name, notice)
        self._embeddings: torch.Tensor | None = None

    def with_prompts(self, prompts: Sequence[str], template: str | None = None) -> ClipPromptView:
        """A view over ``prompts`` (``template`` None keeps this view's template)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts:
            raise ValueError("give at least one prompt")
        return ClipPromptView(
            self.engine,
            self.name,
            prompts,
            self.template if template is None else template,
            self.description,
        )

    @property
    def pooling(self) -> str:
        return self.engine.pooling

    def with_pooling(self, pooling: str | None) -> ClipPromptView:
        """The same prompts explained through another pooling (``token`` | ``avg``)."""
        engine = self.engine.with_pooling(pooling)
        if engine is self.engine:
            return self
        return ClipPromptView(engine, self.name, self.labels, self.template, self.description)

    def attention_view(self) -> AttentionView | None:
        try:
            return self.engine.attention_view(self._similarities)
        except ValueError:
            return None

    def text_embeddings(self) -> torch.Tensor:
        if self._embeddings is None:
            self._embeddings = self.engine.encode_texts(self.texts)
        return self._embeddings

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.engine.preprocess(image)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.engine.trunk(x)

    def tail(self, activation: torch.Tensor) -> torch.Tensor:
        return self._similarities(self.engine.image_features(activation))

    def _similarities(self, features: torch.Tensor) -> torch.Tensor:
        if not self.texts:
            raise ValueError(f"{self.name} takes prompts: call with_prompts([...]) first")
        return self.engine.similarity_logits(features, self.text_embeddings())

    def to_grid(self, activation: torch.Tensor) -> torch.Tensor:
        return self.engine.to_grid(activation)

    def class_embeddings(self) -> torch.Tensor | None:
        return self.text_embeddings() if self.texts else None

    def cascade_layers(self) -> list[tuple[str, nn.Module]]:
        """The head, then the image tower's layers (:meth:`ClipEngine.cascade_layers`). The
        head is the prompts' text embeddings, the zero-shot classifier's weights, held by this
        view alone: re-initialising it leaves the text encoder and its cache as they are. A view
        without prompts has no head."""
        head = [("head", linear_over(self.text_embeddings()))] if self.texts else []
        return [*head, *self.engine.cascade_layers()]

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        return self.engine.grid_size(height, width)


def _texts_key(texts: Sequence[str]) -> str:
    digest = hashlib.blake2b(digest_size=12)
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return f"prompts:{len(texts)}:{digest.hexdigest()}"


# --------------------------------------------------------------------------- loading


def load_open_clip(
    model_name: str,
    pretrained: str | None,
    device: torch.device | str = "cpu",
    target: str = "norm1",
) -> ClipEngine:
    """Build an engine through ``open_clip.create_model_and_transforms``.

    ``target`` is the ViT target layer (see :class:`ClipEngine`). ``pretrained`` is an open_clip
    tag (``openai``), a local checkpoint file (safetensors, or a
    torch file loaded with ``weights_only=True``), or ``None``/``""``/``"random"`` for random
    weights. ``model_name`` may be ``hf-hub:org/repo`` (then ``pretrained`` is ignored).

    Raises:
        ValueError: unknown model name, or a vision tower that cannot be split.
        WeightsFileError: a local checkpoint is missing, unsafe or does not fit.
        OSError: the weights could not be downloaded (names the model and the cache).
    """
    import open_clip

    tag = None if pretrained in (None, "", "none", "random") else str(pretrained)
    is_hub = model_name.startswith("hf-hub:")
    is_file = tag is not None and not is_hub and _looks_like_path(tag)
    if not is_hub and model_name not in open_clip.list_models():
        raise ValueError(
            f"unknown open_clip model {model_name!r}; use a name from open_clip.list_models() "
            "(e.g. ViT-B-16) or hf-hub:org/repo"
        )
    if is_file:
        if not Path(tag).is_file():
            raise WeightsFileError(f"CLIP checkpoint file {tag} does not exist")
    elif (
        tag is not None
        and not is_hub
        and tag not in open_clip.list_pretrained_tags_by_model(model_name)
    ):
        raise ValueError(
            f"unknown pretrained tag {tag!r} for {model_name}; known tags: "
            f"{', '.join(open_clip.list_pretrained_tags_by_model(model_name)) or 'none'}"
        )
    try:
        model, _, _ = open_clip.create_model_and_transforms(
            model_name, pretrained=tag, device="cpu", weights_only=True
        )
        tokenizer = open_clip.get_tokenizer(model_name)
    except Exception as error:  # noqa: BLE001 - every failure gets a clear message
        if is_file:
            raise WeightsFileError(
                f"could not load CLIP checkpoint {tag} into {model_name}: "
                f"{str(error).splitlines()[0] if str(error) else type(error).__name__}"
            ) from error
        if tag is None and not is_hub:
            raise
        detail = f"{model_name}, {tag}" if tag and not is_hub else model_name
        source = f"the Hugging Face Hub ({detail})"
        raise hub_error(f"open_clip model {model_name}", source, hf_cache_dir(), error) from error
    weights = "random weights" if tag is None and not is_hub else (tag or "hub weights")
    if is_file:
        weights = Path(tag).name
    device = torch.device(device)
    key = f"open_clip:{model_name}@{tag or ('hub' if is_hub else 'random')}"
    return ClipEngine(
        model, tokenizer, key, device, f"open_clip {model_name} ({weights}, {device})", target
    )


def _looks_like_path(tag: str) -> bool:
    return any(sep in tag for sep in ("/", "\\")) or tag.endswith(
        (".safetensors", ".pt", ".pth", ".bin")
    )


def shared_engine(model_name: str, pretrained: str | None, device: torch.device) -> ClipEngine:
    """One engine per (model, weights, device) in the process (shared by all its views)."""
    return shared_instance(
        ("open_clip", model_name, pretrained, str(device)),
        lambda: load_open_clip(model_name, pretrained, device),
    )


def settings_engine(settings: Settings) -> ClipEngine:
    return shared_engine(settings.clip_model, settings.clip_pretrained, settings.torch_device)


def tinyclip_engine(device: torch.device | str = "cpu") -> ClipEngine:
    """The shipped tiny CLIP, once per device (shared by demo-tinyclip and its species view)."""
    device = torch.device(device)

    def build() -> ClipEngine:
        name = register_tinyclip_config()
        if not TINYCLIP_WEIGHTS.is_file():
            raise WeightsFileError(
                f"tiny CLIP weights {TINYCLIP_WEIGHTS} are missing; train them with "
                "`python -m app.train.demo_tinyclip`"
            )
        engine = load_open_clip(name, str(TINYCLIP_WEIGHTS), device)
        meta = tinyclip_meta() if TINYCLIP_META.is_file() else {}
        accuracy = meta.get("zero_shot_species_accuracy")
        note = f", zero-shot species acc {accuracy:.1%}" if accuracy is not None else ""
        engine.description = f"tiny CLIP on synthetic birds (offline{note}, {device})"
        return engine

    return shared_instance(("demo-tinyclip", str(device)), build)
