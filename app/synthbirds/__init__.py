"""Procedural birds: an offline fine-grained dataset with ground truth.

48 species in 12 genera of 4 look-alikes; genus-mates differ in one small part; every sample
carries the mask of that part (``discriminative_mask``) and of every other part and the whole
bird (``part_masks``), under photographic nuisance (pose, scale, backgrounds, occlusion,
lighting, blur, JPEG).

    >>> from app.synthbirds import render_sample, SPECIES_NAMES
    >>> s = render_sample(0, seed)          # BirdSample: image, masks, caption
"""

from .dataset import (
    SPECIES_TEMPLATES,
    BirdSample,
    caption_facts,
    describe,
    iter_samples,
    make_dataset,
    random_caption,
    render_batch,
    render_sample,
    sample_seed,
    sample_species,
    species_prompt,
)
from .render import IMAGE_SIZE, LAYERS
from .species import (
    GROUP_NAMES,
    GROUPS,
    MEMBERS_PER_GROUP,
    NUM_GROUPS,
    NUM_SPECIES,
    PART_ATTRIBUTE,
    PART_NAMES,
    SPECIES_ATTRIBUTES,
    SPECIES_NAMES,
    discriminative_part,
    group_members,
    species_group,
)
from .torch_data import SynthBirdsDataset

__all__ = [
    "GROUPS",
    "GROUP_NAMES",
    "IMAGE_SIZE",
    "LAYERS",
    "MEMBERS_PER_GROUP",
    "NUM_GROUPS",
    "NUM_SPECIES",
    "PART_ATTRIBUTE",
    "PART_NAMES",
    "SPECIES_ATTRIBUTES",
    "SPECIES_NAMES",
    "SPECIES_TEMPLATES",
    "BirdSample",
    "SynthBirdsDataset",
    "caption_facts",
    "describe",
    "discriminative_part",
    "group_members",
    "iter_samples",
    "make_dataset",
    "random_caption",
    "render_batch",
    "render_sample",
    "sample_seed",
    "sample_species",
    "species_group",
    "species_prompt",
]
