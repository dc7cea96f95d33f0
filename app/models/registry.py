"""Registry of explainable models: short names -> factories, loaded lazily and once.

Adapter modules register their models at import (like timm/open_clip factories); resolvers
(:func:`register_resolver`) turn other names, such as Hub ids, into specs on demand. Models that
need the Hub name an offline ``fallback``; when loading fails the registry serves the fallback
and records a short visible notice — never a silent stub.

Each model loads under its own lock, so a slow download never blocks the others; the Hub is
probed once (a few seconds at most) before a Hub model loads, and while it is unreachable Hub
models load from the cache only. At most ``settings.max_loaded`` models built from the Hub stay
in memory (least recently used is unloaded, with a notice). :meth:`ModelRegistry.health` says
"degraded" while a load runs longer than ``STUCK_AFTER_S``.
"""

from __future__ import annotations

import gc
import importlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from app.config import Settings
from app.models.base import ExplainableModel

log = logging.getLogger(__name__)

Task = Literal["classifier", "concepts"]

# Modules whose import registers models; listed here so the registry is complete on first use.
ADAPTER_MODULES = (
    "app.models.zoo.clip_concepts",
    "app.models.zoo.cub",
    "app.models.zoo.imagenet",
    "app.models.zoo.demo",
    "app.models.hub.loading",
    "app.models.zoo.bioclip",
    "app.models.zoo.paper_models",
)
#: Per task, the models the dropdown lists first, in this order; the rest follow in registration
#: order. The page selects the first Hub model of its task (served by its offline fallback while
#: the Hub is unreachable), or the first offline one in offline mode, so these lists decide the
#: page's default model whatever order the modules above are imported in.
DEFAULT_MODELS: dict[Task, tuple[str, ...]] = {
    "classifier": ("birds525-dinov2", "cars196-dinov2", "demo-cnn"),
    "concepts": ("clip-vit-b16", "demo-tinyclip"),
}
STUCK_AFTER_S = 30.0
NOTICE_DETAIL_CHARS = 90


@dataclass(frozen=True)
class ModelSpec:
    """How to build one registered model.

    Attributes:
        name: Registry name (``demo-cnn``, ``cub200-clip-zeroshot`` ...).
        summary: One line for the UI dropdown and ``--help``.
        task: ``classifier`` (fixed labels) or ``concepts`` (takes prompts: ``with_prompts``).
        build: Factory from :class:`Settings` to an adapter.
        offline: True when the weights ship in the repository.
        fallback: Offline model served when this one cannot load (no network, missing file).
        attention: Whether it is a ViT whose attention maps LeGrad / attention-gradient read,
            so the UI can offer them before loading it; None when only loading tells.
        release: Called when the registry unloads the model (drop shared engines).
    """

    name: str
    summary: str
    task: Task
    build: Callable[[Settings], ExplainableModel]
    offline: bool = False
    fallback: str | None = None
    attention: bool | None = None
    release: Callable[[], None] | None = None


_SPECS: dict[str, ModelSpec] = {}
_RESOLVERS: list[Callable[[str], ModelSpec | None]] = []


def register_resolver(resolve: Callable[[str], ModelSpec | None]) -> None:
    """Add a function that names specs on demand (Hub ids); None = not its kind of name."""
    if resolve not in _RESOLVERS:
        _RESOLVERS.append(resolve)


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry (a later registration of the same name replaces it)."""
    _SPECS[spec.name] = spec
    return spec


def _load_adapter_modules() -> None:
    for module in ADAPTER_MODULES:
        importlib.import_module(module)


def model_specs(task: Task | None = None) -> list[ModelSpec]:
    """Registered specs, optionally only those of one task: the :data:`DEFAULT_MODELS` of each
    task first, in their listed order, then the others in registration order."""
    _load_adapter_modules()
    preferred = [name for names in DEFAULT_MODELS.values() for name in names]
    rank = {name: i for i, name in enumerate(preferred)}
    specs = sorted(_SPECS.values(), key=lambda spec: rank.get(spec.name, len(rank)))
    return [spec for spec in specs if task is None or spec.task == task]


def get_spec(name: str) -> ModelSpec:
    """The spec named ``name``; ValueError listing the valid names otherwise."""
    _load_adapter_modules()
    if name in _SPECS:
        return _SPECS[name]
    for resolve in _RESOLVERS:
        spec = resolve(name)
        if spec is not None:
            return spec
    raise ValueError(
        f"unknown model {name!r}; valid models: {', '.join(_SPECS)}, or a Hub id "
        "(org/repo, hf-hub:org/repo, timm:name)"
    )


class ModelLoadError(RuntimeError):
    """A model could not be loaded (names the model and what to do)."""


def _short(error: BaseException) -> str:
    """A few words for the notice (the full error is in :meth:`ModelRegistry.details`)."""
    from app.models.hub import policy as hub

    if isinstance(error, OSError) and "cache" in str(error) and not hub.hub_online():
        offline = "offline mode" if hub.user_offline() else "Hub unreachable"
        return f"{offline}, not in the local cache"
    text = str(error).split(". ")[0].strip() or type(error).__name__
    return text if len(text) <= NOTICE_DETAIL_CHARS else text[: NOTICE_DETAIL_CHARS - 1] + "…"


class ModelRegistry:
    """Builds each model once, on first use, under a per-model lock; applies offline fallbacks
    and an LRU bound on the models built from the Hub."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self._loaded: OrderedDict[str, ExplainableModel] = OrderedDict()
        self._hub_built: OrderedDict[str, None] = OrderedDict()  # LRU of Hub-built models
        self._notices: dict[str, str] = {}
        self._details: dict[str, str] = {}
        self._served_by: dict[str, str] = {}
        self._loading: dict[str, float] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def names(self, task: Task | None = None) -> list[str]:
        """Models offered: ``settings.models`` if set, offline ones only when offline."""
        specs = model_specs(task)
        if self.settings.models:
            wanted = set(self.settings.models)
            specs = [spec for spec in specs if spec.name in wanted]
        if self.settings.offline:
            specs = [spec for spec in specs if spec.offline]
        return [spec.name for spec in specs]

    def get(self, name: str) -> ExplainableModel:
        """The adapter for ``name`` (its offline fallback, with a notice, if it cannot load)."""
        spec = get_spec(name)
        with self._lock:
            if name in self._loaded:
                self._touch(name)
                return self._loaded[name]
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:  # only this model waits for its own load
            with self._lock:
                if name in self._loaded:
                    return self._loaded[name]
                self._loading[name] = time.monotonic()
            try:
                model = self._build(spec)
            finally:
                with self._lock:
                    self._loading.pop(name, None)
            with self._lock:
                self._loaded[name] = model
                self._locks.pop(name, None)  # later calls find the model; no lock to keep
                if not spec.offline and name not in self._served_by:
                    self._hub_built[name] = None
                evicted = self._evict(keep=name)
            for old in evicted:
                self._release(old)
            return model

    def loaded(self, name: str) -> bool:
        """Whether ``name`` is in memory now."""
        return name in self._loaded

    def hub_names(self, task: Task | None = None) -> list[str]:
        """Loaded models named by a Hub id (not registered), for the dropdowns."""
        names = []
        for name in list(self._loaded):
            if name in _SPECS or name in self._served_by:
                continue
            try:
                spec = get_spec(name)
            except ValueError:  # e.g. a custom class list that has been forgotten
                continue
            if task is None or spec.task == task:
                names.append(name)
        return names

    def serving(self, name: str) -> str:
        """The model that answers for ``name``: itself, or its fallback when it fell back.

        With the Hub unreachable, a Hub model not loaded yet is loaded now from the cache
        (quick: nothing touches the network), so the answer is what will really serve.
        """
        spec = get_spec(name)
        if name not in self._loaded and not spec.offline and spec.fallback:
            from app.models.hub import policy as hub

            if not hub.hub_online():
                try:
                    self.get(name)
                except ModelLoadError:
                    return name
        return self._served_by.get(name, name) if name in self._loaded else name

    def notice(self, name: str) -> str | None:
        """Why ``name`` is served by its fallback, or that it unloaded another model (short)."""
        return self._notices.get(name)

    def details(self) -> str:
        """The full error behind every notice, for a "details" view."""
        return "\n".join(f"- {name}: {text}" for name, text in self._details.items())

    def _touch(self, name: str) -> None:
        if name in self._hub_built:
            self._hub_built.move_to_end(name)

    def _evict(self, keep: str) -> list[str]:
        limit = max(1, self.settings.max_loaded)
        evicted = []
        while len(self._hub_built) > limit:
            old = next(n for n in self._hub_built if n != keep)
            del self._hub_built[old]
            self._loaded.pop(old, None)
            evicted.append(old)
        if evicted:
            self._notices[keep] = (
                f"Unloaded {', '.join(evicted)} to keep at most {limit} Hub models in memory "
                "(FINERCAM_MAX_LOADED); it reloads when picked again."
            )
        return evicted

    def _release(self, name: str) -> None:
        log.warning("unloaded model %s (LRU bound %d)", name, self.settings.max_loaded)
        try:
            release = get_spec(name).release
        except ValueError:
            release = None
        if release is not None:
            release()
        gc.collect()

    def _build(self, spec: ModelSpec) -> ExplainableModel:
        if self.settings.offline and not spec.offline and spec.fallback:
            self._notices[spec.name] = f"Offline mode: {spec.name} is served by {spec.fallback}."
            self._served_by[spec.name] = spec.fallback
            return self.get(spec.fallback)
        self._notices.pop(spec.name, None)
        self._served_by.pop(spec.name, None)
        if not spec.offline:
            from app.models.hub import policy as hub

            hub.hub_online()  # one short probe; unreachable -> cache only, no retry ladder
        try:
            log.info("loading model %s", spec.name)
            return spec.build(self.settings)
        except (OSError, RuntimeError, ValueError) as error:
            self._details[spec.name] = str(error)
            if spec.fallback is None:
                raise ModelLoadError(f"could not load {spec.name}: {error}") from error
            log.warning("could not load %s (%s); using %s", spec.name, error, spec.fallback)
            self._notices[spec.name] = (
                f"{spec.name} unavailable ({_short(error)}); serving {spec.fallback}."
            )
            self._served_by[spec.name] = spec.fallback
            return self.get(spec.fallback)

    def health(self) -> dict[str, object]:
        """``{"status": "ok" | "degraded", "loading": {name: seconds}}``; degraded while a load
        runs longer than :data:`STUCK_AFTER_S` (the server keeps serving other models)."""
        now = time.monotonic()
        with self._lock:
            loading = {name: round(now - t, 1) for name, t in self._loading.items()}
        stuck = any(seconds > STUCK_AFTER_S for seconds in loading.values())
        return {
            "status": "degraded" if stuck else "ok",
            "loading": loading,
            "loaded": list(self._loaded),
        }

    def status(self) -> str:
        """One short line for the UI: the device, the models serving, fallbacks in brief."""
        served = [name for name in list(self._loaded) if name not in self._served_by]
        text = f"Device: {self.settings.torch_device}. "
        text += f"Loaded: {', '.join(served)}." if served else "No model loaded yet."
        fallbacks = [f"{name}→{fallback}" for name, fallback in self._served_by.items()]
        if fallbacks:
            text += f" Fallback: {', '.join(fallbacks)} (details below)."
        return text
