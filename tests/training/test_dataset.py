"""Training crops: how much of a composite the network sees, and at what scale."""

from __future__ import annotations

import numpy as np

from training.dataset import augment


def square_scene(side: int = 320) -> tuple[np.ndarray, np.ndarray]:
    """A composite whose object is a 40-pixel square in the middle."""
    target = np.zeros((side, side), np.float32)
    target[140:180, 140:180] = 1.0
    image = np.repeat(target[..., None], 3, axis=2) * 2.0 - 1.0
    return image, target


def object_side_after(scale: float, crop: int) -> float:
    image, target = square_scene()
    rng = np.random.default_rng(0)
    for _ in range(200):  # a crop may cut the square or miss it: use one that holds all of it
        out_image, out_target = augment(rng, image, target, crop, (scale, scale))
        assert out_image.shape == (crop, crop, 3) and out_target.shape == (crop, crop)
        rows = np.flatnonzero(out_target.max(axis=1) > 0.5)
        if rows.size and rows[0] > 0 and rows[-1] < crop - 1:
            return float(rows[-1] - rows[0] + 1)
    raise AssertionError("no crop held the whole object")


def test_small_crop_shares_magnify_the_object() -> None:
    # 0.3 x 320 = 96 pixels shown at 192: the object is twice its composite size
    assert object_side_after(0.3, crop=192) == 80
    # the whole composite shown at 160: half its composite size
    assert object_side_after(1.0, crop=160) == 20


def test_magnified_targets_stay_within_zero_and_one() -> None:
    image, target = square_scene()
    _, out = augment(np.random.default_rng(1), image, target, 192, (0.3, 0.3))
    assert out.min() >= 0.0 and out.max() <= 1.0
