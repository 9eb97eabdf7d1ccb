"""A sheet of samples to look at: each tile is the photo beside its mask outlined in green."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

TILE = 192


def tile(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The photo, and the photo dimmed outside the mask with the mask's outline in green."""
    scale = TILE / max(rgb.shape[:2])
    size = (max(round(rgb.shape[1] * scale), 1), max(round(rgb.shape[0] * scale), 1))
    photo = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    small = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    overlay = (photo * np.where(small[..., None] > 0, 1.0, 0.25)).astype(np.uint8)
    contours, _ = cv2.findContours(small, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(overlay, contours, -1, (0, 255, 0), 1)
    pair = np.full((TILE, TILE * 2 + 4, 3), 255, np.uint8)
    pair[: size[1], : size[0]] = photo
    pair[: size[1], TILE + 4 : TILE + 4 + size[0]] = overlay
    return pair


def write_sheet(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]], path: Path, columns: int = 4
) -> Path:
    tiles = [tile(rgb, mask) for rgb, mask in pairs]
    blank = np.full_like(tiles[0], 255)
    while len(tiles) % columns:
        tiles.append(blank)
    rows = [np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack(rows)[..., ::-1])
    return path
