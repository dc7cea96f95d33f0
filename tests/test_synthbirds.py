"""The procedural bird dataset, the training scripts' steps, and the shipped demo models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from app.synthbirds import (
    GROUPS,
    IMAGE_SIZE,
    LAYERS,
    NUM_GROUPS,
    NUM_SPECIES,
    SPECIES_ATTRIBUTES,
    SPECIES_NAMES,
    SynthBirdsDataset,
    caption_facts,
    describe,
    discriminative_part,
    group_members,
    iter_samples,
    make_dataset,
    random_caption,
    render_batch,
    render_sample,
    species_group,
)

PART_KEYS = set(LAYERS) | {"bird", "head", "wing", "tail"}


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    out = mask.copy()
    padded = np.pad(mask, radius)
    h, w = mask.shape
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out |= padded[dy:dy + h, dx:dx + w]
    return out


def test_species_catalogue():
    assert NUM_SPECIES == len(SPECIES_NAMES) == len(SPECIES_ATTRIBUTES) == 15
    assert len(set(SPECIES_NAMES)) == NUM_SPECIES
    assert SPECIES_NAMES[0] == "Red-crowned Bluebird"
    assert len({g.part for g in GROUPS}) == NUM_GROUPS  # every group differs in its own part
    for group in range(NUM_GROUPS):
        members = group_members(group)
        assert all(species_group(s) == group for s in members)
        # group-mates share every attribute but the discriminative one
        attrs = [SPECIES_ATTRIBUTES[s] for s in members]
        differing = {k for k in attrs[0] if len({a[k] for a in attrs}) > 1}
        assert len(differing) == 1
    with pytest.raises(ValueError):
        species_group(NUM_SPECIES)


def test_same_seed_same_pixels_and_masks():
    a, b = render_sample(7, 123), render_sample(7, 123)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert a.part_masks.keys() == b.part_masks.keys()
    for key in a.part_masks:
        assert np.array_equal(a.part_masks[key], b.part_masks[key])
    c = render_sample(7, 124)
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))
    ds = SynthBirdsDataset(4, seed=5, split="val")
    assert torch.equal(ds[2][0], SynthBirdsDataset(4, seed=5, split="val")[2][0])
    assert not torch.equal(ds[2][0], SynthBirdsDataset(4, seed=5, split="test")[2][0])


@pytest.mark.parametrize("species", range(NUM_SPECIES))
def test_masks_non_empty_and_inside_the_bird(species):
    sample = render_sample(species, 1000 + species)
    assert sample.image.size == (IMAGE_SIZE, IMAGE_SIZE) and sample.image.mode == "RGB"
    assert set(sample.part_masks) == PART_KEYS
    for key, mask in sample.part_masks.items():
        assert mask.dtype == bool and mask.shape == (IMAGE_SIZE, IMAGE_SIZE)
        assert mask.sum() > 0, key
    mask = sample.discriminative_mask
    assert sample.discriminative_part == discriminative_part(species)
    assert np.array_equal(mask, sample.part_masks[sample.discriminative_part])
    area = mask.mean()
    assert 0.002 < area < 0.04, area  # small but visible
    assert not (mask & ~sample.part_masks["bird"]).any()
    border = np.ones_like(mask)
    border[1:-1, 1:-1] = False
    assert not (sample.part_masks["bird"] & border).any()  # whole bird inside the frame


@pytest.mark.parametrize("group", range(NUM_GROUPS))
def test_group_mates_differ_only_inside_the_discriminative_part(group):
    for seed in (3, 4):
        samples = [render_sample(s, seed) for s in group_members(group)]
        mask = samples[0].discriminative_mask
        for other in samples[1:]:
            assert np.array_equal(other.discriminative_mask, mask)  # same pose, same part
        allowed = _dilate(mask, 2)
        for i, a in enumerate(samples):
            for b in samples[i + 1:]:
                diff = np.abs(np.asarray(a.image, np.int16) - np.asarray(b.image, np.int16))
                changed = diff.max(axis=2) > 0
                assert not (changed & ~allowed).any(), (a.name, b.name)
                # and they do differ there: most of the part changes colour
                assert (changed & mask).sum() > 0.8 * mask.sum(), (a.name, b.name)


def test_different_groups_have_different_discriminative_masks():
    masks = [render_sample(group_members(g)[0], 9).discriminative_mask
             for g in range(NUM_GROUPS)]
    for i in range(NUM_GROUPS):
        for j in range(i + 1, NUM_GROUPS):
            assert not np.array_equal(masks[i], masks[j])


def test_datasets_and_batches_agree():
    samples = make_dataset(NUM_SPECIES + 2, seed=3, split="test")
    assert [s.species for s in samples] == [i % NUM_SPECIES for i in range(NUM_SPECIES + 2)]
    images, labels = render_batch(range(NUM_SPECIES + 2), seed=3, split="test")
    assert images.shape == (NUM_SPECIES + 2, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert images.dtype == np.uint8
    assert labels.tolist() == [s.species for s in samples]
    assert np.array_equal(images[4], np.asarray(samples[4].image))
    later = list(iter_samples(2, seed=3, split="test", start=4))
    assert np.array_equal(np.asarray(later[0].image), images[4])
    ds = SynthBirdsDataset(3, seed=3, split="test", with_masks=True)
    image, label, mask = ds[1]
    assert image.shape == (3, IMAGE_SIZE, IMAGE_SIZE) and 0 <= image.min() <= image.max() <= 1
    assert label == 1 and mask.dtype == torch.bool
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(ValueError):
        SynthBirdsDataset(3, split="holdout")


def test_throughput_sanity():
    # no timing assert: just renders a batch the size of a training step
    images, labels = render_batch(range(64), seed=0)
    assert images.shape[0] == 64 and len(set(labels.tolist())) == NUM_SPECIES


def test_captions_are_true():
    assert describe({}) == "a bird"
    assert describe({"body": "blue", "crown": "red"}) == "a blue bird with a red crown"
    assert describe({"beak": "orange"}) == "a bird with an orange beak"
    assert render_sample(0, 0).caption == "a blue bird with a red crown and a black beak"
    rng = np.random.default_rng(0)
    for i in range(60):
        species = i % NUM_SPECIES
        text, claims = random_caption(species, rng)
        facts = caption_facts(species)
        assert claims and all(facts[k] == v for k, v in claims.items()), text


# --- training steps (smoke) -------------------------------------------------------------


def test_cnn_train_step_learns_something():
    from app.models.demo_cnn import DemoCNN
    from app.synthbirds.train_cnn import make_optimizer, train_step

    torch.manual_seed(0)
    model = DemoCNN(NUM_SPECIES)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = make_optimizer(model, 3e-3, 5e-4)
    images, labels = render_batch(range(8), seed=0)
    losses = [train_step(model, optimizer, images, labels, [0.5] * 3, [0.25] * 3)[0]
              for _ in range(3)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_clip_train_step_runs_through_open_clip():
    from app.synthbirds.train_clip import batch_captions, build_model, train_step

    torch.manual_seed(0)
    model, tokenizer, mean, std = build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images, labels = render_batch(range(6), seed=0)
    rng = np.random.default_rng(0)
    texts, positives = batch_captions(labels, rng)
    assert positives.shape == (6, len(texts)) and positives.any(1).all()
    seen: set[int] = set()
    losses = [train_step(model, tokenizer, optimizer, images, labels, rng, mean, std, seen)
              for _ in range(2)]
    assert all(np.isfinite(losses)) and seen


# --- the shipped demo models ------------------------------------------------------------


def test_demo_cnn_architecture_and_adapter():
    from app.models.demo_cnn import load_demo_cnn

    adapter = load_demo_cnn("cpu")
    assert adapter.name == "demo-cnn" and list(adapter.labels) == list(SPECIES_NAMES)
    layers = adapter.fgcam_layers()
    assert all(isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d)) for m in layers)
    assert isinstance(layers[-1], nn.ReLU)
    x = adapter.preprocess(Image.new("RGB", (200, 90), "white"))  # any size: whole image
    assert x.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    activation = adapter.trunk(x)
    assert activation.shape[-2:] == (16, 16)
    assert adapter.tail(activation).shape == (1, NUM_SPECIES)
    assert adapter.class_embeddings().shape == (NUM_SPECIES, activation.shape[1])


def test_shipped_demo_cnn_accuracy():
    from app.models.demo_cnn import load_demo_cnn

    adapter = load_demo_cnn("cpu")
    samples = make_dataset(300, seed=777, split="test")
    x = torch.cat([adapter.preprocess(s.image) for s in samples])
    predictions = adapter.logits(x).argmax(1)
    accuracy = (predictions == torch.tensor([s.species for s in samples])).float().mean()
    assert accuracy >= 0.97, accuracy


def test_shipped_tiny_clip_loads_through_open_clip_and_knows_species():
    import open_clip

    from app.models.demo_assets import (
        TINYCLIP_META,
        TINYCLIP_WEIGHTS,
        register_tinyclip_config,
    )

    name = register_tinyclip_config()
    assert register_tinyclip_config() == name  # idempotent
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=str(TINYCLIP_WEIGHTS))
    tokenizer = open_clip.get_tokenizer(name)
    model.eval()
    meta = json.loads(TINYCLIP_META.read_text())
    assert meta["labels"] == list(SPECIES_NAMES)
    samples = make_dataset(150, seed=777, split="test")
    with torch.no_grad():
        text = model.encode_text(
            tokenizer([meta["species_template"].format(n) for n in SPECIES_NAMES]),
            normalize=True)
        images = model.encode_image(torch.stack([preprocess(s.image) for s in samples]),
                                    normalize=True)
    accuracy = ((images @ text.T).argmax(1) == torch.tensor([s.species for s in samples])
                ).float().mean()
    assert accuracy >= 5 / NUM_SPECIES, accuracy  # chance is 1/15
