"""Library-level checks: references, combination, bad arguments, cache bounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.explain import contrastive_cam
from app.explain.cache import BoundedLRU
from app.explain.combine import Contrast, combine
from app.explain.references import reference_weights, select_references


def test_logit_references_are_the_closest_logits_excluding_the_target():
    logits = np.array([5.0, 4.9, 1.0, 5.2, -3.0])
    assert select_references("logits", 0, 2, logits).indices == (1, 3)


def test_weight_references_rank_by_cosine_similarity():
    embeddings = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [-1.0, 0.0]])
    assert select_references("weights", 0, 2, np.zeros(4), embeddings).indices == (2, 1)


def test_manual_references_drop_the_target_and_repeats_with_a_notice():
    choice = select_references("manual", 1, 3, np.zeros(4), manual=[1, 2, 2, 3])
    assert choice.indices == (2, 3) and choice.notice


def test_t_is_clamped_to_the_other_classes():
    choice = select_references("logits", 0, 9, np.arange(4.0))
    assert len(choice.indices) == 3 and "T=9" in choice.notice


@pytest.mark.parametrize("count", [0, -2, 1.5, True])
def test_t_must_be_a_positive_integer(count):
    with pytest.raises(ValueError, match="T"):
        select_references("logits", 0, count, np.arange(4.0))


def test_probability_weights_renormalise_over_references():
    weights = reference_weights([1, 2], np.array([0.5, 0.3, 0.1, 0.1]), "probability")
    np.testing.assert_allclose(weights, [0.75, 0.25])
    np.testing.assert_allclose(reference_weights([1, 2], np.ones(4), "uniform"), [0.5, 0.5])


def test_combination_is_target_minus_gamma_weighted_references():
    grads = {
        0: np.full((1, 1, 1, 1), 2.0),
        1: np.full((1, 1, 1, 1), 1.0),
        2: np.full((1, 1, 1, 1), 4.0),
    }
    contrast = Contrast(0, (1, 2), (0.5, 0.5), 0.5)
    assert combine(grads, contrast.coefficients()).item() == pytest.approx(2 - 0.5 * 2.5)
    assert Contrast(0, (1, 2), (0.5, 0.5), 0.0).coefficients() == {0: 1.0}


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"input_tensor": torch.zeros(3, 32, 32)}, ValueError, "input_tensor"),
        ({"input_tensor": "image"}, TypeError, "input_tensor"),
        ({"target": 6}, ValueError, "target"),
        ({"references": [42]}, ValueError, "references"),
        ({"gamma": -0.1}, ValueError, "gamma"),
        ({"gamma": float("nan")}, ValueError, "gamma"),
        ({"gamma": "1"}, TypeError, "gamma"),
        ({"method": "magic-cam"}, ValueError, "method"),
        ({"method": "legrad"}, ValueError, "ExplanationService and a ViT adapter"),
        ({"target_layer": torch.nn.Conv2d(1, 1, 1)}, ValueError, "target_layer"),
    ],
)
def test_bad_library_arguments_name_the_argument(tiny_cnn, kwargs, error, match):
    arguments = {
        "model": tiny_cnn,
        "target_layer": tiny_cnn[5],
        "input_tensor": torch.zeros(1, 3, 32, 32),
        "target": 1,
        "references": [2],
        "gamma": 1.0,
    } | kwargs
    with pytest.raises(error, match=match):
        contrastive_cam(**arguments)
    assert all(not module._forward_hooks for module in tiny_cnn.modules())


def test_lru_evicts_by_entries_and_bytes():
    cache = BoundedLRU(max_entries=3, max_bytes=10, size_of=len)
    for key in "abc":
        cache.put(key, "xx")
    cache.get("a")
    cache.put("d", "xx")
    assert cache.get("b") is None and cache.get("a") == "xx" and len(cache) == 3
    cache.put("e", "x" * 9)
    assert len(cache) == 1 and cache.total_bytes() == 9
