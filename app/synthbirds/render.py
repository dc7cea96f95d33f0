"""Vectorised numpy renderer for the synthetic birds, with photographic nuisance.

Every image is drawn in one pass over a pixel grid: each pixel is mapped into the bird's own
frame (u forward, v up, body length about 1) and every part is an implicit shape there, whose
approximate signed distance in pixels gives an anti-aliased alpha. Parts are composited back to
front; the same compositing tracks how much of each part stays visible (after occlusion by the
bird's other parts and by a branch in front), which gives the per-part masks with the image.

Nuisance, as in photographs: pose (flip, rotation, per-image body-plan jitter), scale and
position, four background kinds (foliage, sky, bark, clutter with bird-coloured distractors), a
perch, a branch in front of the bird, lighting and colour cast, sensor noise, blur and JPEG.

Determinism: all randomness comes from one ``numpy.random.Generator`` and is drawn in the same
order whatever the species (the background draws from a child generator), so two genus-mates
rendered from the same seed share pose, background, lighting and noise, and differ only where
their palettes differ (plus blur and JPEG spreading that difference by a few pixels).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, replace

import numpy as np

from .species import (
    COLOURS,
    GROUPS,
    PART_NAMES,
    PLUMAGE,
    Shape,
    species_group,
    species_palette,
)

IMAGE_SIZE = 128

#: Drawing order, back to front: the part names in their order.
LAYERS = PART_NAMES

#: Composite masks reported besides the layers: a part with its sub-parts.
COMPOSITES = {
    "tail": ("tail", "tail_tip"),
    "body": ("body", "breast"),
    "wing": ("wing", "wing_bar"),
    "head": ("head", "crown", "eye_ring", "eye"),
    "bird": LAYERS,
}

_GRID_CACHE: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    if size not in _GRID_CACHE:
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
        _GRID_CACHE[size] = (xs, ys)
    return _GRID_CACHE[size]


# --- signed distances in bird units (negative inside) -------------------------------------


def _ellipse(u, v, cx, cy, a, b, tilt_deg=0.0):
    t = math.radians(tilt_deg)
    c, s = math.cos(t), math.sin(t)
    du, dv = u - cx, v - cy
    x = du * c + dv * s
    y = -du * s + dv * c
    q = np.sqrt((x / a) ** 2 + (y / b) ** 2)
    grad = np.sqrt((x / (a * a)) ** 2 + (y / (b * b)) ** 2) / np.maximum(q, 1e-6)
    return (q - 1.0) / np.maximum(grad, 1e-6)


def _circle(u, v, cx, cy, r):
    return np.sqrt((u - cx) ** 2 + (v - cy) ** 2) - r


def _convex_polygon(u, v, points):
    """Max of the edge half-plane distances; points counter-clockwise."""
    d = None
    n = len(points)
    for i in range(n):
        (x0, y0), (x1, y1) = points[i], points[(i + 1) % n]
        ex, ey = x1 - x0, y1 - y0
        length = math.hypot(ex, ey)
        nx, ny = ey / length, -ex / length  # outward normal for a CCW polygon
        di = (u - x0) * nx + (v - y0) * ny
        d = di if d is None else np.maximum(d, di)
    return d


def _half_plane(u, v, x0, y0, nx, ny):
    """Distance to the line through (x0, y0); positive on the side the normal points to."""
    length = math.hypot(nx, ny)
    return ((u - x0) * nx + (v - y0) * ny) / length


def _part_distances(u, v, shape) -> dict[str, np.ndarray]:
    """Signed distance (bird units) of every layer part, for a group's body plan."""
    sh = shape
    hx, hy, hr = sh.head_x, sh.head_y, sh.head_r
    d = {}
    d["body"] = _ellipse(u, v, 0.0, 0.0, sh.body_a, sh.body_b, sh.body_tilt)
    # breast: a patch on the lower front of the body, below the head
    patch = _ellipse(
        u,
        v,
        0.55 * sh.body_a,
        -0.40 * sh.body_b,
        0.34 * sh.body_a,
        0.42 * sh.body_b,
        sh.body_tilt + 20.0,
    )
    d["breast"] = np.maximum(patch, d["body"] + 0.01)
    d["head"] = _circle(u, v, hx, hy, hr)
    # crown: the top of the head, a cap above a line slightly tilted forward
    cap = -_half_plane(u, v, hx, hy + 0.08 * hr, 0.25, 1.0)
    # (stops short of the eye ring, so no sliver of it shows in front of the eye)
    d["crown"] = np.maximum(np.maximum(d["head"] + 0.04 * hr, cap), u - (hx + 0.30 * hr))
    # beak: triangle from the front of the head
    base_x = hx + 0.78 * hr
    tip = (hx + hr + sh.beak_len, hy - (0.05 + sh.beak_droop) * hr)
    tip_half = 0.03  # a blunt tip: no sub-pixel sliver outside the beak's mask
    d["beak"] = _convex_polygon(
        u,
        v,
        [
            (base_x, hy - sh.beak_half * hr),
            (tip[0], tip[1] - tip_half),
            (tip[0], tip[1] + tip_half),
            (base_x, hy + sh.beak_half * hr),
        ],
    )
    ex, ey = hx + 0.38 * hr, hy + 0.12 * hr
    d["eye"] = _circle(u, v, ex, ey, 0.22 * hr)
    d["eye_ring"] = _circle(u, v, ex, ey, 0.56 * hr)
    # wing: ellipse over the body; bar: a band along the wing's front half
    d["wing"] = _ellipse(u, v, sh.wing_x, sh.wing_y, sh.wing_a, sh.wing_b, sh.wing_tilt)
    t = math.radians(sh.wing_tilt)
    c, s = math.cos(t), math.sin(t)
    along = (u - sh.wing_x) * c + (v - sh.wing_y) * s
    across = -(u - sh.wing_x) * s + (v - sh.wing_y) * c
    band = np.abs(across - 0.02) - 0.055
    front = -(along + 0.05 * sh.wing_a)
    d["wing_bar"] = np.maximum(np.maximum(d["wing"] + 0.01, band), front)
    # tail: trapezoid behind the body, fanning out; tip: its last stretch
    root_x = -0.8 * sh.body_a
    end_x = root_x - sh.tail_len
    half0, half1 = 0.07, 0.07 + sh.tail_spread
    cy0, cy1 = 0.0, -sh.tail_droop
    d["tail"] = _convex_polygon(
        u,
        v,
        [(root_x, cy0 - half0), (root_x, cy0 + half0), (end_x, cy1 + half1), (end_x, cy1 - half1)],
    )
    d["tail_tip"] = np.maximum(d["tail"], u - (end_x + 0.14))
    return d


#: Local-frame bounding box of every group's bird, (umin, umax, vmin, vmax): used for placement.
def _extent(shape) -> tuple[float, float, float, float]:
    u = np.linspace(-1.2, 1.2, 241, dtype=np.float32)[None, :]
    v = np.linspace(-0.8, 0.8, 161, dtype=np.float32)[:, None]
    u, v = np.broadcast_arrays(u, v)
    inside = np.zeros(u.shape, bool)
    for dist in _part_distances(u, v, shape).values():
        inside |= dist <= 0
    pad = 0.06  # room for the per-image jitter of the body plan
    return (
        float(u[inside].min()) - pad,
        float(u[inside].max()) + pad,
        float(v[inside].min()) - pad,
        float(v[inside].max()) + pad,
    )


_EXTENTS = [_extent(g.shape) for g in GROUPS]


# --- background --------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Bilinearly upsampled random grid in [0, 1], shape (size, size)."""
    grid = rng.random((cells + 1, cells + 1), dtype=np.float32)
    pos = np.linspace(0, cells, size, dtype=np.float32)
    i0 = np.minimum(pos.astype(int), cells - 1)
    f = pos - i0
    rows = grid[i0] * (1 - f)[:, None] + grid[i0 + 1] * f[:, None]  # (size, cells+1)
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]


def _blend(a, b, t: np.ndarray) -> np.ndarray:
    return np.asarray(a, np.float32) * (1 - t[..., None]) + np.asarray(b, np.float32) * t[..., None]


def _blobs(rng, img, count, colours, radii, squash=(0.35, 1.0)) -> np.ndarray:
    """Paint ``count`` soft-edged ellipses (leaves, distractors) in colours drawn from
    ``colours``, each computed only over its bounding box."""
    xs, ys = _grid(img.shape[0])
    size = img.shape[0]
    for _ in range(count):
        cx, cy = rng.uniform(0, size, 2)
        r = rng.uniform(*radii)
        aspect = rng.uniform(*squash)
        angle = rng.uniform(0, math.pi)
        colour = np.asarray(colours[rng.integers(len(colours))], np.float32)
        colour = np.clip(colour * rng.uniform(0.75, 1.1), 0, 1)
        x0, x1 = max(int(cx - r) - 1, 0), min(int(cx + r) + 2, size)
        y0, y1 = max(int(cy - r) - 1, 0), min(int(cy + r) + 2, size)
        if x1 <= x0 or y1 <= y0:
            continue
        c, s = math.cos(angle), math.sin(angle)
        x, y = xs[y0:y1, x0:x1] - cx, ys[y0:y1, x0:x1] - cy
        q = np.sqrt(((x * c + y * s) / r) ** 2 + ((-x * s + y * c) / (r * aspect)) ** 2)
        alpha = np.clip((1.0 - q) * r * aspect, 0, 1)
        img[y0:y1, x0:x1] = _blend(img[y0:y1, x0:x1], colour, alpha)
    return img


_FOLIAGE = [
    (0.30, 0.48, 0.20),
    (0.42, 0.58, 0.28),
    (0.22, 0.36, 0.18),
    (0.52, 0.62, 0.30),
    (0.36, 0.44, 0.24),
]
_BARK = [(0.42, 0.32, 0.22), (0.30, 0.24, 0.18), (0.52, 0.44, 0.34), (0.38, 0.36, 0.32)]
#: Distractor colours of the clutter background: bird plumage and part colours.
_BIRD_COLOURS = list(PLUMAGE.values()) + list(COLOURS.values())


def _foliage(rng, size):
    base = _blend(
        _FOLIAGE[rng.integers(5)],
        _FOLIAGE[rng.integers(5)],
        _smooth_noise(rng, size, int(rng.integers(2, 5))),
    )
    return _blobs(rng, base, int(rng.integers(10, 22)), _FOLIAGE, (4, 14))


def _sky(rng, size):
    _, ys = _grid(size)
    top = np.array((0.45, 0.62, 0.88), np.float32) * rng.uniform(0.8, 1.1)
    bottom = np.array((0.78, 0.84, 0.90), np.float32) * rng.uniform(0.85, 1.05)
    if rng.random() < 0.4:  # overcast
        top = bottom = np.array((0.74, 0.75, 0.78), np.float32) * rng.uniform(0.8, 1.1)
    img = _blend(top, bottom, ys / size)
    clouds = np.clip(_smooth_noise(rng, size, int(rng.integers(3, 7))) * 1.6 - 0.7, 0, 1)
    return _blend(img, (0.95, 0.95, 0.96), clouds * rng.uniform(0.3, 0.9))


def _bark(rng, size):
    xs, _ = _grid(size)
    base = _blend(
        _BARK[rng.integers(4)],
        _BARK[rng.integers(4)],
        _smooth_noise(rng, size, int(rng.integers(2, 5))),
    )
    freq = rng.uniform(0.25, 0.6)
    wobble = 4 * (_smooth_noise(rng, size, 4) - 0.5)
    ridges = 0.5 + 0.5 * np.sin(freq * (xs + wobble * 6) + rng.uniform(0, 6.3))
    return base * (0.78 + 0.3 * ridges)[..., None]


def _clutter(rng, size):
    base = _blend(
        _BARK[rng.integers(4)],
        _FOLIAGE[rng.integers(5)],
        _smooth_noise(rng, size, int(rng.integers(2, 6))),
    )
    base = _blobs(rng, base, int(rng.integers(4, 10)), _FOLIAGE + _BARK, (5, 16))
    # bird-coloured distractors: berries, flowers, leaves in plumage and part colours
    return _blobs(rng, base, int(rng.integers(5, 12)), _BIRD_COLOURS, (1.5, 6), (0.5, 1.0))


BACKGROUNDS = {"foliage": _foliage, "sky": _sky, "bark": _bark, "clutter": _clutter}


def _branch_alpha(size: int, x0: float, y0: float, angle: float, width: float) -> np.ndarray:
    """Anti-aliased alpha of a straight branch through (x0, y0)."""
    xs, ys = _grid(size)
    dist = np.abs(-(xs - x0) * math.sin(angle) + (ys - y0) * math.cos(angle)) - width
    return np.clip(0.5 - dist, 0, 1)


def _branch_colour(rng) -> np.ndarray:
    return np.array((0.40, 0.29, 0.18), np.float32) * rng.uniform(0.6, 1.2)


def _background(rng: np.random.Generator, size: int, perch_y: float) -> np.ndarray:
    kind = tuple(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    img = BACKGROUNDS[kind](rng, size)
    img = img * (0.93 + 0.14 * _smooth_noise(rng, size, 16))[..., None]
    # the perch under the bird's feet
    alpha = _branch_alpha(size, size / 2, perch_y, rng.uniform(-0.3, 0.3), rng.uniform(2, 5))
    return _blend(img, _branch_colour(rng), alpha)


# --- camera ------------------------------------------------------------------------------


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (radius 2), edge-padded."""
    if sigma <= 0.05:
        return img
    taps = np.exp(-0.5 * (np.arange(-2, 3) / sigma) ** 2).astype(np.float32)
    taps /= taps.sum()
    for axis in (0, 1):
        padded = np.pad(img, [(2, 2) if a == axis else (0, 0) for a in range(3)], mode="edge")
        n = img.shape[axis]
        img = sum(w * np.take(padded, range(k, k + n), axis=axis) for k, w in enumerate(taps))
    return img


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(img, "RGB").save(buffer, "JPEG", quality=int(quality))
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


# --- the whole picture -------------------------------------------------------------------


@dataclass(frozen=True)
class Pose:
    """Where and how the bird sits in the picture (shared by genus-mates of one seed)."""

    shape: Shape
    flip: bool
    rotation: float  # radians
    scale: float  # pixels per bird unit
    ox: float  # pixel position of the bird frame's origin
    oy: float


def _pose(rng: np.random.Generator, group_index: int, size: int) -> Pose:
    base = GROUPS[group_index].shape
    jitter = rng.normal(0, 1, 4)
    shape = replace(
        base,
        body_b=base.body_b * (1 + 0.05 * jitter[0]),
        head_y=base.head_y + 0.015 * jitter[1],
        tail_droop=base.tail_droop + 0.04 * jitter[2],
        wing_tilt=base.wing_tilt + 5.0 * jitter[3],
    )
    flip = bool(rng.random() < 0.5)
    rotation = math.radians(rng.uniform(-25, 25))
    scale = rng.uniform(0.42, 0.60) * size
    umin, umax, vmin, vmax = _EXTENTS[group_index]
    corners = np.array([(umin, vmin), (umin, vmax), (umax, vmin), (umax, vmax)], np.float32)
    sx = -1.0 if flip else 1.0
    cr, sr = math.cos(rotation), math.sin(rotation)
    px = scale * (cr * sx * corners[:, 0] - sr * corners[:, 1])
    py = -scale * (sr * sx * corners[:, 0] + cr * corners[:, 1])
    margin = 3.0
    lo_x, hi_x = margin - px.min(), size - margin - px.max()
    lo_y, hi_y = margin - py.min(), size - margin - py.max()
    ox = rng.uniform(lo_x, hi_x) if hi_x > lo_x else size / 2
    oy = rng.uniform(lo_y, hi_y) if hi_y > lo_y else size / 2
    return Pose(shape, flip, rotation, scale, ox, oy)


def _bird_frame(pose: Pose, extent, size: int):
    """Bounding box (x0, x1, y0, y1) of the bird in pixels and the bird-frame (u, v) of every
    pixel in it."""
    umin, umax, vmin, vmax = extent
    sx = -1.0 if pose.flip else 1.0
    cr, sr = math.cos(pose.rotation), math.sin(pose.rotation)
    cu = np.array([umin, umin, umax, umax]), np.array([vmin, vmax, vmin, vmax])
    px = pose.ox + pose.scale * (cr * sx * cu[0] - sr * cu[1])
    py = pose.oy - pose.scale * (sr * sx * cu[0] + cr * cu[1])
    x0, x1 = max(int(px.min()) - 2, 0), min(int(px.max()) + 3, size)
    y0, y1 = max(int(py.min()) - 2, 0), min(int(py.max()) + 3, size)
    xs, ys = _grid(size)
    dx, dy = xs[y0:y1, x0:x1] - pose.ox, ys[y0:y1, x0:x1] - pose.oy
    u = (cr * dx - sr * dy) / pose.scale * sx  # pixel -> bird frame
    v = (-sr * dx - cr * dy) / pose.scale
    return (x0, x1, y0, y1), u, v


def _pattern(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Darkening in [0, 1] of the genus's plumage pattern on the body."""
    if kind == "streaked":
        return ((np.sin(v * 70) > 0.55) & (np.sin(u * 22) > -0.3)).astype(np.float32)
    if kind == "spotted":
        return (np.sin(u * 48) * np.sin(v * 48) > 0.6).astype(np.float32)
    if kind == "barred":
        return (np.sin((u + 0.4 * v) * 55) > 0.5).astype(np.float32)
    return np.zeros_like(u)


def render_arrays(
    species: int, rng: np.random.Generator, size: int = IMAGE_SIZE, camera: bool = True
):
    """Render one bird.

    Returns ``(image, coverage)``: image uint8 (size, size, 3); coverage a dict layer part ->
    float32 (size, size) visible coverage in [0, 1] (after occlusion). ``camera=False`` skips
    blur and JPEG (drawing the same random numbers), for tests of what differs between
    genus-mates before the camera spreads it.
    """
    group_index = species_group(species)
    group = GROUPS[group_index]
    palette = species_palette(species)

    # Every draw below happens in the same order whatever the species (see module doc).
    pose = _pose(rng, group_index, size)
    background_rng = np.random.default_rng(rng.integers(2**63))
    jitter = rng.normal(0, 0.03, (len(LAYERS), 3)).astype(np.float32)
    shade_angle = rng.uniform(0, 2 * math.pi)
    occluder = rng.random() < 0.3
    occ = (
        rng.uniform(-0.25, 0.25, 2),
        rng.uniform(0, math.pi),
        rng.uniform(1.0, 2.5),
        _branch_colour(rng),
    )
    light = rng.uniform(0.7, 1.2)
    cast = rng.normal(1.0, 0.06, 3).astype(np.float32)
    noise_sigma = rng.uniform(0.005, 0.04)
    noise = rng.standard_normal((size, size, 3), dtype=np.float32)
    blur = rng.uniform(0.3, 1.1) if rng.random() < 0.5 else 0.0
    quality = int(rng.integers(50, 96)) if rng.random() < 0.7 else 0

    (x0, x1, y0, y1), u, v = _bird_frame(pose, _EXTENTS[group_index], size)
    img = _background(background_rng, size, min(y1 - 4.0, size - 4.0))
    dist = _part_distances(u, v, pose.shape)

    # soft shading: lighter towards a random direction, plus fine feather texture
    shade = 1.0 + 0.15 * (np.cos(shade_angle) * u + np.sin(shade_angle) * v)
    shade *= 1.0 + 0.03 * np.sin(40 * u + 13 * v)
    pattern = 1.0 - 0.35 * _pattern(group.pattern, u, v)

    # Composite front to back: a layer's visible coverage is its alpha times the
    # transmittance of everything in front of it (the occluding branch first).
    transmit = np.ones(u.shape, np.float32)
    crop = np.zeros(u.shape + (3,), np.float32)
    if occluder:
        branch = _branch_alpha(
            size, pose.ox + occ[0][0] * pose.scale, pose.oy + occ[0][1] * pose.scale, occ[1], occ[2]
        )[y0:y1, x0:x1]
        crop += occ[3][None, None] * branch[..., None]
        transmit *= 1 - branch
    coverage: dict[str, np.ndarray] = {}
    for k in range(len(LAYERS) - 1, -1, -1):
        part = LAYERS[k]
        alpha = np.clip(0.5 - dist[part] * pose.scale, 0.0, 1.0)
        colour = np.clip(np.asarray(palette[part], np.float32) + jitter[k], 0, 1)
        lit = shade * pattern if part == "body" else shade
        visible = alpha * transmit
        transmit *= 1 - alpha
        crop += (colour * (lit[..., None] if part != "eye" else 1.0)) * visible[..., None]
        full = np.zeros((size, size), np.float32)
        full[y0:y1, x0:x1] = visible
        coverage[part] = full
    img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * transmit[..., None] + crop

    img = np.clip(img * light * cast + noise * noise_sigma, 0.0, 1.0)
    if camera:
        img = _blur(img, blur)
    img = np.round(img * 255).astype(np.uint8)
    if camera and quality:
        img = _jpeg(img, quality)
    return img, {part: coverage[part] for part in LAYERS}


def masks_from_coverage(coverage: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Boolean masks: every layer part plus composites (tail, body, wing, head, bird)."""
    masks = {name: cov >= 0.5 for name, cov in coverage.items()}
    for name, parts in COMPOSITES.items():
        total = sum(coverage[p] for p in parts)
        masks[name] = total >= 0.5
    return masks
