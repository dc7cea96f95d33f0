"""Whether a Hub model offers LeGrad and attention-gradient, told from its config before it loads.

The page's method dropdown reads :attr:`app.models.registry.ModelSpec.attention`; for a Hub id
it comes from here, from the repo's small config files (read once the Hub's metadata passes
the size and safetensors rules):

* `transformers`: ``model_type`` is a ViT family the adapter reads attention from;
* timm: the architecture (with the repo's ``model_args``) is built on the ``meta`` device — no
  memory, no weights — and asked for the split the classifier would get, so the hint and the
  loaded model agree by construction;
* open_clip: a ViT vision tower (no timm trunk, no ResNet layers, no attentional pooling).

None when the config cannot tell (the loaded model decides then). Answers are remembered per repo.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from app.models.hub import policy as hub

log = logging.getLogger(__name__)

_HINTS: dict[str, bool | None] = {}


def attention_hint(hub_id: hub.HubId) -> bool | None:
    """Whether ``hub_id`` will offer the attention methods; None when its config cannot tell."""
    if hub_id.repo not in _HINTS:
        try:
            _HINTS[hub_id.repo] = _hint(hub_id)
        except Exception as error:  # noqa: BLE001 - a hint never stops a load
            log.info("no attention hint for %s: %s", hub_id.repo, error)
            _HINTS[hub_id.repo] = None
    return _HINTS[hub_id.repo]


def forget() -> None:
    """Drop every remembered hint (tests point the Hub cache elsewhere)."""
    _HINTS.clear()


def _hint(hub_id: hub.HubId) -> bool:
    if hub_id.kind == "open_clip":
        return _open_clip_hint(_json(hub_id, "open_clip_config.json"))
    config = _json(hub_id, "config.json")
    if hub_id.kind == "transformers":
        from app.models.adapters.hf_transformers import VIT_FAMILIES

        return str(config.get("model_type")) in VIT_FAMILIES
    return _timm_hint(config)


def _timm_hint(config: dict) -> bool:
    import timm
    import torch

    from app.models.adapters.timm_splits import timm_splits

    arguments = {"num_classes": int(config.get("num_classes") or 1000)}
    arguments.update(config.get("model_args") or {})
    with torch.device("meta"):
        model = timm.create_model(config["architecture"], pretrained=False, **arguments)
    return timm_splits(model.eval())[1] is not None


def _open_clip_hint(config: dict) -> bool:
    vision = config.get("model_cfg", {}).get("vision_cfg", {})
    return (
        not vision.get("timm_model_name")
        and not isinstance(vision.get("layers"), (list, tuple))
        and not vision.get("attentional_pool")
    )


def _json(hub_id: hub.HubId, filename: str) -> dict:
    """A config file of the repo: from the cache, or downloaded once the Hub's metadata passes
    the size and safetensors rules (nothing downloads for a repo they refuse)."""
    from huggingface_hub import hf_hub_download

    if hub.hub_online():
        hub.check_metadata(hub_id)
    path = Path(hf_hub_download(hub_id.repo, filename))
    return json.loads(path.read_text(encoding="utf-8"))
