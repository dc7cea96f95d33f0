"""Pieces both subcommands share: option parsing, the model and service, loaders, bad files."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from app.config import Settings, resolve_device
from app.explain.inputs import InvalidInputError, validate_gamma
from app.explain.methods import get_method
from app.explain.references import REFERENCE_MODES, WEIGHTINGS
from app.explain.service import ExplanationService
from app.models.base import ExplainableModel

from .datasets import CliError
from .output_files import MapWriter


def say(message: str) -> None:
    """A line on stderr that does not break a running progress bar."""
    tqdm.write(message, file=sys.stderr)


def split_list(values: Iterable[str] | str | None) -> list[str]:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]`` (repeatable and comma-separated options)."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [part.strip() for value in values for part in str(value).split(",") if part.strip()]


def parse_methods(values: Iterable[str] | str | None, default: str = "gradcam") -> list[str]:
    """Validated CAM method names, de-duplicated, in the order given."""
    names = split_list(values) or [default]
    methods: list[str] = []
    for name in names:
        try:
            method = get_method(name).name
        except ValueError as error:
            raise CliError(str(error)) from error
        if method not in methods:
            methods.append(method)
    return methods


def parse_gammas(values: Iterable[str] | str | None, default: float = 0.6) -> list[float]:
    """Validated γ values, sorted, de-duplicated."""
    texts = split_list(values)
    if not texts:
        return [default]
    try:
        return sorted({validate_gamma(text, name="--gamma") for text in texts})
    except InvalidInputError as error:
        raise CliError(str(error)) from error


def check_choice(value: str, choices: Sequence[str], flag: str) -> str:
    if value not in choices:
        raise CliError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")
    return value


def gamma_tag(gamma: float) -> str:
    """γ as used in file names and CSV keys: ``0.6`` -> ``0.6``, ``1.0`` -> ``1``."""
    return f"{gamma:g}"


@dataclass
class Session:
    """The model and the one explanation service of a run."""

    settings: Settings
    model_name: str
    model: ExplainableModel
    service: ExplanationService
    notice: str | None = None
    extras: dict[str, str] = field(default_factory=dict)
    maps: MapWriter = field(default_factory=MapWriter)


def check_model(model_name: str) -> None:
    """Fail early (exit 2) on a model name the registry does not know."""
    from app.models.registry import get_spec

    try:
        spec = get_spec(model_name)
    except ValueError as error:
        raise CliError(str(error)) from error
    except ImportError as error:  # an adapter module that cannot be imported
        raise CliError(f"the model registry could not be loaded: {error}") from error
    if spec.task == "concepts" and model_name.startswith("hf-hub:"):
        raise CliError(
            f"{model_name} is a concept (prompt) model; the CLI explains classifiers. For an "
            f"open_clip Hub model add a class list: {model_name}@cub200 (or @birds525, "
            "@cars196, @imagenet)"
        )


def open_session(
    model_name: str, device: str | None, threads: int | None = None, allow_fallback: bool = True
) -> Session:
    """Settings from the environment, ``--device`` on top; load ``model_name`` once.

    Unknown models, devices that are not there and models that cannot load are
    :class:`CliError` s (exit 2) naming what to do. When the registry serves a model's offline
    fallback instead (no network, no head file), ``allow_fallback=False`` makes that an error
    too: numbers measured on the fallback must not be reported under the model's name.
    """
    from app.models.registry import ModelLoadError, ModelRegistry

    if threads:
        torch.set_num_threads(int(threads))
    settings = Settings.from_env()
    if device:
        settings = replace(settings, device=device)
    try:
        resolve_device(settings.device)
    except ValueError as error:
        raise CliError(str(error)) from error
    check_model(model_name)
    registry = ModelRegistry(settings)
    try:
        model = registry.get(model_name)
    except (ModelLoadError, OSError, RuntimeError, ValueError) as error:
        raise CliError(f"could not load model {model_name!r}: {error}") from error
    service = ExplanationService(
        lambda name: registry.get(name),
        max_entries=settings.cache_entries,
        max_bytes=settings.cache_mb << 20,
        max_side=settings.max_side,
    )
    notice = registry.notice(model_name)
    if notice and not allow_fallback:
        raise CliError(
            f"{notice} The batch CLI never uses another model in place of "
            f"{model_name!r}; details: {registry.details() or notice}"
        )
    if notice:
        say(f"warning: {notice}")
    return Session(settings, model_name, model, service, notice)


def check_reference_options(reference_mode: str, weighting: str, top_t: int) -> None:
    check_choice(reference_mode, REFERENCE_MODES, "--reference-mode")
    check_choice(weighting, WEIGHTINGS, "--weighting")
    if top_t < 1:
        raise CliError(f"--top-t must be at least 1, got {top_t}")


def make_loader(dataset: Dataset, workers: int, batch_size: int = 1) -> DataLoader:
    """Decode images in ``workers`` background processes (0: in this process), in order, as
    lists of up to ``batch_size`` items."""
    workers = max(0, int(workers))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=list,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )


def default_workers() -> int:
    return min(4, max(0, (os.cpu_count() or 1) - 1))


class BadFiles:
    """Files that could not be processed: warned about as they happen, listed at the end."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str]] = []

    def add(self, name: str, message: str) -> None:
        self.entries.append((name, message))
        say(f"warning: skipping {name}: {message}")

    def __len__(self) -> int:
        return len(self.entries)

    def report(self, out: Path | None = None) -> None:
        """List every bad file on stderr (and in ``out/bad_files.txt`` when given)."""
        if out is not None:
            path = out / "bad_files.txt"
            if self.entries:
                path.write_text("".join(f"{name}\t{message}\n" for name, message in self.entries))
            elif path.exists():
                path.unlink()
        if not self.entries:
            return
        say(f"{len(self.entries)} file(s) could not be processed:")
        for name, message in self.entries:
            say(f"  {name}: {message}")


def exit_code(done: int, skipped: int, bad: int) -> int:
    """0 when anything succeeded (or was already done), 1 when every file was bad."""
    return 0 if done or skipped or not bad else 1
