"""Memory stays bounded under many distinct images, and one service shared by several threads
gives the same answers as sequential calls, with the shipped demo models."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.allocator import resident_bytes
from app.config import Settings
from app.explain.service import ExplainSettings, Explanation, ExplanationService
from app.models.registry import ModelRegistry
from app.synthbirds import NUM_SPECIES, render_sample

pytestmark = pytest.mark.timeout(300)

CLASSIFIER = "demo-cnn"
CONCEPTS = "demo-tinyclip"
DISTINCT_IMAGES = 200
SIDE = 96  # small renders keep the test fast; demo-cnn resizes to its own input size anyway
MAX_ENTRIES = 16
# The byte bound holds ~10.9 fully explained entries: it binds before the count, and it is not
# a whole number of entries, so an entry that grows after insertion cannot fit by luck.
BYTE_BOUND_ENTRIES = 10.9
RSS_GROWTH_LIMIT = 150 * 2**20
THREADS = 4


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    return ModelRegistry(Settings(device="cpu", offline=True, models=(CLASSIFIER, CONCEPTS)))


def bird(index: int, seed: int = 8) -> Image.Image:
    """A distinct synthetic bird (new pixels, hence a new cache key) for every ``index``."""
    sample = render_sample(index % NUM_SPECIES, np.random.SeedSequence([seed, index]), size=SIDE)
    return sample.image


def rss_bytes() -> int:
    """This process's resident set size (after a collection, so garbage is not counted)."""
    gc.collect()
    return resident_bytes()


def entry_bytes(registry: ModelRegistry) -> int:
    """Bytes one fully explained (target + 3 references) demo-cnn entry is accounted at."""
    probe = ExplanationService(registry.get)
    probe.explain(CLASSIFIER, bird(0, seed=9))
    return probe.entries.total_bytes()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
def test_caches_stay_within_bounds_and_rss_flat_over_200_distinct_images(registry):
    torch.set_num_threads(1)
    max_bytes = int(BYTE_BOUND_ENTRIES * entry_bytes(registry))
    service = ExplanationService(registry.get, max_entries=MAX_ENTRIES, max_bytes=max_bytes)
    rss_at: dict[int, int] = {}
    for i in range(DISTINCT_IMAGES):
        settings = ExplainSettings(gamma=(i % 5) / 4, top_t=1 + i % 5)  # entries of varied size
        explanation = service.explain(CLASSIFIER, bird(i), settings)
        assert not explanation.cached  # every image is new: the caches must keep evicting
        for cache in (service.entries, service.trunks):
            assert len(cache) <= MAX_ENTRIES
            assert cache.total_bytes() <= max_bytes, f"after image {i + 1}"
        if i + 1 in (50, DISTINCT_IMAGES):
            rss_at[i + 1] = rss_bytes()
    assert len(service.entries) < MAX_ENTRIES  # the byte bound, not the count, was binding
    growth = rss_at[DISTINCT_IMAGES] - rss_at[50]
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew {growth / 2**20:.1f} MB from image 50 to 200"


def _requests() -> list[tuple[int, ExplainSettings]]:
    """Ten requests over five images: misses, then hits with other γ/T/references/methods."""
    return [
        (0, ExplainSettings()),
        (1, ExplainSettings(gamma=0.0)),
        (2, ExplainSettings(method="gradcam++", top_t=2)),
        (3, ExplainSettings(reference_mode="weights", weighting="probability")),
        (4, ExplainSettings(method="layercam", gamma=1.0, top_t=5)),
        (0, ExplainSettings(gamma=0.3, top_t=1)),
        (1, ExplainSettings(reference_mode="manual", target=2, manual_references=(3, 4))),
        (2, ExplainSettings(method="hirescam", weighting="probability")),
        (3, ExplainSettings(target=5, top_t=4)),
        (4, ExplainSettings(method="xgradcam", gamma=0.8)),
    ]


def _concept_requests() -> list[tuple[int, str, str]]:
    """Five requests over three images, with prompts that change between them."""
    return [
        (0, "a bird with a red crown", "a photo of a bird"),
        (1, "a bird with a yellow crown", "a bird with a red crown"),
        (2, "a blue bird", "a photo of a bird"),
        (0, "a bird with a white tail tip", "a bird with a black tail tip"),
        (1, "a bird with a red crown", "a photo of a bird\na bird with a blue crown"),
    ]


def _summary(explanation: Explanation) -> tuple:
    return (
        explanation.target.index,
        tuple(ref.index for ref in explanation.references),
        explanation.cam,
        explanation.finer,
    )


def _assert_same(got: tuple, want: tuple) -> None:
    assert got[:2] == want[:2]
    np.testing.assert_allclose(got[2], want[2], atol=1e-5)
    np.testing.assert_allclose(got[3], want[3], atol=1e-5)


def _run_concurrently(calls: list[Callable[[], tuple]], threads: int) -> list[dict[int, tuple]]:
    """Every thread makes every call, each in its own order, all starting together."""
    barrier = threading.Barrier(threads)
    results: list[dict[int, tuple]] = [{} for _ in range(threads)]
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        order = np.random.default_rng(index).permutation(len(calls))
        barrier.wait()
        try:
            for k in order:
                results[index][int(k)] = calls[int(k)]()
        except BaseException as error:  # noqa: BLE001 - re-raised in the main thread
            errors.append(error)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=240)
    assert not errors, errors
    assert all(len(r) == len(calls) for r in results)
    return results


def test_concurrent_classifier_requests_match_sequential_ones(registry):
    images = [bird(1000 + i) for i in range(5)]
    requests = _requests()
    sequential = ExplanationService(registry.get)
    expected = [_summary(sequential.explain(CLASSIFIER, images[i], s)) for i, s in requests]
    # A small cache, so entries are evicted while other threads still use them.
    shared = ExplanationService(registry.get, max_entries=3)
    calls = [
        (lambda i=i, s=s: _summary(shared.explain(CLASSIFIER, images[i], s))) for i, s in requests
    ]
    for per_thread in _run_concurrently(calls, THREADS):
        for k, want in enumerate(expected):
            _assert_same(per_thread[k], want)
    assert len(shared.entries) <= 3


def test_concurrent_concept_requests_match_sequential_ones(registry):
    images = [bird(2000 + i) for i in range(3)]
    requests = _concept_requests()
    sequential = ExplanationService(registry.get)
    expected = [
        _summary(sequential.explain_concepts(CONCEPTS, images[i], target, contrast))
        for i, target, contrast in requests
    ]
    shared = ExplanationService(registry.get, max_entries=2)
    calls = [
        (lambda i=i, t=t, c=c: _summary(shared.explain_concepts(CONCEPTS, images[i], t, c)))
        for i, t, c in requests
    ]
    for per_thread in _run_concurrently(calls, THREADS):
        for k, want in enumerate(expected):
            _assert_same(per_thread[k], want)
