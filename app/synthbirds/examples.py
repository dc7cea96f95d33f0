"""Render the example images shown in the UI.

    python -m app.synthbirds.examples --out assets/examples

One PNG per example, named after its species, and ``examples.json`` listing each file's
species, group, discriminative part and render seed (``render_sample(species, seed)``
reproduces the image and its masks exactly).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from app.models.demo_assets import REPO_ROOT

from . import GROUP_NAMES, SPECIES_NAMES, render_sample

#: (species, seed): every group once, plus a group-mate of the first for side-by-side contrast.
EXAMPLES: tuple[tuple[int, int], ...] = ((0, 11), (1, 11), (4, 22), (6, 33), (10, 44), (12, 55))

EXAMPLES_DIR = REPO_ROOT / "assets" / "examples"


def slug(name: str) -> str:
    return name.lower().replace(" ", "-")


def write_examples(out: Path = EXAMPLES_DIR) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    listing = []
    for species, seed in EXAMPLES:
        sample = render_sample(species, seed)
        filename = f"{slug(SPECIES_NAMES[species])}.png"
        sample.image.save(out / filename, optimize=True)
        listing.append({
            "file": filename,
            "species": species,
            "label": SPECIES_NAMES[species],
            "group": GROUP_NAMES[sample.group],
            "discriminative_part": sample.discriminative_part,
            "seed": seed,
            "caption": sample.caption,
        })
    (out / "examples.json").write_text(json.dumps(listing, indent=2) + "\n")
    return listing


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=EXAMPLES_DIR)
    args = parser.parse_args(argv)
    for item in write_examples(args.out):
        print(f"{args.out / item['file']}: {item['label']}")


if __name__ == "__main__":
    main()
