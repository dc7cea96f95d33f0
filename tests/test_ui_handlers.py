"""Every event handler of both tabs, fed an empty and an invalid value of each of its inputs,
through Gradio's own processing (preprocess, handler, postprocess) on the real app.

A page event may answer bad input only with a warning (its outputs left as they were): never
an error, which the browser shows as a red "Error" badge on every output, and never a value
its output components cannot take (``ComponentProcessingError``). The named API endpoints are
left out: API clients are answered with errors on purpose.

All runs share one event loop (and so Gradio's worker threads), each identical payload of an
event runs once, and the compare tab's deletion/insertion curves take 2 steps instead of 20: a
curve's resolution changes neither its handler's checks nor the figure's type.
"""

from __future__ import annotations

import asyncio
import copy
import functools
from pathlib import Path
from typing import Any

import gradio as gr
import pytest
from appserver import running_server
from gradio.state_holder import SessionState
from gradio.utils import get_upload_folder

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def server():
    with running_server() as srv:
        yield srv


def _not_an_image() -> dict[str, Any]:
    folder = Path(get_upload_folder()) / "finercam-test-not-an-image"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "notes.png"
    path.write_text("definitely not a picture\n" * 20)
    return {"path": str(path), "orig_name": "notes.png", "meta": {"_type": "gradio.FileData"}}


def _variants(component: Any) -> tuple[Any, ...]:
    """An empty and an invalid value of what a visitor can give ``component``. A slider, a
    radio and a dropdown one cannot type into only offer values Gradio accepts (it checks them
    before any handler): their ends."""
    if isinstance(component, gr.Slider):
        return component.minimum, component.maximum
    fixed = isinstance(component, gr.Dropdown) and not component.allow_custom_value
    if isinstance(component, gr.Radio) or (fixed and not component.multiselect):
        return tuple(value for _, value in component.choices[:1] + component.choices[-1:])
    if isinstance(component, gr.Image):
        return None, _not_an_image()
    if isinstance(component, gr.Dropdown) and component.multiselect:
        return [], ["no such class"]
    if isinstance(component, gr.Checkbox):
        return None, True
    return "", "no such value {"


def _page_events(demo: gr.Blocks) -> list[Any]:
    """Every handler a page runs with inputs (not the named API endpoints, not examples)."""
    return [
        fn for fn in demo.fns.values()
        if fn.fn is not None and fn.inputs and fn.api_visibility == "private"
    ]  # fmt: skip


async def _run(demo: gr.Blocks, fn: Any, payload: list[Any]) -> str | None:
    """What went wrong when the page ran ``fn`` on ``payload`` (``None``: nothing)."""
    try:
        await demo.process_api(fn, copy.deepcopy(payload), SessionState(demo))
    except gr.Error as error:
        if error.visible:  # the fast path's invisible decline hands over to the queue
            return f"error {error.message!r}"
    except Exception as error:  # noqa: BLE001 - ComponentProcessingError and the like
        return f"{type(error).__name__}: {str(error)[:300]}"
    return None


def _payloads(fn: Any) -> dict[str, list[Any]]:
    """Each distinct payload of ``fn``: its inputs' defaults with one of them empty or invalid,
    keyed by which input and type changed (the first such key of a repeated payload)."""
    baseline = [component.value for component in fn.inputs]
    payloads: dict[str, list[Any]] = {}
    for index, component in enumerate(fn.inputs):
        for variant in _variants(component):
            payload = [*baseline[:index], variant, *baseline[index + 1 :]]
            if payload not in payloads.values():
                payloads[f"{fn.name}[{index}={type(component).__name__}]"] = payload
    return payloads


async def _failures(demo: gr.Blocks, events: list[Any]) -> list[str]:
    failures = []
    for fn in events:
        for where, payload in _payloads(fn).items():
            problem = await _run(demo, fn, payload)
            if problem:
                failures.append(f"{where}: {problem}")
    return failures


def test_every_page_handler_answers_empty_and_invalid_inputs_without_an_error(server, monkeypatch):
    warnings: list[str] = []
    monkeypatch.setattr(gr, "Warning", lambda message, *a, **k: warnings.append(message))
    service = server.service
    curves = functools.partial(service.comparison_curves, steps=2)
    monkeypatch.setattr(service, "comparison_curves", curves)
    events = _page_events(server.demo)
    assert len(events) > 30  # both tabs' live controls, Explain buttons, loaders
    assert asyncio.run(_failures(server.demo, events)) == []
    assert any("image" in message.lower() for message in warnings)
    assert any("colour map" in message.lower() for message in warnings)
