"""What real listing photos have that a piece pasted on a backdrop lacks: close-ups, sets of
pieces, fingers in front, a tilted camera, metal of another colour, a phone's white balance and
flash. Each is a named style (`STYLES`) that `Compositor.sample` applies with its share, or
always when asked for (`style=`), so every style has a preview sheet and a test.

Everything works on float premultiplied RGBA in 0..1 (see `compose._premultiply`).
"""

from __future__ import annotations

import cv2
import numpy as np

# The share of samples each style is applied to when none is asked for.
STYLES: dict[str, float] = {
    "closeup": 0.45,  # the piece fills 20-70% of the frame
    "set": 0.2,  # two or three pieces (a pair of earrings, a stack, a necklace with earrings)
    "fingers": 0.15,  # a finger or two in front of part of the piece
    "perspective": 0.3,  # the camera not square to the table
    "recolour": 0.3,  # a real cutout's metal turned gold, silver or rose
    "phone": 0.35,  # warm white balance, flash hot spot, noise
    "velvet": 0.08,  # a jewellery-box velvet (magenta, red, black, white, navy)
    "satin": 0.06,  # shiny folds of satin
    "card": 0.06,  # pinned to a display card on another background
    "studio": 0.08,  # a plain white or light-grey sweep, as product shots are
}
BACKGROUND_STYLES = ("velvet", "satin", "card", "studio")
METAL_TINTS = {
    "gold": np.array([1.0, 0.8, 0.42], np.float32),
    "silver": np.array([0.93, 0.94, 0.97], np.float32),
    "rose": np.array([1.0, 0.72, 0.62], np.float32),
}
VELVETS = (
    (0.55, 0.05, 0.35),  # magenta
    (0.5, 0.04, 0.06),  # red
    (0.04, 0.04, 0.05),  # black
    (0.9, 0.88, 0.85),  # white
    (0.05, 0.08, 0.3),  # navy
)
SKIN_TONES = ((0.94, 0.78, 0.68), (0.86, 0.64, 0.5), (0.67, 0.46, 0.33), (0.42, 0.28, 0.2))


def pick_styles(rng: np.random.Generator, style: str | None = None) -> set[str]:
    """The styles of one sample: `style` alone when given, else each by its share (at most one
    background style)."""
    if style is not None:
        if style not in STYLES:
            raise ValueError(f"unknown style {style!r}; expected one of {', '.join(STYLES)}")
        return {style}
    chosen = {name for name, share in STYLES.items() if rng.random() < share}
    backgrounds = sorted(chosen & set(BACKGROUND_STYLES))
    for extra in backgrounds[1:]:
        chosen.discard(extra)
    return chosen


def closeup_coverage(rng: np.random.Generator) -> float:
    return float(rng.uniform(0.2, 0.7))


# --- the piece ----------------------------------------------------------------------------------


def recolour_metal(rng: np.random.Generator, rgba: np.ndarray) -> np.ndarray:
    """Turn the metal of a cutout (uint8 RGBA) gold, silver or rose, keeping its shading.

    Metal is told from stones by colour: pixels that are grey or gold-to-copper hued with modest
    saturation take the new tint at their own lightness; saturated other hues (stones, enamel)
    keep theirs."""
    rgb = rgba[..., :3].astype(np.float32) / 255
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    warm = (hue < 55) | (hue > 340)
    metal = (saturation < 0.18) | (warm & (saturation < 0.75))
    weight = cv2.GaussianBlur(metal.astype(np.float32), (0, 0), 1.0)[..., None]
    tint = METAL_TINTS[str(rng.choice(list(METAL_TINTS)))]
    lightness = (0.3 * rgb[..., 0] + 0.59 * rgb[..., 1] + 0.11 * rgb[..., 2])[..., None]
    toned = np.clip(lightness * tint / tint.mean() * 0.95 + 0.05 * value[..., None], 0, 1)
    out = rgb * (1 - weight) + toned * weight
    return np.dstack([(out * 255 + 0.5).astype(np.uint8), rgba[..., 3]])


def warp_perspective(rng: np.random.Generator, premultiplied: np.ndarray) -> np.ndarray:
    """A mild random homography (the camera tilted up to ~30 degrees), canvas grown to fit."""
    height, width = premultiplied.shape[:2]
    corners = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    jitter = rng.uniform(-0.18, 0.18, (4, 2)) * np.float32([width, height])
    moved = corners + jitter.astype(np.float32)
    moved -= moved.min(axis=0)
    size = np.ceil(moved.max(axis=0)).astype(int) + 1
    matrix = cv2.getPerspectiveTransform(corners, moved)
    return cv2.warpPerspective(
        premultiplied, matrix, (int(size[0]), int(size[1])), flags=cv2.INTER_LINEAR
    )


def over(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """Premultiplied 'over': `top` in front of `bottom` (both H x W x 4)."""
    return top + bottom * (1 - top[..., 3:4])


# --- fingers in front ---------------------------------------------------------------------------


def finger_layer(rng: np.random.Generator, height: int, width: int, near: np.ndarray) -> np.ndarray:
    """One or two fingers (shaded skin capsules with soft edges) reaching in from a frame edge
    towards the object's alpha `near`, as premultiplied RGBA."""
    layer = np.zeros((height, width, 4), np.float32)
    ys, xs = np.nonzero(near > 0.5)
    if ys.size == 0:
        return layer
    skin = np.asarray(SKIN_TONES[int(rng.integers(len(SKIN_TONES)))], np.float32)
    skin = np.clip(skin * rng.uniform(0.85, 1.1, 3).astype(np.float32), 0, 1)
    extent = max(ys.max() - ys.min(), xs.max() - xs.min(), 8)
    for _ in range(int(rng.integers(1, 3))):
        pick = int(rng.integers(ys.size))
        tip = np.array([xs[pick], ys[pick]], np.float32)
        edge = int(rng.integers(4))
        base = {
            0: (rng.uniform(0, width), -height * 0.2),
            1: (width * 1.2, rng.uniform(0, height)),
            2: (rng.uniform(0, width), height * 1.2),
            3: (-width * 0.2, rng.uniform(0, height)),
        }[edge]
        thickness = float(np.clip(extent * rng.uniform(0.15, 0.35), 6, max(height, width) * 0.18))
        draw_finger(layer, np.asarray(base, np.float32), tip, thickness, skin, rng)
    return layer


def draw_finger(
    layer: np.ndarray,
    base: np.ndarray,
    tip: np.ndarray,
    thickness: float,
    skin: np.ndarray,
    rng: np.random.Generator,
) -> None:
    height, width = layer.shape[:2]
    mask = np.zeros((height, width), np.uint8)
    cv2.line(
        mask,
        tuple(int(v) for v in base),
        tuple(int(v) for v in tip),
        255,
        max(int(thickness), 2),
        cv2.LINE_AA,
    )
    cv2.circle(mask, tuple(int(v) for v in tip), max(int(thickness / 2), 1), 255, -1, cv2.LINE_AA)
    alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), max(thickness * 0.04, 0.6))
    distance = cv2.distanceTransform((mask > 127).astype(np.uint8), cv2.DIST_L2, 5)
    roundness = np.clip(distance / max(thickness / 2, 1), 0, 1) ** 0.5  # lit in the middle
    shade = (0.65 + 0.35 * roundness * rng.uniform(0.9, 1.1))[..., None]
    colour = np.clip(skin * shade, 0, 1)
    finger = np.dstack([colour * alpha[..., None], alpha])
    layer[:] = over(finger, layer)


# --- backgrounds --------------------------------------------------------------------------------


def velvet(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Velvet: one deep colour, a fine pile texture and soft sheen where it bends."""
    colour = np.asarray(VELVETS[int(rng.integers(len(VELVETS)))], np.float32)
    colour = np.clip(colour * rng.uniform(0.85, 1.15, 3).astype(np.float32), 0, 1)
    pile = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 0.8)
    sheen = smooth_field(rng, height, width, cells=3)
    light = 0.75 + 0.45 * sheen + 0.04 * pile
    return np.clip(colour * light[..., None] + 0.03 * sheen[..., None], 0, 1)


def satin(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Satin: broad folds with bright, sharp highlights along their crests."""
    colour = np.asarray(VELVETS[int(rng.integers(len(VELVETS)))], np.float32)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32) / max(height, width)
    angle = rng.uniform(0, np.pi)
    along = x * np.cos(angle) + y * np.sin(angle)
    across = smooth_field(rng, height, width, cells=2) * 0.6
    folds = np.sin((along + across) * rng.uniform(5, 12) * np.pi + rng.uniform(0, 6))
    highlight = np.clip(folds, 0, 1) ** rng.uniform(4, 10)
    shade = 0.55 + 0.3 * (folds + 1) / 2
    return np.clip(colour * shade[..., None] + 0.7 * highlight[..., None], 0, 1)


def card(rng: np.random.Generator, height: int, width: int, under: np.ndarray) -> np.ndarray:
    """A pale display card (most of the frame) lying on `under`, with a soft edge shadow."""
    tone = np.float32(rng.uniform(0.82, 0.98))
    tint = rng.uniform(0.95, 1.03, 3).astype(np.float32)
    card_rgb = (
        np.clip(tone * tint, 0, 1) * (0.95 + 0.05 * smooth_field(rng, height, width, 2))[..., None]
    )
    margin_y, margin_x = rng.uniform(0.0, 0.2, 2) * (height, width)
    top, left = int(margin_y), int(margin_x)
    bottom = height - int(rng.uniform(0.0, 0.2) * height)
    right = width - int(rng.uniform(0.0, 0.2) * width)
    inside = np.zeros((height, width), np.float32)
    inside[top:bottom, left:right] = 1
    shadow = cv2.GaussianBlur(inside, (0, 0), max(height, width) * 0.01)
    base = under * (1 - 0.35 * shadow[..., None])
    edge = cv2.GaussianBlur(inside, (0, 0), 0.7)[..., None]
    return base * (1 - edge) + card_rgb * edge


def studio(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A white or light-grey seamless sweep, slightly graded, as product photos are shot on."""
    tone = rng.uniform(0.86, 1.0)
    grade = smooth_field(rng, height, width, cells=2) * rng.uniform(0.0, 0.08)
    grey = np.clip(tone - grade, 0, 1)
    tint = rng.uniform(0.98, 1.02, 3).astype(np.float32)
    return np.clip(grey[..., None] * tint, 0, 1)


def smooth_field(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """A smooth random field in 0..1."""
    grid = rng.uniform(0, 1, (cells + 1, cells + 1)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)


# --- the phone ----------------------------------------------------------------------------------


def phone_look(rng: np.random.Generator, rgb: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """A phone's warm auto white balance and, sometimes, its flash: a bright hot spot falling
    off to darker corners (float RGB in 0..1 in and out)."""
    info: dict[str, float] = {}
    warmth = rng.uniform(0.0, 0.15)
    rgb = rgb * np.array([1 + warmth, 1 + warmth / 3, 1 - warmth], np.float32)
    info["warmth"] = round(float(warmth), 3)
    if rng.random() < 0.5:
        height, width = rgb.shape[:2]
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
        radius = max(height, width) * rng.uniform(0.35, 0.8)
        falloff = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * radius**2))
        strength = rng.uniform(0.1, 0.35)
        rgb = rgb * (1 - strength + 2 * strength * falloff)[..., None]
        info["flash"] = round(float(strength), 3)
    return np.clip(rgb, 0, 1).astype(np.float32), info
