"""Species of the procedural birds: 48 species in 12 genera of 4.

As in real fine-grained data (CUB-200, NABirds), a genus ("group" in the code) shares its
silhouette, its body, wing and head colours and its plumage pattern; the four species of a
genus differ in one small part (the genus's *discriminative part*: crown, wing bar, tail tip,
eye ring, beak or breast patch), which each species paints in its own colour. Genera overlap:
two genera share each body colour and each discriminative part, and part colours recur across
genera, so no single global cue names a genus or a species. Two genus-mates rendered from the
same seed differ only inside that part, and its mask is the ground truth of "where the evidence
for this species over its look-alikes is".

Colours are RGB in [0, 1]. Attributes (``SPECIES_ATTRIBUTES``) name the colours in words; the
caption generator and the tiny CLIP use them for concept prompts ("a bird with a red crown").
"""

from __future__ import annotations

from dataclasses import dataclass

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.10, 0.09),
    "yellow": (0.98, 0.86, 0.08),
    "white": (0.96, 0.96, 0.94),
    "blue": (0.12, 0.38, 0.95),
    "orange": (1.00, 0.50, 0.04),
    "black": (0.05, 0.05, 0.06),
    "pink": (0.92, 0.60, 0.58),
    "grey": (0.55, 0.55, 0.58),
}

#: Body, wing and head colours of the genera (not part colours: those come from ``COLOURS``).
PLUMAGE: dict[str, tuple[float, float, float]] = {
    "blue": (0.24, 0.42, 0.78),
    "dark blue": (0.14, 0.24, 0.52),
    "green": (0.32, 0.60, 0.24),
    "olive": (0.40, 0.44, 0.20),
    "brown": (0.55, 0.37, 0.21),
    "dark brown": (0.36, 0.24, 0.14),
    "buff": (0.80, 0.68, 0.48),
    "yellow": (0.93, 0.78, 0.16),
    "grey": (0.60, 0.60, 0.63),
    "dark grey": (0.36, 0.37, 0.40),
    "black": (0.12, 0.12, 0.13),
    "rose": (0.78, 0.36, 0.38),
}

# Part names. Layer parts are drawn back to front in ``render.LAYERS``; the discriminative part
# of every genus is one of them.
PART_NAMES = (
    "tail",
    "tail_tip",
    "body",
    "breast",
    "wing",
    "wing_bar",
    "head",
    "crown",
    "beak",
    "eye_ring",
    "eye",
)

#: Plumage patterns on the body (genus level).
PATTERNS = ("plain", "streaked", "spotted", "barred")


@dataclass(frozen=True)
class Shape:
    """Body plan shared by a genus, in bird units (body length about 1, facing +u, v up)."""

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
    """A genus: shared look, one discriminative part, one colour of it per species."""

    name: str  # e.g. "Bluebird"
    part: str  # discriminative part: one of PART_NAMES
    part_word: str  # how the species name says it, e.g. "crowned"
    body: str  # PLUMAGE key, also the body colour word
    wing: str  # PLUMAGE key
    head: str  # PLUMAGE key
    beak: str  # COLOURS key
    pattern: str  # one of PATTERNS
    shape: Shape
    member_colours: tuple[str, ...]  # COLOURS key of the discriminative part, per species


_PART_WORD = {
    "crown": "crowned",
    "wing_bar": "barred",
    "tail_tip": "tipped",
    "eye_ring": "ringed",
    "beak": "billed",
    "breast": "breasted",
}

_SLIM = Shape(
    body_a=0.40,
    body_b=0.20,
    body_tilt=4.0,
    head_r=0.17,
    head_x=0.40,
    head_y=0.19,
    beak_len=0.18,
    beak_half=0.30,
    wing_a=0.29,
    wing_b=0.11,
    tail_len=0.34,
    tail_spread=0.06,
    tail_droop=0.04,
)
_PLUMP = Shape(
    body_a=0.36,
    body_b=0.27,
    body_tilt=10.0,
    head_x=0.34,
    head_y=0.24,
    head_r=0.20,
    beak_len=0.13,
    beak_half=0.55,
    wing_a=0.30,
    wing_b=0.15,
    tail_len=0.26,
    tail_spread=0.07,
    tail_droop=0.12,
)
_LONGTAIL = Shape(
    body_a=0.34,
    body_b=0.22,
    body_tilt=12.0,
    head_x=0.33,
    head_y=0.22,
    head_r=0.18,
    beak_len=0.12,
    beak_half=0.45,
    wing_a=0.26,
    wing_b=0.12,
    tail_len=0.55,
    tail_spread=0.05,
    tail_droop=0.02,
)
_WREN = Shape(
    body_a=0.36,
    body_b=0.25,
    body_tilt=14.0,
    head_x=0.34,
    head_y=0.24,
    head_r=0.18,
    beak_len=0.22,
    beak_half=0.32,
    beak_droop=0.25,
    tail_len=0.40,
    tail_spread=0.12,
    tail_droop=-0.14,
)
_JAY = Shape(
    body_a=0.42,
    body_b=0.23,
    head_r=0.18,
    head_x=0.40,
    head_y=0.23,
    beak_len=0.30,
    beak_half=0.55,
    beak_droop=0.1,
    wing_a=0.32,
    wing_b=0.12,
    tail_len=0.42,
    tail_spread=0.07,
    tail_droop=0.06,
)
_THRUSH = Shape(
    body_a=0.42,
    body_b=0.26,
    body_tilt=18.0,
    head_x=0.39,
    head_y=0.26,
    head_r=0.18,
    beak_len=0.19,
    beak_half=0.35,
    beak_droop=0.05,
    wing_a=0.30,
    wing_b=0.13,
    tail_len=0.32,
    tail_spread=0.06,
    tail_droop=0.16,
)

GROUPS: tuple[Group, ...] = (
    Group(
        "Bluebird",
        "crown",
        "crowned",
        "blue",
        "dark blue",
        "blue",
        "black",
        "plain",
        Shape(),
        ("red", "yellow", "white", "black"),
    ),
    Group(
        "Azurejay",
        "beak",
        "billed",
        "blue",
        "grey",
        "dark blue",
        "black",
        "barred",
        _JAY,
        ("orange", "yellow", "black", "red"),
    ),
    Group(
        "Greenfinch",
        "wing_bar",
        "barred",
        "green",
        "olive",
        "green",
        "pink",
        "plain",
        _PLUMP,
        ("white", "yellow", "red", "blue"),
    ),
    Group(
        "Leafwarbler",
        "eye_ring",
        "ringed",
        "green",
        "green",
        "olive",
        "grey",
        "streaked",
        _SLIM,
        ("white", "yellow", "red", "black"),
    ),
    Group(
        "Brownwren",
        "tail_tip",
        "tipped",
        "brown",
        "dark brown",
        "brown",
        "black",
        "barred",
        _WREN,
        ("white", "blue", "yellow", "red"),
    ),
    Group(
        "Thrush",
        "breast",
        "breasted",
        "brown",
        "brown",
        "brown",
        "yellow",
        "spotted",
        _THRUSH,
        ("red", "orange", "white", "grey"),
    ),
    Group(
        "Goldwarbler",
        "eye_ring",
        "ringed",
        "yellow",
        "olive",
        "yellow",
        "grey",
        "plain",
        _SLIM,
        ("white", "red", "blue", "black"),
    ),
    Group(
        "Canary",
        "wing_bar",
        "barred",
        "yellow",
        "yellow",
        "yellow",
        "pink",
        "streaked",
        _PLUMP,
        ("white", "black", "red", "blue"),
    ),
    Group(
        "Greyjay",
        "beak",
        "billed",
        "grey",
        "dark grey",
        "grey",
        "black",
        "plain",
        _JAY,
        ("orange", "yellow", "black", "red"),
    ),
    Group(
        "Ashtit",
        "crown",
        "crowned",
        "grey",
        "dark grey",
        "dark grey",
        "black",
        "plain",
        _LONGTAIL,
        ("red", "yellow", "white", "blue"),
    ),
    Group(
        "Coalchat",
        "breast",
        "breasted",
        "black",
        "black",
        "black",
        "black",
        "plain",
        _THRUSH,
        ("red", "orange", "white", "yellow"),
    ),
    Group(
        "Rosefinch",
        "tail_tip",
        "tipped",
        "rose",
        "dark brown",
        "rose",
        "grey",
        "streaked",
        _PLUMP,
        ("white", "black", "yellow", "blue"),
    ),
)

MEMBERS_PER_GROUP = 4
NUM_GROUPS = len(GROUPS)
NUM_SPECIES = NUM_GROUPS * MEMBERS_PER_GROUP
assert all(len(g.member_colours) == MEMBERS_PER_GROUP for g in GROUPS)

#: The attribute key (words) of each discriminative part, e.g. "wing_bar" -> "wing bar".
PART_ATTRIBUTE = {
    "crown": "crown",
    "wing_bar": "wing bar",
    "tail_tip": "tail tip",
    "eye_ring": "eye ring",
    "beak": "beak",
    "breast": "breast",
}


def species_group(species: int) -> int:
    """Genus (group) index of a species."""
    if not 0 <= int(species) < NUM_SPECIES:
        raise ValueError(f"species must be in [0, {NUM_SPECIES}), got {species}")
    return int(species) // MEMBERS_PER_GROUP


def group_members(group: int) -> list[int]:
    """Species indices of a genus, in index order."""
    return list(range(group * MEMBERS_PER_GROUP, (group + 1) * MEMBERS_PER_GROUP))


def _species_name(group: Group, colour: str) -> str:
    return f"{colour.capitalize()}-{group.part_word} {group.name}"


SPECIES_NAMES: tuple[str, ...] = tuple(
    _species_name(g, c) for g in GROUPS for c in g.member_colours
)
GROUP_NAMES: tuple[str, ...] = tuple(g.name for g in GROUPS)

#: Per species: attribute -> colour word, e.g. {"body": "blue", "crown": "red"}.
SPECIES_ATTRIBUTES: tuple[dict[str, str], ...] = tuple(
    {"body": g.body, PART_ATTRIBUTE[g.part]: c} for g in GROUPS for c in g.member_colours
)


def discriminative_part(species: int) -> str:
    """The part (a ``PART_NAMES`` entry) in which the species differs from its genus-mates."""
    return GROUPS[species_group(species)].part


def species_palette(species: int) -> dict[str, tuple[float, float, float]]:
    """Colour of every layer part for a species (the genus look plus its own part colour)."""
    group = GROUPS[species_group(species)]
    body, wing, head = PLUMAGE[group.body], PLUMAGE[group.wing], PLUMAGE[group.head]
    palette = {
        "body": body,
        "breast": body,
        "wing": wing,
        "wing_bar": wing,
        "head": head,
        "crown": head,
        "beak": COLOURS[group.beak],
        "eye": COLOURS["black"],
        "eye_ring": head,
        "tail": wing,
        "tail_tip": wing,
    }
    palette[group.part] = COLOURS[group.member_colours[species % MEMBERS_PER_GROUP]]
    return palette
