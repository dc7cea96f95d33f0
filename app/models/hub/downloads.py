"""Where downloaded weights are cached, and the error that says so when a download fails.

Every failure to reach the Hugging Face Hub or the torch hub becomes an ``OSError`` naming the
model, the repository or URL, the cache directory, and the offline alternatives.
"""

from __future__ import annotations

import os

import torch

OFFLINE_HINT = (
    "Set FINERCAM_OFFLINE=1 (or pick demo-cnn / demo-tinyclip) to use the offline demo models, "
    "or run `python -m app.models.prefetch` while online to fill the cache."
)


def hf_cache_dir() -> str:
    """Where huggingface_hub (open_clip, timm) caches downloads."""
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover - huggingface_hub is a dependency
        return os.path.expanduser("~/.cache/huggingface/hub")


def torch_cache_dir() -> str:
    """Where torchvision caches downloaded weights."""
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def hub_error(what: str, source: str, cache: str, error: BaseException) -> OSError:
    """An ``OSError`` for a failed download, naming model, source, cache and the way out."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    mode = " (HF_HUB_OFFLINE is set, so only the cache was looked at)" if offline else ""
    detail = str(error).strip().rstrip(".") or "no detail"
    return OSError(
        f"could not load {what} from {source}{mode}: {type(error).__name__}: {detail}. "
        f"Weights are cached in {cache}. {OFFLINE_HINT}"
    )
