"""Registry of explainable models: short names -> factories, loaded lazily and once.

Adapter modules register their models at import (like timm/open_clip factories). Models that
need the Hub name an offline ``fallback``; when loading fails the registry serves the fallback
and records a visible notice — never a silent stub.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from app.config import Settings
from app.models.base import ExplainableModel

log = logging.getLogger(__name__)

Task = Literal["classifier", "concepts"]

# Modules whose import registers models; listed here so the registry is complete on first use.
ADAPTER_MODULES = ("app.models.demo", "app.models.clip", "app.models.cub", "app.models.torchvision_cnn")


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
    """

    name: str
    summary: str
    task: Task
    build: Callable[[Settings], ExplainableModel]
    offline: bool = False
    fallback: str | None = None
    attention: bool | None = None


_SPECS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry (a later registration of the same name replaces it)."""
    _SPECS[spec.name] = spec
    return spec


def _load_adapter_modules() -> None:
    for module in ADAPTER_MODULES:
        importlib.import_module(module)


def model_specs(task: Task | None = None) -> list[ModelSpec]:
    """Registered specs, optionally only those of one task, in registration order."""
    _load_adapter_modules()
    return [spec for spec in _SPECS.values() if task is None or spec.task == task]


def get_spec(name: str) -> ModelSpec:
    """The spec named ``name``; ValueError listing the valid names otherwise."""
    _load_adapter_modules()
    if name not in _SPECS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(_SPECS)}")
    return _SPECS[name]


class ModelLoadError(RuntimeError):
    """A model could not be loaded (names the model and what to do)."""


class ModelRegistry:
    """Builds each model once, on first use, thread-safely; applies offline fallbacks."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self._loaded: dict[str, ExplainableModel] = {}
        self._notices: dict[str, str] = {}
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
            if name not in self._loaded:
                self._loaded[name] = self._build(spec)
            return self._loaded[name]

    def notice(self, name: str) -> str | None:
        """Why ``name`` is served by its fallback, if it is."""
        return self._notices.get(name)

    def _build(self, spec: ModelSpec) -> ExplainableModel:
        if self.settings.offline and not spec.offline and spec.fallback:
            self._notices[spec.name] = f"Offline mode: {spec.name} is served by {spec.fallback}."
            return self._build(get_spec(spec.fallback))
        try:
            log.info("loading model %s", spec.name)
            return spec.build(self.settings)
        except (OSError, RuntimeError, ValueError) as error:
            if spec.fallback is None:
                raise ModelLoadError(f"could not load {spec.name}: {error}") from error
            log.warning("could not load %s (%s); using %s", spec.name, error, spec.fallback)
            self._notices[spec.name] = (
                f"{spec.name} could not be loaded ({error}); showing the offline demo model "
                f"{spec.fallback} instead."
            )
            return self._build(get_spec(spec.fallback))

    def status(self) -> str:
        """One line for the UI: loaded models, where their weights came from, the device."""
        parts = [
            f"{name}: {model.description or 'loaded'}" for name, model in self._loaded.items()
        ]
        parts += list(self._notices.values())
        device = self.settings.torch_device
        return f"Device: {device}. " + (" | ".join(parts) if parts else "No model loaded yet.")
