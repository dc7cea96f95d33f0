"""Prompts for the concepts tab's examples: what separates each example bird from its genus.

An example fills the image, a target concept naming the bird's distinctive part ("a bird with
a red crown") and, as contrasts, the same part in the colours of its genus-mates — the
contrast Finer-CAM is about — so a click explains at once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from app.synthbirds import GROUPS, PART_ATTRIBUTE
from app.synthbirds.species import MEMBERS_PER_GROUP, species_group

log = logging.getLogger(__name__)

#: The listing ``python -m app.synthbirds.examples`` writes next to the pictures.
LISTING = "examples.json"


@dataclass(frozen=True)
class ConceptExample:
    """One example of the concepts tab: the picture and its two prompts."""

    image: str
    target: str
    contrast: str

    def row(self) -> list[str]:
        """The row ``gr.Examples`` fills [image, target, contrast] from."""
        return [self.image, self.target, self.contrast]


def part_prompts(species: int) -> tuple[str, str]:
    """``("a bird with a red crown", "a bird with a yellow crown, a bird with …")``: the
    species' distinctive part in its colour, and in each genus-mate's colour."""
    group = GROUPS[species_group(species)]
    part = PART_ATTRIBUTE[group.part]
    own = group.member_colours[species % MEMBERS_PER_GROUP]
    others = [colour for colour in group.member_colours if colour != own]
    return f"a bird with a {own} {part}", ", ".join(f"a bird with a {c} {part}" for c in others)


def concept_examples(images: list[str]) -> list[ConceptExample]:
    """The examples among ``images`` that the listing next to them names, with their prompts
    (pictures it does not name are left out: there is nothing to contrast them with)."""
    if not images:
        return []
    listing = Path(images[0]).parent / LISTING
    try:
        species = {row["file"]: int(row["species"]) for row in json.loads(listing.read_text())}
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("no usable %s: the concepts tab shows no examples", listing)
        return []
    examples = []
    for image in images:
        if Path(image).name in species:
            target, contrast = part_prompts(species[Path(image).name])
            examples.append(ConceptExample(image, target, contrast))
    return examples
