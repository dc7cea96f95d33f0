"""Vectorised numpy renderer for the synthetic birds.

Every image is drawn in one pass over a pixel grid: each pixel is mapped into the bird's own
frame (u forward, v up, body length about 1) and every part is an implicit shape there, whose
approximate signed distance in pixels gives an anti-aliased alpha. Parts are composited back to
front; the same compositing tracks how much of each part stays visible, which gives the
per-part masks (occlusion-aware) alongside the image.

Determinism: all randomness comes from one ``numpy.random.Generator`` and is drawn in the same
order whatever the species, so two species rendered from the same seed share pose, background,
colour jitter and noise, and differ only where their palettes differ.
"""

from __future__ import annotations

import math

import numpy as np

from .species import GROUPS, species_group, species_palette

IMAGE_SIZE = 128

#: Drawing order, back to front.
LAYERS = ("tail", "tail_tip", "body", "wing", "wing_bar", "head", "crown", "beak", "eye_ring",
          "eye")

#: Composite masks reported besides the layers: a part with its sub-parts.
COMPOSITES = {
    "tail": ("tail", "tail_tip"),
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
        u, v,
        [(base_x, hy - sh.beak_half * hr), (tip[0], tip[1] - tip_half),
         (tip[0], tip[1] + tip_half), (base_x, hy + sh.beak_half * hr)],
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
        u, v,
        [(root_x, cy0 - half0), (root_x, cy0 + half0), (end_x, cy1 + half1),
         (end_x, cy1 - half1)],
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
    return float(u[inside].min()), float(u[inside].max()), float(v[inside].min()), float(
        v[inside].max())


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


_BACKGROUND_COLOURS = np.array(
    [
        (0.55, 0.66, 0.45), (0.40, 0.52, 0.35), (0.70, 0.78, 0.82), (0.62, 0.72, 0.85),
        (0.72, 0.66, 0.55), (0.50, 0.45, 0.38), (0.80, 0.80, 0.74), (0.35, 0.42, 0.40),
    ],
    dtype=np.float32,
)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    xs, ys = _grid(size)
    c = _BACKGROUND_COLOURS[rng.choice(len(_BACKGROUND_COLOURS), 2, replace=False)]
    c = np.clip(c + rng.normal(0, 0.04, c.shape).astype(np.float32), 0, 1)
    blend = _smooth_noise(rng, size, int(rng.integers(2, 6)))
    img = c[0] * (1 - blend[..., None]) + c[1] * blend[..., None]
    # foliage-like stripes and fine texture
    angle = rng.uniform(0, math.pi)
    freq = rng.uniform(0.05, 0.25)
    phase = rng.uniform(0, 2 * math.pi)
    stripes = np.sin((xs * math.cos(angle) + ys * math.sin(angle)) * freq + phase)
    img *= (1 + rng.uniform(0.02, 0.08) * stripes)[..., None]
    img *= (0.92 + 0.16 * _smooth_noise(rng, size, 16))[..., None]
    # a perch: a brown branch across the image
    py = rng.uniform(0.55, 0.95) * size
    slope = rng.uniform(-0.3, 0.3)
    width = rng.uniform(3, 7)
    dist = np.abs(ys - (py + slope * (xs - size / 2))) / math.sqrt(1 + slope * slope) - width
    alpha = np.clip(0.5 - dist, 0, 1)[..., None]
    branch = np.array((0.42, 0.30, 0.18), np.float32) * rng.uniform(0.7, 1.2)
    img = img * (1 - alpha) + branch * alpha
    return img


# --- the whole picture -------------------------------------------------------------------


def render_arrays(species: int, rng: np.random.Generator, size: int = IMAGE_SIZE):
    """Render one bird.

    Returns ``(image, coverage)``: image float32 (size, size, 3) in [0, 1]; coverage a dict
    layer part -> float32 (size, size) visible coverage in [0, 1] (after occlusion).
    """
    group_index = species_group(species)
    group = GROUPS[group_index]
    palette = species_palette(species)
    xs, ys = _grid(size)

    # Every draw below happens in the same order whatever the species (see module doc).
    img = _background(rng, size)
    flip = bool(rng.random() < 0.5)
    rotation = math.radians(rng.uniform(-15, 15))
    scale = rng.uniform(0.47, 0.57) * size  # pixels per bird unit
    umin, umax, vmin, vmax = _EXTENTS[group_index]
    corners = np.array([(umin, vmin), (umin, vmax), (umax, vmin), (umax, vmax)], np.float32)
    sx = -1.0 if flip else 1.0
    cr, sr = math.cos(rotation), math.sin(rotation)
    # bird frame -> pixel offsets: x = s*(cr*sx*u - sr*v), y = -s*(sr*sx*u + cr*v)
    px = scale * (cr * sx * corners[:, 0] - sr * corners[:, 1])
    py = -scale * (sr * sx * corners[:, 0] + cr * corners[:, 1])
    margin = 3.0
    lo_x, hi_x = margin - px.min(), size - margin - px.max()
    lo_y, hi_y = margin - py.min(), size - margin - py.max()
    ox = rng.uniform(lo_x, hi_x) if hi_x > lo_x else size / 2
    oy = rng.uniform(lo_y, hi_y) if hi_y > lo_y else size / 2
    jitter = rng.normal(0, 0.035, (len(LAYERS), 3)).astype(np.float32)
    light = rng.uniform(0.85, 1.12)
    shade_angle = rng.uniform(0, 2 * math.pi)
    noise_sigma = rng.uniform(0.01, 0.045)
    noise = rng.standard_normal((size, size, 3), dtype=np.float32)

    # Only the bird's bounding box needs the part geometry.
    x0, x1 = max(int(ox + px.min()) - 2, 0), min(int(ox + px.max()) + 3, size)
    y0, y1 = max(int(oy + py.min()) - 2, 0), min(int(oy + py.max()) + 3, size)
    dx, dy = xs[y0:y1, x0:x1] - ox, ys[y0:y1, x0:x1] - oy
    u = (cr * dx - sr * dy) / scale * sx  # pixel -> bird frame
    v = (-sr * dx - cr * dy) / scale
    dist = _part_distances(u, v, group.shape)

    # soft shading: lighter towards a random direction, plus fine feather texture
    shade = 1.0 + 0.12 * (np.cos(shade_angle) * u + np.sin(shade_angle) * v)
    shade *= 1.0 + 0.03 * np.sin(40 * u + 13 * v)
    shade = shade[..., None]

    # Composite front to back: a layer's visible coverage is its alpha times the
    # transmittance of everything in front of it.
    transmit = np.ones(u.shape, np.float32)
    crop = np.zeros(u.shape + (3,), np.float32)
    coverage: dict[str, np.ndarray] = {}
    for k in range(len(LAYERS) - 1, -1, -1):
        part = LAYERS[k]
        alpha = np.clip(0.5 - dist[part] * scale, 0.0, 1.0)
        colour = np.clip((np.asarray(palette[part], np.float32) + jitter[k]) * light, 0, 1)
        visible = alpha * transmit
        transmit *= 1 - alpha
        crop += (colour * shade if part != "eye" else colour) * visible[..., None]
        full = np.zeros((size, size), np.float32)
        full[y0:y1, x0:x1] = visible
        coverage[part] = full
    img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * transmit[..., None] + crop

    img = np.clip(img + noise * noise_sigma, 0.0, 1.0)
    return img.astype(np.float32), {part: coverage[part] for part in LAYERS}


def masks_from_coverage(coverage: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Boolean masks: every layer part plus composites (tail, wing, head, bird)."""
    masks = {name: cov >= 0.5 for name, cov in coverage.items()}
    for name, parts in COMPOSITES.items():
        total = sum(coverage[p] for p in parts)
        masks[name] = total >= 0.5
    return masks
