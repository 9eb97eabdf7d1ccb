"""Procedural jewellery: rings, chains, pendants, earrings, bracelets and gemstones as RGBA.

Shapes are drawn as masks at a supersampled scale, shaded as metal (a tube profile from the
distance transform gives normals; diffuse + an environment band + specular highlights), then
reduced with area averaging so edges and thin links get a real anti-aliased alpha.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

OBJECT_KINDS = (
    "ring",
    "chain",
    "pendant",
    "earrings",
    "bracelet",
    "gemstone",
    # the styles real pieces have: pave-set white metal, bead and pearl strands (several
    # strands), jhumkas (bell earrings with a bead fringe), filigree gold, engraved bangles
    "pave_ring",
    "pearl_strands",
    "jhumkas",
    "filigree",
    "engraved_bangles",
)
# Listing photos are mostly rings, pendants and earrings; chains alone are rarer.
KIND_WEIGHTS = (0.17, 0.06, 0.14, 0.11, 0.08, 0.06, 0.1, 0.08, 0.07, 0.07, 0.06)
# The first six kinds and their weights before the listing styles (sets drawn without them).
CLASSIC_KINDS = 6
CLASSIC_WEIGHTS = (0.28, 0.1, 0.22, 0.16, 0.14, 0.10)

METALS: dict[str, tuple[int, int, int]] = {
    "gold": (218, 172, 62),
    "yellow_gold": (236, 196, 92),
    "silver": (196, 198, 204),
    "white_gold": (222, 220, 212),
    "rose": (214, 140, 120),
    "gunmetal": (110, 112, 118),
}
GEM_COLOURS: tuple[tuple[int, int, int], ...] = (
    (200, 20, 40),  # ruby
    (20, 60, 190),  # sapphire
    (20, 150, 70),  # emerald
    (130, 40, 170),  # amethyst
    (240, 170, 30),  # citrine
    (60, 190, 220),  # aquamarine
    (235, 240, 250),  # diamond
    (250, 120, 160),  # pink
    (20, 20, 25),  # onyx
)
SUPERSAMPLE = 2


@dataclass
class Canvas:
    """A supersampled drawing surface: colour (float 0..1) and coverage (0..1)."""

    size: int

    def __post_init__(self) -> None:
        side = self.size * SUPERSAMPLE
        self.rgb = np.zeros((side, side, 3), np.float32)
        self.alpha = np.zeros((side, side), np.float32)

    @property
    def side(self) -> int:
        return self.size * SUPERSAMPLE

    def paint(self, layer_rgb: np.ndarray, layer_mask: np.ndarray) -> None:
        """Paint an opaque layer over what is there (later layers occlude earlier ones)."""
        cover = layer_mask[..., None]
        self.rgb = self.rgb * (1 - cover) + layer_rgb * cover
        self.alpha = np.maximum(self.alpha, layer_mask)

    def to_rgba(self) -> np.ndarray:
        """Area-average down to the nominal size and crop to the object with a small margin."""
        premultiplied = self.rgb * self.alpha[..., None]
        size = (self.size, self.size)
        rgb = cv2.resize(premultiplied, size, interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(self.alpha, size, interpolation=cv2.INTER_AREA)
        safe = np.maximum(alpha, 1e-4)[..., None]
        rgba = np.dstack([np.clip(rgb / safe, 0, 1), alpha])
        return crop_to_alpha((rgba * 255 + 0.5).astype(np.uint8))


def crop_to_alpha(rgba: np.ndarray, margin: int = 2) -> np.ndarray:
    rows = np.flatnonzero(rgba[..., 3].max(axis=1) > 0)
    cols = np.flatnonzero(rgba[..., 3].max(axis=0) > 0)
    if rows.size == 0:
        return rgba
    top, bottom = max(rows[0] - margin, 0), min(rows[-1] + margin + 1, rgba.shape[0])
    left, right = max(cols[0] - margin, 0), min(cols[-1] + margin + 1, rgba.shape[1])
    return np.ascontiguousarray(rgba[top:bottom, left:right])


# --- shading ------------------------------------------------------------------------------------


def _normals_from_mask(mask: np.ndarray, radius: float) -> tuple[np.ndarray, ...]:
    """Normals of a tube of `radius` (px) whose cross-section follows the distance to the edge."""
    distance = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    t = np.clip(distance / max(radius, 1.0), 0, 1)
    height = np.sqrt(t * (2 - t)) * radius
    height = cv2.GaussianBlur(height, (0, 0), max(radius * 0.15, 0.8))
    gy, gx = np.gradient(height)
    norm = np.sqrt(gx * gx + gy * gy + 1)
    return -gx / norm, -gy / norm, 1 / norm


def shade_metal(
    mask: np.ndarray, radius: float, base: tuple[int, int, int], rng: np.random.Generator
) -> np.ndarray:
    """Metal look: dark/bright environment bands, a soft key light and sharp highlights."""
    nx, ny, nz = _normals_from_mask(mask, radius)
    colour = np.array(base, np.float32) / 255
    light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.8, -0.2), 1.0], np.float32)
    light /= np.linalg.norm(light)
    diffuse = np.clip(nx * light[0] + ny * light[1] + nz * light[2], 0, 1)
    # reflection of the view ray (0, 0, 1): r = 2 nz n - v
    rx, ry, rz = 2 * nz * nx, 2 * nz * ny, 2 * nz * nz - 1
    specular = np.clip(rx * light[0] + ry * light[1] + rz * light[2], 0, 1) ** rng.uniform(12, 40)
    band_phase = rng.uniform(0, np.pi)
    environment = 0.5 + 0.5 * np.sin(ry * rng.uniform(2.5, 5) + rx * 1.5 + band_phase)
    tone = 0.18 + 0.45 * diffuse + 0.55 * environment
    rgb = colour * tone[..., None] + specular[..., None] * rng.uniform(0.6, 1.0)
    return np.clip(rgb, 0, 1).astype(np.float32)


def shade_sphere_like(
    mask: np.ndarray, radius: float, base: tuple[int, int, int], rng: np.random.Generator
) -> np.ndarray:
    """Pearls and cabochons: soft diffuse with one glossy highlight."""
    nx, ny, nz = _normals_from_mask(mask, radius)
    colour = np.array(base, np.float32) / 255
    light = np.array([-0.4, -0.6, 1.0], np.float32) / np.linalg.norm([-0.4, -0.6, 1.0])
    diffuse = np.clip(nx * light[0] + ny * light[1] + nz * light[2], 0, 1)
    rx, ry, rz = 2 * nz * nx, 2 * nz * ny, 2 * nz * nz - 1
    specular = np.clip(rx * light[0] + ry * light[1] + rz * light[2], 0, 1) ** 30
    rgb = colour * (0.35 + 0.7 * diffuse)[..., None] + 0.8 * specular[..., None]
    return np.clip(rgb, 0, 1).astype(np.float32) * rng.uniform(0.9, 1.05)


def _mask(side: int, draw: Callable[[np.ndarray], None]) -> np.ndarray:
    layer = np.zeros((side, side), np.uint8)
    draw(layer)
    return layer.astype(np.float32)


def _pt(point: np.ndarray) -> tuple[int, int]:
    return round(float(point[0])), round(float(point[1]))


# --- parts --------------------------------------------------------------------------------------


def draw_band(
    canvas: Canvas,
    rng: np.random.Generator,
    centre: np.ndarray,
    axes: tuple[float, float],
    thickness: float,
    metal: str,
    angle: float = 0.0,
) -> None:
    """An elliptical band (a ring or bangle seen at an angle): its hole stays transparent."""

    def draw(layer: np.ndarray) -> None:
        cv2.ellipse(
            layer,
            _pt(centre),
            (int(axes[0]), int(axes[1])),
            angle,
            0,
            360,
            1,
            max(int(thickness), 1),
            cv2.LINE_AA,
        )

    mask = (_mask(canvas.side, draw) > 0).astype(np.float32)
    canvas.paint(shade_metal(mask, thickness / 2, METALS[metal], rng), mask)


def draw_gem(
    canvas: Canvas,
    rng: np.random.Generator,
    centre: np.ndarray,
    radius: float,
    colour: tuple[int, int, int] | None = None,
) -> None:
    """A faceted stone: a polygon split into facets of varying brightness, plus sparkles."""
    colour = colour or GEM_COLOURS[rng.integers(len(GEM_COLOURS))]
    sides = int(rng.integers(5, 11))
    stretch = rng.uniform(0.7, 1.3)
    rotation = rng.uniform(0, 2 * np.pi)
    angles = rotation + np.linspace(0, 2 * np.pi, sides, endpoint=False)
    outer = np.stack([np.cos(angles) * radius * stretch, np.sin(angles) * radius], 1) + centre
    table = (outer - centre) * rng.uniform(0.35, 0.6) + centre
    base = np.array(colour, np.float32) / 255
    side = canvas.side
    rgb = np.zeros((side, side, 3), np.float32)
    facets = [table] + [
        np.stack([outer[i], outer[(i + 1) % sides], table[(i + 1) % sides], table[i]])
        for i in range(sides)
    ]
    for facet in facets:
        layer = np.zeros((side, side), np.uint8)
        cv2.fillPoly(layer, [np.round(facet).astype(np.int32)], 1)
        brightness = rng.uniform(0.45, 1.35)
        rgb[layer > 0] = np.clip(base * brightness + rng.uniform(0, 0.15), 0, 1)
    mask = _mask(side, lambda layer: cv2.fillPoly(layer, [np.round(outer).astype(np.int32)], 1))
    mask = (mask > 0).astype(np.float32)
    for _ in range(int(rng.integers(1, 4))):
        spot = centre + rng.uniform(-0.5, 0.5, 2) * radius
        arm = radius * rng.uniform(0.15, 0.4)
        for dx, dy in ((arm, 0), (0, arm)):
            cv2.line(
                rgb, _pt(spot - (dx, dy)), _pt(spot + np.array([dx, dy])), (1, 1, 1), 2, cv2.LINE_AA
            )
    # A thin metal bezel around the stone.
    bezel = max(radius * 0.12, 2.0)
    draw_outline(canvas, rng, outer, bezel, metal_of(rng))
    canvas.paint(rgb * mask[..., None], mask)


def draw_outline(
    canvas: Canvas, rng: np.random.Generator, polygon: np.ndarray, width: float, metal: str
) -> None:
    def draw(layer: np.ndarray) -> None:
        cv2.polylines(layer, [np.round(polygon).astype(np.int32)], True, 1, int(width) * 2 + 1)

    mask = (_mask(canvas.side, draw) > 0).astype(np.float32)
    canvas.paint(shade_metal(mask, width, METALS[metal], rng), mask)


def draw_chain(
    canvas: Canvas, rng: np.random.Generator, path: np.ndarray, link: float, metal: str
) -> None:
    """Small links along `path`: alternate links face the camera (an open oval) or are seen
    edge-on (a short bar), as in a cable chain."""
    wire = max(link * rng.uniform(0.16, 0.26), 1.5)
    points = resample_path(path, link * 0.85)
    side = canvas.side
    style = rng.choice(["cable", "cable", "rope", "beads"])
    layer = np.zeros((side, side), np.uint8)
    if style == "rope":
        cv2.polylines(layer, [np.round(points).astype(np.int32)], False, 1, max(int(wire * 1.6), 2))
        points = points[:0]
    for index in range(len(points) - 1):
        start, end = points[index], points[index + 1]
        middle = (start + end) / 2
        angle = float(np.degrees(np.arctan2(*(end - start)[::-1])))
        if style == "beads" and index % 2 == 0:
            cv2.circle(layer, _pt(middle), max(int(link * 0.45), 2), 1, -1, cv2.LINE_AA)
        elif index % 2 == 0:
            axes = (max(int(link * 0.58), 2), max(int(link * 0.34), 1))
            cv2.ellipse(layer, _pt(middle), axes, angle, 0, 360, 1, max(int(wire), 1), cv2.LINE_AA)
        else:
            cv2.ellipse(
                layer,
                _pt(middle),
                (max(int(link * 0.6), 2), max(int(wire * 0.7), 1)),
                angle,
                0,
                360,
                1,
                -1,
                cv2.LINE_AA,
            )
    mask = (layer > 0).astype(np.float32)
    canvas.paint(shade_metal(mask, wire, METALS[metal], rng), mask)


def resample_path(path: np.ndarray, step: float) -> np.ndarray:
    segment = np.linalg.norm(np.diff(path, axis=0), axis=1)
    distance = np.concatenate([[0], np.cumsum(segment)])
    samples = np.arange(0, distance[-1], max(step, 1.0))
    return np.stack([np.interp(samples, distance, path[:, i]) for i in range(2)], 1)


def bezier(points: np.ndarray, count: int = 200) -> np.ndarray:
    t = np.linspace(0, 1, count)[:, None]
    p0, p1, p2, p3 = points
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3


def draw_pendant_shape(
    canvas: Canvas, rng: np.random.Generator, centre: np.ndarray, radius: float, metal: str
) -> None:
    """A flat medallion, heart, drop or bar with bevelled edges; sometimes set with a stone."""
    shape = rng.choice(["disc", "heart", "drop", "bar", "cross", "gem"])
    if shape == "gem":
        draw_gem(canvas, rng, centre, radius)
        return
    side = canvas.side
    layer = np.zeros((side, side), np.uint8)
    c = _pt(centre)
    r = int(radius)
    if shape == "disc":
        cv2.circle(layer, c, r, 1, -1, cv2.LINE_AA)
    elif shape == "heart":
        t = np.linspace(0, 2 * np.pi, 100)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        polygon = np.stack([x, y], 1) * radius / 16 + centre
        cv2.fillPoly(layer, [np.round(polygon).astype(np.int32)], 1, cv2.LINE_AA)
    elif shape == "drop":
        cv2.circle(layer, (c[0], c[1] + r // 3), int(r * 0.7), 1, -1, cv2.LINE_AA)
        tip = np.array(
            [[c[0] - r * 0.62, c[1] + r * 0.1], [c[0], c[1] - r], [c[0] + r * 0.62, c[1] + r * 0.1]]
        )
        cv2.fillPoly(layer, [np.round(tip).astype(np.int32)], 1, cv2.LINE_AA)
    elif shape == "bar":
        cv2.rectangle(layer, (c[0] - r // 4, c[1] - r), (c[0] + r // 4, c[1] + r), 1, -1)
    else:
        cv2.rectangle(layer, (c[0] - r // 5, c[1] - r), (c[0] + r // 5, c[1] + r), 1, -1)
        cv2.rectangle(
            layer, (c[0] - r * 2 // 3, c[1] - r // 2), (c[0] + r * 2 // 3, c[1] - r // 6), 1, -1
        )
    mask = (layer > 0).astype(np.float32)
    canvas.paint(shade_metal(mask, radius * rng.uniform(0.12, 0.35), METALS[metal], rng), mask)
    if shape in ("disc", "heart") and rng.random() < 0.5:
        draw_gem(
            canvas, rng, centre + np.array([0, radius * 0.1]), radius * rng.uniform(0.25, 0.45)
        )


def metal_of(rng: np.random.Generator) -> str:
    return str(rng.choice(list(METALS)))


# --- whole objects ------------------------------------------------------------------------------


def ring(canvas: Canvas, rng: np.random.Generator) -> None:
    side = canvas.side
    centre = np.array([side / 2, side * 0.55])
    outer = side * rng.uniform(0.28, 0.38)
    tilt = rng.uniform(0.35, 1.0)  # 1 = seen from the top, smaller = from the side
    thickness = outer * rng.uniform(0.1, 0.28)
    metal = metal_of(rng)
    draw_band(canvas, rng, centre, (outer, outer * tilt), thickness, metal, rng.uniform(-20, 20))
    if rng.random() < 0.65:
        top = centre - (0, outer * tilt)
        gem_radius = outer * rng.uniform(0.18, 0.38)
        draw_gem(canvas, rng, top - (0, gem_radius * 0.6), gem_radius)


def chain(canvas: Canvas, rng: np.random.Generator) -> None:
    side = canvas.side
    points = rng.uniform(0.1, 0.9, (4, 2)) * side
    draw_chain(canvas, rng, bezier(points), side * rng.uniform(0.018, 0.04), metal_of(rng))


def pendant(canvas: Canvas, rng: np.random.Generator) -> None:
    side = canvas.side
    metal = metal_of(rng)
    bottom = np.array([side / 2 + rng.uniform(-0.05, 0.05) * side, side * rng.uniform(0.55, 0.7)])
    spread = side * rng.uniform(0.2, 0.42)
    link = side * rng.uniform(0.012, 0.03)
    for direction in (-1, 1):
        top = np.array([side / 2 + direction * spread, side * rng.uniform(0.04, 0.15)])
        control = [
            top,
            top + np.array([0, side * 0.25]),
            bottom + np.array([direction * spread * 0.5, 0]),
            bottom,
        ]
        draw_chain(canvas, rng, bezier(np.array(control)), link, metal)
    radius = side * rng.uniform(0.07, 0.16)
    draw_pendant_shape(canvas, rng, bottom + np.array([0, radius * 0.9]), radius, metal)


def earrings(canvas: Canvas, rng: np.random.Generator) -> None:
    side = canvas.side
    metal = metal_of(rng)
    style = rng.choice(["hoop", "drop", "stud"])
    gap = side * rng.uniform(0.22, 0.3)
    size = side * rng.uniform(0.1, 0.18)
    gem_colour = GEM_COLOURS[rng.integers(len(GEM_COLOURS))]
    for direction in (-1, 1):
        centre = np.array([side / 2 + direction * gap, side / 2])
        if style == "hoop":
            draw_band(canvas, rng, centre, (size, size * rng.uniform(0.8, 1.0)), size * 0.14, metal)
        elif style == "drop":
            hook_top = centre - (0, size * 1.4)
            path = bezier(
                np.array(
                    [
                        hook_top - (size * 0.3, 0),
                        hook_top - (size * 0.1, size * 0.5),
                        hook_top + np.array([size * 0.3, -size * 0.2]),
                        centre - (0, size * 0.6),
                    ]
                )
            )
            draw_chain(canvas, rng, path, size * 0.18, metal)
            draw_gem(canvas, rng, centre, size * 0.6, gem_colour)
        else:
            draw_gem(canvas, rng, centre, size * 0.7, gem_colour)


def bracelet(canvas: Canvas, rng: np.random.Generator) -> None:
    side = canvas.side
    centre = np.array([side / 2, side / 2])
    axes = (side * rng.uniform(0.32, 0.44), side * rng.uniform(0.15, 0.4))
    metal = metal_of(rng)
    style = rng.choice(["bangle", "chain", "pearls"])
    if style == "bangle":
        draw_band(
            canvas, rng, centre, axes, side * rng.uniform(0.02, 0.07), metal, rng.uniform(-30, 30)
        )
        return
    t = np.linspace(0, 2 * np.pi, 400)
    loop = np.stack([np.cos(t) * axes[0], np.sin(t) * axes[1]], 1) + centre
    if style == "chain":
        draw_chain(canvas, rng, loop, side * rng.uniform(0.025, 0.05), metal)
        return
    radius = side * rng.uniform(0.018, 0.035)
    colour = (240, 234, 220) if rng.random() < 0.7 else GEM_COLOURS[rng.integers(len(GEM_COLOURS))]
    layer = np.zeros((side, side), np.uint8)
    for point in resample_path(loop, radius * 2.05):
        cv2.circle(layer, _pt(point), int(radius), 1, -1, cv2.LINE_AA)
    mask = (layer > 0).astype(np.float32)
    canvas.paint(shade_sphere_like(mask, radius, colour, rng), mask)


def gemstone(canvas: Canvas, rng: np.random.Generator) -> None:
    side = canvas.side
    draw_gem(canvas, rng, np.array([side / 2, side / 2]), side * rng.uniform(0.2, 0.4))


def pave_ring(canvas: Canvas, rng: np.random.Generator) -> None:
    """White metal set with rows of small diamonds along the band, often a centre stone."""
    side = canvas.side
    centre = np.array([side / 2, side * 0.55])
    outer = side * rng.uniform(0.28, 0.36)
    tilt = rng.uniform(0.35, 0.9)
    thickness = outer * rng.uniform(0.14, 0.26)
    metal = str(rng.choice(["silver", "white_gold", "white_gold", "rose", "yellow_gold"]))
    draw_band(canvas, rng, centre, (outer, outer * tilt), thickness, metal)
    stone = max(thickness * rng.uniform(0.22, 0.34), 2.5)
    layer = np.zeros((side, side), np.uint8)
    for angle in np.linspace(np.pi * 1.05, np.pi * 1.95, int(rng.integers(12, 30))):
        point = centre + np.array([np.cos(angle) * outer, np.sin(angle) * outer * tilt])
        cv2.circle(layer, _pt(point), int(stone), 1, -1, cv2.LINE_AA)
    mask = (layer > 0).astype(np.float32)
    canvas.paint(sparkle(shade_sphere_like(mask, stone, (236, 240, 248), rng), mask, rng), mask)
    if rng.random() < 0.7:
        top = centre - (0, outer * tilt)
        radius = outer * rng.uniform(0.2, 0.38)
        draw_gem(canvas, rng, top - (0, radius * 0.6), radius, (235, 240, 250))


def sparkle(rgb: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scattered white glints over `mask`, as diamonds throw them."""
    glints = (rng.random(mask.shape) < 0.01).astype(np.float32) * mask
    glints = cv2.GaussianBlur(cv2.dilate(glints, np.ones((3, 3), np.uint8)), (0, 0), 1.0)
    return np.clip(rgb + glints[..., None] * 1.5, 0, 1)


def bead_path(
    canvas: Canvas,
    rng: np.random.Generator,
    path: np.ndarray,
    radius: float,
    colour: tuple[int, int, int],
) -> None:
    layer = np.zeros((canvas.side, canvas.side), np.uint8)
    for point in resample_path(path, radius * 2.05):
        cv2.circle(layer, _pt(point), max(int(radius), 1), 1, -1, cv2.LINE_AA)
    mask = (layer > 0).astype(np.float32)
    canvas.paint(shade_sphere_like(mask, radius, colour, rng), mask)


def pearl_strands(canvas: Canvas, rng: np.random.Generator) -> None:
    """One to three nested strands of pearls or beads hanging in a U (a multi-strand necklace)."""
    side = canvas.side
    colour = (240, 234, 220) if rng.random() < 0.6 else GEM_COLOURS[rng.integers(len(GEM_COLOURS))]
    radius = side * rng.uniform(0.012, 0.028)
    spread = side * rng.uniform(0.3, 0.42)
    for strand in range(int(rng.integers(1, 4))):
        drop = side * (0.45 + 0.12 * strand) * rng.uniform(0.9, 1.1)
        top = side * 0.08
        points = np.array(
            [
                [side / 2 - spread, top],
                [side / 2 - spread * 0.8, top + drop],
                [side / 2 + spread * 0.8, top + drop],
                [side / 2 + spread, top],
            ]
        )
        bead_path(canvas, rng, bezier(points), radius * rng.uniform(0.85, 1.15), colour)


def jhumkas(canvas: Canvas, rng: np.random.Generator) -> None:
    """A pair of bell-shaped earrings: a stud, a domed bell with engraved rings, a bead fringe."""
    side = canvas.side
    metal = str(rng.choice(["gold", "yellow_gold", "gold", "silver", "rose"]))
    width = side * rng.uniform(0.13, 0.19)
    for direction in (-1, 1):
        x = side / 2 + direction * side * 0.24
        stud = np.array([x, side * 0.2])
        bell_top, bell_bottom = side * 0.3, side * rng.uniform(0.55, 0.65)
        hook = np.stack([np.full(20, x), np.linspace(stud[1], bell_top + 6, 20)], 1)
        draw_chain(canvas, rng, hook, width * 0.18, metal)
        draw_gem(canvas, rng, stud, width * 0.35)

        def draw(
            layer: np.ndarray, x: float = x, top: float = bell_top, bottom: float = bell_bottom
        ) -> None:
            cv2.ellipse(
                layer,
                _pt(np.array([x, bottom])),
                (int(width), int(bottom - top)),
                0,
                180,
                360,
                1,
                -1,
                cv2.LINE_AA,
            )

        mask = (_mask(side, draw) > 0).astype(np.float32)
        rgb = shade_metal(mask, width * 0.5, METALS[metal], rng)
        for ring_y in np.linspace(bell_top + 8, bell_bottom - 4, int(rng.integers(3, 7))):
            rgb[int(ring_y) : int(ring_y) + 2] *= 0.55  # engraved rings
        canvas.paint(rgb, mask)
        fringe = np.stack(
            [np.linspace(x - width, x + width, 50), np.full(50, bell_bottom + width * 0.12)], 1
        )
        bead_path(
            canvas,
            rng,
            fringe,
            width * 0.1,
            (240, 234, 220) if rng.random() < 0.6 else METALS[metal],
        )


def filigree(canvas: Canvas, rng: np.random.Generator) -> None:
    """Ornate gold wirework: a drop or disc outline filled with open curls (see-through)."""
    side = canvas.side
    metal = str(rng.choice(["gold", "yellow_gold", "gold", "silver"]))
    centre = np.array([side / 2, side / 2])
    radius = side * rng.uniform(0.3, 0.4)
    wire = max(side * rng.uniform(0.006, 0.012), 1.5)
    layer = np.zeros((side, side), np.uint8)
    cv2.circle(layer, _pt(centre), int(radius), 1, int(wire * 2.5), cv2.LINE_AA)
    for _ in range(int(rng.integers(14, 30))):
        angle, distance = rng.uniform(0, 2 * np.pi), radius * np.sqrt(rng.uniform(0, 0.8))
        spot = centre + distance * np.array([np.cos(angle), np.sin(angle)])
        size = radius * rng.uniform(0.08, 0.22)
        start = rng.uniform(0, 360)
        cv2.ellipse(
            layer,
            _pt(spot),
            (int(size), int(size * rng.uniform(0.5, 1))),
            rng.uniform(0, 180),
            start,
            start + rng.uniform(200, 330),
            1,
            max(int(wire), 1),
            cv2.LINE_AA,
        )
    for angle in np.linspace(0, 2 * np.pi, int(rng.integers(8, 16)), endpoint=False):
        point = centre + radius * 0.85 * np.array([np.cos(angle), np.sin(angle)])
        cv2.line(layer, _pt(centre), _pt(point), 1, max(int(wire * 0.8), 1), cv2.LINE_AA)
    mask = (layer > 0).astype(np.float32)
    canvas.paint(shade_metal(mask, wire, METALS[metal], rng), mask)
    if rng.random() < 0.6:
        draw_gem(canvas, rng, centre, radius * rng.uniform(0.12, 0.22))


def engraved_bangles(canvas: Canvas, rng: np.random.Generator) -> None:
    """One to three bangles stacked, with an engraved pattern across each band."""
    side = canvas.side
    axes = (side * rng.uniform(0.3, 0.4), side * rng.uniform(0.14, 0.3))
    thickness = side * rng.uniform(0.03, 0.07)
    for index in range(int(rng.integers(1, 4))):
        centre = np.array([side / 2, side * 0.4 + index * thickness * 1.1])
        metal = metal_of(rng)

        def draw(layer: np.ndarray, centre: np.ndarray = centre) -> None:
            cv2.ellipse(
                layer,
                _pt(centre),
                (int(axes[0]), int(axes[1])),
                0,
                0,
                360,
                1,
                max(int(thickness), 1),
                cv2.LINE_AA,
            )

        mask = (_mask(side, draw) > 0).astype(np.float32)
        rgb = shade_metal(mask, thickness / 2, METALS[metal], rng)
        y, x = np.mgrid[0:side, 0:side].astype(np.float32)
        angle = np.arctan2(y - centre[1], x - centre[0])
        engraving = np.sin(angle * rng.integers(40, 120)) > rng.uniform(0.4, 0.8)
        rgb[engraving & (mask > 0)] *= 0.6
        canvas.paint(rgb, mask)


DRAWERS: dict[str, Callable[[Canvas, np.random.Generator], None]] = {
    "ring": ring,
    "chain": chain,
    "pendant": pendant,
    "earrings": earrings,
    "bracelet": bracelet,
    "gemstone": gemstone,
    "pave_ring": pave_ring,
    "pearl_strands": pearl_strands,
    "jhumkas": jhumkas,
    "filigree": filigree,
    "engraved_bangles": engraved_bangles,
}


def pick_kind(rng: np.random.Generator, classic: bool = False) -> str:
    """A kind by KIND_WEIGHTS; `classic`: one of the first six by their old weights."""
    if classic:
        return str(rng.choice(OBJECT_KINDS[:CLASSIC_KINDS], p=CLASSIC_WEIGHTS))
    return str(rng.choice(OBJECT_KINDS, p=KIND_WEIGHTS))


def render_object(rng: np.random.Generator, kind: str | None = None, size: int = 384) -> np.ndarray:
    """One procedural jewellery piece as RGBA uint8, cropped to the object (alpha = coverage).

    `kind` is one of OBJECT_KINDS (random by KIND_WEIGHTS when None); `size` is the side of the
    square it is drawn in before cropping.
    """
    kind = kind or pick_kind(rng)
    if kind not in DRAWERS:
        raise ValueError(f"unknown object kind {kind!r}; expected one of {OBJECT_KINDS}")
    canvas = Canvas(size)
    DRAWERS[kind](canvas, rng)
    return canvas.to_rgba()
