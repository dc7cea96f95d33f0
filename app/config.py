"""One place for configuration: environment variables, overridable by CLI flags.

| variable | meaning | default |
| --- | --- | --- |
| FINERCAM_DEVICE | ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:1`` | auto |
| FINERCAM_MODELS | comma-separated registry names shown in the UI | all registered |
| FINERCAM_OFFLINE | ``1``: never touch the Hub, offer only the shipped demo models | 0 |
| FINERCAM_CLIP_MODEL | open_clip model name or ``hf-hub:org/repo`` | ViT-B-16 |
| FINERCAM_CLIP_PRETRAINED | open_clip pretrained tag or a local checkpoint path | openai |
| FINERCAM_CLIP_TEMPLATE | prompt template (``{}``: the prompt; empty: none) | a photo of a {}. |
| FINERCAM_CUB_HEAD | trained CUB head: local ``.safetensors`` path or Hub repo id | (unset) |
| FINERCAM_CUB_BACKBONE | backbone of that head when its file does not name one | (from the head) |
| FINERCAM_CACHE_ENTRIES / FINERCAM_CACHE_MB | gradient cache bounds | 64 / 1024 |
| FINERCAM_MAX_SIDE | longest image side handed to the models | 1024 |
| FINERCAM_QUEUE_WAITING | explanations allowed to wait; past it a "busy" message | 16 |
| FINERCAM_DISK_MB | cap on the server's files (Gradio's cache + downloads) | 300 |
| FINERCAM_STOP_GRACE | seconds SIGTERM waits for requests in flight | 8 |
| FINERCAM_MAX_LOADED | models built from the Hub kept in memory (LRU) | 4 |
| FINERCAM_SESSIONS | visitor sessions whose state Gradio keeps (least recent dropped) | 128 |
| FINERCAM_HEAP_TRIM_S | seconds between returning glibc's free heap to the OS; 0: never | 10 |

Hub models by id (allow-list ``FINERCAM_HUB_MODELS``, size cap ``FINERCAM_HUB_MAX_MB``) are
configured in :mod:`app.models.hub.policy`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available; anything else must be a valid torch device."""
    if name in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"FINERCAM_DEVICE/--device {name!r} is not a torch device") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was requested but CUDA is not available")
    return device


@dataclass(frozen=True)
class Settings:
    """Resolved configuration; build with :meth:`from_env` and override fields as needed."""

    device: str = "auto"
    models: tuple[str, ...] = ()
    offline: bool = False
    clip_model: str = "ViT-B-16"
    clip_pretrained: str = "openai"
    clip_template: str = "a photo of a {}."
    cub_head: str = ""
    cub_backbone: str = ""
    cache_entries: int = 64
    cache_mb: int = 1024
    max_side: int = 1024
    queue_waiting: int = 16
    disk_mb: int = 300
    stop_grace_s: float = 8.0
    max_loaded: int = 4
    sessions: int = 128
    heap_trim_s: float = 10.0
    heap_report_s: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            device=env.get("FINERCAM_DEVICE", "auto"),
            models=tuple(m.strip() for m in env.get("FINERCAM_MODELS", "").split(",") if m.strip()),
            offline=_flag("FINERCAM_OFFLINE"),
            clip_model=env.get("FINERCAM_CLIP_MODEL", "ViT-B-16"),
            clip_pretrained=env.get("FINERCAM_CLIP_PRETRAINED", "openai"),
            clip_template=env.get("FINERCAM_CLIP_TEMPLATE", "a photo of a {}."),
            cub_head=env.get("FINERCAM_CUB_HEAD", ""),
            cub_backbone=env.get("FINERCAM_CUB_BACKBONE", ""),
            cache_entries=int(env.get("FINERCAM_CACHE_ENTRIES", "64")),
            cache_mb=int(env.get("FINERCAM_CACHE_MB", "1024")),
            max_side=int(env.get("FINERCAM_MAX_SIDE", "1024")),
            queue_waiting=int(env.get("FINERCAM_QUEUE_WAITING", "16")),
            disk_mb=int(env.get("FINERCAM_DISK_MB", "300")),
            stop_grace_s=float(env.get("FINERCAM_STOP_GRACE", "8")),
            max_loaded=int(env.get("FINERCAM_MAX_LOADED", "4")),
            sessions=int(env.get("FINERCAM_SESSIONS", "128")),
            heap_trim_s=float(env.get("FINERCAM_HEAP_TRIM_S", "10")),
            heap_report_s=float(env.get("FINERCAM_HEAP_REPORT_S", "0")),
        )

    @property
    def torch_device(self) -> torch.device:
        return resolve_device(self.device)
