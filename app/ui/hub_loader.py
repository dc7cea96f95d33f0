"""Hub models in the UI: a "load from the Hub" field per tab, the Hub notice and the details view.

Builders only: each lays out its widgets in the current Blocks context and wires them to the
registry (the service is untouched; a loaded Hub model is explained like any registered one).
"""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from app.models.hub import policy as hub
from app.models.hub.loading import CLASS_LISTS, register_class_list, resolve_hub_id
from app.models.registry import ModelRegistry
from app.ui.tab_glue import status_line, user_errors
from app.ui.wiring import warned

log = logging.getLogger(__name__)

CUSTOM = "custom"
LIST_CHOICES = [(summary, name) for name, (_, _, summary) in CLASS_LISTS.items()] + [
    ("my own list (below)", CUSTOM)
]
PLACEHOLDER = {
    "classifier": "org/name (timm, transformers, open_clip)  ·  timm:resnet50.a1_in1k",
    "concepts": "hf-hub:imageomics/bioclip  ·  hf-hub:laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
}


def hub_model_name(
    model_id: str, task: str, class_list: str = "cub200", custom_classes: str = ""
) -> str:
    """The registry name for a Hub id typed in ``task``'s tab.

    In the classifier tab an open_clip id becomes a zero-shot classifier over ``class_list``
    (``custom``: the names in ``custom_classes``, one per line or comma-separated).
    """
    text = (model_id or "").strip()
    if not text:
        raise ValueError(
            "type a Hub model id, e.g. org/name, timm:resnet50.a1_in1k or hf-hub:org/repo"
        )
    plain = task == "classifier" and hub.plain_repo_id(text.partition("@")[0]) is not None
    if not plain and not text.startswith(("hf-hub:", "timm:")):
        text = f"timm:{text}" if task == "classifier" else f"hf-hub:{text}"
    hub_id = resolve_hub_id(text.partition("@")[0])
    assert hub_id is not None
    if task == "concepts":
        if hub_id.kind != "open_clip":
            raise ValueError("the concepts tab needs an open_clip model: hf-hub:org/repo")
        return hub_id.name
    if hub_id.kind in ("timm", "transformers"):
        return hub_id.name
    if class_list == CUSTOM:
        names = [n for line in (custom_classes or "").splitlines() for n in line.split(",")]
        class_list = register_class_list(names)
    return f"{hub_id.name}@{class_list or 'cub200'}"


def build_hub_loader(
    registry: ModelRegistry,
    task: str,
    model: gr.Dropdown,
    status: gr.Markdown,
    then: tuple[Any, list[Any], list[Any]] | None = None,
) -> None:
    """An accordion that loads a Hub model by id and selects it in ``model``.

    ``then`` = ``(fn, inputs, outputs)`` runs after a successful load (the tab's own
    model-loaded handler, which fills its class lists).
    """
    with gr.Accordion("Load a model from the Hugging Face Hub", open=False):
        model_id = gr.Textbox(
            label="Hub model id",
            placeholder=PLACEHOLDER[task],
            max_lines=1,
            elem_id=f"{task[:3]}-hub-id",
        )
        classes = gr.Dropdown(
            LIST_CHOICES,
            value="cub200",
            visible=task == "classifier",
            label="Classes for an open_clip (hf-hub:) model (zero-shot)",
            elem_id=f"{task[:3]}-hub-classes",
        )
        custom = gr.Textbox(
            lines=3,
            visible=task == "classifier",
            label="My own class names (one per line)",
            elem_id=f"{task[:3]}-hub-custom",
        )
        load = gr.Button("Load from the Hub", elem_id=f"{task[:3]}-hub-load")
        gr.Markdown(
            "Allowed here: "
            + (", ".join(f"`{p}`" for p in hub.allowed_patterns()) or "none")
            + f" (up to {hub.max_bytes() // 2**20} MB, safetensors). Downloads are cached and "
            "shared by every visitor."
        )

    @user_errors
    def load_hub_model(
        model_id: str,
        class_list: str = "cub200",
        custom_classes: str = "",
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - the Gradio idiom
    ) -> tuple[Any, str]:
        """Load a Hub model by id (allow-list, size cap); returns its registry name."""
        name = hub_model_name(model_id, task, class_list, custom_classes)
        progress(0.0, desc=f"Loading {name} (first use downloads it)…")
        registry.get(name)
        notice = registry.notice(name)
        if notice:
            gr.Warning(notice)
        choices = [(c, c) for c in [*registry.names(task), *registry.hub_names(task)]]  # type: ignore[arg-type]
        return gr.Dropdown(choices=choices, value=name), status_line(registry)

    # The page's button warns about a refused id (no error badge); API clients get the error,
    # from the endpoint on a hidden twin of the button.
    inputs, outputs = [model_id, classes, custom], [model, status]
    api_twin = gr.Button("Load from the Hub (API)", visible=False)
    events = [
        load.click(warned(load_hub_model, len(outputs)), inputs, outputs,
                   api_visibility="private", concurrency_id="explain"),
        api_twin.click(load_hub_model, inputs, outputs, api_name=f"load_hub_{task}",
                       concurrency_id="explain"),
    ]  # fmt: skip
    for event in events if then is not None else ():
        event.success(*then, api_visibility="private", concurrency_id="explain")


def build_status_details(registry: ModelRegistry) -> tuple[Any, gr.Markdown]:
    """A closed "details" accordion under the status line: the full text of every notice,
    refreshed on Refresh; returns ``(fn, output)`` for the page-load event, which also shows
    one short toast when the Hub is unreachable."""
    with gr.Accordion("Details", open=False):
        details = gr.Markdown(details_text(registry), elem_id="status-details")
        refresh = gr.Button("Refresh", size="sm")
    refresh.click(
        lambda: details_text(registry), None, details, api_visibility="private", queue=False
    )

    def on_page_load() -> str:
        hub_notice(registry)
        return details_text(registry)

    return on_page_load, details


def details_text(registry: ModelRegistry) -> str:
    """Hub state and the full reason of every fallback or unload."""
    if hub.user_offline() or registry.settings.offline:
        state = "Hub: offline mode (HF_HUB_OFFLINE / --offline); only cached and demo models."
    elif hub.hub_online():
        state = "Hub: reachable."
    else:
        state = f"Hub: unreachable ({hub.unreachable_reason()}); cached and demo models serve."
    return "\n".join([state, registry.details() or "No model has fallen back."])


def hub_notice(registry: ModelRegistry) -> None:
    """One short toast on page load when the Hub cannot be reached (not in offline mode)."""
    if registry.settings.offline or hub.hub_online():
        return
    gr.Info("Hugging Face Hub unreachable: the offline demo models serve (Details under Status).")
