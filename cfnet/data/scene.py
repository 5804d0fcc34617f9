"""A procedural street scene in 3-D and its renderer (RGB image + Cityscapes labelId map).

World coordinates in metres: X to the right, Y up, Z forward along the street; the ground is Y = 0. A
`Scene` holds the street layout (road, sidewalks, terrain, building lines) and a list of `Thing`s made of
planar parts (convex polygons, camera-facing discs and lines), each with a colour and a labelId. The
renderer draws the ground per pixel, then every part with a depth buffer, so occlusion is exact and a
camera moving along Z gives a consistent driving sequence. Lighting (a sun direction, shaded faces,
building shadows on the ground), per-class texture noise, exposure, blur and sensor noise make the task
learnable but not trivial.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from cfnet.data.labels import ID_BY_NAME

Color = tuple[float, float, float]
Texture = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""(X, Y, Z, base RGB) of the visible pixels of a part -> their RGB colours."""

CAMERA_HEIGHT = 1.5
NEAR = 0.3
ROAD, SIDEWALK, BUILDING = ID_BY_NAME["road"], ID_BY_NAME["sidewalk"], ID_BY_NAME["building"]
WALL, FENCE, POLE = ID_BY_NAME["wall"], ID_BY_NAME["fence"], ID_BY_NAME["pole"]
LIGHT, SIGN, VEGETATION = ID_BY_NAME["traffic light"], ID_BY_NAME["traffic sign"], ID_BY_NAME["vegetation"]
TERRAIN, SKY, PERSON, RIDER = ID_BY_NAME["terrain"], ID_BY_NAME["sky"], ID_BY_NAME["person"], ID_BY_NAME["rider"]
CAR, TRUCK, BUS, BICYCLE = ID_BY_NAME["car"], ID_BY_NAME["truck"], ID_BY_NAME["bus"], ID_BY_NAME["bicycle"]
EGO = ID_BY_NAME["ego vehicle"]

# texture noise per labelId: (fine grain, blotches)
_NOISE = np.zeros((256, 2), dtype=np.float32)
for _name, _amp in {
    "road": (0.07, 0.10), "sidewalk": (0.05, 0.06), "building": (0.05, 0.08), "wall": (0.06, 0.12),
    "fence": (0.05, 0.06), "pole": (0.03, 0.03), "traffic light": (0.03, 0.02), "traffic sign": (0.03, 0.02),
    "vegetation": (0.16, 0.22), "terrain": (0.10, 0.16), "sky": (0.01, 0.02), "person": (0.04, 0.04),
    "rider": (0.04, 0.04), "car": (0.03, 0.03), "truck": (0.03, 0.05), "bus": (0.03, 0.04), "bicycle": (0.03, 0.02),
    "ego vehicle": (0.02, 0.05),
}.items():
    _NOISE[ID_BY_NAME[_name]] = _amp


@dataclass
class Poly:
    """A planar convex polygon (N x 3 world points)."""

    pts: np.ndarray
    color: Color
    label: int
    texture: Texture | None = None
    outward: tuple[float, float, float] | None = None  # a face of a solid: hidden when seen from behind


@dataclass
class Disc:
    """A camera-facing disc: centre (world) and radius in metres."""

    center: np.ndarray
    radius: float
    color: Color
    label: int


@dataclass
class Line:
    """A camera-facing thick segment between two world points, `width` in metres."""

    a: np.ndarray
    b: np.ndarray
    width: float
    color: Color
    label: int


Part = Poly | Disc | Line


@dataclass
class Thing:
    """An object: its parts (drawn in order; coplanar later parts win) and a speed along Z (m per frame)."""

    parts: list[Part]
    speed: float = 0.0
    bounds: np.ndarray = field(init=False)  # 2 x 3 world box (min, max), for culling

    def __post_init__(self) -> None:
        pts = []
        for part in self.parts:
            if isinstance(part, Poly):
                pts.append(part.pts)
            elif isinstance(part, Disc):
                pts.append(np.stack([part.center - part.radius, part.center + part.radius]))
            else:
                pts.append(np.stack([part.a - part.width, part.a + part.width, part.b - part.width,
                                     part.b + part.width]))
        allpts = np.concatenate(pts)
        self.bounds = np.stack([allpts.min(axis=0), allpts.max(axis=0)])


@dataclass
class Scene:
    """The street layout, the light and the things of one scene."""

    road_half: float
    verge: tuple[float, float]  # widths of the grass strips between road and sidewalk, left and right
    sidewalk: tuple[float, float]  # widths, left and right
    building_line: tuple[float, float]  # |X| of the facades, left and right
    heights: tuple[np.ndarray, np.ndarray]  # building height along Z per metre (0 in gaps), left and right
    road_color: Color
    sidewalk_color: Color
    terrain_color: Color
    marking: str  # "dashed", "solid", "none"
    crossings: list[float]  # Z of zebra crossings
    sky: tuple[Color, Color]  # zenith and horizon colours
    clouds: float  # cloud cover 0..1
    sun: np.ndarray  # unit vector pointing towards the sun
    ambient: float
    horizon: float  # horizon row as a fraction of the height
    cam_x: float
    hood: bool  # the ego vehicle's bonnet at the bottom of the image
    seed: int
    things: list[Thing] = field(default_factory=list)


def _box(x0: float, x1: float, y0: float, y1: float, z0: float, z1: float, color: Color, label: int,
         texture: Texture | None = None) -> list[Part]:
    """The faces of an axis-aligned box that a camera behind z0 may see: near, left, right and top."""
    c = np.array
    return [
        Poly(c([[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0]], float), color, label, texture, (0, 0, -1)),
        Poly(c([[x0, y0, z0], [x0, y0, z1], [x0, y1, z1], [x0, y1, z0]], float), color, label, texture, (-1, 0, 0)),
        Poly(c([[x1, y0, z0], [x1, y0, z1], [x1, y1, z1], [x1, y1, z0]], float), color, label, texture, (1, 0, 0)),
        Poly(c([[x0, y1, z0], [x1, y1, z0], [x1, y1, z1], [x0, y1, z1]], float), color, label, texture, (0, 1, 0)),
    ]


def _quad_z(x0: float, x1: float, y0: float, y1: float, z: float, color: Color, label: int) -> Poly:
    """A rectangle facing the camera at depth z."""
    return Poly(np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], float), color, label)


def _quad_x(x: float, y0: float, y1: float, z0: float, z1: float, color: Color, label: int,
            texture: Texture | None = None) -> Poly:
    """A rectangle in the plane X = x (parallel to the street)."""
    return Poly(np.array([[x, y0, z0], [x, y0, z1], [x, y1, z1], [x, y1, z0]], float), color, label, texture)


def _jitter(rng: np.random.Generator, color: Color, amount: float = 12.0) -> Color:
    r, g, b = (np.asarray(color, float) + rng.normal(0, amount, 3)).clip(0, 255)
    return float(r), float(g), float(b)


def _pick(rng: np.random.Generator, colors: list[Color], amount: float = 12.0) -> Color:
    return _jitter(rng, colors[int(rng.integers(len(colors)))], amount)


def _hash(i: np.ndarray, j: np.ndarray, seed: float) -> np.ndarray:
    """A deterministic pseudo-random value in [0, 1) per integer cell (i, j)."""
    h = np.sin(i * 12.9898 + j * 78.233 + seed * 0.137) * 43758.5453
    return h - np.floor(h)


def _facade(seed: float, along: int, start: float, spacing: float, floor: float, ground: float,
            glass: Color, frame: Color) -> Texture:
    """Windows on a grid: `along` is the world axis (0: X, 2: Z) running along the wall."""

    def texture(x: np.ndarray, y: np.ndarray, z: np.ndarray, base: np.ndarray) -> np.ndarray:
        s = (x if along == 0 else z) - start
        col, fy = np.floor(s / spacing), np.floor((y - ground) / floor)
        fs = s / spacing - col
        fv = (y - ground) / floor - fy
        window = (fs > 0.2) & (fs < 0.8) & (fv > 0.25) & (fv < 0.85) & (y > ground)
        rim = (fs > 0.15) & (fs < 0.85) & (fv > 0.2) & (fv < 0.9) & (y > ground) & ~window
        shop = (y > 0.4) & (y < ground - 0.6) & (fs > 0.1) & (fs < 0.9)
        lit = _hash(col, fy, seed)
        out = base.copy()
        out[rim] = frame
        glass_rgb = np.asarray(glass, np.float32)
        out[window] = glass_rgb * (0.6 + 0.8 * lit[window, None]) + 25 * fv[window, None]
        out[shop] = glass_rgb * 0.8 + 20 * _hash(col, 0 * col, seed + 1)[shop, None]
        band = np.abs(fv - 0.05) < 0.04
        out[band & (y > ground)] *= 0.85
        return out

    return texture


def _slabs(seed: float, along: int, height: float) -> Texture:
    """Concrete slabs: joints every 2.5 m, a darker stained base."""

    def texture(x: np.ndarray, y: np.ndarray, z: np.ndarray, base: np.ndarray) -> np.ndarray:
        s = (x if along == 0 else z) / 2.5
        joint = (s - np.floor(s)) < 0.03
        stain = 0.85 + 0.15 * np.clip(y / max(height, 1e-3), 0, 1)
        out = base * stain[:, None] * (0.9 + 0.2 * _hash(np.floor(s), 0 * s, seed))[:, None]
        out[joint] *= 0.7
        return out

    return texture


def _lattice(along: int, bar: float) -> Texture:
    """A fence: vertical bars and two rails over a darker background."""

    def texture(x: np.ndarray, y: np.ndarray, z: np.ndarray, base: np.ndarray) -> np.ndarray:
        s = (x if along == 0 else z) / bar
        bars = (s - np.floor(s)) < 0.45
        rails = (np.abs(y - 0.25) < 0.06) | (np.abs(y - 1.0) < 0.06)
        out = base * 0.55
        out[bars | rails] = base[bars | rails]
        return out

    return texture


# ---- things ---------------------------------------------------------------------------------------------

CAR_COLORS: list[Color] = [(30, 50, 115), (145, 150, 155), (25, 26, 30), (30, 60, 45), (35, 85, 95), (90, 95, 105)]
CLOTHES: list[Color] = [(170, 30, 40), (120, 30, 110), (200, 90, 30), (60, 60, 150), (40, 100, 60), (200, 170, 60)]
SKIN: list[Color] = [(230, 190, 160), (170, 120, 90), (110, 75, 55)]
PANTS: list[Color] = [(40, 40, 55), (50, 70, 120), (75, 65, 50)]
GREENS: list[Color] = [(45, 95, 35), (60, 115, 40), (35, 80, 40), (80, 120, 45)]


def car(rng: np.random.Generator, x: float, z: float, facing_camera: bool, speed: float) -> Thing:
    """A car seen from behind (or from the front when it comes towards the camera)."""
    w, length, h = rng.uniform(1.7, 1.95), rng.uniform(3.9, 4.8), rng.uniform(1.4, 1.6)
    body = _pick(rng, CAR_COLORS)
    glass = _jitter(rng, (35, 40, 50), 6)
    x0, x1 = x - w / 2, x + w / 2
    parts = _box(x0, x1, 0.3, h * 0.62, z, z + length, body, CAR)
    parts += _box(x0 + 0.12, x1 - 0.12, h * 0.62, h, z + 0.8, z + length - 1.0, body, CAR)
    zn = z + 0.8  # the near cabin face: a glass window
    parts.append(_quad_z(x0 + 0.2, x1 - 0.2, h * 0.65, h * 0.96, zn - 0.01, glass, CAR))
    for side in (x0 - 0.01, x1 + 0.01):  # side windows and wheels
        parts.append(_quad_x(side + (0.12 if side < x else -0.12), h * 0.65, h * 0.96, z + 1.0, z + length - 1.2,
                             glass, CAR))
        for wz in (z + 0.5, z + length - 1.2):
            parts.append(_quad_x(side, 0.0, 0.62, wz, wz + 0.7, (20, 20, 22), CAR))
    lamp = (235, 235, 210) if facing_camera else (200, 25, 25)
    for lx in (x0 + 0.1, x1 - 0.45):
        parts.append(_quad_z(lx, lx + 0.35, h * 0.45, h * 0.58, z - 0.01, lamp, CAR))
    parts.append(_quad_z(x - 0.25, x + 0.25, 0.35, 0.5, z - 0.01, (225, 225, 225), CAR))
    parts.append(_quad_z(x0, x1, 0.0, 0.32, z + 0.3, (22, 22, 24), CAR))  # wheels and shadow under the bumper
    return Thing(parts, speed)


def truck(rng: np.random.Generator, x: float, z: float, speed: float) -> Thing:
    """A lorry: a cargo box behind a cab, seen from behind."""
    w, length, h = 2.45, rng.uniform(7.0, 9.0), rng.uniform(3.2, 3.8)
    cargo = _pick(rng, [(230, 230, 225), (185, 185, 175), (200, 120, 40)])
    cab = _pick(rng, [(215, 215, 215), (220, 120, 30), (40, 70, 150), (150, 30, 30)])
    x0, x1 = x - w / 2, x + w / 2
    parts = _box(x0, x1, 0.7, h, z, z + length - 2.2, cargo, TRUCK)
    parts += _box(x0 + 0.05, x1 - 0.05, 0.5, h * 0.8, z + length - 2.0, z + length, cab, TRUCK)
    parts.append(_quad_z(x0 + 0.1, x1 - 0.1, 0.8, h - 0.1, z - 0.01, _jitter(rng, cargo, 6), TRUCK))
    parts.append(_quad_z(x0 + 1.2, x0 + 1.25, 0.8, h - 0.1, z - 0.02, (60, 60, 60), TRUCK))  # door seam
    for lx in (x0 + 0.1, x1 - 0.4):
        parts.append(_quad_z(lx, lx + 0.3, 0.75, 0.95, z - 0.02, (200, 25, 25), TRUCK))
    for side in (x0 - 0.01, x1 + 0.01):
        for wz in (z + 0.6, z + 1.8, z + length - 1.4):
            parts.append(_quad_x(side, 0.0, 0.95, wz, wz + 0.95, (22, 22, 24), TRUCK))
    parts.append(_quad_z(x0, x1, 0.0, 0.7, z + 0.5, (25, 25, 27), TRUCK))
    return Thing(parts, speed)


def bus(rng: np.random.Generator, x: float, z: float, speed: float) -> Thing:
    """A city bus with a band of windows along its sides, seen from behind."""
    w, length, h = 2.55, rng.uniform(11.0, 13.0), rng.uniform(3.0, 3.3)
    paint = _pick(rng, [(225, 185, 35), (40, 125, 70), (190, 40, 40)])
    glass = _jitter(rng, (45, 55, 65), 6)
    x0, x1 = x - w / 2, x + w / 2
    parts = _box(x0, x1, 0.35, h, z, z + length, paint, BUS)
    parts.append(_quad_z(x0 + 0.2, x1 - 0.2, 1.6, h - 0.3, z - 0.01, glass, BUS))
    parts.append(_quad_z(x0 + 0.3, x1 - 0.3, h - 0.28, h - 0.05, z - 0.01, (250, 160, 40), BUS))  # route sign
    for side in (x0 - 0.01, x1 + 0.01):
        parts.append(_quad_x(side, 1.3, h - 0.35, z + 0.4, z + length - 0.3, glass, BUS))
        for wz in (z + 1.5, z + length - 2.6):
            parts.append(_quad_x(side, 0.0, 0.95, wz, wz + 1.0, (22, 22, 24), BUS))
    for lx in (x0 + 0.1, x1 - 0.4):
        parts.append(_quad_z(lx, lx + 0.3, 0.5, 0.9, z - 0.02, (200, 25, 25), BUS))
    parts.append(_quad_z(x0, x1, 0.0, 0.35, z + 0.5, (25, 25, 27), BUS))
    return Thing(parts, speed)


def _figure(rng: np.random.Generator, x: float, z: float, label: int, height: float, stride: float) -> list[Part]:
    """A standing or walking human figure facing the camera (legs, torso, arms, head)."""
    shirt, pants, skin = _pick(rng, CLOTHES, 20), _pick(rng, PANTS, 10), _pick(rng, SKIN, 8)
    hip, shoulder, head = 0.48 * height, 0.8 * height, 0.065 * height
    half = 0.24 * height / 1.75
    parts: list[Part] = [
        Line(np.array([x - 0.09, hip, z]), np.array([x - 0.09 - stride, 0.05, z]), 0.2, pants, label),
        Line(np.array([x + 0.09, hip, z]), np.array([x + 0.09 + stride, 0.05, z]), 0.2, pants, label),
        _quad_z(x - half, x + half, hip - 0.05, shoulder, z - 0.01, shirt, label),
        Line(np.array([x - half - 0.02, shoulder - 0.05, z]), np.array([x - half - 0.1, hip, z]), 0.13, shirt, label),
        Line(np.array([x + half + 0.02, shoulder - 0.05, z]), np.array([x + half + 0.1, hip, z]), 0.13, shirt, label),
        Disc(np.array([x, shoulder + head + 0.04, z - 0.02]), head * 1.15, skin, label),
    ]
    if rng.random() < 0.3:  # a bag or a backpack
        parts.append(_quad_z(x + half, x + half + 0.22, hip - 0.05, hip + 0.3, z - 0.03,
                             _pick(rng, [(60, 40, 30), (30, 30, 30), (150, 150, 160)]), label))
    return parts


def person(rng: np.random.Generator, x: float, z: float) -> Thing:
    """A pedestrian."""
    return Thing(_figure(rng, x, z, PERSON, rng.uniform(1.6, 1.9), rng.choice([0.0, 0.12, 0.2])))


def bicycle_parts(rng: np.random.Generator, x: float, z: float, facing: int) -> list[Part]:
    """A bicycle in side view at depth z, front wheel towards `facing` (+1 right, -1 left)."""
    frame = _pick(rng, [(25, 25, 25), (150, 25, 35), (30, 60, 160), (200, 200, 200)])
    r = 0.34
    back, front = np.array([x - facing * 0.55, r, z]), np.array([x + facing * 0.55, r, z])
    crank = np.array([x - facing * 0.05, r, z])
    seat = np.array([x - facing * 0.2, r + 0.62, z])
    bar = np.array([x + facing * 0.42, r + 0.68, z])
    parts: list[Part] = []
    for c in (back, front):
        parts.append(Disc(c, r, (20, 20, 20), BICYCLE))
        parts.append(Disc(c - [0, 0, 0.005], r * 0.8, (140, 140, 135), BICYCLE))
        parts.append(Line(c + [0, r * 0.8, -0.01], c - [0, r * 0.8, 0.01], 0.02, (90, 90, 90), BICYCLE))
        parts.append(Line(c + [r * 0.8, 0, -0.01], c - [r * 0.8, 0, 0.01], 0.02, (90, 90, 90), BICYCLE))
    for a, b in ((back, crank), (crank, seat), (seat, back), (crank, bar), (bar, front), (seat, bar)):
        parts.append(Line(a - [0, 0, 0.02], b - [0, 0, 0.02], 0.06, frame, BICYCLE))
    parts.append(Line(seat + [-0.12, 0.03, -0.03], seat + [0.12, 0.03, -0.03], 0.07, (20, 20, 20), BICYCLE))
    parts.append(Line(bar + [0, 0.08, -0.03], bar + [facing * -0.1, 0.1, -0.03], 0.05, (20, 20, 20), BICYCLE))
    return parts


def cyclist(rng: np.random.Generator, x: float, z: float, speed: float) -> Thing:
    """A rider on a bicycle (side view): the rider is `rider`, the bicycle `bicycle`."""
    facing = int(rng.choice([-1, 1]))
    parts = bicycle_parts(rng, x, z, facing)
    shirt, pants, skin = _pick(rng, CLOTHES, 20), _pick(rng, PANTS, 10), _pick(rng, SKIN, 8)
    hip = np.array([x - facing * 0.2, 1.05, z - 0.05])
    shoulder = np.array([x + facing * 0.12, 1.55, z - 0.05])
    knee = np.array([x + facing * 0.15, 0.75, z - 0.06])
    parts += [
        Line(hip, knee, 0.15, pants, RIDER),
        Line(knee, np.array([x, 0.35, z - 0.06]), 0.12, pants, RIDER),
        Line(hip, shoulder, 0.36, shirt, RIDER),
        Line(shoulder, np.array([x + facing * 0.42, 1.1, z - 0.07]), 0.1, shirt, RIDER),
        Disc(shoulder + [facing * 0.08, 0.2, -0.02], 0.13, skin, RIDER),
        Disc(shoulder + [facing * 0.06, 0.27, -0.03], 0.12, _pick(rng, [(230, 230, 230), (30, 30, 30), (220, 60, 30)]),
             RIDER),
    ]
    return Thing(parts, speed)


def parked_bicycle(rng: np.random.Generator, x: float, z: float) -> Thing:
    """A bicycle standing on the sidewalk."""
    return Thing(bicycle_parts(rng, x, z, int(rng.choice([-1, 1]))))


def tree(rng: np.random.Generator, x: float, z: float) -> Thing:
    """A street tree: trunk and a crown of overlapping discs (all `vegetation`)."""
    h = rng.uniform(4.0, 8.0)
    crown = rng.uniform(1.4, 2.6)
    trunk = _jitter(rng, (90, 70, 50), 10)
    parts: list[Part] = [_quad_z(x - 0.15, x + 0.15, 0.0, h - crown, z, trunk, VEGETATION)]
    for _ in range(int(rng.integers(6, 11))):
        dx, dy = rng.normal(0, crown * 0.45, 2)
        parts.append(Disc(np.array([x + dx, h - crown * 0.4 + dy * 0.7, z - rng.uniform(0, 0.3)]),
                          crown * rng.uniform(0.45, 0.75), _pick(rng, GREENS, 10), VEGETATION))
    return Thing(parts)


def hedge(rng: np.random.Generator, x0: float, x1: float, z0: float, z1: float) -> Thing:
    """A hedge: a green box along the street."""
    return Thing(_box(x0, x1, 0.0, rng.uniform(0.7, 1.5), z0, z1, _pick(rng, GREENS, 10), VEGETATION))


def pole(rng: np.random.Generator, x: float, z: float, side: int) -> Thing:
    """A pole carrying a traffic light, a sign, or a street lamp (`side`: -1 left, +1 right of the road)."""
    h = rng.uniform(3.5, 6.5)
    r = rng.uniform(0.13, 0.2)
    grey = _pick(rng, [(135, 140, 145), (95, 100, 100), (165, 165, 160)], 8)
    parts: list[Part] = [_quad_z(x - r, x + r, 0.0, h, z, grey, POLE)]
    kind = rng.choice(["light", "sign", "lamp"], p=[0.45, 0.4, 0.15])
    if kind == "light":
        top = h + 0.05
        parts.append(_quad_z(x - 0.3, x + 0.3, top - 1.3, top, z - 0.1, _pick(rng, [(35, 40, 35), (30, 30, 30)], 5),
                             LIGHT))
        on = int(rng.integers(3))
        for k, lamp in enumerate([(230, 40, 30), (240, 170, 30), (40, 220, 90)]):
            color = lamp if k == on else tuple(0.25 * c + 20 for c in lamp)
            parts.append(Disc(np.array([x, top - 0.25 - 0.4 * k, z - 0.12]), 0.15, color, LIGHT))  # type: ignore[arg-type]
    elif kind == "sign":
        y = rng.uniform(2.2, min(h, 3.2))
        shape = rng.choice(["round", "square", "triangle"])
        if shape == "round":
            parts.append(Disc(np.array([x, y, z - 0.05]), 0.42, (200, 30, 30), SIGN))
            parts.append(Disc(np.array([x, y, z - 0.06]), 0.32, _pick(rng, [(235, 235, 235), (40, 80, 170)], 6), SIGN))
        elif shape == "square":
            color = _pick(rng, [(40, 80, 170), (240, 200, 30), (40, 130, 60)], 8)
            parts.append(_quad_z(x - 0.4, x + 0.4, y - 0.4, y + 0.4, z - 0.05, color, SIGN))
            parts.append(_quad_z(x - 0.3, x + 0.3, y - 0.08, y + 0.08, z - 0.06, (235, 235, 235), SIGN))
        else:
            tri = np.array([[x - 0.5, y - 0.35, z - 0.05], [x + 0.5, y - 0.35, z - 0.05], [x, y + 0.5, z - 0.05]])
            parts.append(Poly(tri, (200, 30, 30), SIGN))
            inner = tri + [[0.17, 0.1, -0.01], [-0.17, 0.1, -0.01], [0, -0.2, -0.01]]
            parts.append(Poly(inner, (235, 235, 235), SIGN))
    else:  # a street lamp: an arm over the road and a head (both `pole`, as Cityscapes annotates them)
        reach = -side * rng.uniform(1.0, 2.0)
        parts.append(Line(np.array([x, h - 0.1, z]), np.array([x + reach, h + 0.2, z]), 0.12, grey, POLE))
        parts.append(_quad_z(x + reach - 0.35, x + reach + 0.35, h + 0.05, h + 0.3, z - 0.02, grey, POLE))
    return Thing(parts)


def wall(rng: np.random.Generator, x: float, z0: float, z1: float) -> Thing:
    """A low concrete wall parallel to the street, at X = x."""
    h = rng.uniform(1.2, 2.5)
    color = _pick(rng, [(135, 140, 158), (118, 124, 142), (150, 150, 165)], 8)
    return Thing(_box(x - 0.15, x + 0.15, 0.0, h, z0, z1, color, WALL, _slabs(float(rng.integers(1000)), 2, h)))


def fence(rng: np.random.Generator, x: float, z0: float, z1: float) -> Thing:
    """A fence parallel to the street, at X = x."""
    color = _pick(rng, [(165, 130, 95), (95, 135, 105), (150, 110, 80)], 8)
    return Thing([_quad_x(x, 0.0, rng.uniform(1.3, 2.0), z0, z1, color, FENCE, _lattice(2, rng.uniform(0.12, 0.2)))])


def building(rng: np.random.Generator, x_face: float, side: int, z0: float, z1: float, height: float) -> Thing:
    """A building block whose facade is the plane X = x_face, from z0 to z1 (side -1 left, +1 right)."""
    base = _pick(rng, [(150, 140, 125), (175, 160, 140), (120, 115, 110), (160, 110, 90), (205, 195, 175),
                       (110, 100, 95)], 14)
    glass = _pick(rng, [(45, 60, 80), (70, 85, 100), (40, 45, 50)], 8)
    frame = _jitter(rng, tuple(min(255.0, c * 1.2) for c in base), 6)  # type: ignore[arg-type]
    spacing, floor, ground = rng.uniform(2.4, 3.6), rng.uniform(2.9, 3.4), rng.uniform(3.0, 4.2)
    seed = float(rng.integers(1000))
    depth = 12.0
    x_back = x_face + side * depth
    xa, xb = min(x_face, x_back), max(x_face, x_back)
    front = _facade(seed, 2, z0, spacing, floor, ground, glass, frame)
    end = _facade(seed + 7, 0, x_face, spacing, floor, ground, glass, frame)
    parts: list[Part] = [
        Poly(np.array([[x_face, 0, z0], [x_face, 0, z1], [x_face, height, z1], [x_face, height, z0]], float), base,
             BUILDING, front, (-side, 0, 0)),
        Poly(np.array([[xa, 0, z0], [xb, 0, z0], [xb, height, z0], [xa, height, z0]], float), base, BUILDING, end,
             (0, 0, -1)),
    ]
    if rng.random() < 0.4:  # a darker cornice
        parts.append(_quad_x(x_face - side * 0.02, height - 0.6, height, z0, z1, _jitter(rng, base, 4), BUILDING))
    return Thing(parts)


# ---- the layout -------------------------------------------------------------------------------------------


def random_scene(rng: np.random.Generator, length: float = 110.0, start: float = 0.0) -> Scene:
    """Sample a street of `length` metres ahead of Z = start, with its buildings and things."""
    road_half = rng.uniform(3.5, 7.0)
    verge = (float(rng.uniform(1.0, 2.5)) if rng.random() < 0.4 else 0.0,
             float(rng.uniform(1.0, 2.5)) if rng.random() < 0.4 else 0.0)
    sidewalk = (rng.uniform(2.0, 4.5), rng.uniform(2.0, 4.5))
    terrain = (float(rng.uniform(2.0, 6.0)) if rng.random() < 0.6 else 0.0,
               float(rng.uniform(2.0, 6.0)) if rng.random() < 0.6 else 0.0)
    line = (road_half + verge[0] + sidewalk[0] + terrain[0], road_half + verge[1] + sidewalk[1] + terrain[1])
    overcast = rng.random() < 0.3
    sky = ((165, 172, 182), (205, 210, 215)) if overcast else ((60, 115, 190), (175, 200, 225))
    elev, azim = rng.uniform(0.3, 1.1), rng.uniform(-np.pi, np.pi)
    sun = np.array([np.cos(elev) * np.sin(azim), np.sin(elev), np.cos(elev) * np.cos(azim)])
    end = start + length
    near_span = length - 50.0  # small things stay within this distance (far ones would be a few pixels)
    n = int(np.ceil(end)) + 1
    heights = (np.zeros(n), np.zeros(n))
    scene = Scene(
        road_half=road_half, verge=verge, sidewalk=sidewalk, building_line=line, heights=heights,
        road_color=_jitter(rng, (88, 88, 92), 8), sidewalk_color=_pick(rng, [(185, 170, 165), (200, 190, 178),
                                                                             (165, 160, 160)], 8),
        terrain_color=_pick(rng, [(140, 165, 90), (155, 170, 100), (125, 150, 85)], 8),
        marking=str(rng.choice(["dashed", "solid", "none"], p=[0.6, 0.25, 0.15])),
        crossings=[float(z) for z in rng.uniform(start + 12, end, int(rng.integers(0, 3)))],
        sky=(_jitter(rng, sky[0], 6), _jitter(rng, sky[1], 6)), clouds=float(rng.uniform(0, 1) * (not overcast)),
        sun=sun, ambient=0.55 if overcast else float(rng.uniform(0.35, 0.5)), horizon=float(rng.uniform(0.38, 0.46)),
        cam_x=float(rng.uniform(0.1, 0.6) * road_half), hood=bool(rng.random() < 0.4),
        seed=int(rng.integers(1 << 30)),
    )
    things = scene.things
    for s, side in enumerate((-1, 1)):
        xf = side * line[s]
        z = start - 30.0
        while z < end + 40:  # buildings along the facade line, with occasional gaps
            span = rng.uniform(8.0, 25.0)
            if rng.random() < 0.15:
                z += rng.uniform(3.0, 8.0)
                things.append(tree(rng, xf + side * 3.0, z - 2.0))
                continue
            height = rng.uniform(7.0, 26.0)
            setback = rng.choice([0.0, 0.0, rng.uniform(0.5, 2.5)])
            things.append(building(rng, xf + side * setback, side, z, z + span, height))
            lo, hi = int(np.clip(z, 0, n - 1)), int(np.clip(z + span, 0, n - 1))
            heights[s][lo:hi] = height
            z += span
        walk_in = road_half + verge[s]  # where the sidewalk begins
        edge = side * (walk_in + sidewalk[s])  # sidewalk / terrain border
        z = start + rng.uniform(0, 10)
        while z < end:  # walls, fences and hedges at the back of the sidewalk
            span = rng.uniform(5.0, 20.0)
            kind = rng.choice(["wall", "fence", "hedge", "none"], p=[0.35, 0.35, 0.15, 0.15])
            xb = edge + side * 0.3
            if kind == "wall":
                things.append(wall(rng, xb, z, z + span))
            elif kind == "fence":
                things.append(fence(rng, xb, z, z + span))
            elif kind == "hedge":
                things.append(hedge(rng, min(xb, xb + side * 0.8), max(xb, xb + side * 0.8), z, z + span))
            z += span + rng.uniform(2.0, 12.0)
        curb = side * (road_half + 0.45)
        for z in np.arange(start + rng.uniform(3, 12), start + near_span, rng.uniform(9.0, 18.0)):
            things.append(pole(rng, curb, float(z), side))
        tree_x = road_half + verge[s] / 2 if verge[s] else walk_in + sidewalk[s] * 0.6
        for z in np.arange(start + rng.uniform(4, 14), end, rng.uniform(11.0, 20.0)):
            things.append(tree(rng, side * tree_x, float(z) + rng.uniform(-2, 2)))
        walk_lo, walk_hi = walk_in + 0.5, walk_in + sidewalk[s] - 0.3
        for _ in range(int(rng.integers(4, 11) * near_span / 60)):
            z = start + 4 + (near_span - 4) * float(rng.random()) ** 1.5  # more of them near the camera
            x = side * rng.uniform(walk_lo, max(walk_lo, walk_hi))
            things.append(person(rng, x, z) if rng.random() < 0.7 else parked_bicycle(rng, x, z))
        for z in np.arange(start + rng.uniform(5, 25), start + near_span, rng.uniform(7.0, 30.0)):  # parked cars
            if rng.random() < 0.6:
                things.append(car(rng, side * (road_half - 1.1), float(z), False, 0.0))
    lanes = [road_half * 0.5, -road_half * 0.5]
    for _ in range(int(rng.integers(2, 6) * near_span / 60)):
        lane = int(rng.integers(2))
        x = lanes[lane] + rng.normal(0, 0.3)
        z = float(rng.uniform(start + 7, start + near_span))
        speed = (0.6 if lane == 0 else -0.7) * rng.uniform(0.5, 1.2)
        kind = rng.choice(["car", "truck", "bus"], p=[0.5, 0.25, 0.25])
        if kind == "car":
            things.append(car(rng, x, z, lane == 1, speed))
        elif kind == "truck":
            things.append(truck(rng, x, z, speed))
        else:
            things.append(bus(rng, x, z, speed))
    for _ in range(int(rng.integers(2, 5) * near_span / 60)):  # cyclists near the curbs
        side = int(rng.choice([-1, 1]))
        z = start + 5 + (near_span - 5) * float(rng.random()) ** 1.5
        things.append(cyclist(rng, side * (road_half - 0.8), z, side * 0.3 * rng.uniform(0.5, 1.0)))
    for z in scene.crossings:  # people on the zebra crossings
        for _ in range(int(rng.integers(0, 4))):
            things.append(person(rng, float(rng.uniform(-road_half, road_half)), z + rng.uniform(0.5, 3.0)))
    return scene


# ---- the renderer ------------------------------------------------------------------------------------------


def _clip_near(p: np.ndarray, near: float) -> np.ndarray:
    """Sutherland-Hodgman clipping of a polygon (camera coordinates) to Z >= near."""
    out = []
    for i in range(len(p)):
        a, b = p[i], p[(i + 1) % len(p)]
        ina, inb = a[2] >= near, b[2] >= near
        if ina:
            out.append(a)
        if ina != inb:
            t = (near - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out) if out else np.zeros((0, 3))


class Renderer:
    """Renders scenes at a fixed image size (H, W); the camera looks along +Z from (cam_x, 1.5, cam_z)."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.h, self.w = size
        self.f = 0.75 * self.w
        self.cx = (self.w - 1) / 2
        self.vv, self.uu = np.mgrid[0 : self.h, 0 : self.w].astype(np.float32)

    def render(self, scene: Scene, cam_z: float = 0.0, frame: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 image and uint8 labelId map of `scene` seen from `cam_z`, things moved to `frame`."""
        self.v0 = scene.horizon * self.h
        self.cam = np.array([scene.cam_x, CAMERA_HEIGHT, cam_z])
        self.scene = scene
        self.image = np.zeros((self.h, self.w, 3), np.float32)
        self.label = np.full((self.h, self.w), SKY, np.uint8)
        self.depth = np.full((self.h, self.w), np.inf, np.float32)
        self._sky()
        self._ground(scene, cam_z)
        for thing in scene.things:
            shift = np.array([0.0, 0.0, thing.speed * frame])
            if not self._visible(thing.bounds + shift):
                continue
            for part in thing.parts:
                self._draw(part, shift)
        if scene.hood:
            self._hood()
        return self._finish(scene, frame), self.label

    def _sky(self) -> None:
        s = self.scene
        t = np.clip(self.vv / max(self.v0, 1.0), 0, 1)[..., None]
        self.image[:] = np.asarray(s.sky[0], np.float32) * (1 - t) + np.asarray(s.sky[1], np.float32) * t
        if s.clouds > 0:
            rng = np.random.default_rng(s.seed)
            small = rng.random((max(2, self.h // 24), max(2, self.w // 24))).astype(np.float32)
            cloud = cv2.resize(small, (self.w, self.h), interpolation=cv2.INTER_CUBIC)
            cloud = np.clip((cloud - (1 - 0.6 * s.clouds)) * 3, 0, 1)[..., None] * (1 - t)
            self.image[:] = self.image * (1 - cloud) + 240 * cloud

    def _ground(self, s: Scene, cam_z: float) -> None:
        rows = self.vv[:, 0] > self.v0 + 0.5
        v, u = self.vv[rows], self.uu[rows]
        zr = self.f * CAMERA_HEIGHT / (v - self.v0)
        x = s.cam_x + (u - self.cx) * zr / self.f
        z = cam_z + zr
        ax = np.abs(x)
        left = x < 0
        walk_in = s.road_half + np.where(left, s.verge[0], s.verge[1])
        walk_out = walk_in + np.where(left, s.sidewalk[0], s.sidewalk[1])
        label = np.where(ax <= s.road_half, ROAD, np.where((ax > walk_in) & (ax <= walk_out), SIDEWALK, TERRAIN))
        label = label.astype(np.uint8)
        color = np.empty(v.shape + (3,), np.float32)
        for lid, c in ((ROAD, s.road_color), (SIDEWALK, s.sidewalk_color), (TERRAIN, s.terrain_color)):
            color[label == lid] = c
        # markings: centre line, zebra crossings; curbs; sidewalk tiles
        white = np.zeros(v.shape, bool)
        if s.marking != "none":
            centre = np.abs(x) < 0.08
            white |= centre & ((np.mod(z, 9.0) < 4.0) if s.marking == "dashed" else True)
        for zc in s.crossings:
            white |= (np.abs(z - zc - 2.0) < 2.0) & (np.mod(x, 1.0) < 0.5) & (ax < s.road_half - 0.3)
        white |= (np.abs(ax - s.road_half + 0.25) < 0.08) & (label == ROAD)
        color[white] = (215, 215, 205)
        curb = (ax > s.road_half) & (ax - s.road_half < 0.2)  # curb stones belong to the sidewalk
        label[curb] = SIDEWALK
        color[curb] = np.asarray(s.sidewalk_color, np.float32) * 1.2
        tiles = (label == SIDEWALK) & ((np.mod(z, 0.6) < 0.04) | (np.mod(ax - walk_in, 0.6) < 0.04))
        color[tiles] *= 0.85
        # shadows of the buildings on the side away from the sun
        zi = np.clip(z, 0, len(s.heights[0]) - 1).astype(np.int64)
        height = np.where(left, s.heights[0][zi], s.heights[1][zi])
        line = np.where(left, s.building_line[0], s.building_line[1])
        toward = -np.sign(x) * s.sun[0]  # the sun's lateral component pointing away from that facade
        reach = height * np.maximum(toward, 0) / max(s.sun[1], 0.2)
        shade = (ax > line - reach) & (toward > 0)
        light = s.ambient + (1 - s.ambient) * s.sun[1]
        color *= np.where(shade, s.ambient * 1.1, light)[..., None]
        self.image[rows] = color
        self.label[rows] = label
        self.depth[rows] = zr

    def _visible(self, bounds: np.ndarray) -> bool:
        """Whether a world box may cover at least a pixel of the image."""
        lo, hi = bounds - self.cam
        if hi[2] < NEAR:
            return False
        if lo[2] < NEAR:
            return True
        corners = np.array(np.meshgrid(*zip(lo, hi, strict=True), indexing="ij")).reshape(3, -1).T
        u, v = self._project(corners)
        return u.max() >= 0 and u.min() < self.w and v.max() >= 0 and v.min() < self.h and (
            u.max() - u.min() > 1 or v.max() - v.min() > 1
        )

    def _project(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.cx + self.f * p[:, 0] / p[:, 2], self.v0 - self.f * p[:, 1] / p[:, 2]

    def _light(self, normal: np.ndarray) -> float:
        return self.scene.ambient + (1 - self.scene.ambient) * max(0.0, float(normal @ self.scene.sun))

    def _write(self, y0: int, x0: int, mask: np.ndarray, z: np.ndarray, rgb: np.ndarray | Color, label: int) -> None:
        """Depth-test `mask` (bbox at y0, x0) against the buffer and write colour, label and depth."""
        h, w = mask.shape
        depth = self.depth[y0 : y0 + h, x0 : x0 + w]
        vis = mask & (z <= depth * 1.001)
        if not vis.any():
            return
        self.image[y0 : y0 + h, x0 : x0 + w][vis] = rgb if isinstance(rgb, tuple) else rgb[vis[mask]]
        self.label[y0 : y0 + h, x0 : x0 + w][vis] = label
        depth[vis] = z[vis] if isinstance(z, np.ndarray) and z.shape else z

    def _bbox(self, u: np.ndarray, v: np.ndarray, pad: float = 0.0) -> tuple[int, int, int, int] | None:
        x0, x1 = max(int(np.floor(u.min() - pad)), 0), min(int(np.ceil(u.max() + pad)) + 1, self.w)
        y0, y1 = max(int(np.floor(v.min() - pad)), 0), min(int(np.ceil(v.max() + pad)) + 1, self.h)
        return (x0, x1, y0, y1) if x0 < x1 and y0 < y1 else None

    def _draw(self, part: Part, shift: np.ndarray) -> None:
        if isinstance(part, Poly):
            self._poly(part, shift)
            return
        if isinstance(part, Disc):
            c = part.center + shift - self.cam
            if c[2] < NEAR:
                return
            u, v = self._project(c[None])
            rad = self.f * part.radius / c[2]
            box = self._bbox(u, v, rad + 1)
            if box is None:
                return
            x0, x1, y0, y1 = box
            mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
            cv2.circle(mask, (int(round((u[0] - x0) * 16)), int(round((v[0] - y0) * 16))), max(int(rad * 16), 8), 1, -1,
                       cv2.LINE_8, 4)
        else:
            a, b = part.a + shift - self.cam, part.b + shift - self.cam
            if min(a[2], b[2]) < NEAR:
                return
            ends = np.stack([a, b])
            u, v = self._project(ends)
            thick = max(1, int(round(self.f * part.width / ends[:, 2].mean())))
            box = self._bbox(u, v, thick + 1)
            if box is None:
                return
            x0, x1, y0, y1 = box
            mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
            pts = [(int(round((u[i] - x0) * 16)), int(round((v[i] - y0) * 16))) for i in range(2)]
            cv2.line(mask, pts[0], pts[1], 1, thick, cv2.LINE_8, 4)
            c = ends.mean(axis=0)
        shade = self._light(np.array([0.0, 0.0, -1.0]))
        rgb = tuple(ch * shade for ch in part.color)
        self._write(y0, x0, mask.astype(bool), np.float32(c[2]), rgb, part.label)  # type: ignore[arg-type]

    def _poly(self, part: Poly, shift: np.ndarray) -> None:
        world = part.pts + shift
        if part.outward is not None and np.dot(part.outward, world[0] - self.cam) >= 0:
            return
        p = _clip_near(world - self.cam, NEAR)
        if len(p) < 3:
            return
        u, v = self._project(p)
        box = self._bbox(u, v)
        if box is None:
            return
        x0, x1, y0, y1 = box
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        pts = np.round(np.stack([u - x0, v - y0], 1) * 16).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1, cv2.LINE_8, 4)
        m = mask.astype(bool)
        if not m.any():
            return
        (ax, ay, az), (bx, by, bz) = world[1] - world[0], world[2] - world[0]
        n = np.array([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx])
        n /= np.sqrt(n @ n) + 1e-12
        d = float(n @ (world[0] - self.cam))
        if d > 0:  # orient the normal towards the camera
            n, d = -n, -d
        if abs(d) < 1e-9:  # seen edge-on
            return
        # on the plane n.P = d, the ray P = Z * ((u - cx) / f, (v0 - v) / f, 1) gives 1/Z affine in (u, v)
        uu, vv = self.uu[y0:y1, x0:x1], self.vv[y0:y1, x0:x1]
        zinv = (n[0] * (uu - self.cx) / self.f - n[1] * (vv - self.v0) / self.f + n[2]) / d
        z = 1.0 / np.maximum(zinv, 1e-6)
        shade = self._light(n)
        if part.texture is None:
            rgb: np.ndarray | Color = tuple(ch * shade for ch in part.color)  # type: ignore[assignment]
        else:
            zm = z[m]
            x = self.cam[0] + (uu[m] - self.cx) * zm / self.f
            y = self.cam[1] - (vv[m] - self.v0) * zm / self.f
            base = np.broadcast_to(np.asarray(part.color, np.float32), (len(zm), 3))
            rgb = part.texture(x, y, zm + self.cam[2], base) * shade
        self._write(y0, x0, m, z, rgb, part.label)

    def _hood(self) -> None:
        """The ego vehicle's bonnet: a dark curved band at the bottom (labelId `ego vehicle`, ignored)."""
        top = self.h * (0.9 + 0.03 * (self.uu[0] - self.cx) ** 2 / self.cx**2)
        hood = self.vv >= top[None, :]
        t = ((self.vv - top) / (0.12 * self.h))[hood]
        self.image[hood] = np.asarray((40, 42, 48), np.float32) + 60 * (1 - t[:, None])
        self.label[hood] = EGO

    def _finish(self, scene: Scene, frame: int) -> np.ndarray:
        rng = np.random.default_rng([scene.seed, frame])
        amp = _NOISE[self.label]
        fine = rng.standard_normal((self.h, self.w), dtype=np.float32)
        blot = cv2.resize(rng.standard_normal((max(2, self.h // 8), max(2, self.w // 8)), dtype=np.float32),
                          (self.w, self.h), interpolation=cv2.INTER_CUBIC)
        img = self.image * (1 + amp[..., 0] * fine + amp[..., 1] * blot)[..., None]
        img *= np.asarray(1 + rng.normal(0, 0.04, 3), np.float32) * rng.uniform(0.85, 1.15)  # exposure, white balance
        r2 = ((self.uu - self.cx) / self.w) ** 2 + ((self.vv - self.h / 2) / self.h) ** 2
        img *= (1 - 0.35 * r2)[..., None]  # vignetting
        img = cv2.GaussianBlur(img, (0, 0), 0.7) + 2.5 * rng.standard_normal(img.shape, dtype=np.float32)
        return np.clip(img, 0, 255).round().astype(np.uint8)
