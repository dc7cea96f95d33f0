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
from app.explain.attention import AttentionEntry, trunk_bytes
from app.explain.cache import BoundedLRU
from app.explain.combine import Contrast, contrast_for
from app.explain.decoded import Decoded, DecodedImages
from app.explain.faithfulness import (
    DEFAULT_TOP_FRACTION,
    Faithfulness,
    MapScore,
    MaskingTask,
    MethodComparison,
    map_label,
    maps_at_input,
    masked_batch_size,
    score_images,
    score_maps,
)
from app.explain.fgcam import FGCAMTrace, named_stack, record
from app.explain.gamma import AUTO_CANDIDATES, GAMMA_GRID, GammaChoice, choose_gamma
from app.explain.gradients import GradientEntry, ProgressFn
from app.explain.methods import (
    CamMethod,
    EntrySource,
    ModelInput,
    available_methods,
    get_method,
)
from app.explain.metrics import (
    ConfidenceDrop,
    PerturbationCurve,
    baseline_image,
    perturbation_curve,
)
from app.explain.references import reference_weights, select_references
from app.explain.render import DEFAULT_COLORMAP, finish_maps, overlay_maps, side_by_side
from app.explain.settings import ExplainSettings
from app.models.adapters.vit import BlockState
from app.models.base import ExplainableModel, PoolingChoice, PromptedModel

log = logging.getLogger(__name__)

#: A cache entry: feature-grid gradients (CAM methods) or attention gradients (ViT methods).
Entry = GradientEntry | AttentionEntry

DEFAULT_CACHE_ENTRIES = 64
DEFAULT_CACHE_BYTES = 1 << 30
TOP_K = 5


@dataclass(frozen=True)
class ConceptPrompts:
    """Free-text classes for a CLIP model: the target concept and those it is contrasted with.

    Checked where made: the target is a valid prompt, and at least one contrast differs from it
    (contrasts equal to the target are dropped). A request with prompts explains the target
    (class 0) against every contrast (manual references).
    """

    target: str
    contrasts: Sequence[str] | str
    template: str | None = None

    def __post_init__(self) -> None:
        target = inputs.validate_prompt(self.target, name="target concept")
        contrasts = tuple(
            p for p in inputs.parse_prompts(self.contrasts) if p.casefold() != target.casefold()
        )
        if not contrasts:
            raise inputs.InvalidInputError(
                "Give at least one contrast prompt different from the target."
            )
        object.__setattr__(self, "target", target)
        object.__setattr__(self, "contrasts", contrasts)

    def class_prompts(self) -> tuple[str, ...]:
        """The prompts in class order: the target (class 0), then the contrasts."""
        return (self.target, *self.contrasts)

    def settings(self, settings: ExplainSettings) -> ExplainSettings:
        """``settings`` contrasting class 0 (the target) with every contrast."""
        return replace(
            settings,
            target=0,
            reference_mode="manual",
            manual_references=tuple(range(1, len(self.contrasts) + 1)),
            top_t=len(self.contrasts),
        )


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
    colormap: str = DEFAULT_COLORMAP

    def composite(self, strip: GammaStrip | None = None) -> Image.Image:
        """Both overlays side by side with titles (and the γ strip under them), for download."""
        names = ", ".join(ref.name for ref in self.references) or "none"
        thumbnails = None
        if strip is not None:
            thumbnails = [
                (strip.caption(i, self.gamma), picture)
                for i, picture in enumerate(strip.overlays(colormap=self.colormap))
            ]
        return side_by_side(
            [
                (f"CAM ({self.method}): {self.target.name}", self.cam_overlay),
                (f"Finer-CAM (γ={self.gamma:g}): {self.target.name} − γ·[{names}]",
                 self.finer_overlay),
            ],
            thumbnails,
            colormap=self.colormap,
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
    colormap: str = DEFAULT_COLORMAP
    #: The model's device: the overlays are rendered there when the panels' are.
    device: torch.device | str | None = None

    def overlays(self, opacity: float = 0.5, colormap: str | None = None) -> list[np.ndarray]:
        """One overlay per γ, at the image's size (in the strip's colour map by default)."""
        pictures = overlay_maps(
            self.image, self.maps, opacity, colormap or self.colormap, self.device
        )
        return list(pictures)

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
        self.scores: BoundedLRU[Faithfulness | MethodComparison] = BoundedLRU(
            max_entries * 4, max(1, max_bytes // 8), _result_bytes
        )
        # The preprocessed input and its blurred twin (what masked pixels become), per image:
        # the blur costs as much as a small model's forward, and every re-score needs it.
        self.masking: BoundedLRU[tuple[torch.Tensor, torch.Tensor]] = BoundedLRU(
            max_entries, max(1, max_bytes // 8), _pair_bytes
        )

    def explain(
        self,
        model_name: str,
        image: Any,
        settings: ExplainSettings = ExplainSettings(),
        progress: ProgressFn | None = None,
        *,
        prompts: ConceptPrompts | None = None,
    ) -> Explanation:
        """CAM | Finer-CAM of ``image`` (anything :func:`inputs.load_image` takes): of the
        model's classes, or of ``prompts`` on a CLIP model (the target against its contrasts)."""
        return self._explain(self._request(model_name, image, settings, prompts), progress)

    def prepare_batch(
        self,
        model_name: str,
        images: Sequence[Any],
        settings: ExplainSettings = ExplainSettings(),
    ) -> None:
        """Cache what explaining each of ``images`` at ``settings`` needs — its entry and the
        gradients of its target and references — for all of them in one forward and one
        batched backward (images preprocessed to different sizes: one pass per size), so the
        per-image calls that follow (:meth:`explain`, :meth:`gamma_strip`,
        :meth:`faithfulness`) run no model. Methods whose entries cannot share a pass are
        prepared one image at a time. An image or batch that cannot be prepared is left to
        those calls, which report the error for that image alone."""
        requests = []
        for image in images:
            try:
                requests.append(self._request(model_name, image, settings))
            except inputs.InvalidInputError as error:
                log.debug("not prepared in the batch: %s", error)
        try:
            self._prepare_batch(requests)
        except (inputs.InvalidInputError, ValueError, RuntimeError) as error:
            log.warning("batched preparation failed (%s); explaining one image at a time", error)

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
        """CAM(target) | Finer-CAM(target − γ·contrast) for free-text prompts on a CLIP model:
        :meth:`explain` with :class:`ConceptPrompts` made of the three texts.

        Only the tail and text encoder run when prompts change: the image trunk is cached.
        """
        prompts = ConceptPrompts(target_prompt, contrast_prompts, template)
        return self.explain(model_name, image, settings, progress, prompts=prompts)

    def cached(
        self,
        model_name: str,
        image: Any,
        settings: ExplainSettings = ExplainSettings(),
        *,
        prompts: ConceptPrompts | None = None,
    ) -> bool:
        """Whether :meth:`explain` would run no model (entry and every gradient it needs are
        cached; new prompts run the text encoder), so a slider move can be answered outside the
        queue. FG-CAM: always False."""
        return self._from_cache(self._request(model_name, image, settings, prompts))

    def methods_for(self, model_name: str) -> list[CamMethod]:
        """The registered methods that run on a model (attention methods only for ViTs)."""
        return available_methods(self._get_model(model_name))

    def gamma_strip(
        self,
        model_name: str,
        image: Any,
        settings: ExplainSettings = ExplainSettings(),
        *,
        auto: bool = False,
        gammas: Sequence[float] = GAMMA_GRID,
        prompts: ConceptPrompts | None = None,
    ) -> GammaStrip:
        """Finer maps at every γ of ``gammas`` (no model call when the image is cached) and,
        with ``auto``, the γ picked by :func:`app.explain.gamma.choose_gamma` (one batched
        forward). ``settings.gamma`` is ignored; ``prompts`` as in :meth:`explain`."""
        request = self._request(model_name, image, settings, prompts)
        return self._gamma_strip(request, auto, gammas)

    def faithfulness(
        self,
        model_name: str,
        image: Any,
        settings: ExplainSettings = ExplainSettings(),
        top_fraction: float = DEFAULT_TOP_FRACTION,
        *,
        prompts: ConceptPrompts | None = None,
    ) -> Faithfulness:
        """How much removing the top ``top_fraction`` of the CAM and of the Finer map of
        :meth:`explain` (with ``prompts``: their references are the contrasts) lowers the
        target against its references: one batched forward of the masked images, cached per
        image and map settings (opacity aside)."""
        request = self._request(model_name, image, settings, prompts)
        noun = "look-alike" if prompts is None else "contrast"
        return self._faithfulness(request, top_fraction, noun)

    def faithfulness_batch(
        self,
        model_name: str,
        images: Sequence[Any],
        settings: Sequence[ExplainSettings],
        top_fraction: float = DEFAULT_TOP_FRACTION,
    ) -> list[list[Faithfulness | None]]:
        """:meth:`faithfulness` of every image at every one of ``settings`` (``[i][j]``: image
        ``i`` at ``settings[j]``), the masked images of them all in one forward (one per
        preprocessed size and number of references, chunked as the compare view's), cached so
        the per-image calls that follow run no model. None where an image cannot be scored:
        its own :meth:`faithfulness` call reports why."""
        top_fraction = inputs.validate_top_fraction(top_fraction)
        results: list[list[Faithfulness | None]] = [[None] * len(settings) for _ in images]
        todo: list[tuple[int, int, _Request, _Prepared, np.ndarray]] = []
        tasks: list[MaskingTask] = []
        for i, image in enumerate(images):
            for j, each in enumerate(settings):
                try:
                    request = self._request(model_name, image, each)
                    hit = self.scores.get(_score_key("faithfulness", request, top_fraction))
                    if isinstance(hit, Faithfulness):
                        results[i][j] = replace(hit, cached=True)
                        continue
                    prep, maps = self._panel_maps(request)
                    tasks.append(self._masking_task(request, prep, maps))
                    todo.append((i, j, request, prep, maps))
                except inputs.InvalidInputError as error:
                    log.debug("not scored in the batch: %s", error)
        try:
            drops = score_images(tasks, top_fraction)
        except (ValueError, RuntimeError) as error:
            log.warning("batched faithfulness failed (%s); scoring one image at a time", error)
            return results
        for (i, j, request, prep, maps), drop in zip(todo, drops, strict=True):
            result = _faithfulness_of(request, prep, maps, drop, top_fraction, "look-alike")
            self.scores.put(_score_key("faithfulness", request, top_fraction), result)
            results[i][j] = result
        return results

    def compare_methods(
        self,
        model_name: str,
        image: Any,
        settings: ExplainSettings = ExplainSettings(),
        *,
        slower: bool = False,
        top_fraction: float = DEFAULT_TOP_FRACTION,
        prompts: ConceptPrompts | None = None,
    ) -> MethodComparison:
        """Every method of the model × {CAM, Finer} at ``settings``' γ and references (or
        ``prompts``, as in :meth:`explain`), scored in one batched forward and sorted by relative
        drop, highest first. Gradient methods read the one cached entry; Score-CAM and FG-CAM (of
        ``settings.method``) run only with ``slower``."""
        request = self._request(model_name, image, settings, prompts)
        return self._compare(request, slower, top_fraction)

    def comparison_curves(
        self, model_name: str, image: Any, comparison: MethodComparison, steps: int = 20
    ) -> tuple[PerturbationCurve, PerturbationCurve]:
        """Deletion and insertion curves of every map of ``comparison`` (on request: they cost
        ``steps + 1`` forwards per map, batched)."""
        model = self._get_model(model_name)
        x = model.preprocess(self._load(image).image)
        at_input = maps_at_input(comparison.maps, x)
        batch = masked_batch_size(x, len(comparison.maps) * (steps + 1))
        return tuple(  # type: ignore[return-value]
            perturbation_curve(model.logits, x, at_input, comparison.target_index, mode=mode,
                               steps=steps, batch_size=batch)
            for mode in ("deletion", "insertion")
        )  # fmt: skip

    def _request(
        self,
        model_name: str,
        image: Any,
        settings: ExplainSettings,
        prompts: ConceptPrompts | None = None,
    ) -> _Request:
        """The one path of every request, classifier or concepts: the settings checked (once),
        the model (with its prompts and pooling), the decoded image."""
        settings = settings.validated()
        model = self._get_model(model_name)
        if prompts is not None:
            if not isinstance(model, PromptedModel):
                raise inputs.InvalidInputError(f"Model {model_name!r} does not take text prompts.")
            model = model.with_prompts(list(prompts.class_prompts()), template=prompts.template)
            settings = prompts.settings(settings)
        return _Request(_with_pooling(model, settings.pooling), self._load(image), settings)

    def _gamma_strip(self, request: _Request, auto: bool, gammas: Sequence[float]) -> GammaStrip:
        gammas = tuple(inputs.validate_gamma(g) for g in gammas)
        model, image = request.model, request.decoded.image
        prep = self._prepare(request)
        target, references, x = prep.target, prep.references, prep.x
        contrasts = [contrast_for(target, references, prep.weights, gamma) for gamma in gammas]
        maps = self._maps(request, prep, contrasts)
        strip = GammaStrip(gammas, maps, np.asarray(image), target, tuple(references),
                           colormap=request.settings.colormap, device=model.device)  # fmt: skip
        if auto:
            pick = [i for i, gamma in enumerate(gammas) if gamma in AUTO_CANDIDATES] or list(
                range(len(gammas))
            )
            strip.auto = choose_gamma(
                model.logits, model.preprocess(image) if x is None else x, maps[pick],
                prep.entry.logits, target, references, [gammas[i] for i in pick],
            )  # fmt: skip
        return strip

    def _faithfulness(
        self, request: _Request, top_fraction: float, reference_noun: str
    ) -> Faithfulness:
        top_fraction = inputs.validate_top_fraction(top_fraction)
        key = _score_key("faithfulness", request, top_fraction)
        hit = self.scores.get(key)
        if isinstance(hit, Faithfulness):
            return replace(hit, cached=True)
        prep, maps = self._panel_maps(request)
        drop = self._drops(request, prep, maps, top_fraction)
        result = _faithfulness_of(request, prep, maps, drop, top_fraction, reference_noun)
        self.scores.put(key, result)
        return result

    def _panel_maps(self, request: _Request) -> tuple[_Prepared, np.ndarray]:
        """The request's preparation and its two panels' finished maps (CAM, Finer)."""
        prep = self._prepare(request)
        return prep, self._maps(request, prep, _panel_contrasts(prep, request.settings.gamma))

    def _compare(self, request: _Request, slower: bool, top_fraction: float) -> MethodComparison:
        top_fraction = inputs.validate_top_fraction(top_fraction)
        key = _score_key("compare", replace(request, settings=replace(request.settings, method="")),
                         slower, top_fraction)  # fmt: skip
        hit = self.scores.get(key)
        if isinstance(hit, MethodComparison):
            return replace(hit, cached=True)
        candidates, on_request = self._candidates(request, slower)
        maps, meta, first = [], [], None
        for method, fgcam in candidates:
            settings = replace(request.settings, method=method.name, fgcam=fgcam)
            sub = replace(request, settings=settings)
            prep = self._prepare(sub)
            first = first or prep
            maps.append(self._maps(sub, prep, _panel_contrasts(prep, request.settings.gamma)))
            meta += [(method, False, fgcam), (method, True, fgcam)]
        assert first is not None  # every model has a gradient method
        stack = np.concatenate(maps)
        drop = self._drops(request, first, stack, top_fraction)
        scores = [
            _map_score(map_label(m.label, finer, fgcam), m.name, finer, fgcam, drop, i, stack)
            for i, (m, finer, fgcam) in enumerate(meta)
        ]
        order = sorted(range(len(scores)), key=lambda i: -scores[i].relative_drop)
        model = request.model
        result = MethodComparison(
            target=model.labels[first.target], target_index=first.target,
            references=tuple(model.labels[r] for r in first.references),
            top_fraction=top_fraction, scores=tuple(scores[i] for i in order),
            maps=stack[order], image=np.asarray(request.decoded.image), on_request=on_request,
            device=model.device,
        )  # fmt: skip
        self.scores.put(key, result)
        return result

    def _candidates(
        self, request: _Request, slower: bool
    ) -> tuple[list[tuple[CamMethod, bool]], tuple[str, ...]]:
        """(method, FG-CAM) pairs to compare, and the labels of the slower ones left out:
        Score-CAM (a forward per channel) and FG-CAM of the active method (a pass per layer)."""
        model = request.model
        methods = available_methods(model)
        fast = [(m, False) for m in methods if m.uses_gradients]
        slow = [(m, False) for m in methods if not m.uses_gradients]
        active = get_method(request.settings.method)
        if model.fgcam_layers() is not None and not active.is_attention:
            slow.append((active, True))
        if slower:
            return fast + slow, ()
        return fast, tuple(map_label(m.label, False, fgcam) for m, fgcam in slow)

    def _drops(
        self, request: _Request, prep: _Prepared, maps: np.ndarray, top_fraction: float
    ) -> ConfidenceDrop:
        """Every map's confidence drops, in one batched forward of the masked images."""
        task = self._masking_task(request, prep, maps)
        return score_maps(
            task.logits_fn,
            task.x,
            maps,
            prep.target,
            prep.references,
            top_fraction,
            prep.entry.logits,
            baseline=task.blurred,
        )

    def _masking_task(self, request: _Request, prep: _Prepared, maps: np.ndarray) -> MaskingTask:
        """What scoring ``maps`` needs: the input and its blurred twin (cached per image), the
        target, its references (at least one) and the unmasked logits."""
        if not prep.references:
            raise inputs.InvalidInputError(
                "Faithfulness needs at least one reference class to contrast the target with."
            )
        model = request.model
        key = (model.trunk_key, request.decoded.digest)
        pair = self.masking.get(key)
        if pair is None:
            x = model.preprocess(request.decoded.image) if prep.x is None else prep.x
            pair = (x, baseline_image(x, "blur"))
            self.masking.put(key, pair)
        x, blurred = pair
        target, references = prep.target, tuple(prep.references)
        return MaskingTask(model.logits, x, blurred, maps, target, references, prep.entry.logits)

    def _load(self, image: Any) -> Decoded:
        """The validated RGB image and its digest; a recent upload is not decoded again."""
        return self.decoded.load(image, self.max_side, _decode)

    def _explain(self, request: _Request, progress: ProgressFn | None) -> Explanation:
        model, settings = request.model, request.settings
        prep = self._prepare(request)
        entry, target, references, weights = prep.entry, prep.target, prep.references, prep.weights
        notices = [*model.notices, *prep.notices]  # e.g. truncated prompts
        contrasts = _panel_contrasts(prep, settings.gamma)
        maps = self._maps(request, prep, contrasts, progress)
        cam, finer_map = maps
        pixels = np.asarray(request.decoded.image)
        cam_overlay, finer_overlay = overlay_maps(
            pixels, maps, settings.opacity, settings.colormap, model.device
        )
        if not finer_map.any():
            notices.append(
                "The Finer-CAM map is empty: no region raises the target over its references at "
                "this γ. Lower γ or pick other references."
            )
        return Explanation(
            model=model.name,
            method=prep.method.label,
            gamma=settings.gamma,
            image=pixels,
            cam=cam,
            finer=finer_map,
            cam_overlay=cam_overlay,
            finer_overlay=finer_overlay,
            target=_score(model, entry, target),
            references=tuple(
                _score(model, entry, ref, weight)
                for ref, weight in zip(references, weights, strict=True)
            ),
            top=tuple(_score(model, entry, int(k)) for k in np.argsort(-entry.logits)[:TOP_K]),
            notices=tuple(notices),
            cached=prep.cached,
            pooling=model.pooling,
            colormap=settings.colormap,
        )

    def _prepare_batch(self, requests: Sequence[_Request]) -> None:
        """:meth:`prepare_batch` of requests on one model and settings: the images whose entry
        (or reusable trunk) is not cached yet, stacked per preprocessed size."""
        if not requests:
            return
        model, settings = requests[0].model, requests[0].settings
        method = get_method(settings.method)
        source = method.entry_source(model, settings)
        todo: dict[str, _Request] = {}
        for request in requests:
            digest = request.decoded.digest
            if self.entries.get(source.entry_key(digest)) is None and (
                self.trunks.get(source.trunk_key(digest)) is None
            ):
                todo.setdefault(digest, request)
        by_size: dict[tuple[int, ...], list[tuple[_Request, torch.Tensor]]] = {}
        for request in todo.values():
            x = model.preprocess(request.decoded.image)
            by_size.setdefault(tuple(x.shape), []).append((request, x))
        for group in by_size.values():
            batch = torch.cat([x for _, x in group])
            entries = _guarded(lambda batch=batch: source.compute_batch(batch), model)
            method.prepare_batch(
                [(entry, self._contrast(model, entry, settings)) for entry in entries]
            )
            for (request, _), entry in zip(group, entries, strict=True):
                digest = request.decoded.digest
                self.trunks.put(source.trunk_key(digest), entry.trunk_output)
                self.entries.put(source.entry_key(digest), entry)

    def _contrast(
        self, model: ExplainableModel, entry: Entry, settings: ExplainSettings
    ) -> Contrast:
        """The target, references and weights a request at ``settings`` explains, for
        ``entry``."""
        target = _target_index(model, entry, settings.target)
        references, _ = self._references(model, entry, target, settings)
        weights = reference_weights(references, entry.probabilities, settings.weighting)
        return contrast_for(target, references, weights, settings.gamma)

    def _from_cache(self, request: _Request) -> bool:
        model, settings = request.model, request.settings
        if settings.fgcam:
            return False
        method = get_method(settings.method)
        entry = self.entries.get(
            method.entry_source(model, settings).entry_key(request.decoded.digest)
        )
        if entry is None:
            return False
        return method.is_ready(entry, self._contrast(model, entry, settings))

    def _prepare(self, request: _Request) -> _Prepared:
        """What every rendering of a request starts from: the cache entry, the target, its
        references and their weights, what the method needs of them (their gradients, in one
        batched backward) and the input where the method still needs it."""
        model, settings, image = request.model, request.settings, request.decoded.image
        method = get_method(settings.method)
        source = method.entry_source(model, settings)
        entry, cached = self._entry(model, image, request.decoded.digest, source)
        target = _target_index(model, entry, settings.target)
        references, notices = self._references(model, entry, target, settings)
        weights = reference_weights(references, entry.probabilities, settings.weighting)
        method.prepare(entry, contrast_for(target, references, weights, settings.gamma))
        x = model.preprocess(image) if method.needs_input(entry) else None
        return _Prepared(method, source, entry, cached, target, references, weights, notices, x)

    def _maps(
        self,
        request: _Request,
        prep: _Prepared,
        contrasts: Sequence[Contrast],
        progress: ProgressFn | None = None,
    ) -> np.ndarray:
        """Finished maps ``(len(contrasts), H, W)`` in [0, 1] at the image size.

        Every map the service renders (the two panels, a γ strip, auto-γ candidates) comes
        through here: the method's pre-ReLU maps, or FG-CAM's from the method's channel weights.
        """
        if request.settings.fgcam:
            raws = self._fgcam_maps(request, prep, contrasts)
        else:
            given = ModelInput(request.model, prep.x, progress)
            raws = np.concatenate([prep.method.raw_map(prep.entry, c, given) for c in contrasts])
        # The maps may have grown the entry (new gradients, Score-CAM logits): re-inserting it
        # counts those bytes against the cache bound now rather than at the next image.
        self.entries.put(prep.source.entry_key(request.decoded.digest), prep.entry)
        return finish_maps(raws, request.decoded.image.size, request.model.device)

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
        self, request: _Request, prep: _Prepared, contrasts: Sequence[Contrast]
    ) -> np.ndarray:
        """Raw FG-CAM maps of each contrast, propagated together from one recorded pass."""
        model, settings, x = request.model, request.settings, prep.x
        layers = model.fgcam_layers()
        if layers is None:
            raise inputs.InvalidInputError(
                f"FG-CAM needs a plain CNN (conv/BN/ReLU/pool layers or a torchvision ResNet); "
                f"{model.name} is not one. Turn off high resolution for this model."
            )
        key = (model.trunk_key, request.decoded.digest)
        trace = self.traces.get(key)
        if trace is None:
            trace = record(layers, model.preprocess(request.decoded.image) if x is None else x)
            self.traces.put(key, trace)
        weights = np.concatenate(
            [prep.method.channel_weights(prep.entry, c, ModelInput(model, x)) for c in contrasts]
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

    def _entry(
        self, model: ExplainableModel, image: Image.Image, digest: str, source: EntrySource
    ) -> tuple[Entry, bool]:
        key = source.entry_key(digest)
        entry = self.entries.get(key)
        if entry is not None:
            return entry, True
        x = model.preprocess(image)
        trunk_key = source.trunk_key(digest)
        entry = _guarded(lambda: source.compute(x, self.trunks.get(trunk_key)), model)
        self.trunks.put(trunk_key, entry.trunk_output)
        self.entries.put(key, entry)
        return entry, False

    def _references(
        self, model: ExplainableModel, entry: Entry, target: int, settings: ExplainSettings
    ) -> tuple[list[int], list[str]]:
        notices: list[str] = []
        if settings.reference_mode == "manual":
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
class _Request:
    """One request on its single path through the service: see
    :meth:`ExplanationService._request`."""

    model: ExplainableModel
    decoded: Decoded
    settings: ExplainSettings


@dataclass(frozen=True)
class _Prepared:
    """The start of every rendering: see :meth:`ExplanationService._prepare`."""

    method: CamMethod
    source: EntrySource
    entry: Entry
    cached: bool
    target: int
    references: list[int]
    weights: np.ndarray
    notices: list[str]
    x: torch.Tensor | None


def _panel_contrasts(prep: _Prepared, gamma: float) -> tuple[Contrast, Contrast]:
    """The two panels' contrasts: the target alone (CAM) and target − γ·references (Finer)."""
    return Contrast(prep.target), contrast_for(prep.target, prep.references, prep.weights, gamma)


def _score_key(kind: str, request: _Request, *extra: Any) -> tuple[Any, ...]:
    """Cache key of a faithfulness result: what the maps depend on (not how they are coloured)."""
    model = request.model
    settings = replace(request.settings, opacity=0.0, colormap="")
    return (kind, model.trunk_key, model.head_key, request.decoded.digest, settings, *extra)


def _faithfulness_of(
    request: _Request,
    prep: _Prepared,
    maps: np.ndarray,
    drop: ConfidenceDrop,
    top_fraction: float,
    reference_noun: str,
) -> Faithfulness:
    """The faithfulness line of the two panels' ``maps`` (CAM, Finer) from their drops."""
    method, labels = prep.method.name, request.model.labels
    cam, finer = (
        _map_score(label, method, i == 1, request.settings.fgcam, drop, i, maps)
        for i, label in enumerate(("CAM", "Finer-CAM"))
    )
    return Faithfulness(
        target=labels[prep.target], references=tuple(labels[r] for r in prep.references),
        top_fraction=top_fraction, pixels_masked=drop.pixels_masked, cam=cam, finer=finer,
        reference_noun=reference_noun,
    )  # fmt: skip


def _map_score(
    label: str,
    method: str,
    finer: bool,
    fgcam: bool,
    drop: ConfidenceDrop,
    index: int,
    maps: np.ndarray,
) -> MapScore:
    return MapScore(
        label=label, method=method, finer=finer, fgcam=fgcam,
        relative_drop=float(drop.relative_drop[index]),
        probability_drop=float(drop.probability_drop[index]), empty=not maps[index].any(),
    )  # fmt: skip


def _pair_bytes(pair: tuple[torch.Tensor, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in pair)


def _result_bytes(result: Faithfulness | MethodComparison) -> int:
    return result.nbytes()


def _with_pooling(model: ExplainableModel, pooling: str | None) -> ExplainableModel:
    """``model`` explained through ``pooling`` (CLIP models); a clear error for the others."""
    if pooling is None:
        return model
    if not isinstance(model, PoolingChoice):
        raise inputs.InvalidInputError(
            f"The pooling choice applies to CLIP models; {model.name} pools its own way."
        )
    try:
        return model.with_pooling(pooling)
    except ValueError as error:
        raise inputs.InvalidInputError(str(error)) from error


def _decode(source: Any, max_side: int) -> Image.Image:
    return inputs.load_image(source, max_side=max_side)


def _guarded(compute: Callable[[], Entry], model: ExplainableModel) -> Entry:
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
