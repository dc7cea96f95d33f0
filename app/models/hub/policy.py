"""Hugging Face Hub access for a public Space: what may load, how big, and how fast we give up.

* **Ids.** ``hf-hub:org/repo`` is an open_clip model; ``timm:name`` (repo ``timm/name``),
  ``timm:org/repo`` or a bare timm name is a timm classifier (:func:`parse_hub_id`); a plain
  ``org/repo`` is loaded by the library its files name (:mod:`app.models.hub.detect`).
* **Allow-list.** ``FINERCAM_HUB_MODELS``: comma-separated glob patterns over the repo id
  (``imageomics/*``, ``timm/resnet*``; ``*`` allows everything, empty allows nothing). Unset:
  :data:`DEFAULT_ALLOWED`, a curated list.
* **Size cap.** ``FINERCAM_HUB_MAX_MB``: the weight files a model would download are summed from
  the Hub's metadata (``model_info(files_metadata=True)``) *before* any download.
* **Safetensors only.** A repo must hold ``.safetensors`` weights; the only exception are repos
  in :data:`VETTED_PICKLE_REPOS` (BioCLIP publishes only a ``.bin`` of plain tensors), whose
  file open_clip reads with ``torch.load(weights_only=True)``. Remote code is never run.
* **Fail fast.** One short probe (≤ :data:`PROBE_TIMEOUT_S` s per phase) tells whether the Hub
  answers; if not, huggingface_hub is switched to offline mode (cache only) for
  :data:`RETRY_ONLINE_S` s. Every Hub request has short timeouts, and the first network error
  or timeout switches offline mode on, so the library's retry ladder ends at once.
* **Cache integrity.** :func:`repair_cache` removes dangling snapshot links (a missing blob) and
  LFS blobs whose sha256 is not their name (a truncated download), so the next try downloads
  them again instead of loading garbage or failing forever.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 3.0
RETRY_ONLINE_S = 60.0
ETAG_TIMEOUT_S = 5
DOWNLOAD_TIMEOUT_S = 10
METADATA_TIMEOUT_S = 5.0
DEFAULT_MAX_MB = 2048

#: Curated default of ``FINERCAM_HUB_MODELS``: CLIP ViT-B/16 (OpenAI, LAION), BioCLIP, DINOv2 and
#: a few timm ImageNet / iNaturalist (birds) classifiers.
DEFAULT_ALLOWED = (
    "imageomics/bioclip",
    "timm/vit_base_patch16_clip_224.openai",
    "laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
    "timm/vit_base_patch14_dinov2.lvd142m",
    "timm/resnet50.a1_in1k",
    "timm/convnext_tiny.in12k_ft_in1k",
    "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k",
    "timm/*inat21*",
)
#: Repos allowed without safetensors: their pickle holds plain tensors only and is read with
#: ``torch.load(weights_only=True)``.
VETTED_PICKLE_REPOS = frozenset({"imageomics/bioclip"})
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")

Kind = Literal["timm", "open_clip", "transformers"]


class HubPolicyError(ValueError):
    """A Hub model refused by the Space's policy (allow-list, size cap, unsafe weights)."""


@dataclass(frozen=True)
class HubId:
    """A model on the Hub: which library loads it and from which repo."""

    kind: Kind
    repo: str

    @property
    def name(self) -> str:
        """Canonical registry name (``hf-hub:org/repo``, ``timm:name``, ``timm:org/repo``,
        ``org/repo`` for `transformers`)."""
        if self.kind == "open_clip":
            return f"hf-hub:{self.repo}"
        if self.kind == "transformers":
            return self.repo
        return f"timm:{self.repo.removeprefix('timm/')}"


def parse_hub_id(text: str) -> HubId | None:
    """The Hub model ``text`` names, or None when it is not a Hub id (a registry name)."""
    text = (text or "").strip()
    if text.startswith("hf-hub:"):
        repo = text.removeprefix("hf-hub:")
        kind: Kind = "open_clip"
    elif text.startswith("timm:"):
        repo = text.removeprefix("timm:").removeprefix("hf-hub:")
        kind = "timm"
        if "/" not in repo:
            repo = f"timm/{repo}"
    else:
        return None
    parts = repo.split("/")
    if len(parts) != 2 or not all(parts) or any(c.isspace() for c in repo) or ".." in repo:
        raise ValueError(f"{text!r} is not a Hub model id; use hf-hub:org/repo or timm:name")
    return HubId(kind, repo)


def plain_repo_id(text: str) -> str | None:
    """``org/repo`` when ``text`` is a plain Hub repo id (no prefix, not a local path)."""
    text = (text or "").strip()
    parts = text.split("/")
    if ":" in text or len(parts) != 2 or Path(text).exists():
        return None
    if not all(part and all(c.isalnum() or c in "-_." for c in part) for part in parts):
        return None
    return None if ".." in text else text


# --------------------------------------------------------------------------- policy


def allowed_patterns() -> tuple[str, ...]:
    """``FINERCAM_HUB_MODELS`` as glob patterns (the curated default when unset)."""
    raw = os.environ.get("FINERCAM_HUB_MODELS")
    if raw is None:
        return DEFAULT_ALLOWED
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def max_bytes() -> int:
    """The size cap of one Hub model's weights (``FINERCAM_HUB_MAX_MB``)."""
    try:
        return int(float(os.environ.get("FINERCAM_HUB_MAX_MB", DEFAULT_MAX_MB)) * 2**20)
    except ValueError:
        return DEFAULT_MAX_MB * 2**20


def check_allowed(hub_id: HubId) -> None:
    """HubPolicyError unless the repo matches ``FINERCAM_HUB_MODELS``."""
    patterns = allowed_patterns()
    repo = hub_id.repo.lower()
    if any(
        fnmatch.fnmatchcase(repo, p.lower().removeprefix("hf-hub:").removeprefix("timm:"))
        for p in patterns
    ):
        return
    shown = ", ".join(patterns) if patterns else "none"
    raise HubPolicyError(
        f"{hub_id.name} is not on this Space's allow-list of Hub models ({shown}); the owner "
        "can allow it in FINERCAM_HUB_MODELS"
    )


def check_metadata(hub_id: HubId) -> None:
    """Size cap and safetensors check from the Hub's metadata, before anything downloads.

    Callers skip it while the Hub is unreachable (then nothing downloads).
    """
    from huggingface_hub import HfApi

    try:
        info = HfApi().model_info(hub_id.repo, files_metadata=True, timeout=METADATA_TIMEOUT_S)
    except Exception as error:  # noqa: BLE001 - unreachable/unknown repo: a clear message
        raise OSError(
            f"could not read the Hub metadata of {hub_id.name}: "
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        ) from error
    files = {s.rfilename: int(s.size or 0) for s in (info.siblings or [])}
    weights = {f: size for f, size in files.items() if f.endswith(WEIGHT_SUFFIXES)}
    safe = {f: size for f, size in weights.items() if f.endswith(".safetensors")}
    if not safe and hub_id.repo not in VETTED_PICKLE_REPOS:
        raise HubPolicyError(
            f"{hub_id.name} has no .safetensors weights ({', '.join(weights) or 'no weights'}); "
            "only safetensors are loaded from the Hub"
        )
    chosen = _weights_to_download(hub_id, safe or weights)
    total = sum(chosen.values())
    if total > max_bytes():
        raise HubPolicyError(
            f"{hub_id.name} weighs {total / 2**20:.0f} MB, over this Space's cap of "
            f"{max_bytes() / 2**20:.0f} MB (FINERCAM_HUB_MAX_MB); nothing was downloaded"
        )


def weight_candidates(hub_id: HubId) -> tuple[str, ...]:
    """The weight files the loaders read, preferred first."""
    if hub_id.kind == "open_clip":
        return ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    if hub_id.kind == "transformers":
        return ("model.safetensors", "model.safetensors.index.json")
    return ("model.safetensors", "pytorch_model.bin")


def cached_weights(hub_id: HubId) -> str | None:
    """Path of the model's weights in the Hub cache, None when they are not there."""
    from huggingface_hub import try_to_load_from_cache

    for filename in weight_candidates(hub_id):
        path = try_to_load_from_cache(hub_id.repo, filename)
        if isinstance(path, str) and Path(path).is_file():
            return path
    return None


def _weights_to_download(hub_id: HubId, weights: dict[str, int]) -> dict[str, int]:
    for name in weight_candidates(hub_id):
        if name in weights:
            return {name: weights[name]}
    return weights


# --------------------------------------------------------------------------- reachability

_state_lock = threading.Lock()
_forced_offline_until = 0.0
_last_error = ""


def _constants():
    from huggingface_hub import constants

    return constants


def user_offline() -> bool:
    """True when the user asked for no network (``HF_HUB_OFFLINE`` set in the environment)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def mark_unreachable(error: BaseException | str) -> None:
    """Switch huggingface_hub to cache-only mode for a while (ends any retry ladder)."""
    global _forced_offline_until, _last_error
    with _state_lock:
        first = time.monotonic() >= _forced_offline_until
        _forced_offline_until = time.monotonic() + RETRY_ONLINE_S
        _last_error = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        _constants().HF_HUB_OFFLINE = True
    if first:
        log.warning(
            "Hugging Face Hub unreachable (%s); using the local cache for %.0f s",
            _last_error,
            RETRY_ONLINE_S,
        )


def hub_online() -> bool:
    """Whether the Hub answers: ``HF_HUB_OFFLINE`` -> False at once; else one short probe,
    remembered for :data:`RETRY_ONLINE_S` s when it fails."""
    global _forced_offline_until
    if user_offline():
        return False
    with _state_lock:
        if time.monotonic() < _forced_offline_until:
            return False
        if _forced_offline_until:  # the quiet period is over: try the network again
            _forced_offline_until = 0.0
            _constants().HF_HUB_OFFLINE = False
    install_fail_fast()
    return _probe()


_probe_lock = threading.Lock()
_probe_ok_until = 0.0


def _probe() -> bool:
    global _probe_ok_until
    with _probe_lock:
        if time.monotonic() < _probe_ok_until:
            return True
        from huggingface_hub.utils import get_session

        try:
            get_session().head(_constants().ENDPOINT, timeout=PROBE_TIMEOUT_S)
        except Exception as error:  # noqa: BLE001 - any failure means "not reachable now"
            mark_unreachable(error)
            return False
        _probe_ok_until = time.monotonic() + RETRY_ONLINE_S
        return True


def unreachable_reason() -> str:
    """A short reason for the status line (``HF_HUB_OFFLINE`` or the last network error)."""
    return "HF_HUB_OFFLINE is set" if user_offline() else (_last_error or "no answer")


_installed = False


def install_fail_fast() -> None:
    """Short timeouts on every Hub request; the first network failure turns offline mode on."""
    global _installed
    if _installed:
        return
    import httpx2
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils._http import hf_request_event_hook

    class FailFastClient(httpx2.Client):
        def send(self, request, **kwargs):  # type: ignore[override]
            try:
                return super().send(request, **kwargs)
            except (httpx2.TimeoutException, httpx2.NetworkError, httpx2.ProxyError) as error:
                mark_unreachable(error)
                raise

    timeout = httpx2.Timeout(DOWNLOAD_TIMEOUT_S, connect=PROBE_TIMEOUT_S)
    set_client_factory(
        lambda: FailFastClient(
            event_hooks={"request": [hf_request_event_hook]}, follow_redirects=True, timeout=timeout
        )
    )
    constants = _constants()
    constants.HF_HUB_ETAG_TIMEOUT = min(constants.HF_HUB_ETAG_TIMEOUT, ETAG_TIMEOUT_S)
    constants.HF_HUB_DOWNLOAD_TIMEOUT = min(constants.HF_HUB_DOWNLOAD_TIMEOUT, DOWNLOAD_TIMEOUT_S)
    _installed = True


def reset_state() -> None:
    """Forget probe results (tests; a changed endpoint)."""
    global _forced_offline_until, _probe_ok_until, _last_error
    with _state_lock:
        if _forced_offline_until:
            _constants().HF_HUB_OFFLINE = user_offline()
        _forced_offline_until = _probe_ok_until = 0.0
        _last_error = ""


# --------------------------------------------------------------------------- cache integrity

_verified: dict[tuple[str, int, int], bool] = {}


def repo_cache_dir(repo: str) -> Path:
    """``HF_HUB_CACHE/models--org--name``."""
    return Path(_constants().HF_HUB_CACHE) / ("models--" + repo.replace("/", "--"))


def _is_lfs_blob(path: Path) -> bool:
    name = path.name
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def _blob_ok(blob: Path) -> bool:
    stat = blob.stat()
    key = (str(blob), stat.st_size, stat.st_mtime_ns)
    if key not in _verified:
        digest = hashlib.sha256()
        with blob.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _verified[key] = digest.hexdigest() == blob.name
    return _verified[key]


def repair_cache(repo: str) -> list[str]:
    """Remove broken entries of ``repo`` in the Hub cache; returns what was removed (files).

    A snapshot link whose blob is missing is removed; an LFS blob whose sha256 differs from
    its name (cut download) is removed with every link to it. huggingface_hub then downloads
    them again on the next try.
    """
    snapshots = repo_cache_dir(repo) / "snapshots"
    if not snapshots.is_dir():
        return []
    removed: list[str] = []
    for link in sorted(p for p in snapshots.rglob("*") if p.is_symlink() or p.is_file()):
        target = link.resolve() if link.is_symlink() else link
        if not target.exists():
            link.unlink()
            removed.append(f"{link.name} (missing blob)")
        elif link.is_symlink() and _is_lfs_blob(target) and not _blob_ok(target):
            target.unlink()
            link.unlink()
            removed.append(f"{link.name} (incomplete download)")
    for link in (p for p in snapshots.rglob("*") if p.is_symlink() and not p.exists()):
        link.unlink()  # other revisions pointing at a removed blob
    if removed:
        log.warning("removed broken cache entries of %s: %s", repo, ", ".join(removed))
    return removed
