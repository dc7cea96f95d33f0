"""Species of the procedural "spot-the-difference" birds.

Species come in look-alike groups. Within a group every species has the same body shape and
the same colours everywhere except one small part (the group's *discriminative part*), which
each species paints in its own colour. So two group-mates differ only inside that part, and
its mask is the ground truth of "where the evidence for this species over its look-alikes is".

Colours are RGB in [0, 1]. Attributes (``SPECIES_ATTRIBUTES``) name the colours in words; the
caption generator and the tiny CLIP use them for concept prompts ("a bird with a red crown").
"""

from __future__ import annotations

from dataclasses import dataclass, field

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.88, 0.12, 0.10),
    "yellow": (0.98, 0.86, 0.08),
    "white": (0.97, 0.97, 0.95),
    "blue": (0.15, 0.42, 0.95),
    "orange": (1.00, 0.52, 0.05),
    "black": (0.06, 0.06, 0.07),
    "pink": (0.92, 0.62, 0.58),
    "grey": (0.55, 0.55, 0.58),
}

# Part names. Layer parts are drawn (back to front in ``render.LAYERS``); the discriminative
# part of every group is one of them.
PART_NAMES = (
    "tail", "tail_tip", "body", "wing", "wing_bar", "head", "crown", "beak", "eye_ring", "eye",
)


@dataclass(frozen=True)
class Shape:
    """Body plan shared by a group, in bird units (body length about 1, facing +u, v up)."""

    body_a: float = 0.40  # body ellipse semi-axes
    body_b: float = 0.24
    body_tilt: float = 8.0  # degrees, front up
    head_x: float = 0.38
    head_y: float = 0.22
    head_r: float = 0.19
    beak_len: float = 0.20
    beak_half: float = 0.40  # half-width of the beak base, in head radii
    beak_droop: float = 0.0  # tip offset downwards, in head radii
    wing_x: float = -0.07
    wing_y: float = 0.03
    wing_a: float = 0.30
    wing_b: float = 0.13
    wing_tilt: float = -12.0
    tail_len: float = 0.36
    tail_spread: float = 0.10  # half-width gained from root to tip
    tail_droop: float = 0.10


@dataclass(frozen=True)
class Group:
    name: str  # e.g. "Bluebird"
    part: str  # discriminative part: one of PART_NAMES
    part_word: str  # how the species name says it, e.g. "crowned"
    body_word: str  # body colour in words
    shape: Shape
    palette: dict[str, tuple[float, float, float]]  # colour of every layer part
    member_colours: tuple[str, ...]  # colour name of the discriminative part, per species
    extra_attributes: dict[str, str] = field(default_factory=dict)


def _mix(a: tuple[float, float, float], b: tuple[float, float, float], t: float):
    return tuple(float(x * (1 - t) + y * t) for x, y in zip(a, b))


def _palette(body, wing, *, head=None, beak=COLOURS["black"], tail=None, eye_ring=None):
    head = head or body
    tail = tail or wing
    return {
        "body": body,
        "wing": wing,
        "wing_bar": wing,
        "head": head,
        "crown": head,
        "beak": beak,
        "eye": COLOURS["black"],
        "eye_ring": eye_ring or head,
        "tail": tail,
        "tail_tip": tail,
    }


_BLUE = (0.22, 0.40, 0.80)
_GREEN = (0.32, 0.62, 0.24)
_BROWN = (0.55, 0.37, 0.21)
_GOLD = (0.93, 0.76, 0.14)
_GREY = (0.60, 0.60, 0.63)

GROUPS: tuple[Group, ...] = (
    Group(
        name="Bluebird", part="crown", part_word="crowned", body_word="blue",
        shape=Shape(),
        palette=_palette(_BLUE, _mix(_BLUE, (0, 0, 0.2), 0.35)),
        member_colours=("red", "yellow", "white"),
        extra_attributes={"beak": "black"},
    ),
    Group(
        name="Greenfinch", part="wing_bar", part_word="barred", body_word="green",
        shape=Shape(body_a=0.38, body_b=0.26, head_r=0.20, head_x=0.36, beak_len=0.14,
                    beak_half=0.55, wing_a=0.32, wing_b=0.15, tail_len=0.30, tail_spread=0.06),
        palette=_palette(_GREEN, _mix(_GREEN, (0.1, 0.15, 0.0), 0.45), beak=COLOURS["pink"]),
        member_colours=("white", "yellow", "red"),
        extra_attributes={"beak": "pink"},
    ),
    Group(
        name="Brownwren", part="tail_tip", part_word="tipped", body_word="brown",
        shape=Shape(body_a=0.36, body_b=0.25, body_tilt=14.0, head_x=0.34, head_y=0.24,
                    head_r=0.18, beak_len=0.22, beak_half=0.32, beak_droop=0.25,
                    tail_len=0.42, tail_spread=0.12, tail_droop=-0.12),
        palette=_palette(_BROWN, _mix(_BROWN, (0.1, 0.05, 0.0), 0.4)),
        member_colours=("white", "blue", "yellow"),
        extra_attributes={"beak": "black"},
    ),
    Group(
        name="Goldwarbler", part="eye_ring", part_word="ringed", body_word="yellow",
        shape=Shape(body_a=0.40, body_b=0.22, body_tilt=4.0, head_r=0.20, head_x=0.40,
                    head_y=0.20, beak_len=0.18, beak_half=0.30, wing_a=0.28, tail_len=0.34,
                    tail_spread=0.08, tail_droop=0.04),
        palette=_palette(_GOLD, _mix(_GOLD, (0.3, 0.3, 0.0), 0.45), beak=COLOURS["grey"]),
        member_colours=("white", "red", "blue"),
        extra_attributes={"beak": "grey"},
    ),
    Group(
        name="Greyjay", part="beak", part_word="billed", body_word="grey",
        shape=Shape(body_a=0.42, body_b=0.23, head_r=0.18, head_x=0.40, head_y=0.23,
                    beak_len=0.30, beak_half=0.55, beak_droop=0.1, wing_a=0.32, wing_b=0.12,
                    tail_len=0.40, tail_spread=0.07, tail_droop=0.06),
        palette=_palette(_GREY, _mix(_GREY, (0.05, 0.05, 0.12), 0.5)),
        member_colours=("orange", "yellow", "black"),
    ),
)

MEMBERS_PER_GROUP = 3
NUM_GROUPS = len(GROUPS)
NUM_SPECIES = NUM_GROUPS * MEMBERS_PER_GROUP

#: The words a species name uses for its group's discriminative part, per attribute key.
_PART_ATTRIBUTE = {"crown": "crown", "wing_bar": "wing bar", "tail_tip": "tail tip",
                   "eye_ring": "eye ring", "beak": "beak"}


def species_group(species: int) -> int:
    """Group index of a species."""
    if not 0 <= int(species) < NUM_SPECIES:
        raise ValueError(f"species must be in [0, {NUM_SPECIES}), got {species}")
    return int(species) // MEMBERS_PER_GROUP


def group_members(group: int) -> list[int]:
    """Species indices of a group, in index order."""
    return list(range(group * MEMBERS_PER_GROUP, (group + 1) * MEMBERS_PER_GROUP))


def _species_name(group: Group, colour: str) -> str:
    return f"{colour.capitalize()}-{group.part_word} {group.name}"


SPECIES_NAMES: tuple[str, ...] = tuple(
    _species_name(g, c) for g in GROUPS for c in g.member_colours
)
GROUP_NAMES: tuple[str, ...] = tuple(g.name for g in GROUPS)

#: Per species: attribute -> colour word, e.g. {"body": "blue", "crown": "red", "beak": "black"}.
SPECIES_ATTRIBUTES: tuple[dict[str, str], ...] = tuple(
    {"body": g.body_word, _PART_ATTRIBUTE[g.part]: c, **g.extra_attributes}
    for g in GROUPS for c in g.member_colours
)


def discriminative_part(species: int) -> str:
    """The part (a ``PART_NAMES`` entry) in which the species differs from its group-mates."""
    return GROUPS[species_group(species)].part


def species_palette(species: int) -> dict[str, tuple[float, float, float]]:
    """Colour of every layer part for a species."""
    group = GROUPS[species_group(species)]
    palette = dict(group.palette)
    palette[group.part] = COLOURS[group.member_colours[species % MEMBERS_PER_GROUP]]
    return palette
