"""The procedural bird dataset, the training scripts' steps, and the shipped demo models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from app.models.zoo.demo_assets import DEMO_DIR
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
from app.synthbirds.render import masks_from_coverage, render_arrays
from app.train.demo_common import genus_mate_rate, genus_soft_targets

PART_KEYS = set(LAYERS) | {"bird", "head", "wing", "tail"}


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    out = mask.copy()
    padded = np.pad(mask, radius)
    h, w = mask.shape
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out |= padded[dy : dy + h, dx : dx + w]
    return out


def test_species_catalogue():
    assert NUM_SPECIES == len(SPECIES_NAMES) == len(SPECIES_ATTRIBUTES) == 48
    assert NUM_GROUPS == 12 and all(len(group_members(g)) == 4 for g in range(NUM_GROUPS))
    assert len(set(SPECIES_NAMES)) == NUM_SPECIES
    assert SPECIES_NAMES[0] == "Red-crowned Bluebird"
    for group in range(NUM_GROUPS):
        members = group_members(group)
        assert all(species_group(s) == group for s in members)
        # genus-mates share every attribute but the discriminative one
        attrs = [SPECIES_ATTRIBUTES[s] for s in members]
        differing = {k for k in attrs[0] if len({a[k] for a in attrs}) > 1}
        assert len(differing) == 1
        assert "body" in attrs[0]
    # genera overlap: every discriminative part is shared by two genera, and all but two genera
    # (the black Coalchat, the rose Rosefinch) share their body colour with another genus
    parts = [g.part for g in GROUPS]
    assert all(parts.count(p) == 2 for p in parts)
    bodies = [g.body for g in GROUPS]
    assert sum(bodies.count(b) >= 2 for b in bodies) == NUM_GROUPS - 2
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


def test_masks_non_empty_and_inside_the_bird():
    areas, cropped = [], 0
    for species in range(NUM_SPECIES):
        sample = render_sample(species, 1000 + species)
        assert sample.image.size == (IMAGE_SIZE, IMAGE_SIZE) and sample.image.mode == "RGB"
        assert set(sample.part_masks) == PART_KEYS
        bird = sample.part_masks["bird"]
        for key, mask in sample.part_masks.items():
            assert mask.dtype == bool and mask.shape == (IMAGE_SIZE, IMAGE_SIZE)
            assert not (mask & ~bird).any(), key
        mask = sample.discriminative_mask
        assert sample.discriminative_part == discriminative_part(species)
        assert np.array_equal(mask, sample.part_masks[sample.discriminative_part])
        areas.append(mask.mean())
        assert 0.04 < bird.mean() < 0.5
        border = np.ones_like(mask)
        border[1:-1, 1:-1] = False
        cropped += bool((bird & border).any())
    assert cropped <= NUM_SPECIES // 10  # the whole bird is in the frame, nearly always
    areas = np.array(areas)
    # small but visible (a branch in front may hide some of a part)
    assert np.median(areas) > 0.002 and areas.max() < 0.04 and (areas > 0).mean() > 0.9


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > 0


def _jpeg_blocks(mask: np.ndarray, block: int = 16) -> np.ndarray:
    """Every pixel of a JPEG macroblock (16 px with chroma subsampling) that ``mask`` touches."""
    h, w = mask.shape
    touched = mask.reshape(h // block, block, w // block, block).any(axis=(1, 3))
    return np.repeat(np.repeat(touched, block, 0), block, 1)


@pytest.mark.parametrize("group", range(NUM_GROUPS))
def test_genus_mates_differ_only_inside_the_discriminative_part(group):
    for seed in (3, 4):
        members = group_members(group)
        drawn = [render_arrays(s, np.random.default_rng(seed), camera=False) for s in members]
        shot = [render_arrays(s, np.random.default_rng(seed)) for s in members]
        part = discriminative_part(members[0])
        mask = masks_from_coverage(drawn[0][1])[part]
        touched = drawn[0][1][part] > 0  # every pixel the part covers, anti-aliased rim too
        for other in drawn[1:]:
            assert np.array_equal(masks_from_coverage(other[1])[part], mask)  # same pose
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                # before the camera: only the part (and its anti-aliased rim) changes ...
                changed = _changed(drawn[i][0], drawn[j][0])
                assert not (changed & ~touched).any(), (i, j)
                # ... and most of it does
                assert (changed & mask).sum() > 0.8 * mask.sum(), (i, j)
                # blur spreads it by 2 px, JPEG over the macroblocks it touches (and 1 px
                # more: the decoder's chroma upsampling interpolates across blocks)
                changed = _changed(shot[i][0], shot[j][0])
                allowed = _dilate(_jpeg_blocks(_dilate(touched, 2)), 1)
                assert not (changed & ~allowed).any(), (i, j)
                assert allowed.mean() < 0.25
                assert (changed & mask).sum() > 0.5 * mask.sum(), (i, j)


def test_genera_differ_in_silhouette_or_part():
    samples = [render_sample(group_members(g)[0], 9) for g in range(NUM_GROUPS)]
    for i in range(NUM_GROUPS):
        for j in range(i + 1, NUM_GROUPS):
            same_plan = GROUPS[i].shape == GROUPS[j].shape
            same_part = GROUPS[i].part == GROUPS[j].part
            masks_equal = np.array_equal(
                samples[i].discriminative_mask, samples[j].discriminative_mask
            )
            assert masks_equal == (same_plan and same_part), (GROUPS[i].name, GROUPS[j].name)
            if same_plan:  # same silhouette: then the genus look (colours) tells them apart
                assert GROUPS[i].body != GROUPS[j].body or GROUPS[i].wing != GROUPS[j].wing


def test_nuisance_varies_pose_scale_and_background():
    samples = [render_sample(0, seed) for seed in range(24)]
    birds = np.stack([s.part_masks["bird"] for s in samples])
    areas = birds.mean(axis=(1, 2))
    assert areas.max() > 1.5 * areas.min()  # scale
    columns = [np.nonzero(b.any(0))[0].mean() for b in birds]
    assert np.ptp(columns) > 20  # position
    heads = [
        np.nonzero(s.part_masks["head"].any(0))[0].mean() - c
        for s, c in zip(samples, columns, strict=True)
    ]
    assert min(heads) < 0 < max(heads)  # facing left and right
    backgrounds = np.stack(
        [np.asarray(s.image, np.float32)[~b].mean(0) for s, b in zip(samples, birds, strict=True)]
    )
    assert np.ptp(backgrounds, axis=0).max() > 0.25 * 255  # background kinds and colours


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
    assert describe({"genus": "Bluebird", "crown": "red"}) == "a Bluebird with a red crown"
    assert render_sample(0, 0).caption == "a blue bird with a red crown"
    rng = np.random.default_rng(0)
    kinds = set()
    for i in range(200):
        species = i % NUM_SPECIES
        text, claims = random_caption(species, rng)
        facts = caption_facts(species)
        assert claims and all(facts[k] == v for k, v in claims.items()), text
        kinds.add(frozenset(claims) & {"species", "genus"})
    assert kinds == {frozenset(), frozenset({"species"}), frozenset({"genus"})}


# --- training (smoke) ------------------------------------------------------------------


def test_genus_soft_targets_and_mate_rate():
    labels = torch.tensor([0, 5, 47])
    target = genus_soft_targets(labels, smoothing=0.05, genus=0.1)
    assert torch.allclose(target.sum(1), torch.ones(3))
    for row, label in enumerate(labels.tolist()):
        mates = [m for m in group_members(species_group(label)) if m != label]
        others = [c for c in range(NUM_SPECIES) if c not in mates and c != label]
        assert target[row, label] == target[row].max()
        assert (target[row, mates] > target[row, others].max()).all()
    logits = torch.full((1, NUM_SPECIES), -5.0)
    logits[0, [0, 1, 2, 40]] = torch.tensor([9.0, 8.0, 7.0, 7.5])
    assert genus_mate_rate(logits, torch.tensor([0]), 1) == 1.0
    assert abs(genus_mate_rate(logits, torch.tensor([0]), 3) - 2 / 3) < 1e-6


def test_classifier_training_runs_on_a_pool(tmp_path):
    from app.train.demo_cnn import main as train_cnn
    from app.train.demo_vit import main as train_vit

    common = [
        "--steps",
        "2",
        "--batch-size",
        "8",
        "--pool",
        "16",
        "--test-size",
        "8",
        "--threads",
        "1",
        "--no-progress",
        "--out",
        str(tmp_path),
    ]
    pool = tmp_path / "pools"
    cnn = train_cnn(common + ["--pool-cache", str(pool)])
    assert cnn["labels"] == list(SPECIES_NAMES) and 0 <= cnn["test_accuracy"] <= 1
    assert len(list(pool.glob("*.npy"))) == 1
    vit = train_vit(common + ["--pool-cache", str(pool), "--cnn", str(tmp_path)])
    assert vit["vit"]["depth"] >= 1 and (tmp_path / "demo-vit.safetensors").is_file()
    from app.models.zoo.demo_vit import load_demo_vit

    model = load_demo_vit("cpu", tmp_path / "demo-vit.safetensors", tmp_path / "demo-vit.json")
    leaf, logits = model.split_forward(model.preprocess(render_sample(0, 0).image))
    assert logits.shape == (1, NUM_SPECIES) and model.to_grid(leaf).shape[-2:] == (8, 8)


def test_clip_train_step_runs_through_open_clip():
    from app.train.demo_common import to_tensor
    from app.train.demo_tinyclip import batch_captions, build_model, train_step

    torch.manual_seed(0)
    model, tokenizer, mean, std = build_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images, labels = render_batch(range(6), seed=0)
    rng = np.random.default_rng(0)
    texts, positives = batch_captions(labels, rng)
    assert positives.shape == (6, len(texts)) and positives.any(1).all()
    seen: set[int] = set()
    x = to_tensor(images, mean, std)
    losses = [train_step(model, tokenizer, optimizer, x, labels, rng, seen) for _ in range(2)]
    assert all(np.isfinite(losses)) and seen


# --- the shipped demo models ------------------------------------------------------------

#: A small held-out set: 3 birds per species (seeds never used in training).
HELD_OUT = 3 * NUM_SPECIES


@pytest.fixture(scope="module")
def held_out():
    return make_dataset(HELD_OUT, seed=777, split="test")


def test_demo_cnn_is_a_torchvision_resnet_with_fgcam_layers():
    from torchvision.models.resnet import BasicBlock, ResNet

    from app.models.zoo.demo_cnn import load_demo_cnn

    adapter = load_demo_cnn("cpu")
    assert isinstance(adapter.model, ResNet)
    assert adapter.name == "demo-cnn" and list(adapter.labels) == list(SPECIES_NAMES)
    layers = adapter.fgcam_layers()
    assert isinstance(layers[-1][-1], BasicBlock)
    x = adapter.preprocess(Image.new("RGB", (200, 90), "white"))  # any size: whole image
    assert x.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    activation = adapter.trunk(x)
    assert activation.shape[-2:] == (16, 16) == adapter.grid_size(IMAGE_SIZE, IMAGE_SIZE)
    assert adapter.tail(activation).shape == (1, NUM_SPECIES)
    assert adapter.class_embeddings().shape == (NUM_SPECIES, activation.shape[1])


def _accuracy_and_mates(adapter, samples) -> tuple[float, float]:
    x = torch.cat([adapter.preprocess(s.image) for s in samples])
    logits = adapter.logits(x)
    truth = torch.tensor([s.species for s in samples])
    return float((logits.argmax(1) == truth).float().mean()), genus_mate_rate(logits, truth, 3)


@pytest.mark.parametrize("name", ["demo-cnn", "demo-vit"])
def test_shipped_classifiers_accuracy_and_look_alikes(name, held_out):
    from app.models.zoo.demo_cnn import load_demo_cnn
    from app.models.zoo.demo_vit import load_demo_vit

    adapter = (load_demo_cnn if name == "demo-cnn" else load_demo_vit)("cpu")
    accuracy, mates = _accuracy_and_mates(adapter, held_out)
    meta = json.loads((DEMO_DIR / f"{name}.json").read_text())
    # The figures the metadata (and docs/models.md) state, re-measured on other held-out birds,
    # within sampling noise; the targets (>= 0.95 accuracy, >= 0.8 genus-mates among the
    # closest logits) are what both shipped classifiers state on 960 held-out birds.
    assert accuracy >= meta["test_accuracy"] - 0.06, accuracy
    assert mates >= meta["genus_mate_rate_top3"] - 0.1, mates
    assert meta["test_accuracy"] >= 0.95 and meta["genus_mate_rate_top3"] >= 0.8


def test_shipped_tiny_clip_loads_through_open_clip_and_knows_species(held_out):
    import open_clip

    from app.models.zoo.demo_assets import TINYCLIP_META, TINYCLIP_WEIGHTS, register_tinyclip_config

    name = register_tinyclip_config()
    assert register_tinyclip_config() == name  # idempotent
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=str(TINYCLIP_WEIGHTS)
    )
    tokenizer = open_clip.get_tokenizer(name)
    model.eval()
    meta = json.loads(TINYCLIP_META.read_text())
    assert meta["labels"] == list(SPECIES_NAMES)
    with torch.no_grad():
        text = model.encode_text(
            tokenizer([meta["species_template"].format(n) for n in SPECIES_NAMES]), normalize=True
        )
        images = model.encode_image(
            torch.stack([preprocess(s.image) for s in held_out]), normalize=True
        )
    accuracy = (
        ((images @ text.T).argmax(1) == torch.tensor([s.species for s in held_out])).float().mean()
    )
    # the stated figure (960 held-out birds, see docs/models.md) within sampling noise, and the
    # stated figure meets the target
    assert accuracy >= meta["zero_shot_species_accuracy"] - 0.1, accuracy
    assert meta["zero_shot_species_accuracy"] >= 0.8


def test_shipped_examples_cover_every_genus_and_both_classifiers_see_look_alikes():
    """The UI's examples: one per genus, reproducible from (species, seed), captioned with what
    separates them, and each one the case Finer-CAM is for — both demo classifiers right, with
    the three genus-mates as the closest logits (so the default references are look-alikes)."""
    from app.models.zoo.demo_cnn import load_demo_cnn
    from app.models.zoo.demo_vit import load_demo_vit
    from app.synthbirds.examples import EXAMPLES_DIR, difference_caption
    from app.synthbirds.species import MEMBERS_PER_GROUP

    listing = json.loads((EXAMPLES_DIR / "examples.json").read_text())
    assert len({item["group"] for item in listing}) == len(listing) == 12
    models = (load_demo_cnn("cpu"), load_demo_vit("cpu"))
    for item in listing:
        species = item["species"]
        image = Image.open(EXAMPLES_DIR / item["file"]).convert("RGB")
        assert np.array_equal(
            np.asarray(image), np.asarray(render_sample(species, item["seed"]).image)
        )
        assert item["caption"] == difference_caption(species)
        for model in models:
            top = model.logits(model.preprocess(image))[0].argsort(descending=True)[:4].tolist()
            assert top[0] == species, (model.name, item["label"])
            assert {t // MEMBERS_PER_GROUP for t in top} == {species // MEMBERS_PER_GROUP}
    captions = " ".join(item["caption"] for item in listing)
    assert "Azurejays." in captions and "Canaries." in captions and "Thrushes." in captions
