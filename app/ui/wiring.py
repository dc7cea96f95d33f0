"""The event wiring every tab shares: the Explain button and its named API endpoint, the live
controls (γ, opacity, auto-γ, colour map, downloads), the strip, the model loader and the
explained example a tab opens on.

A tab supplies its parameter names, input widgets, a ``render(request, parts)`` and the part
lists of its own controls; :class:`TabWiring` does the rest, so a new tab is a layout plus a
renderer.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gradio as gr

from app.explain.faithfulness import Faithfulness
from app.explain.gradients import ProgressFn
from app.explain.service import (
    ConceptPrompts,
    ExplainSettings,
    Explanation,
    ExplanationService,
    GammaStrip,
)
from app.models.registry import ModelRegistry
from app.ui.landing import Landing
from app.ui.panels import (
    EVENT_PARTS,
    Panels,
    cached_first,
    event_values,
    live_handler,
    render_parts,
    strip_gamma,
)
from app.ui.tab_glue import (
    LIVE,
    DownloadDir,
    gpu,
    progress_fn,
    show_notices,
    status_line,
    user_errors,
)

if TYPE_CHECKING:
    from app.ui.compare_tab import CompareSource

log = logging.getLogger(__name__)

#: The message when Explain (or the API) is asked for without an image.
NO_IMAGE = "Image: upload an image first (or pick an example)."
#: Clears the download list in the browser (no server call): the panels are about to change.
CLEAR_FILES_JS = "() => null"

Render = Callable[..., dict[str, Any]]
#: ``(fn, inputs, outputs)`` of an event run on page load.
PageLoad = tuple[Callable[..., Any], list[Any], list[Any]]


def warned(fn: Callable[..., Any], outputs: int) -> Callable[..., Any]:
    """``fn`` for a page event: bad input becomes a warning toast naming the field and every
    output is left as it was (``gr.skip()``), so no output shows an "Error" badge."""
    checked = user_errors(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return checked(*args, **kwargs)
        except gr.Error as error:
            gr.Warning(str(error.message))
            return gr.skip() if outputs == 1 else (gr.skip(),) * outputs

    return wrapper


def api_answer(
    render: Render, params: Sequence[str], full: Sequence[str], values: Sequence[Any],
    progress: Any,
) -> tuple[Any, ...]:  # fmt: skip
    """What a named endpoint returns: every part of ``full`` for the request ``values``."""
    request = dict(zip(params, values, strict=True))
    if request.get("image") is None:
        raise gr.Error(NO_IMAGE)
    progress(0.0, desc=f"Loading {request['model']}…")
    rendered = render(request, full, progress)
    return tuple(rendered[name] for name in full)


def model_loader(
    registry: ModelRegistry, offer: Callable[[str, str | None], tuple[Any, ...]], outputs: int
) -> Callable[..., Any]:
    """The handler of a tab's model dropdown: load the chosen model with progress, toast its
    fallback notice, and return what the tab offers for it (``offer(name, method)``) and the
    status line — ``outputs`` values in all; nothing chosen: only the status line changes."""

    def load_model(
        name: str,
        method: str | None = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - the Gradio idiom
    ) -> tuple[Any, ...]:
        """Load the chosen model (with progress) and offer what it has."""
        if not name:
            return (gr.skip(),) * (outputs - 1) + (status_line(registry),)
        progress(0.0, desc=f"Loading {name}…")
        registry.get(name)
        notice = registry.notice(name)
        if notice:
            gr.Warning(notice)
        return (*offer(name, method), status_line(registry))

    return warned(load_model, outputs)


Request = dict[str, Any]


@dataclass
class Explainer:
    """What a tab asks of the service for a request: its settings, the prompts it explains
    (none for a classifier), the download name and the values of its own parts (score
    tables). Every call goes through the same service methods, with or without prompts."""

    kind: str
    service: ExplanationService
    settings: Callable[[Request], ExplainSettings]
    stem: Callable[[Request, Explanation], str]
    parts: dict[str, Callable[[Explanation], Any]]
    prompts: Callable[[Request], ConceptPrompts | None] = lambda _: None

    def explain(
        self, request: Request, settings: ExplainSettings, progress: ProgressFn | None
    ) -> Explanation:
        """The request's two maps at ``settings``."""
        return self.service.explain(request["model"], request["image"], settings, progress,
                                    prompts=self.prompts(request))  # fmt: skip

    def strip(self, request: Request, settings: ExplainSettings, auto: bool) -> GammaStrip:
        """The request's γ strip (with auto-γ's pick when ``auto``)."""
        return self.service.gamma_strip(request["model"], request["image"], settings, auto=auto,
                                        prompts=self.prompts(request))  # fmt: skip

    def faithfulness(self, request: Request, settings: ExplainSettings, k: float) -> Faithfulness:
        """The faithfulness line of the request's two maps at a share k of pixels removed."""
        return self.service.faithfulness(request["model"], request["image"], settings, k,
                                         prompts=self.prompts(request))  # fmt: skip

    def cached(self, request: Request) -> bool:
        """Whether the request runs no model (a live control can skip the queue)."""
        return self.service.cached(request["model"], request["image"], self.settings(request),
                                   prompts=self.prompts(request))  # fmt: skip


def renderer(explainer: Explainer, registry: ModelRegistry, downloads: DownloadDir) -> Render:
    """``render(request, names, progress=None)``: the values of the parts ``names``.

    The γ strip (and auto-γ, one batched forward) is computed only when a part shows it; the
    rest is one cached re-render.
    """

    def render(request: Request, names: Sequence[str], progress: Any = None) -> dict[str, Any]:
        registry.get(request["model"])
        explanation, values = render_parts(
            names,
            explainer.settings(request),
            bool(request.get("auto_gamma")),
            lambda settings, auto: explainer.strip(request, settings, auto),
            lambda settings: explainer.explain(request, settings, progress_fn(progress)),
            downloads,
            lambda explained: explainer.stem(request, explained),
        )
        log.info("%s %s γ=%s cached=%s parts=%s", explainer.kind, request["model"],
                 explanation.gamma, explanation.cached, ",".join(names))  # fmt: skip
        show_notices(explanation)  # a model's fallback notice is shown once, on model load
        parts = {**explainer.parts, "status": lambda _: status_line(registry)}
        values.update({name: parts[name](explanation) for name in names if name in parts})
        return values

    return render


@dataclass
class LiveControls:
    """The controls every tab has, besides its own."""

    image: Any
    model: gr.Dropdown
    method: gr.Dropdown
    gamma: gr.Slider
    opacity: gr.Slider
    auto: gr.Checkbox
    colormap: gr.Dropdown
    run: gr.Button
    api_run: gr.Button
    download: gr.Button | None  # built with the panels, after the controls
    gamma_note: Any


@dataclass
class TabWiring:
    """One tab's events over :class:`Panels`: each returns only the parts it changes."""

    panels: Panels
    params: tuple[str, ...]
    inputs: list[Any]
    render: Render
    cached: Callable[[dict[str, Any]], bool]
    full: tuple[str, ...]
    structure: tuple[str, ...] = field(init=False)
    #: Chained to every queued event that changes the maps, given its dependency (the
    #: faithfulness line re-scores there, after the panels are sent).
    then: Callable[[Any], Any] | None = None
    #: Also run with the opening example's request in the background (the faithfulness line
    #: scores it there, so the page load finds the score cached and runs no model).
    warm: Callable[[Request], Any] | None = None

    def __post_init__(self) -> None:
        # A new image, model or setting: everything but the downloads, which it empties.
        self.structure = tuple("no_files" if part == "files" else part for part in self.full)

    def on(self, trigger: Any, names: Sequence[str], fast: bool = False, **options: Any) -> Any:
        """Wire ``trigger`` to render the parts ``names``; ``fast``: answered outside the queue
        when no model runs (slider moves)."""
        params, event_inputs = self.panels.inputs_for(self.params, self.inputs, names)
        handler = gpu(warned(live_handler(self.render, params, names, self.panels), len(names)))
        outputs, options = self.panels.outputs(names), {**LIVE, **options}
        if fast:
            return cached_first(
                trigger, handler, self.cached, params, event_inputs, outputs, **options
            )
        event = trigger(handler, event_inputs, outputs, **options)
        if {"cam", "finer"} & set(names):
            self.after(event)
        return event

    def after(self, event: Any) -> None:
        """Chain :attr:`then` to ``event`` (when the tab has one)."""
        if self.then is not None:
            self.then(event)

    def stale(self, *triggers: Any) -> None:
        """Empty the download list in the browser when a user trigger changes the panels, so
        the files listed always match what is shown."""
        files = self.panels.outputs(["files"])
        for trigger in triggers:
            trigger(None, None, files, js=CLEAR_FILES_JS, queue=False, api_visibility="private")

    def explain(
        self, controls: LiveControls, api: Callable[..., Any], api_name: str,
        also: Sequence[Any] = (),
    ) -> None:  # fmt: skip
        """The Explain button and the triggers ``also`` (page errors are toasts), and the named
        endpoint for API clients (errors are errors) on a hidden twin of the button."""
        outputs = self.panels.outputs(self.full)

        def explain_page(*args: Any, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008
            return api_answer(self.render, self.params, self.full, args, progress)

        page = gpu(warned(explain_page, len(self.full)))
        for trigger in (controls.run.click, *also):
            self.after(trigger(page, self.inputs, outputs, api_visibility="private",
                               concurrency_id="explain"))  # fmt: skip
        controls.api_run.click(api, self.inputs, outputs, api_name=api_name,
                               concurrency_id="explain")  # fmt: skip

    def common(self, controls: LiveControls, load: Callable[..., Any], loaded: list[Any]) -> None:
        """The image, the model loader, γ, opacity, auto-γ, colour map, downloads, the strip."""
        self.on(controls.image.change, self.structure)
        loading = controls.model.input(
            load, [controls.model, controls.method], loaded,
            api_visibility="private", concurrency_id="explain",
        )  # fmt: skip
        self.on(loading.success, self.structure)
        self.on(controls.gamma.change, EVENT_PARTS["gamma"], fast=True, show_progress="hidden")
        self.on(controls.opacity.change, EVENT_PARTS["opacity"], fast=True, show_progress="hidden")
        self.on(controls.colormap.input, EVENT_PARTS["colormap"], fast=True)
        self.on(controls.auto.input, EVENT_PARTS["auto"])
        self.on(controls.download.click, EVENT_PARTS["download"])
        self.on(controls.method.input, self.structure)
        picked = self.panels.strip.select(
            strip_gamma, None, [controls.gamma], queue=False, api_visibility="private",
            show_progress="hidden",
        )  # fmt: skip
        self.after(picked)
        self.stale(controls.gamma.input, self.panels.strip.select, controls.opacity.input,
                   controls.colormap.input, controls.auto.input)  # fmt: skip

    def opens_on(self, landing: Landing, tab: str, request: dict[str, Any]) -> PageLoad:
        """Have ``landing`` explain ``request`` (the tab's example) once, in the background;
        returns the page-load event that shows it from there: a page load runs no model."""
        names = tuple(name for name in (*self.structure, "marked") if name != "status")

        def explain_opening() -> dict[str, Any]:
            values = self.render(request, names)
            if self.warm is not None:
                self.warm(request)
            return values

        landing.add(tab, explain_opening)

        def show() -> Any:
            values = landing.values(tab)
            if values is None:
                return (gr.skip(),) * len(names)
            return event_values(names, values)

        return show, [], self.panels.outputs(names)


@dataclass
class Tab:
    """What a tab builder hands the page: its model dropdown (the Hub loader selects loaded
    models in it) and what runs on page load."""

    model: gr.Dropdown
    #: Shows the explained example the tab opens on.
    opening: PageLoad | None
    #: Loads the default model and offers what it has (class lists, methods).
    on_load: PageLoad | None = None
    #: Chained to the opening's page-load event (the faithfulness line scores the example).
    then: Callable[[Any], Any] | None = None
    #: What the compare tab reads from this tab and sets in it (the classifier tab's).
    compare: CompareSource | None = None
