"""The page's default model is the one ``DEFAULT_MODELS`` names, whatever the registration order.

Import order only changes the order in which modules register their models, so each test
re-registers the same specs in other orders (reversed, shuffled) and asks the page again.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from app.config import Settings
from app.models import registry
from app.models.registry import DEFAULT_MODELS, ModelRegistry, model_specs
from app.ui.tab_glue import default_model


def _orders() -> list[list[str]]:
    names = [spec.name for spec in model_specs()]
    shuffled = names[:]
    random.Random(0).shuffle(shuffled)
    return [names, names[::-1], shuffled]


@pytest.fixture(params=range(3), ids=["registered", "reversed", "shuffled"])
def registration_order(request, monkeypatch):
    """The registry's specs re-registered in one of three orders (restored afterwards)."""
    order = _orders()[request.param]
    specs = dict(registry._SPECS)
    monkeypatch.setattr(registry, "_SPECS", {name: specs[name] for name in order})
    return order


def _first_hub_model(task: str) -> str:
    specs = {spec.name: spec for spec in model_specs(task)}
    return next(name for name in DEFAULT_MODELS[task] if not specs[name].offline)


def _first_offline_model(task: str) -> str:
    specs = {spec.name: spec for spec in model_specs(task)}
    return next(name for name in DEFAULT_MODELS[task] if specs[name].offline)


@pytest.mark.parametrize("task", ["classifier", "concepts"])
def test_the_dropdown_starts_with_the_default_models(registration_order, task):
    names = [spec.name for spec in model_specs(task)]
    assert names[: len(DEFAULT_MODELS[task])] == list(DEFAULT_MODELS[task])


@pytest.mark.parametrize("task", ["classifier", "concepts"])
def test_online_the_page_selects_the_first_hub_model_listed(registration_order, task):
    models = ModelRegistry(replace(Settings.from_env(), offline=False, models=()))
    models.serving = lambda name: name  # what serves it is the fallback's business, not the list's
    assert default_model(models, task) == _first_hub_model(task)


@pytest.mark.parametrize("task", ["classifier", "concepts"])
def test_offline_the_page_selects_the_first_offline_model_listed(registration_order, task):
    models = ModelRegistry(replace(Settings.from_env(), offline=True, models=()))
    assert default_model(models, task) == _first_offline_model(task)


def test_the_defaults_are_the_papers_birds_and_clip():
    assert _first_hub_model("classifier") == "birds525-dinov2"
    assert _first_offline_model("classifier") == "demo-cnn"
    assert _first_hub_model("concepts") == "clip-vit-b16"
    assert _first_offline_model("concepts") == "demo-tinyclip"
