"""A bound on the Hub cache: ``FINERCAM_HUB_CACHE_MB`` caps what the app keeps downloaded.

After each Hub model loads, the least recently used repositories are deleted with
huggingface_hub's own cache tools (``scan_cache_dir``, ``delete_revisions``) until the cache
fits — never a repository in use (loaded, or being loaded: :func:`mark_in_use`). Unset or empty:
no bound. A model whose own files exceed the bound stays (it is in use); the others go.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Iterable

log = logging.getLogger(__name__)

_lock = threading.Lock()
_in_use: Counter[str] = Counter()


def limit_bytes() -> int | None:
    """``FINERCAM_HUB_CACHE_MB`` in bytes; None when unset (no bound)."""
    raw = os.environ.get("FINERCAM_HUB_CACHE_MB", "").strip()
    if not raw:
        return None
    try:
        return max(0, int(float(raw) * 2**20))
    except ValueError as error:
        raise ValueError(f"FINERCAM_HUB_CACHE_MB must be a number of MB, got {raw!r}") from error


def mark_in_use(repo: str) -> None:
    """``repo`` is loading or loaded: the bound never deletes it (until :func:`release`)."""
    with _lock:
        _in_use[repo] += 1


def release(repo: str) -> None:
    """One user of ``repo`` is gone (unloaded, or its load failed)."""
    with _lock:
        _in_use[repo] -= 1
        if _in_use[repo] <= 0:
            del _in_use[repo]


def in_use() -> set[str]:
    with _lock:
        return set(_in_use)


def trim_cache(keep: Iterable[str] = ()) -> list[str]:
    """Delete least recently used model repos until the cache fits the bound; returns them."""
    limit = limit_bytes()
    if limit is None:
        return []
    from huggingface_hub import constants, scan_cache_dir

    protected = in_use() | set(keep)
    info = scan_cache_dir(constants.HF_HUB_CACHE)
    total = info.size_on_disk
    removed: list[str] = []
    repos = sorted(info.repos, key=lambda r: max(r.last_accessed, r.last_modified))
    for repo in repos:
        if total <= limit:
            break
        if repo.repo_type != "model" or repo.repo_id in protected:
            continue
        info.delete_revisions(*(rev.commit_hash for rev in repo.revisions)).execute()
        total -= repo.size_on_disk
        removed.append(repo.repo_id)
    if removed:
        log.warning(
            "Hub cache over FINERCAM_HUB_CACHE_MB=%.0f: deleted %s (least recently used)",
            limit / 2**20,
            ", ".join(removed),
        )
    return removed
