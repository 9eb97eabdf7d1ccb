"""scripts/error_anatomy.py: error pixels are binned by their distance to the true outline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).parents[2] / "scripts" / "error_anatomy.py"
spec = importlib.util.spec_from_file_location("error_anatomy", SCRIPT)
assert spec and spec.loader
error_anatomy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(error_anatomy)


def square(top: int, left: int, side: int = 20) -> np.ndarray:
    mask = np.zeros((64, 64), bool)
    mask[top : top + side, left : left + side] = True
    return mask


def test_a_one_pixel_shift_is_lost_at_the_outline_and_a_stray_blob_far_from_it() -> None:
    truth = square(20, 20)
    shifted = error_anatomy.anatomy(square(20, 21).astype(np.float32), truth)
    assert shifted["lost (0,1] px"] > 0
    assert shifted["lost (1,3] px"] == shifted["lost (3,inf] px"] == 0
    assert np.isclose(1 - shifted["iou@0.5"], shifted["lost (0,1] px"])

    stray = square(20, 20) | square(0, 50, side=6)
    far = error_anatomy.anatomy(stray.astype(np.float32), truth)
    assert far["lost (0,1] px"] == 0 and far["lost (3,inf] px"] > 0
    assert far["missed share"] == 0  # all of its error is taken in, none missed
