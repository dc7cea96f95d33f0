"""``FINERCAM_HUB_CACHE_MB``: least recently used repos leave the Hub cache, never one in use."""

from __future__ import annotations

import os
import time

import pytest
from huggingface_hub import constants, scan_cache_dir

from app.config import Settings
from app.models.hub import cache_bound
from app.models.registry import ModelRegistry
from tests.hubfixtures import offline_hub, tiny_timm_files, write_repo


def _age(cache, repo: str, seconds_ago: float) -> None:
    """Set every file of ``repo`` to have been used ``seconds_ago``."""
    stamp = time.time() - seconds_ago
    for path in (cache / ("models--" + repo.replace("/", "--"))).rglob("*"):
        os.utime(path, (stamp, stamp), follow_symlinks=False)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "hub"
    files = tiny_timm_files()
    for index, repo in enumerate(
        ["finercam-test/old", "finercam-test/middle", "finercam-test/recent"]
    ):
        write_repo(folder, repo, {**files, "README.md": repo.encode()})
        _age(folder, repo, 3000 - 1000 * index)
    with offline_hub(monkeypatch, folder):
        yield folder


def _repos() -> set[str]:
    return {repo.repo_id for repo in scan_cache_dir(constants.HF_HUB_CACHE).repos}


def test_least_recently_used_go_first_and_protected_ones_stay(cache, monkeypatch):
    size = scan_cache_dir(constants.HF_HUB_CACHE).size_on_disk
    monkeypatch.setenv("FINERCAM_HUB_CACHE_MB", str(size * 0.7 / 2**20))  # room for two
    assert cache_bound.trim_cache() == ["finercam-test/old"]
    assert _repos() == {"finercam-test/middle", "finercam-test/recent"}
    monkeypatch.setenv("FINERCAM_HUB_CACHE_MB", "0")
    assert cache_bound.trim_cache(keep={"finercam-test/middle"}) == ["finercam-test/recent"]
    assert _repos() == {"finercam-test/middle"}


def test_no_bound_when_unset_and_a_clear_error_when_malformed(cache, monkeypatch):
    monkeypatch.delenv("FINERCAM_HUB_CACHE_MB", raising=False)
    assert cache_bound.trim_cache() == [] and len(_repos()) == 3
    monkeypatch.setenv("FINERCAM_HUB_CACHE_MB", "lots")
    with pytest.raises(ValueError, match="FINERCAM_HUB_CACHE_MB must be a number"):
        cache_bound.trim_cache()


def test_loading_a_model_trims_the_cache_but_keeps_every_loaded_model(cache, monkeypatch):
    monkeypatch.setenv("FINERCAM_HUB_CACHE_MB", "0")
    registry = ModelRegistry(Settings(device="cpu", max_loaded=2))
    registry.get("finercam-test/old")  # the oldest, but loaded: it stays
    assert _repos() == {"finercam-test/old"}
    write_repo(cache, "finercam-test/middle", {**tiny_timm_files(), "README.md": b"m"})
    registry.get("timm:finercam-test/middle")
    assert _repos() == {"finercam-test/old", "finercam-test/middle"}
    assert cache_bound.in_use() >= {"finercam-test/old", "finercam-test/middle"}
