"""Which library loads a Hub repository, told from its files, so a plain ``org/repo`` works.

* open_clip: ``open_clip_config.json`` (checked first: CLIP repos often carry a `transformers`
  ``config.json`` too);
* timm: ``config.json`` with ``architecture`` or ``pretrained_cfg`` (timm's ``save_for_hf``);
* `transformers`: ``config.json`` with ``model_type`` / ``architectures`` and a
  ``preprocessor_config.json``.

The file list comes from the Hub's metadata when it answers, else from the cached snapshot of
``main``; only ``config.json`` is read (a few KB). Answers are remembered per repo.
"""

from __future__ import annotations

import json
from pathlib import Path

from app.models.hub import policy
from app.models.hub.downloads import hf_cache_dir

_DETECTED: dict[str, policy.Kind] = {}


def detect_library(repo: str) -> policy.Kind:
    """The library whose files ``repo`` holds; ValueError naming what was found otherwise."""
    if repo not in _DETECTED:
        _DETECTED[repo] = _library_of(repo, repo_files(repo))
    return _DETECTED[repo]


def forget(repo: str) -> None:
    """Drop the remembered answer for ``repo`` (its files changed)."""
    _DETECTED.pop(repo, None)


def repo_files(repo: str) -> set[str]:
    """File names of ``repo``: from the Hub when it answers, else from the local cache."""
    if policy.hub_online():
        from huggingface_hub import HfApi

        try:
            info = HfApi().model_info(repo, timeout=policy.METADATA_TIMEOUT_S)
        except Exception as error:  # noqa: BLE001 - unknown repo, network: one clear message
            first = str(error).splitlines()[0] if str(error) else ""
            raise ValueError(
                f"could not list the files of {repo} on the Hub: {type(error).__name__}: {first}"
            ) from error
        return {sibling.rfilename for sibling in info.siblings or []}
    files = cached_files(repo)
    if not files:
        raise ValueError(
            f"{repo} is not in the Hub cache ({hf_cache_dir()}) and the Hub cannot "
            f"be reached ({policy.unreachable_reason()})"
        )
    return files


def cached_files(repo: str) -> set[str]:
    """File names in the cached snapshot of ``main`` (empty when it is not cached)."""
    root = policy.repo_cache_dir(repo)
    ref = root / "refs" / "main"
    if not ref.is_file():
        return set()
    snapshot = root / "snapshots" / ref.read_text().strip()
    return {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()}


def _read_config(repo: str) -> dict:
    from huggingface_hub import hf_hub_download

    try:
        return json.loads(Path(hf_hub_download(repo, "config.json")).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"could not read config.json of {repo}: {error}") from error


def _library_of(repo: str, files: set[str]) -> policy.Kind:
    if "open_clip_config.json" in files:
        return "open_clip"
    if "config.json" in files:
        config = _read_config(repo)
        if "architecture" in config or "pretrained_cfg" in config:
            return "timm"
        if ("model_type" in config or "architectures" in config) and (
            "preprocessor_config.json" in files
        ):
            return "transformers"
    shown = ", ".join(sorted(files)[:8]) or "no files"
    raise ValueError(
        f"cannot tell which library loads {repo} ({shown}): expected a timm config.json "
        "(architecture), an open_clip_config.json, or a transformers config.json (model_type) "
        "with a preprocessor_config.json"
    )
