"""Drawing primitives for `weakseg.data.synth`: noise, silhouettes, part patterns, body and context textures.

Everything is vectorised numpy on float32 arrays (colours in 0..255); every random choice comes from
the `np.random.Generator` passed in, so a drawing is a pure function of that generator's state.
Pattern sizes scale with `k = min(h, w) / 128` so a larger image shows the same scene, not finer
textures.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

Colour = tuple[int, int, int]


# ----------------------------------------------------------------------------- noise and geometry


def _smooth(t: np.ndarray) -> np.ndarray:
    return t * t * (3.0 - 2.0 * t)


def value_noise(
    rng: np.random.Generator,
    h: int,
    w: int,
    cell: float | tuple[float, float],
    octaves: int = 1,
    persistence: float = 0.5,
) -> np.ndarray:
    """Smooth value noise in [0, 1] (mean ~0.5); `cell` is the feature size in pixels, (cy, cx) for anisotropy."""
    cy, cx = cell if isinstance(cell, tuple) else (cell, cell)
    out = np.zeros((h, w), np.float32)
    total = 0.0
    amp = 1.0
    for o in range(octaves):
        sy, sx = max(cy / 2**o, 0.75), max(cx / 2**o, 0.75)
        gh, gw = int(h / sy) + 3, int(w / sx) + 3
        grid = rng.random((gh, gw), dtype=np.float32)
        y = (np.arange(h, dtype=np.float32) + 0.5) / sy + rng.random(dtype=np.float32)
        x = (np.arange(w, dtype=np.float32) + 0.5) / sx + rng.random(dtype=np.float32)
        iy, ix = y.astype(np.int64), x.astype(np.int64)
        fy, fx = _smooth(y - iy)[:, None], _smooth(x - ix)[None, :]
        iy, ix = iy[:, None], ix[None, :]
        top = grid[iy, ix] * (1 - fx) + grid[iy, ix + 1] * fx
        bot = grid[iy + 1, ix] * (1 - fx) + grid[iy + 1, ix + 1] * fx
        out += amp * (top * (1 - fy) + bot * fy)
        total += amp
        amp *= persistence
    return out / total


def grid_coords(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x) as float32 HxW arrays."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return y + 0.5, x + 0.5


def rotate(y: np.ndarray, x: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (along, across) of points in a frame rotated by `angle` radians."""
    c, s = math.cos(angle), math.sin(angle)
    return x * c + y * s, -x * s + y * c


def mix(t: np.ndarray, c0, c1) -> np.ndarray:
    """Per-pixel blend of two colours (or colour images) by t in [0, 1]: HxWx3 float32."""
    c0 = np.asarray(c0, np.float32)
    c1 = np.asarray(c1, np.float32)
    return c0 + t[..., None].astype(np.float32) * (c1 - c0)


def soft_step(x: np.ndarray, edge0: float, edge1: float) -> np.ndarray:
    return _smooth(np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0))


# ----------------------------------------------------------------------------- silhouettes

SHAPES = (
    "round_rect",
    "triangle",
    "ellipse",
    "capsule",
    "blob",
    "cross",
    "diamond",
    "star",
    "hexagon",
    "semicircle",
    "trapezoid",
    "parallelogram",
)

_POLYGONS = {
    "triangle": [(-1.0, -1.0), (1.0, -1.0), (0.0, 1.0)],
    "diamond": [(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)],
    "hexagon": [(math.cos(a), math.sin(a)) for a in np.linspace(0, 2 * math.pi, 7)[:-1]],
    "semicircle": [(math.cos(a), 2.0 * math.sin(a) - 1.0) for a in np.linspace(0, math.pi, 25)],
    "trapezoid": [(-1.0, -1.0), (1.0, -1.0), (0.5, 1.0), (-0.5, 1.0)],
    "parallelogram": [(-1.0, -1.0), (0.4, -1.0), (1.0, 1.0), (-0.4, 1.0)],
    "star": [
        (
            (1.0 if i % 2 == 0 else 0.5) * math.cos(math.pi / 2 + i * math.pi / 5),
            (1.0 if i % 2 == 0 else 0.5) * math.sin(math.pi / 2 + i * math.pi / 5),
        )
        for i in range(10)
    ],
}


def _in_polygon(u: np.ndarray, v: np.ndarray, verts: list[tuple[float, float]]) -> np.ndarray:
    """Even-odd point-in-polygon test, vectorised over points."""
    inside = np.zeros(u.shape, bool)
    n = len(verts)
    for i in range(n):
        x0, y0 = verts[i]
        x1, y1 = verts[(i + 1) % n]
        if y0 == y1:
            continue
        crosses = (y0 > v) != (y1 > v)
        xs = (x1 - x0) * (v - y0) / (y1 - y0) + x0
        inside ^= crosses & (u < xs)
    return inside


def silhouette(
    shape: str, half_len: float, aspect: float, angle: float, off_y: float, off_x: float, rng: np.random.Generator
) -> np.ndarray:
    """Boolean mask of a shape on a square local canvas centred on the object.

    The object's long half-extent is `half_len` pixels, its short one `half_len / aspect`; it is rotated
    by `angle` and shifted by the sub-pixel offset (off_y, off_x). The canvas is large enough for any
    rotation, so the silhouette is never cut: truncation by the image frame happens when pasting.
    """
    rad = int(math.ceil(half_len * 1.45)) + 2
    n = 2 * rad + 1
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    y, x = y - rad - off_y, x - rad - off_x
    a, b = rotate(y, x, angle)
    half_w = half_len / aspect
    u, v = a / half_len, b / half_w
    if shape == "ellipse":
        m = u * u + v * v <= 1.0
    elif shape == "round_rect":
        m = u**4 + v**4 <= 1.0
    elif shape == "capsule":
        seg = max(half_len - half_w, 0.0)
        m = (np.maximum(np.abs(a) - seg, 0.0) ** 2 + b * b) <= half_w * half_w
    elif shape == "cross":
        arm = 0.36
        m = ((np.abs(u) <= 1) & (np.abs(v) <= arm * aspect)) | ((np.abs(u) <= arm) & (np.abs(v) <= 1))
    elif shape == "blob":
        k = np.arange(2, 5, dtype=np.float32)
        amps = rng.uniform(0.04, 0.13, 3).astype(np.float32)
        phases = rng.uniform(0, 2 * math.pi, 3).astype(np.float32)
        theta = np.arctan2(v, u)
        r = 0.85 + (amps[:, None, None] * np.cos(k[:, None, None] * theta + phases[:, None, None])).sum(0)
        m = u * u + v * v <= r * r
    elif shape in _POLYGONS:
        m = _in_polygon(u, v, _POLYGONS[shape])
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return m


def disk_offsets(radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer (dy, dx) offsets of the pixels of a disk centred on a pixel."""
    r = int(math.ceil(radius))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    keep = dy * dy + dx * dx <= radius * radius
    return dy[keep], dx[keep]


def disk_centres(mask: np.ndarray, radius: float) -> np.ndarray:
    """(K, 2) pixel positions where a disk of `radius` lies entirely inside `mask` (hole-free masks)."""
    dy, dx = disk_offsets(radius)
    r = int(math.ceil(radius))
    h, w = mask.shape
    padded = np.zeros((h + 2 * r, w + 2 * r), bool)
    padded[r : r + h, r : r + w] = mask
    # The disk's rim (plus its centre) suffices for a hole-free mask; the caller re-checks the full disk.
    rim = (dy * dy + dx * dx) > (radius - 1.5) ** 2
    ok = mask.copy()
    for oy, ox in zip(dy[rim], dx[rim], strict=True):
        ok &= padded[r + oy : r + oy + h, r + ox : r + ox + w]
    return np.argwhere(ok)


# ----------------------------------------------------------------------------- part patterns

PATTERNS = ("checker", "stripes", "rings", "dots", "pinwheel", "zigzag", "grid")


def part_pattern(pattern: str, dy: np.ndarray, dx: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """0/1 pattern value at offsets (dy, dx) from a part's centre, in image orientation `angle` (radians)."""
    a, b = rotate(dy.astype(np.float32), dx.astype(np.float32), angle)
    period = max(radius * 0.75, 3.2)
    if pattern == "checker":
        s = period / 2 * 1.2
        return ((np.floor(a / s) + np.floor(b / s)) % 2).astype(np.float32)
    if pattern == "stripes":
        return (np.sin(2 * math.pi * a / period) > 0).astype(np.float32)
    if pattern == "rings":
        d = np.sqrt(a * a + b * b)
        return ((np.floor(d / (period * 0.5) + 0.5)) % 2).astype(np.float32)
    if pattern == "dots":
        s = period * 0.95
        fa, fb = (a / s) % 1.0 - 0.5, (b / s) % 1.0 - 0.5
        return ((fa * fa + fb * fb) < 0.09).astype(np.float32)
    if pattern == "pinwheel":
        t = np.arctan2(b, a)
        return (np.floor(t / (2 * math.pi / 8)) % 2).astype(np.float32)
    if pattern == "zigzag":
        tri = np.abs((b / period) % 1.0 - 0.5) * period
        return (np.sin(2 * math.pi * (a + tri) / period) > 0).astype(np.float32)
    if pattern == "grid":
        s = period
        fa, fb = (a / s) % 1.0, (b / s) % 1.0
        return ((fa < 0.38) | (fb < 0.38)).astype(np.float32)
    raise ValueError(f"unknown pattern {pattern!r}")


# ----------------------------------------------------------------------------- body


def body_texture(
    rng: np.random.Generator, h: int, w: int, colour: np.ndarray, cell: float, light_angle: float, light_amount: float
) -> np.ndarray:
    """The body: mid-frequency two-tone blotches of `colour` with a soft lighting gradient (HxWx3)."""
    t = value_noise(rng, h, w, cell, octaves=2, persistence=0.45)
    t = soft_step(t, 0.38, 0.62)
    dark = colour * 0.70
    light = np.minimum(colour * 1.18 + 8.0, 255.0)
    img = mix(t, dark, light)
    y, x = grid_coords(h, w)
    along, _ = rotate(y - h / 2, x - w / 2, light_angle)
    shade = 1.0 + light_amount * along / max(h, w)
    return img * shade[..., None]


# ----------------------------------------------------------------------------- contexts (backgrounds)


def _ctx_rails(rng, h, w, k):
    y, x = grid_coords(h, w)
    a, b = rotate(y, x, rng.uniform(-0.45, 0.45))
    ground = mix(value_noise(rng, h, w, 1.6 * k, octaves=2), (95, 85, 75), (150, 135, 115))
    period = rng.uniform(30, 42) * k
    gauge = 0.36 * period
    bm = np.abs((b + rng.uniform(0, period)) % period - period / 2)
    sleeper_pitch = 8.0 * k
    sleeper = (bm < gauge / 2 + 3.5 * k) & (((a + rng.uniform(0, sleeper_pitch)) % sleeper_pitch) < 3.6 * k)
    img = np.where(sleeper[..., None], np.array([88, 58, 38], np.float32), ground)
    rail = np.abs(bm - gauge / 2) < 1.1 * k
    img = np.where(rail[..., None], np.array([200, 202, 210], np.float32), img)
    shadow = np.abs(bm - gauge / 2 - 1.6 * k) < 0.6 * k
    return np.where(shadow[..., None], img * 0.6, img)


def _ctx_water(rng, h, w, k):
    y, x = grid_coords(h, w)
    a, b = rotate(y, x, rng.uniform(-0.3, 0.3))
    warp = value_noise(rng, h, w, (10 * k, 28 * k), octaves=2)
    lam = rng.uniform(11, 16) * k
    t = 0.5 + 0.5 * np.sin(2 * math.pi * (b / lam + 1.8 * warp))
    img = mix(t, (20, 70, 135), (70, 150, 205))
    glint = soft_step(t * value_noise(rng, h, w, 6 * k), 0.55, 0.75)
    return img + glint[..., None] * (np.array([215, 235, 250], np.float32) - img)


def _ctx_sky(rng, h, w, k):
    y, _ = grid_coords(h, w)
    g = y / h
    img = mix(g, (55, 115, 205), (175, 210, 240))
    clouds = soft_step(value_noise(rng, h, w, (14 * k, 40 * k), octaves=3), 0.55, 0.8)
    return img + 0.55 * clouds[..., None] * (np.array([245, 248, 252], np.float32) - img)


def _ctx_road(rng, h, w, k):
    y, x = grid_coords(h, w)
    a, b = rotate(y, x, rng.uniform(-math.pi, math.pi))
    img = mix(value_noise(rng, h, w, 1.3 * k, octaves=2), (52, 52, 58), (98, 98, 104))
    lane = rng.uniform(34, 46) * k
    bm = np.abs((b + rng.uniform(0, lane)) % lane - lane / 2)
    dash = rng.uniform(16, 22) * k
    mark = (bm < 1.6 * k) & (((a + rng.uniform(0, dash)) % dash) < 0.55 * dash)
    paint = (235, 232, 215) if rng.random() < 0.6 else (235, 195, 40)
    return np.where(mark[..., None], np.array(paint, np.float32), img)


def _ctx_grass(rng, h, w, k):
    blades = value_noise(rng, h, w, (5.0 * k, 1.1 * k), octaves=2)
    patches = value_noise(rng, h, w, 22 * k)
    img = mix(blades, (40, 100, 25), (120, 180, 60))
    return img * (0.8 + 0.35 * patches)[..., None]


def _ctx_bricks(rng, h, w, k):
    y, x = grid_coords(h, w)
    bh, bw = rng.uniform(6.5, 8.5) * k, rng.uniform(15, 20) * k
    y = y + rng.uniform(0, bh)
    row = np.floor(y / bh)
    xs = x + (row % 2) * bw / 2 + rng.uniform(0, bw)
    col = np.floor(xs / bw)
    mortar = ((y % bh) < 1.3 * k) | ((xs % bw) < 1.3 * k)
    ids = (row.astype(np.int64) * 7919 + col.astype(np.int64) * 104729) % 4096
    tint = rng.uniform(-22, 22, 4096).astype(np.float32)[ids]
    brick = np.array([165, 72, 50], np.float32) + tint[..., None] * np.array([1.0, 0.5, 0.35], np.float32)
    brick = brick * (0.88 + 0.24 * value_noise(rng, h, w, 1.5 * k))[..., None]
    return np.where(mortar[..., None], np.array([185, 180, 170], np.float32), brick)


def _ctx_sand(rng, h, w, k):
    y, x = grid_coords(h, w)
    a, b = rotate(y, x, rng.uniform(-0.6, 0.6))
    warp = value_noise(rng, h, w, 20 * k)
    ripple = 0.5 + 0.5 * np.sin(2 * math.pi * (b / (7.5 * k) + 2.0 * warp))
    speck = value_noise(rng, h, w, 0.9 * k)
    t = 0.55 * ripple + 0.45 * speck
    return mix(t, (188, 155, 105), (232, 208, 158))


def _ctx_snow(rng, h, w, k):
    shade = value_noise(rng, h, w, 30 * k, octaves=2)
    img = mix(soft_step(shade, 0.3, 0.7), (178, 190, 215), (244, 246, 252))
    sparkle = value_noise(rng, h, w, 0.8 * k) > 0.93
    return np.where(sparkle[..., None], np.array([255, 255, 255], np.float32), img)


def _ctx_planks(rng, h, w, k):
    y, x = grid_coords(h, w)
    ang = rng.choice([0.0, math.pi / 2]) + rng.uniform(-0.2, 0.2)
    a, b = rotate(y, x, ang)
    bw = rng.uniform(11, 15) * k
    b = b + rng.uniform(0, bw)
    board = np.floor(b / bw).astype(np.int64) % 4096
    tint = rng.uniform(-25, 25, 4096).astype(np.float32)[board]
    grain = value_noise(rng, h, w, 1.4 * k) * 0.5 + 0.5 * (
        0.5 + 0.5 * np.sin(b * 1.3 / k + 6 * value_noise(rng, h, w, 12 * k))
    )
    img = np.array([150, 98, 56], np.float32) + tint[..., None] * np.array([1.0, 0.75, 0.5], np.float32)
    img = img * (0.78 + 0.3 * grain)[..., None]
    seam = (b % bw) < 1.0 * k
    return np.where(seam[..., None], np.array([60, 38, 22], np.float32), img)


def _ctx_foliage(rng, h, w, k):
    t = value_noise(rng, h, w, 6.5 * k, octaves=3, persistence=0.55)
    img = mix(soft_step(t, 0.35, 0.5), (22, 52, 22), (52, 105, 38))
    return img + soft_step(t, 0.55, 0.68)[..., None] * (np.array([120, 150, 50], np.float32) - img)


def _ctx_tiles(rng, h, w, k):
    y, x = grid_coords(h, w)
    s = rng.uniform(20, 26) * k
    y, x = y + rng.uniform(0, s), x + rng.uniform(0, s)
    grout = ((y % s) < 1.6 * k) | ((x % s) < 1.6 * k)
    ids = (np.floor(y / s).astype(np.int64) * 31 + np.floor(x / s).astype(np.int64)) % 1024
    tint = rng.uniform(-10, 10, 1024).astype(np.float32)[ids]
    gloss = 0.92 + 0.16 * ((y % s) + (x % s)) / (2 * s)
    img = (np.array([140, 192, 188], np.float32) + tint[..., None]) * gloss[..., None]
    return np.where(grout[..., None], np.array([205, 205, 198], np.float32), img)


def _ctx_gravel(rng, h, w, k):
    t = value_noise(rng, h, w, 2.6 * k, octaves=2)
    q = np.floor(t * 5.0) / 5.0
    img = mix(q, (85, 80, 72), (185, 178, 165))
    gaps = np.abs((t * 5.0) % 1.0 - 0.5) > 0.44
    return np.where(gaps[..., None], img * 0.55, img)


def _ctx_plain(rng, h, w, k):
    y, x = grid_coords(h, w)
    a, _ = rotate(y - h / 2, x - w / 2, rng.uniform(-math.pi, math.pi))
    c0 = rng.uniform(95, 200) + rng.uniform(-8, 8, 3)
    c1 = c0 + rng.uniform(-40, 40)
    img = mix(a / max(h, w) + 0.5, c0, c1)
    return img + (value_noise(rng, h, w, 3 * k) - 0.5)[..., None] * 8


def _ctx_haze(rng, h, w, k):
    c = rng.uniform(110, 190) + np.array([6, 3, -4], np.float32) + rng.uniform(-6, 6, 3)
    t = value_noise(rng, h, w, 24 * k, octaves=2)
    return np.asarray(c, np.float32) * (0.85 + 0.3 * t)[..., None]


def _ctx_marble(rng, h, w, k):
    y, x = grid_coords(h, w)
    a, _ = rotate(y, x, rng.uniform(-math.pi, math.pi))
    warp = value_noise(rng, h, w, 18 * k, octaves=3)
    vein = np.abs(np.sin(a / (9 * k) + 7 * warp))
    img = mix(value_noise(rng, h, w, 10 * k), (205, 190, 200), (238, 230, 236))
    return img * (0.55 + 0.45 * soft_step(vein, 0.0, 0.25))[..., None]


ContextFn = Callable[[np.random.Generator, int, int, float], np.ndarray]

# Each context is a learnable texture cue: its own colour family and its own structure (oriented bars,
# waves, gradient, fine streaks, a brick lattice...). None of them shares a part's colour pair or its
# small-scale, high-contrast pattern, so a context correlates with a class without imitating its part.
CONTEXTS: dict[str, tuple[ContextFn, str]] = {
    "rails": (_ctx_rails, "brown gravel crossed by parallel steel rails on dark sleepers (oriented bars)"),
    "water": (_ctx_water, "blue low-frequency waves with pale glints"),
    "foliage": (_ctx_foliage, "dark green leafy blotches"),
    "road": (_ctx_road, "grey asphalt with dashed lane markings"),
    "grass": (_ctx_grass, "green fine vertical streaks with lighter patches"),
    "sky": (_ctx_sky, "smooth blue vertical gradient with faint wispy clouds"),
    "planks": (_ctx_planks, "brown wooden floor boards with grain and dark seams"),
    "bricks": (_ctx_bricks, "red-brown brick lattice with pale mortar"),
    "sand": (_ctx_sand, "beige sand with fine ripples"),
    "snow": (_ctx_snow, "near-white snow with soft blue-grey shadows"),
    "tiles": (_ctx_tiles, "large pale-turquoise tiles with light grout"),
    "gravel": (_ctx_gravel, "grey-brown pebbles"),
    # Neutral backgrounds (no class preference) and a novel one seen only in the OoD pool.
    "plain": (_ctx_plain, "neutral: smooth grey gradient"),
    "haze": (_ctx_haze, "neutral: low-contrast mottled beige-grey"),
    "marble": (_ctx_marble, "novel (OoD only): pinkish marble with dark veins"),
}
NEUTRAL_CONTEXTS = ("plain", "haze")
NOVEL_CONTEXTS = ("marble",)


def draw_context(name: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Render a background texture (HxWx3 float32, 0..255)."""
    k = min(h, w) / 128.0
    return np.asarray(CONTEXTS[name][0](rng, h, w, k), np.float32)
