"""The one explanation service behind the web UI, the API and the CLI.

It owns the caches: trunk activations per (trunk, image) and gradient entries per
(trunk, head, image). A request whose image and model were seen before re-renders from the
cache — new γ, T, reference mode, weighting, target or opacity never run the model again.
It knows nothing of Gradio.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from PIL import Image

from app.explain import inputs
from app.explain.attention import (
    DEFAULT_BLOCKS,
    AttentionEntry,
    compute_attention_entry,
    first_block,
    raw_attention_map,
    trunk_bytes,
)
from app.explain.cache import BoundedLRU
from app.explain.combine import Contrast, contrast_for
from app.explain.decoded import Decoded, DecodedImages
from app.explain.engine import channel_weights, raw_map
from app.explain.fgcam import FGCAMTrace, named_stack, record
from app.explain.gamma import AUTO_CANDIDATES, GAMMA_GRID, GammaChoice, choose_gamma
from app.explain.gradients import GradientEntry, ProgressFn, compute_entry
from app.explain.methods import METHODS, CamMethod, get_method
from app.explain.references import REFERENCE_MODES, reference_weights, select_references
from app.explain.render import finish_maps, overlay, side_by_side
from app.models.adapters.vit import AttentionView, BlockState
from app.models.base import ExplainableModel

log = logging.getLogger(__name__)

#: A cache entry: feature-grid gradients (CAM methods) or attention gradients (ViT methods).
Entry = GradientEntry | AttentionEntry

DEFAULT_CACHE_ENTRIES = 64
DEFAULT_CACHE_BYTES = 1 << 30
TOP_K = 5


@dataclass(frozen=True)
class ExplainSettings:
    """Everything that shapes a map besides the image and the model.

    Attributes:
        method: CAM method name (see :data:`app.explain.methods.METHODS`).
        gamma: Contrast strength γ (0 gives plain CAM).
        top_t: T, the number of reference classes.
        reference_mode: ``logits`` | ``weights`` | ``manual``.
        weighting: ``uniform`` | ``probability``.
        target: Class to explain (index or name); ``None`` = the predicted class.
        manual_references: Classes (indices or names) for ``reference_mode="manual"``.
        opacity: Heat-map opacity of the overlays, in [0, 1].
        fgcam: Raise both maps to a higher resolution with FG-CAM (plain CNNs and ResNets).
        fgcam_stop: FG-CAM's output layer: 0 = the input image (full resolution), i = the input
            of the i-th layer of the model's FG-CAM stack (see ``fgcam_stops``).
        fgcam_denoise: FG-CAM's SVD denoising of the components.
        pooling: For CLIP models, what is explained: ``token`` (the class token, what CLIP
            computes) or ``avg`` (the average-pooled surrogate of the official Finer-CAM CLIP
            tutorial); ``None`` keeps the model's own.
        attention_blocks: How many of a ViT's last blocks LeGrad / attention-gradient read;
            ``None`` = the method's default (:data:`app.explain.attention.DEFAULT_BLOCKS`).
    """

    method: str = "gradcam"
    gamma: float = 0.6
    top_t: int = 3
    reference_mode: str = "logits"
    weighting: str = "uniform"
    target: int | str | None = None
    manual_references: tuple[int | str, ...] = ()
    opacity: float = 0.5
    fgcam: bool = False
    fgcam_stop: int = 0
    fgcam_denoise: bool = False
    pooling: str | None = None
    attention_blocks: int | None = None


@dataclass(frozen=True)
class ClassScore:
    """One class with its score; ``weight`` is its w_d when it serves as a reference."""

    index: int
    name: str
    probability: float
    logit: float
    weight: float | None = None


@dataclass
class Explanation:
    """CAM and Finer-CAM of one image, at the (capped) image's size, with what produced them."""

    model: str
    method: str
    gamma: float
    image: np.ndarray
    cam: np.ndarray
    finer: np.ndarray
    cam_overlay: np.ndarray
    finer_overlay: np.ndarray
    target: ClassScore
    references: tuple[ClassScore, ...]
    top: tuple[ClassScore, ...]
    notices: tuple[str, ...] = ()
    cached: bool = False
    pooling: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def composite(self, strip: GammaStrip | None = None) -> Image.Image:
        """Both overlays side by side with titles (and the γ strip under them), for download."""
        names = ", ".join(ref.name for ref in self.references) or "none"
        thumbnails = None
        if strip is not None:
            thumbnails = [
                (strip.caption(i, self.gamma), picture)
                for i, picture in enumerate(strip.overlays())
            ]
        return side_by_side(
            [
                (f"CAM ({self.method}): {self.target.name}", self.cam_overlay),
                (f"Finer-CAM (γ={self.gamma:g}): {self.target.name} − γ·[{names}]",
                 self.finer_overlay),
            ],
            thumbnails,
        )  # fmt: skip

    def raw_maps(self) -> np.ndarray:
        """``(2, H, W)`` float32: [CAM, Finer-CAM] in [0, 1] at the image size."""
        return np.stack([self.cam, self.finer]).astype(np.float32)


@dataclass
class GammaStrip:
    """Finer maps of one image at every γ of a grid (from the cached gradients) and, when
    asked, the γ auto-γ picked among them."""

    gammas: tuple[float, ...]
    maps: np.ndarray
    image: np.ndarray
    target: int
    references: tuple[int, ...]
    auto: GammaChoice | None = None

    def overlays(self, opacity: float = 0.5) -> list[np.ndarray]:
        """One overlay per γ, at the image's size."""
        return [overlay(self.image, cam, opacity) for cam in self.maps]

    def caption(self, index: int, current: float | None = None) -> str:
        """``γ=0.4``, marked ``auto`` for auto-γ's choice and ``◀`` for the γ shown."""
        gamma = self.gammas[index]
        marks = ["auto"] if self.auto is not None and abs(self.auto.gamma - gamma) < 1e-9 else []
        if current is not None and abs(current - gamma) < 1e-9:
            marks.append("shown")
        return f"γ={gamma:g}" + (f" ({', '.join(marks)})" if marks else "")


class ExplanationService:
    """Explains images with any registered model, caching per image so sliders are free.

    Args:
        get_model: Resolves a model name to an adapter (the registry's ``get``).
        max_entries: Gradient entries kept (LRU).
        max_bytes: Approximate bytes of activations and gradients kept (LRU).
        max_side: Longest image side handed to the models (larger images are downscaled).
    """

    def __init__(
        self,
        get_model: Callable[[str], ExplainableModel],
        max_entries: int = DEFAULT_CACHE_ENTRIES,
        max_bytes: int = DEFAULT_CACHE_BYTES,
        max_side: int = inputs.DEFAULT_MAX_SIDE,
    ) -> None:
        self._get_model = get_model
        self.max_side = max_side
        self.entries: BoundedLRU[Entry] = BoundedLRU(max_entries, max_bytes, _entry_bytes)
        self.trunks: BoundedLRU[torch.Tensor | list[BlockState]] = BoundedLRU(
            max_entries, max_bytes, trunk_bytes
        )
        self.traces: BoundedLRU[FGCAMTrace] = BoundedLRU(
            max(1, max_entries // 4), max_bytes // 4, _trace_bytes
        )
        self.decoded = DecodedImages()

    def explain(
        self,
        model_name: str,
        image: Any,
        settings: ExplainSettings = ExplainSettings(),
        progress: ProgressFn | None = None,
    ) -> Explanation:
        """CAM | Finer-CAM for a classifier; ``image`` is anything :func:`inputs.load_image`
        takes."""
        model = _with_pooling(self._get_model(model_name), settings.pooling)
        return self._explain(model, self._load(image), settings, progress)

    def cached(
        self, model_name: str, image: Any, settings: ExplainSettings = ExplainSettings()
    ) -> bool:
        """Whether :meth:`explain` would run no model (entry and every gradient it needs are
        cached), so a slider move can be answered outside the queue. FG-CAM: always False."""
        model = _with_pooling(self._get_model(model_name), settings.pooling)
        return self._from_cache(model, self._load(image), settings)

    def concepts_cached(
        self,
        model_name: str,
        image: Any,
        target_prompt: str,
        contrast_prompts: Sequence[str] | str,
        settings: ExplainSettings = ExplainSettings(),
        template: str | None = None,
    ) -> bool:
        """:meth:`cached` for :meth:`explain_concepts` (new prompts run the text encoder)."""
        model, concept_settings = self._concept_model(
            model_name, target_prompt, contrast_prompts, settings, template
        )
        return self._from_cache(model, self._load(image), concept_settings)

    def methods_for(self, model_name: str) -> list[CamMethod]:
        """The methods that run on a model: attention methods only for ViTs we can read."""
        return available_methods(self._get_model(model_name))

    def explain_concepts(
        self,
        model_name: str,
        image: Any,
        target_prompt: str,
        contrast_prompts: Sequence[str] | str,
        settings: ExplainSettings = ExplainSettings(),
        template: str | None = None,
        progress: ProgressFn | None = None,
    ) -> Explanation:
        """CAM(target) | Finer-CAM(target − γ·contrast) for free-text prompts on a CLIP model.

        The target prompt is class 0; every contrast prompt is a reference (manual mode).
        Only the tail and text encoder run when prompts change: the image trunk is cached.
        """
        model, concept_settings = self._concept_model(
            model_name, target_prompt, contrast_prompts, settings, template
        )
        return self._explain(model, self._load(image), concept_settings, progress)

    def _concept_model(
        self,
        model_name: str,
        target_prompt: str,
        contrast_prompts: Sequence[str] | str,
        settings: ExplainSettings,
        template: str | None,
    ) -> tuple[ExplainableModel, ExplainSettings]:
        """The CLIP model over ``[target, *contrasts]`` and settings contrasting class 0 with
        them."""
        target = inputs.validate_prompt(target_prompt, name="target concept")
        contrasts = [
            p for p in inputs.parse_prompts(contrast_prompts) if p.casefold() != target.casefold()
        ]
        if not contrasts:
            raise inputs.InvalidInputError(
                "Give at least one contrast prompt different from the target."
            )
        concept_model = self._get_model(model_name)
        with_prompts = getattr(concept_model, "with_prompts", None)
        if with_prompts is None:
            raise inputs.InvalidInputError(f"Model {model_name!r} does not take text prompts.")
        model = _with_pooling(
            with_prompts([target, *contrasts], template=template), settings.pooling
        )
        concept_settings = replace(
            settings,
            target=0,
            reference_mode="manual",
            manual_references=tuple(range(1, len(contrasts) + 1)),
            top_t=len(contrasts),
        )
        return model, concept_settings

    def gamma_strip(
        self,
        model_name: str,
        image: Any,
        settings: ExplainSettings = ExplainSettings(),
        *,
        auto: bool = False,
        gammas: Sequence[float] = GAMMA_GRID,
    ) -> GammaStrip:
        """Finer maps at every γ of ``gammas`` (no model call when the image is cached) and,
        with ``auto``, the γ picked by :func:`app.explain.gamma.choose_gamma` (one batched
        forward). ``settings.gamma`` is ignored."""
        model = _with_pooling(self._get_model(model_name), settings.pooling)
        return self._gamma_strip(model, self._load(image), settings, auto, gammas)

    def concepts_gamma_strip(
        self,
        model_name: str,
        image: Any,
        target_prompt: str,
        contrast_prompts: Sequence[str] | str,
        settings: ExplainSettings = ExplainSettings(),
        template: str | None = None,
        *,
        auto: bool = False,
        gammas: Sequence[float] = GAMMA_GRID,
    ) -> GammaStrip:
        """:meth:`gamma_strip` for prompts on a CLIP model (as :meth:`explain_concepts`)."""
        model, concept_settings = self._concept_model(
            model_name, target_prompt, contrast_prompts, settings, template
        )
        return self._gamma_strip(model, self._load(image), concept_settings, auto, gammas)

    def _gamma_strip(
        self,
        model: ExplainableModel,
        decoded: Decoded,
        settings: ExplainSettings,
        auto: bool,
        gammas: Sequence[float],
    ) -> GammaStrip:
        gammas = tuple(inputs.validate_gamma(g) for g in gammas)
        image = decoded.image
        prep = self._prepare(model, image, settings, decoded.digest)
        target, references, x = prep.target, prep.references, prep.x
        contrasts = [contrast_for(target, references, prep.weights, gamma) for gamma in gammas]
        maps = self._maps(model, image, prep, contrasts, settings)
        entry = prep.entry
        strip = GammaStrip(gammas, maps, np.asarray(image), target, tuple(references))
        if auto:
            pick = [i for i, gamma in enumerate(gammas) if gamma in AUTO_CANDIDATES] or list(
                range(len(gammas))
            )
            strip.auto = choose_gamma(
                model.logits, model.preprocess(image) if x is None else x, maps[pick],
                entry.logits, target, references, [gammas[i] for i in pick],
            )  # fmt: skip
        return strip

    def _load(self, image: Any) -> Decoded:
        """The validated RGB image and its digest; a recent upload is not decoded again."""
        return self.decoded.load(image, self.max_side, _decode)

    def _explain(
        self,
        model: ExplainableModel,
        decoded: Decoded,
        settings: ExplainSettings,
        progress: ProgressFn | None,
    ) -> Explanation:
        gamma = inputs.validate_gamma(settings.gamma)
        opacity = inputs.validate_opacity(settings.opacity)
        image = decoded.image
        prep = self._prepare(model, image, settings, decoded.digest)
        entry, target, references, weights = prep.entry, prep.target, prep.references, prep.weights
        notices = [*getattr(model, "notices", ()), *prep.notices]  # e.g. truncated prompts
        finer = contrast_for(target, references, weights, gamma)
        contrasts = (Contrast(target), finer)
        cam, finer_map = self._maps(model, image, prep, contrasts, settings, progress)
        pixels = np.asarray(image)
        if not finer_map.any():
            notices.append(
                "The Finer-CAM map is empty: no region raises the target over its references at "
                "this γ. Lower γ or pick other references."
            )
        return Explanation(
            model=model.name,
            method=prep.method.label,
            gamma=gamma,
            image=pixels,
            cam=cam,
            finer=finer_map,
            cam_overlay=overlay(pixels, cam, opacity),
            finer_overlay=overlay(pixels, finer_map, opacity),
            target=_score(model, entry, target),
            references=tuple(
                _score(model, entry, ref, weight)
                for ref, weight in zip(references, weights, strict=True)
            ),
            top=tuple(_score(model, entry, int(k)) for k in np.argsort(-entry.logits)[:TOP_K]),
            notices=tuple(notices),
            cached=prep.cached,
            pooling=getattr(model, "pooling", None),
        )

    def _from_cache(
        self, model: ExplainableModel, decoded: Decoded, settings: ExplainSettings
    ) -> bool:
        if settings.fgcam:
            return False
        method = get_method(settings.method)
        key = _entry_key(model, decoded.digest, self._source(model, method, settings))
        entry = self.entries.get(key)
        if entry is None:
            return False
        target = _target_index(model, entry, settings.target)
        references, _ = self._references(model, entry, target, settings)
        if method.uses_gradients:  # feature-grid and attention methods alike
            return entry.has_gradients([target, *references])
        return entry.has_score_logits

    def _prepare(
        self, model: ExplainableModel, image: Image.Image, settings: ExplainSettings, digest: str
    ) -> _Prepared:
        """What every rendering of ``image`` (content ``digest``) under ``settings`` starts
        from: the cache entry, the target, its references and their weights, their gradients
        (one batched backward)."""
        method = get_method(settings.method)
        source = self._source(model, method, settings)
        entry, cached = self._entry(model, image, digest, source)
        target = _target_index(model, entry, settings.target)
        references, notices = self._references(model, entry, target, settings)
        weights = reference_weights(references, entry.probabilities, settings.weighting)
        if method.uses_gradients:
            entry.gradients([target, *references])
        needs_input = not (method.uses_gradients or entry.has_score_logits)
        x = model.preprocess(image) if needs_input else None  # Score-CAM's first use only
        return _Prepared(method, digest, source, entry, cached, target, references, weights,
                         notices, x)  # fmt: skip

    def _maps(
        self,
        model: ExplainableModel,
        image: Image.Image,
        prep: _Prepared,
        contrasts: Sequence[Contrast],
        settings: ExplainSettings,
        progress: ProgressFn | None = None,
    ) -> np.ndarray:
        """Finished maps ``(len(contrasts), H, W)`` in [0, 1] at the image size."""
        raws = self._raw_maps(model, image, prep.digest, prep.entry, contrasts, prep.method,
                              settings, prep.x, progress)  # fmt: skip
        # The maps may have grown the entry (new gradients, Score-CAM logits): re-inserting it
        # counts those bytes against the cache bound now rather than at the next image.
        self.entries.put(_entry_key(model, prep.digest, prep.source), prep.entry)
        return finish_maps(raws, image.size)

    def _raw_maps(
        self,
        model: ExplainableModel,
        image: Image.Image,
        digest: str,
        entry: Entry,
        contrasts: Sequence[Contrast],
        method: CamMethod,
        settings: ExplainSettings,
        x: torch.Tensor | None,
        progress: ProgressFn | None = None,
    ) -> np.ndarray:
        """Raw (pre-normalisation) maps ``(len(contrasts), h, w)``, one per contrast, from the
        cache.

        Every map the service renders (the two panels, a γ strip, auto-γ candidates) comes
        through here, so each method family plugs in at one place.
        """
        if method.is_attention:
            return np.concatenate([raw_attention_map(entry, contrast) for contrast in contrasts])
        if settings.fgcam:
            return self._fgcam_maps(model, image, digest, entry, contrasts, method, settings, x)
        return np.concatenate(
            [raw_map(entry, contrast, method, model, x, progress) for contrast in contrasts]
        )

    def fgcam_stops(self, model_name: str) -> list[tuple[str, int]]:
        """FG-CAM output layers of a model as (label, stop index); empty when unsupported.

        Offers the input (full resolution) and the input of every pooling layer, where the
        resolution changes.
        """
        layers = self._get_model(model_name).fgcam_layers()
        if layers is None:
            return []
        stops = [("input (full resolution)", 0)]
        for index, (name, module) in enumerate(named_stack(layers)):
            kind = type(module).__name__
            if "Pool" in kind:
                stops.append((f"{name} ({kind})", index))
        return stops

    def _fgcam_maps(
        self,
        model: ExplainableModel,
        image: Image.Image,
        digest: str,
        entry: GradientEntry,
        contrasts: Sequence[Contrast],
        method: CamMethod,
        settings: ExplainSettings,
        x: torch.Tensor | None,
    ) -> np.ndarray:
        """Raw FG-CAM maps of each contrast, propagated together from one recorded pass."""
        layers = model.fgcam_layers()
        if layers is None:
            raise inputs.InvalidInputError(
                f"FG-CAM needs a plain CNN (conv/BN/ReLU/pool layers or a torchvision ResNet); "
                f"{model.name} is not one. Turn off high resolution for this model."
            )
        key = (model.trunk_key, digest)
        trace = self.traces.get(key)
        if trace is None:
            trace = record(layers, model.preprocess(image) if x is None else x)
            self.traces.put(key, trace)
        weights = np.concatenate(
            [channel_weights(entry, contrast, method, model, x) for contrast in contrasts]
        )
        try:
            maps = trace.explain(
                torch.from_numpy(weights).to(trace.activation.device),
                stop_at=settings.fgcam_stop,
                denoise=settings.fgcam_denoise,
            )
        except ValueError as error:
            raise inputs.InvalidInputError(f"FG-CAM: {error}") from error
        return maps.float().cpu().numpy()

    def _source(
        self, model: ExplainableModel, method: CamMethod, settings: ExplainSettings
    ) -> _AttentionSource | None:
        """Where an attention method reads (view, method, blocks); None for feature-grid CAMs."""
        if not method.is_attention:
            return None
        if settings.fgcam:
            raise inputs.InvalidInputError(
                f"FG-CAM raises a CNN's feature-grid CAM to pixels; {method.label} reads a ViT's "
                "attention maps. Turn off high resolution for this method."
            )
        view = model.attention_view()
        if view is None:
            raise inputs.InvalidInputError(
                f"{method.label} reads a Vision Transformer's attention maps; {model.name} has "
                "none we can read. Pick Grad-CAM or another CAM method for this model."
            )
        blocks = settings.attention_blocks
        if blocks is None:
            blocks = min(DEFAULT_BLOCKS[method.name], view.num_blocks)
        try:
            first_block(view, blocks)
        except ValueError as error:
            raise inputs.InvalidInputError(f"{method.label}: {error}") from error
        return _AttentionSource(view, method.name, int(blocks))

    def _entry(
        self,
        model: ExplainableModel,
        image: Image.Image,
        digest: str,
        source: _AttentionSource | None = None,
    ) -> tuple[Entry, bool]:
        key = _entry_key(model, digest, source)
        entry = self.entries.get(key)
        if entry is not None:
            return entry, True
        x = model.preprocess(image)
        if source is None:
            trunk_key = (model.trunk_key, digest)
            compute = lambda: compute_entry(model, x, (), activation=self.trunks.get(trunk_key))  # noqa: E731
        else:
            trunk_key = (source.view.key, source.kind, f"blocks:{source.blocks}", digest)
            compute = lambda: compute_attention_entry(  # noqa: E731
                source.view, x, source.kind, source.blocks, self.trunks.get(trunk_key)
            )
        entry = _guarded(compute, model)
        self.trunks.put(trunk_key, entry.trunk_output)
        self.entries.put(key, entry)
        return entry, False

    def _references(
        self, model: ExplainableModel, entry: Entry, target: int, settings: ExplainSettings
    ) -> tuple[list[int], list[str]]:
        if settings.reference_mode not in REFERENCE_MODES:
            raise inputs.InvalidInputError(
                f"reference mode must be one of {', '.join(REFERENCE_MODES)}, "
                f"got {settings.reference_mode!r}"
            )
        notices: list[str] = []
        if settings.reference_mode == "manual":
            if not settings.manual_references:
                raise inputs.InvalidInputError("Pick at least one reference class for manual mode.")
            manual = [model.class_index(name) for name in settings.manual_references]
            top_t = len(manual)
        else:
            manual = []
            top_t, notice = inputs.validate_top_t(settings.top_t, entry.num_classes)
            notices += [notice] if notice else []
        embeddings = model.class_embeddings() if settings.reference_mode == "weights" else None
        choice = select_references(
            settings.reference_mode,
            target,
            top_t,
            entry.logits,
            None if embeddings is None else embeddings.detach().float().cpu().numpy(),
            manual,
        )
        notices += [choice.notice] if choice.notice else []
        return list(choice.indices), notices


@dataclass(frozen=True)
class _Prepared:
    """The start of every rendering: see :meth:`ExplanationService._prepare`."""

    method: CamMethod
    digest: str
    source: _AttentionSource | None
    entry: Entry
    cached: bool
    target: int
    references: list[int]
    weights: np.ndarray
    notices: list[str]
    x: torch.Tensor | None


@dataclass(frozen=True)
class _AttentionSource:
    """What an attention entry is computed from: the model's view, the method, the blocks."""

    view: AttentionView
    kind: str
    blocks: int


def _entry_key(
    model: ExplainableModel, digest: str, source: _AttentionSource | None = None
) -> tuple[str, ...]:
    if source is None:
        return (model.trunk_key, model.head_key, digest)
    return (source.view.key, model.head_key, digest, source.kind, str(source.blocks))


def _with_pooling(model: ExplainableModel, pooling: str | None) -> ExplainableModel:
    """``model`` explained through ``pooling`` (CLIP models); a clear error for the others."""
    if pooling is None:
        return model
    with_pooling = getattr(model, "with_pooling", None)
    if with_pooling is None:
        raise inputs.InvalidInputError(
            f"The pooling choice applies to CLIP models; {model.name} pools its own way."
        )
    try:
        return with_pooling(pooling)
    except ValueError as error:
        raise inputs.InvalidInputError(str(error)) from error


def available_methods(model: ExplainableModel) -> list[CamMethod]:
    """Feature-grid CAM methods for every model; attention methods for ViTs we can read."""
    has_attention = model.attention_view() is not None
    return [method for method in METHODS.values() if has_attention or not method.is_attention]


def _decode(source: Any, max_side: int) -> Image.Image:
    return inputs.load_image(source, max_side=max_side)


def _guarded(
    compute: Callable[[], Entry], model: ExplainableModel
) -> Entry:
    """Turn a GPU out-of-memory into a clear, user-facing error; the server keeps serving."""
    try:
        return compute()
    except torch.cuda.OutOfMemoryError as error:
        torch.cuda.empty_cache()
        raise inputs.InvalidInputError(
            f"The GPU ran out of memory explaining with {model.name}; try a smaller image or "
            "run on CPU (FINERCAM_DEVICE=cpu)."
        ) from error


def _target_index(model: ExplainableModel, entry: Entry, target: int | str | None) -> int:
    if target is None or target == "":
        return int(np.argmax(entry.logits))
    try:
        return model.class_index(target)
    except ValueError as error:
        raise inputs.InvalidInputError(str(error)) from error


def _score(
    model: ExplainableModel, entry: Entry, index: int, weight: float | None = None
) -> ClassScore:
    return ClassScore(
        index=index,
        name=model.labels[index],
        probability=float(entry.probabilities[index]),
        logit=float(entry.logits[index]),
        weight=None if weight is None else float(weight),
    )


def _entry_bytes(entry: Entry) -> int:
    return entry.nbytes()


def _trace_bytes(trace: FGCAMTrace) -> int:
    return trace.nbytes()
