"""Faithfulness and localization metrics on hand-built cases whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from app.explain.metrics import (
    _ranks,
    _top_mask,
    baseline_image,
    box_to_mask,
    deletion_auc,
    energy_inside,
    insertion_auc,
    perturbation_curve,
    pointing_game,
    relative_confidence_drop,
)

H = W = 4
REGION = (slice(0, 2), slice(0, 2))  # top-left 2x2 block: 4 of the 16 pixels
OTHER = (slice(2, 4), slice(2, 4))  # bottom-right 2x2 block


class RegionModel(nn.Module):
    """Logits ``[gain * mean(x over REGION), *constants]``: only REGION moves the target."""

    def __init__(self, gain: float = 4.0, constants: tuple[float, ...] = (2.0, 0.0)) -> None:
        super().__init__()
        self.gain = gain
        self.register_buffer("constants", torch.tensor(constants))
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        target = self.gain * x[:, :, REGION[0], REGION[1]].mean(dim=(1, 2, 3))
        return torch.cat([target[:, None], self.constants.to(x).expand(x.shape[0], -1)], dim=1)


class SharedVsDiscriminative(nn.Module):
    """Target c=0 and look-alike d=1 both use SHARED (REGION); only c uses DISTINCT (OTHER).

    ``y_c = 2·mean(REGION) + 2·mean(OTHER)``, ``y_d = 2·mean(REGION) + 1``, ``y_2 = 1.5``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared = x[:, :, REGION[0], REGION[1]].mean(dim=(1, 2, 3))
        distinct = x[:, :, OTHER[0], OTHER[1]].mean(dim=(1, 2, 3))
        y_c = 2 * shared + 2 * distinct
        y_d = 2 * shared + 1
        return torch.stack([y_c, y_d, torch.full_like(y_c, 1.5)], dim=1)


def softmax0(*logits: float) -> float:
    """Softmax probability of the first logit, by hand."""
    return math.exp(logits[0]) / sum(math.exp(v) for v in logits)


def peaked(block: tuple[slice, slice], n: int = 1) -> torch.Tensor:
    """``(n, H, W)`` maps highest on ``block``, lowest on the other corner block, no ties."""
    base = torch.linspace(0.0, 0.5, H * W).reshape(H, W)
    base[block] = 1.0 + torch.arange(4.0).reshape(2, 2) / 10
    base[OTHER if block == REGION else REGION] = -1.0 + torch.arange(4.0).reshape(2, 2) / 10
    return base.expand(n, H, W).clone()


ONES = torch.ones(1, 3, H, W)
ZEROS = torch.zeros(1, 3, 1, 1)


# --------------------------------------------------------------------------------------------
# Deletion / insertion


def test_deleting_the_region_first_gives_the_lowest_deletion_auc_and_exact_curve():
    model = RegionModel()
    maps = torch.cat([peaked(REGION), peaked(OTHER)])
    curve = perturbation_curve(model, ONES, maps, 0, steps=4, baseline=ZEROS)

    full, gone = softmax0(4, 2, 0), softmax0(0, 2, 0)
    assert torch.allclose(curve.fractions, torch.tensor([0, 0.25, 0.5, 0.75, 1.0]))
    expected = torch.tensor([[full, gone, gone, gone, gone], [full, full, full, full, gone]])
    assert torch.allclose(curve.probabilities, expected, atol=1e-6)
    first, last = (full + gone) / 2 + 3 * gone, 3 * full + (full + gone) / 2
    assert torch.allclose(curve.auc, 0.25 * torch.tensor([first, last]), atol=1e-6)
    assert torch.equal(curve.auc, deletion_auc(model, ONES, maps, 0, steps=4, baseline=ZEROS))

    # No map can beat the one that removes the region first.
    torch.manual_seed(0)
    others = torch.rand(16, H, W)
    aucs = deletion_auc(model, ONES, torch.cat([maps[:1], others]), 0, steps=8, baseline=ZEROS)
    assert aucs.argmin() == 0 and (aucs[1:] > aucs[0]).all()


def test_inserting_the_region_first_gives_the_highest_insertion_auc():
    model = RegionModel()
    maps = torch.cat([peaked(REGION), peaked(OTHER)])
    curve = perturbation_curve(model, ONES, maps, 0, mode="insertion", steps=4, baseline=ZEROS)
    full, gone = softmax0(4, 2, 0), softmax0(0, 2, 0)
    expected = torch.tensor([[gone, full, full, full, full], [gone, gone, gone, gone, full]])
    assert torch.allclose(curve.probabilities, expected, atol=1e-6)

    torch.manual_seed(0)
    others = torch.rand(16, H, W)
    aucs = insertion_auc(model, ONES, torch.cat([maps[:1], others]), 0, steps=8, baseline=ZEROS)
    assert aucs.argmax() == 0 and (aucs[1:] < aucs[0]).all()


def test_partial_steps_follow_the_pixel_order():
    # steps=8 removes 2 pixels a step: the region (ranked 0..3) goes in two halves.
    model = RegionModel()
    curve = perturbation_curve(model, ONES, peaked(REGION), 0, steps=8, baseline=ZEROS)
    expected = [softmax0(4, 2, 0), softmax0(2, 2, 0)] + [softmax0(0, 2, 0)] * 7
    assert torch.allclose(curve.probabilities[0], torch.tensor(expected), atol=1e-6)


def test_steps_that_do_not_divide_the_pixels_use_the_real_fractions():
    curve = perturbation_curve(RegionModel(), ONES, peaked(REGION), 0, steps=3, baseline=ZEROS)
    # n_s = floor(s * 16 / 3) = 0, 5, 10, 16
    assert torch.allclose(curve.fractions, torch.tensor([0, 5 / 16, 10 / 16, 1.0]))


def test_mean_baseline_is_the_per_channel_mean_colour():
    image = torch.zeros(1, 3, H, W)
    image[:, :, REGION[0], REGION[1]] = 1.0  # mean colour = 4/16 in every channel
    assert torch.allclose(baseline_image(image, "mean"), torch.full_like(image, 0.25))
    curve = perturbation_curve(RegionModel(), image, peaked(REGION), 0, steps=4, baseline="mean")
    assert curve.probabilities[0, 1].item() == pytest.approx(softmax0(4 * 0.25, 2, 0), abs=1e-6)


def test_blur_of_a_flat_image_changes_nothing():
    image = torch.full((1, 3, 8, 8), 0.7)
    assert torch.allclose(baseline_image(image, "blur"), image, atol=1e-6)
    curve = perturbation_curve(RegionModel(), image, torch.rand(8, 8), 0, steps=5)
    assert torch.allclose(curve.probabilities, curve.probabilities[:, :1].expand(-1, 6), atol=1e-6)
    assert curve.auc.item() == pytest.approx(softmax0(4 * 0.7, 2, 0), abs=1e-6)


def test_blur_smooths_an_edge():
    image = torch.zeros(1, 1, 16, 16)
    image[..., 8:] = 1.0
    blurred = baseline_image(image, "blur", blur_sigma=2.0)
    assert 0 < blurred[0, 0, 0, 7] < 0.5 < blurred[0, 0, 0, 8] < 1
    assert torch.allclose(blurred.sum(), image.sum(), rtol=1e-4)  # reflect padding, symmetric edge


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 9), st.sampled_from(["blur", "mean"]))
def test_curve_endpoints_are_the_image_and_the_baseline(seed, steps, baseline):
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(1, 3, 6, 5, generator=generator)
    maps = torch.randn(3, 6, 5, generator=generator)
    net = nn.Sequential(nn.Flatten(), nn.Linear(90, 4))
    with torch.no_grad():
        p_image = net(image).softmax(-1)[0, 2]
        p_base = net(baseline_image(image, baseline)).softmax(-1)[0, 2]
    for mode, first, last in (("deletion", p_image, p_base), ("insertion", p_base, p_image)):
        curve = perturbation_curve(net, image, maps, 2, mode=mode, steps=steps, baseline=baseline)
        assert curve.probabilities.shape == (3, steps + 1)
        assert torch.allclose(curve.probabilities[:, 0], first.expand(3), atol=1e-6)
        assert torch.allclose(curve.probabilities[:, -1], last.expand(3), atol=1e-6)
        assert ((curve.auc >= 0) & (curve.auc <= 1)).all()


def test_batching_does_not_change_results_and_respects_batch_size():
    torch.manual_seed(3)
    image, maps = torch.randn(1, 3, 8, 8), torch.rand(5, 8, 8)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    calls: list[int] = []

    def logits_fn(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return net(x)

    reference = perturbation_curve(logits_fn, image, maps, 1, steps=6, batch_size=1000)
    assert calls == [5 * 7]
    for batch_size in (1, 4, 7):
        calls.clear()
        curve = perturbation_curve(logits_fn, image, maps, 1, steps=6, batch_size=batch_size)
        assert max(calls) <= batch_size and sum(calls) == 35
        assert torch.allclose(curve.probabilities, reference.probabilities, atol=1e-6)


def test_one_image_per_map_and_one_target_per_map():
    torch.manual_seed(4)
    images, maps = torch.randn(3, 3, 6, 6), torch.rand(3, 6, 6)
    net = nn.Sequential(nn.Flatten(), nn.Linear(108, 5))
    together = deletion_auc(net, images, maps, [0, 3, 4], steps=5)
    alone = torch.cat(
        [
            deletion_auc(net, images[i], maps[i].numpy(), target, steps=5)
            for i, target in enumerate([0, 3, 4])
        ]
    )
    assert torch.allclose(together, alone, atol=1e-6)


def test_ties_are_broken_by_row_major_order():
    # A flat map deletes pixels in reading order: the region's top row (pixels 0, 1) goes first.
    curve = perturbation_curve(RegionModel(), ONES, torch.zeros(H, W), 0, steps=8, baseline=ZEROS)
    assert curve.probabilities[0, 1].item() == pytest.approx(softmax0(2, 2, 0), abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), levels=st.integers(1, 4), side=st.integers(1, 12))
def test_top_selection_is_the_full_sort_prefix_on_heavily_tied_maps(seed, levels, side):
    # A handful of distinct values (signed zeros among them): most pixels tie with others.
    generator = torch.Generator().manual_seed(seed)
    values = torch.tensor([0.0, -0.0, 1.0, 0.5, -2.0])[: levels + 1]
    maps = values[torch.randint(len(values), (3, side, side + 1), generator=generator)]
    order = _ranks(maps)
    for count in range(1, side * (side + 1) + 1):
        assert torch.equal(_top_mask(maps, count), order < count), count


def test_relative_confidence_drop_masks_tied_pixels_in_row_major_order():
    # The map ties everywhere: the top 2 of 16 pixels are the region's top row (pixels 0, 1),
    # so the target's logit falls by half; a map that ties outside the region leaves it.
    inside_first = torch.zeros(H, W)
    outside_first = torch.zeros(H, W)
    outside_first[0, 2:] = outside_first[1:, 0] = 1.0  # 5 pixels at the top, all outside REGION
    maps = torch.stack([inside_first, outside_first])
    drop = relative_confidence_drop(
        RegionModel(), ONES, maps, 0, [1], top_fraction=0.125, baseline=ZEROS
    )
    assert drop.pixels_masked == 2
    expected = torch.tensor([softmax0(2, 2, 0), softmax0(4, 2, 0)])
    assert torch.allclose(drop.probability_after, expected, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Relative confidence drop


def test_relative_confidence_drop_exact_numbers():
    model = SharedVsDiscriminative()
    maps = torch.cat([peaked(REGION), peaked(OTHER)])  # "CAM" on shared, "Finer" on distinct
    drop = relative_confidence_drop(model, ONES, maps, 0, [1], top_fraction=0.25, baseline=ZEROS)
    assert drop.pixels_masked == 4

    p_before = softmax0(4, 3, 1.5)
    rc_before = softmax0(4, 3)
    # Shared region masked: y = (2, 1, 1.5); distinct region masked: y = (2, 3, 1.5).
    p_after = torch.tensor([softmax0(2, 1, 1.5), softmax0(2, 3, 1.5)])
    rc_after = torch.tensor([softmax0(2, 1), softmax0(2, 3)])
    assert torch.allclose(drop.probability_before, torch.tensor([p_before] * 2), atol=1e-6)
    assert torch.allclose(drop.probability_after, p_after, atol=1e-6)
    assert torch.allclose(drop.probability_drop, (p_before - p_after) / p_before, atol=1e-6)
    assert torch.allclose(drop.relative_before, torch.tensor([rc_before] * 2), atol=1e-6)
    assert torch.allclose(drop.relative_after, rc_after, atol=1e-6)
    assert torch.allclose(drop.relative_drop, (rc_before - rc_after) / rc_before, atol=1e-6)
    # Masking what both classes share leaves rc unchanged; masking what tells them apart drops it.
    assert drop.relative_drop[0].abs() < 1e-6 and drop.relative_drop[1] > 0.5


def test_relative_confidence_drop_can_be_negative_and_references_can_differ_per_map():
    model = RegionModel(gain=-4.0, constants=(2.0, 0.0))  # masking the region raises y_0
    drop = relative_confidence_drop(
        model, ONES, peaked(REGION, 2), 0, [[1], [2]], top_fraction=0.25, baseline=ZEROS
    )
    assert (drop.probability_drop < 0).all() and (drop.relative_drop < 0).all()
    assert drop.relative_before.tolist() == pytest.approx([softmax0(-4, 2), softmax0(-4, 0)])
    assert drop.relative_after.tolist() == pytest.approx([softmax0(0, 2), softmax0(0, 0)])


def test_relative_confidence_drop_is_exact_when_probabilities_underflow():
    # p_c is e^-200-ish: a float32 division would give 0/0; log space gives the exact drop.
    model = RegionModel(gain=100.0, constants=(300.0,))
    drop = relative_confidence_drop(
        model, ONES, peaked(REGION), 0, [1], top_fraction=0.25, baseline=ZEROS
    )
    assert drop.probability_before.item() == 0.0
    assert drop.probability_drop.item() == pytest.approx(1 - math.exp(-100), abs=1e-6)
    assert torch.isfinite(drop.relative_drop).all()


@pytest.mark.parametrize(
    ("fraction", "pixels"), [(0.05, 1), (0.03125, 1), (0.25, 4), (0.4, 6), (1.0, 16)]
)
def test_pixels_masked_rounds_half_up_and_is_at_least_one(fraction, pixels):
    drop = relative_confidence_drop(
        RegionModel(), ONES, peaked(REGION), 0, [1], top_fraction=fraction
    )
    assert drop.pixels_masked == pixels


def test_confidence_change_matches_pytorch_grad_cam(tiny_cnn):
    """Zero baseline == pytorch-grad-cam's CamMultImageConfidenceChange with a 0/1 keep mask."""
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    torch.manual_seed(5)
    images, maps = torch.randn(2, 3, 16, 16), torch.rand(2, 16, 16)
    targets = [1, 4]
    drop = relative_confidence_drop(
        tiny_cnn, images, maps, targets, [0], top_fraction=0.1, baseline=torch.zeros(())
    )
    top = maps.flatten(1).topk(drop.pixels_masked, dim=1).indices
    keep = torch.ones(2, 256).scatter_(1, top, 0.0).view(2, 16, 16).numpy()
    theirs = CamMultImageConfidenceChange()(
        images, keep, [ClassifierOutputSoftmaxTarget(t) for t in targets], tiny_cnn
    )
    ours = (drop.probability_after - drop.probability_before).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Localization


SALIENCY = torch.tensor(
    [
        [0.0, 1.0, 0.0, -5.0],
        [0.0, 3.0, 2.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],
        [4.0, 0.0, 0.0, 0.0],
    ]
)
MASK = np.array(
    [
        [0, 1, 1, 0],
        [0, 1, 1, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ],
    dtype=bool,
)


def test_energy_inside_exact():
    # Positive energy 1 + 3 + 2 + 4 = 10, of which 1 + 3 + 2 = 6 inside; -5 is ignored.
    assert energy_inside(SALIENCY, MASK).tolist() == pytest.approx([0.6])
    maps = torch.stack([SALIENCY, torch.zeros(4, 4), -torch.ones(4, 4), torch.ones(4, 4)])
    assert energy_inside(maps.numpy(), MASK.astype(np.uint8) * 255).tolist() == pytest.approx(
        [0.6, 0.0, 0.0, 0.25]
    )
    per_map = np.stack([MASK, ~MASK])
    assert energy_inside(SALIENCY.expand(2, 4, 4), per_map).tolist() == pytest.approx([0.6, 0.4])


def test_pointing_game_exact():
    # The maximum (4 at row 3, col 0) is outside; its distance to the mask pixel (1, 1) is √5.
    assert pointing_game(SALIENCY, MASK).tolist() == [False]
    assert pointing_game(SALIENCY, MASK, tolerance_px=2.2).tolist() == [False]
    assert pointing_game(SALIENCY, MASK, tolerance_px=math.sqrt(5)).tolist() == [True]
    inside = SALIENCY.clone()
    inside[3, 0] = 0.0
    assert pointing_game(inside, MASK).tolist() == [True]


def test_pointing_game_ties_flat_maps_and_empty_masks():
    tie_inside_first = torch.zeros(4, 4)
    tie_inside_first[0, 1] = tie_inside_first[3, 3] = 1.0  # (0, 1) comes first in row-major order
    tie_outside_first = torch.zeros(4, 4)
    tie_outside_first[0, 0] = tie_outside_first[1, 2] = 1.0  # (0, 0) comes first, outside
    maps = torch.stack([tie_inside_first, tie_outside_first, torch.zeros(4, 4), torch.ones(4, 4)])
    assert pointing_game(maps, MASK).tolist() == [True, False, False, False]
    assert pointing_game(SALIENCY, np.zeros((4, 4)), tolerance_px=10).tolist() == [False]


def test_box_to_mask():
    assert torch.equal(box_to_mask((1, 0, 3, 2), 4, 4), torch.from_numpy(MASK))
    # Pixel centres decide fractional edges; the box is clipped to the image.
    expected = torch.zeros(4, 5, dtype=torch.bool)
    expected[0:2, 1:3] = True  # row centres 0.5, 1.5 in [0.5, 2.4]; column centres 1.5, 2.5
    assert torch.equal(box_to_mask((0.6, 0.5, 2.5, 2.4), 4, 5), expected)
    assert box_to_mask((-10, -10, 100, 100), 4, 5).all()
    assert not box_to_mask((2, 2, 2, 2), 4, 5).any()
    batch = box_to_mask(np.array([(1, 0, 3, 2), (0, 0, 4, 4)]), 4, 4)
    assert batch.shape == (2, 4, 4) and batch[1].all()
    assert energy_inside(SALIENCY, box_to_mask((1, 0, 3, 2), 4, 4)).item() == pytest.approx(0.6)


# --------------------------------------------------------------------------------------------
# Bad inputs


def _call(**overrides):
    kwargs = dict(logits_fn=RegionModel(), image=ONES, saliency=peaked(REGION), target=0)
    kwargs.update(overrides)
    return perturbation_curve(**kwargs)


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        (dict(saliency=torch.rand(1, 5, 4)), "saliency"),
        (dict(saliency=torch.rand(4)), "saliency"),
        (dict(saliency=torch.full((4, 4), float("nan"))), "saliency"),
        (dict(saliency=[[1.0]]), "saliency"),
        (dict(image=torch.ones(2, 3, H, W), saliency=peaked(REGION, 3)), "image"),
        (dict(image=torch.ones(1, 3, H, W, dtype=torch.long)), "image"),
        (dict(steps=0), "steps"),
        (dict(steps=-1), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(steps=True), "steps"),
        (dict(batch_size=0), "batch_size"),
        (dict(baseline="zeros"), "baseline"),
        (dict(baseline=torch.zeros(2, 3, H, W)), "baseline"),
        (dict(mode="sideways"), "mode"),
        (dict(target=3), "target"),
        (dict(target=-1), "target"),
        (dict(target=0.5), "target"),
        (dict(target=[0, 1]), "target"),
        (dict(logits_fn=lambda x: x.mean(dim=(1, 2, 3))), "logits_fn"),
    ],
)
def test_perturbation_rejects_bad_input(overrides, name):
    with pytest.raises(ValueError, match=name):
        _call(**overrides)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(top_fraction=0.0), "top_fraction"),
        (dict(top_fraction=1.5), "top_fraction"),
        (dict(top_fraction=-0.1), "top_fraction"),
        (dict(top_fraction=True), "top_fraction"),
        (dict(references=[]), "references"),
        (dict(references=[0, 1]), "references"),
        (dict(references=[1, 1]), "references"),
        (dict(references=[7]), "references"),
        (dict(references=[[1], [2]]), "references"),
    ],
)
def test_relative_confidence_drop_rejects_bad_input(kwargs, name):
    arguments = dict(references=[1])
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=name):
        relative_confidence_drop(RegionModel(), ONES, peaked(REGION), 0, **arguments)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: energy_inside(SALIENCY, np.ones((4, 5))), "mask"),
        (lambda: energy_inside(SALIENCY.expand(2, 4, 4), np.ones((3, 4, 4))), "mask"),
        (lambda: pointing_game(SALIENCY, MASK, tolerance_px=-1), "tolerance_px"),
        (lambda: pointing_game(SALIENCY, MASK, tolerance_px=float("inf")), "tolerance_px"),
        (lambda: box_to_mask((3, 0, 1, 2), 4, 4), "box"),
        (lambda: box_to_mask((0, 0, 1), 4, 4), "box"),
        (lambda: box_to_mask((0, 0, 1, float("nan")), 4, 4), "box"),
        (lambda: box_to_mask((0, 0, 1, 1), 0, 4), "height"),
        (lambda: baseline_image(ONES, "blur", blur_sigma=0), "blur_sigma"),
    ],
)
def test_localization_rejects_bad_input(call, name):
    with pytest.raises(ValueError, match=name):
        call()


# --------------------------------------------------------------------------------------------
# Device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_the_image_device():
    model = SharedVsDiscriminative()
    maps = torch.cat([peaked(REGION), peaked(OTHER)])
    cpu = relative_confidence_drop(model, ONES, maps, 0, [1], top_fraction=0.25)
    gpu = relative_confidence_drop(model, ONES.cuda(), maps.numpy(), 0, [1], top_fraction=0.25)
    assert gpu.relative_drop.device.type == "cuda"
    assert torch.allclose(gpu.relative_drop.cpu(), cpu.relative_drop, atol=1e-5)
    curve = perturbation_curve(model, ONES.cuda(), maps, 0, steps=4)
    assert curve.probabilities.is_cuda and curve.auc.is_cuda
    assert torch.allclose(
        curve.auc.cpu(), perturbation_curve(model, ONES, maps, 0, steps=4).auc, atol=1e-5
    )
    mask = box_to_mask((0, 0, 2, 2), H, W, device="cuda")
    energy, hits = energy_inside(maps.cuda(), mask), pointing_game(maps.cuda(), mask)
    assert energy.is_cuda and hits.is_cuda
    cpu_mask = box_to_mask((0, 0, 2, 2), H, W)
    assert torch.allclose(energy.cpu(), energy_inside(maps, cpu_mask))
    assert hits.tolist() == pointing_game(maps, cpu_mask).tolist() == [True, False]
