"""A deterministic train/dev split of real files (cutouts, product photos, background photos),
by object, so that nothing measured on the dev split was ever trained on.

Each file hashes to a side by its name's stem (sha256, so the split does not move when files
are added or the folder is copied). Files that look alike (8x8 difference hashes of the
pictures, a cutout cropped to its piece, within `NEAR_DUPLICATE_BITS` bits: the same product
from two shops, two frames of one video, or just pieces of one shape) are joined into one
group, and a group with any dev member is dev whole: no dev file, and no near-duplicate of one,
reaches training.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path

import cv2
import numpy as np

DEV_SHARE = 0.18
NEAR_DUPLICATE_BITS = 6


class Split(StrEnum):
    train = "train"
    dev = "dev"


def hashed_side(name: str, dev_share: float = DEV_SHARE) -> Split:
    """The side a file name hashes to (independent of every other file)."""
    digest = hashlib.sha256(name.encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return Split.dev if fraction < dev_share else Split.train


def picture_hash(path: Path) -> int | None:
    """An 8x8 difference hash of the picture (a cutout cropped to its piece and composited on
    mid grey); None if unreadable."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        return None
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.dtype != np.uint8:
        image = (image / 257).astype(np.uint8)
    grey = cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2GRAY).astype(np.float32)
    if image.shape[2] == 4:  # a cutout: the piece itself, cropped to its alpha
        alpha = image[..., 3].astype(np.float32) / 255
        grey = grey * alpha + 128 * (1 - alpha)
        rows, cols = np.nonzero(alpha > 0.1)
        if rows.size:
            grey = grey[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    small = cv2.resize(grey, (9, 8), interpolation=cv2.INTER_AREA)
    bits = (small[:, 1:] > small[:, :-1]).ravel()
    return int(sum(1 << i for i, bit in enumerate(bits) if bit))


def near_duplicate_groups(hashes: Sequence[int | None], max_bits: int) -> list[int]:
    """A group id per item: items within `max_bits` of each other, transitively, share one."""
    parent = list(range(len(hashes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    known = [(i, h) for i, h in enumerate(hashes) if h is not None]
    for a, (i, hi) in enumerate(known):
        for j, hj in known[a + 1 :]:
            if (hi ^ hj).bit_count() <= max_bits:
                parent[root(j)] = root(i)
    return [root(i) for i in range(len(hashes))]


def assign_splits(
    paths: Sequence[Path], dev_share: float = DEV_SHARE, max_bits: int = NEAR_DUPLICATE_BITS
) -> dict[Path, Split]:
    """The side of every path, hashed by the file's stem (so a cutout `a.png` made from the
    photo `a.jpg` lands on the photo's side) and joined over near-duplicates."""
    groups = near_duplicate_groups([picture_hash(p) for p in paths], max_bits)
    dev_groups = {
        g for g, p in zip(groups, paths, strict=True) if hashed_side(p.stem, dev_share) is Split.dev
    }
    return {
        p: Split.dev if g in dev_groups else Split.train for p, g in zip(paths, groups, strict=True)
    }


def select(paths: Sequence[Path], split: Split | None) -> list[Path]:
    """The paths on `split`'s side (all of them when `split` is None), in their given order."""
    if split is None:
        return list(paths)
    sides = assign_splits(paths)
    return [p for p in paths if sides[p] is split]
