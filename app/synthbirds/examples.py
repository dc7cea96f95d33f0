"""Render the example images shown in the UI.

    python -m app.synthbirds.examples --out assets/examples

One PNG per example, named after its species, and ``examples.json`` listing each file's
species, genus, discriminative part, render seed (``render_sample(species, seed)`` reproduces
the image and its masks exactly) and a one-line caption of what tells it from its genus-mates.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from app.models.zoo.demo_assets import REPO_ROOT

from . import (
    GROUP_NAMES,
    GROUPS,
    PART_ATTRIBUTE,
    SPECIES_NAMES,
    group_members,
    render_sample,
)
from .species import MEMBERS_PER_GROUP, species_group

#: (species, seed): one species of each of the 12 genera, the part visible and the bird well
#: framed, picked so both demo classifiers get it right with genus-mates as their three closest
#: logits (``tests/test_synthbirds.py`` re-checks this).
EXAMPLES: tuple[tuple[int, int], ...] = (
    (0, 2),
    (5, 2),
    (11, 1),
    (15, 3),
    (16, 1),
    (21, 1),
    (26, 18),
    (31, 3),
    (35, 1),
    (39, 5),
    (42, 1),
    (47, 3),
)

EXAMPLES_DIR = REPO_ROOT / "assets" / "examples"


def slug(name: str) -> str:
    return name.lower().replace(" ", "-")


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def difference_caption(species: int) -> str:
    """What tells a species from its genus-mates, e.g. "The yellow crown tells it from the
    red-, white- and black-crowned Bluebirds"."""
    group = GROUPS[species_group(species)]
    colour = group.member_colours[species % MEMBERS_PER_GROUP]
    others = [
        group.member_colours[m % MEMBERS_PER_GROUP]
        for m in group_members(species_group(species))
        if m != species
    ]
    part = PART_ATTRIBUTE[group.part]
    mates = _and([f"{c}-" for c in others[:-1]] + [f"{others[-1]}-{group.part_word}"])
    name = group.name
    plural = (
        name[:-1] + "ies"
        if name.endswith("y") and name[-2] not in "aeiou"
        else name + ("es" if name.endswith(("sh", "ch")) else "s")
    )
    return f"The {colour} {part} tells it from the {mates} {plural}."


def write_examples(out: Path = EXAMPLES_DIR) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    listing = []
    for species, seed in EXAMPLES:
        sample = render_sample(species, seed)
        filename = f"{slug(SPECIES_NAMES[species])}.png"
        sample.image.save(out / filename, optimize=True)
        listing.append(
            {
                "file": filename,
                "species": species,
                "label": SPECIES_NAMES[species],
                "group": GROUP_NAMES[sample.group],
                "discriminative_part": sample.discriminative_part,
                "seed": seed,
                "caption": difference_caption(species),
                "description": sample.caption,
            }
        )
    (out / "examples.json").write_text(json.dumps(listing, indent=2) + "\n")
    return listing


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=EXAMPLES_DIR)
    args = parser.parse_args(argv)
    for stale in args.out.glob("*.png"):
        stale.unlink()
    for item in write_examples(args.out):
        print(f"{args.out / item['file']}: {item['label']} — {item['caption']}")


if __name__ == "__main__":
    main()
