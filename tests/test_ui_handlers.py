"""Every event handler of both tabs, fed an empty and an invalid value of each of its inputs,
through Gradio's own processing (preprocess, handler, postprocess) on the real app.

A page event may answer bad input only with a warning (its outputs left as they were): never
an error, which the browser shows as a red "Error" badge on every output, and never a value
its output components cannot take (``ComponentProcessingError``). The named API endpoints are
left out: API clients are answered with errors on purpose.
"""

from __future__ import annotations

import asyncio
import copy
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


def _run(demo: gr.Blocks, fn: Any, payload: list[Any], warnings: list[str]) -> str | None:
    """What went wrong when the page ran ``fn`` on ``payload`` (``None``: nothing)."""
    try:
        asyncio.run(demo.process_api(fn, copy.deepcopy(payload), SessionState(demo)))
    except gr.Error as error:
        if error.visible:  # the fast path's invisible decline hands over to the queue
            return f"error {error.message!r}"
    except Exception as error:  # noqa: BLE001 - ComponentProcessingError and the like
        return f"{type(error).__name__}: {str(error)[:300]}"
    return None


def test_every_page_handler_answers_empty_and_invalid_inputs_without_an_error(server, monkeypatch):
    warnings: list[str] = []
    monkeypatch.setattr(gr, "Warning", lambda message, *a, **k: warnings.append(message))
    demo = server.demo
    events = _page_events(demo)
    assert len(events) > 30  # both tabs' live controls, Explain buttons, loaders
    failures = []
    for fn in events:
        baseline = [component.value for component in fn.inputs]
        for index, component in enumerate(fn.inputs):
            for variant in _variants(component):
                payload = [*baseline[:index], variant, *baseline[index + 1 :]]
                problem = _run(demo, fn, payload, warnings)
                if problem:
                    failures.append(f"{fn.name}[{index}={type(component).__name__}]: {problem}")
    assert failures == []
    assert any("image" in message.lower() for message in warnings)
    assert any("colour map" in message.lower() for message in warnings)
