"""Public sampling API: one ``BirdSample`` per (species, seed), seeded datasets, captions."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .render import IMAGE_SIZE, masks_from_coverage, render_arrays
from .species import (
    GROUP_NAMES,
    NUM_SPECIES,
    SPECIES_ATTRIBUTES,
    SPECIES_NAMES,
    discriminative_part,
    species_group,
)

SPLITS = {"train": 0, "val": 1, "test": 2}


@dataclass
class BirdSample:
    """One rendered bird with its ground truth.

    Attributes:
        image: RGB image, ``IMAGE_SIZE`` square.
        species: Species index (into ``SPECIES_NAMES``).
        group: Genus (look-alike group) index.
        discriminative_part: Name of the part that tells this species from its group-mates.
        discriminative_mask: Bool (H, W): visible pixels of that part.
        part_masks: Bool (H, W) per part: every drawn part (``tail``, ``tail_tip``, ``body``,
            ``breast``, ``wing``, ``wing_bar``, ``head``, ``crown``, ``beak``, ``eye_ring``,
            ``eye``) and ``bird``. ``tail``, ``body``, ``wing`` and ``head`` include their
            sub-parts. Occlusion-aware: a pixel belongs to the part visible there.
        caption: A plain description, e.g. "a blue bird with a red crown".
    """

    image: Image.Image
    species: int
    group: int
    discriminative_part: str
    discriminative_mask: np.ndarray
    part_masks: dict[str, np.ndarray]
    caption: str

    @property
    def name(self) -> str:
        return SPECIES_NAMES[self.species]


def _rng(rng_or_seed) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    return np.random.default_rng(rng_or_seed)


def render_sample(species: int, rng_or_seed=0, size: int = IMAGE_SIZE) -> BirdSample:
    """Render one bird of ``species``. The same seed gives the same pixels and masks; the same
    seed with a genus-mate gives the same picture except inside the discriminative part (and
    the few pixels around it that blur and JPEG reach)."""
    image, coverage = render_arrays(int(species), _rng(rng_or_seed), size)
    masks = masks_from_coverage(coverage)
    part = discriminative_part(species)
    pil = Image.fromarray(image, "RGB")
    return BirdSample(
        image=pil,
        species=int(species),
        group=species_group(species),
        discriminative_part=part,
        discriminative_mask=masks[part],
        part_masks=masks,
        caption=describe(SPECIES_ATTRIBUTES[species]),
    )


def sample_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    """Seed of sample ``index`` of a split; splits never share a stream."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    return np.random.SeedSequence(entropy=int(seed), spawn_key=(SPLITS[split], int(index)))


def sample_species(index: int) -> int:
    """Species of sample ``index``: species cycle, so any NUM_SPECIES consecutive samples are
    balanced."""
    return int(index) % NUM_SPECIES


def iter_samples(
    n: int, seed: int = 0, split: str = "train", start: int = 0
) -> Iterator[BirdSample]:
    """Samples ``start .. start+n-1`` of a seeded split."""
    for index in range(start, start + n):
        yield render_sample(sample_species(index), sample_seed(seed, split, index))


def make_dataset(n: int, seed: int = 0, split: str = "train") -> list[BirdSample]:
    """The first ``n`` samples of a seeded split."""
    return list(iter_samples(n, seed, split))


def render_batch(indices, seed: int = 0, split: str = "train"):
    """Images as a uint8 array (N, H, W, 3) and species labels (N,), without masks: the fast
    path for training."""
    images, labels = [], []
    for index in indices:
        species = sample_species(index)
        img, _ = render_arrays(species, np.random.default_rng(sample_seed(seed, split, index)))
        images.append(img)
        labels.append(species)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


# --- captions ---------------------------------------------------------------------------

_ARTICLE = {"orange": "an"}


def _a(word: str) -> str:
    return f"{_ARTICLE.get(word, 'a')} {word}"


def describe(claims: dict[str, str]) -> str:
    """Caption for a set of attribute claims, e.g. {"body": "blue", "crown": "red"} ->
    "a blue bird with a red crown"; a ``genus`` claim names the bird ("a Bluebird with a red
    crown"). An empty dict gives "a bird"."""
    body = claims.get("body")
    noun = claims.get("genus", "bird")
    head = f"{_a(body)} {noun}" if body else f"a {noun}"
    parts = [
        f"{_a(colour)} {part}" for part, colour in claims.items() if part not in ("body", "genus")
    ]
    if not parts:
        return head
    if len(parts) == 1:
        return f"{head} with {parts[0]}"
    return f"{head} with {', '.join(parts[:-1])} and {parts[-1]}"


SPECIES_TEMPLATES = ("a photo of a {}.", "a {}.", "a photo of the {}, a kind of bird.", "{}")


def species_prompt(species: int, template: str = SPECIES_TEMPLATES[0]) -> str:
    return template.format(SPECIES_NAMES[species])


def random_caption(species: int, rng: np.random.Generator) -> tuple[str, dict[str, str]]:
    """A random true caption of a species and the claims it makes.

    40 % a species-name prompt (claims ``{"species": name}``), 15 % a genus prompt ("a photo of
    a Bluebird."), otherwise a random non-empty subset of its attributes, named by genus half of
    the time ("a bird with a red crown", "a Bluebird with a red crown", "a blue bird", ...).
    Caption ``c`` is true for species ``s`` when ``c``'s claims are a subset of
    ``caption_facts(s)``.
    """
    draw = rng.random()
    if draw < 0.4:
        template = SPECIES_TEMPLATES[rng.integers(len(SPECIES_TEMPLATES))]
        return species_prompt(species, template), {"species": SPECIES_NAMES[species]}
    genus = GROUP_NAMES[species_group(species)]
    if draw < 0.55:
        template = SPECIES_TEMPLATES[rng.integers(len(SPECIES_TEMPLATES))]
        return template.format(genus), {"genus": genus}
    attrs = SPECIES_ATTRIBUTES[species]
    keys = list(attrs)
    while True:
        chosen = [k for k in keys if rng.random() < 0.5]
        if chosen:
            break
    claims = {k: attrs[k] for k in keys if k in chosen}
    if rng.random() < 0.5:
        claims = {"genus": genus, **claims}
    text = describe(claims)
    if rng.random() < 0.3:
        text = "a photo of " + text + "."
    return text, claims


def caption_facts(species: int) -> dict[str, str]:
    """Everything true about a species, in the claims vocabulary of ``random_caption``."""
    return {
        "species": SPECIES_NAMES[species],
        "genus": GROUP_NAMES[species_group(species)],
        **SPECIES_ATTRIBUTES[species],
    }
