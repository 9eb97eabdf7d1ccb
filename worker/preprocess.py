"""Photo -> network input and back.

The photo is resized so its longer side is the card's `input_size` (aspect kept), normalised
with the card's mean/std and padded at the bottom and right to a multiple of 32 (the Unet's
stride): the shorter side to one of a few buckets (SHORT_SIDE_BUCKETS), so there are few
shapes. The network's output is cropped back to the resized photo ("network resolution"):
cleanup and the gate work there; only the cutout's alpha goes up to the photo's full size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

STRIDE = 32
# Where a network input of a shape is written (shared memory, worker.cpu_pool); None: new array.
TensorPlace = Callable[[tuple[int, int, int]], np.ndarray]


@dataclass(frozen=True)
class PreparedImage:
    tensor: np.ndarray  # float32 (3, padded_h, padded_w), normalised
    height: int  # resized photo inside the tensor (network resolution)
    width: int

    @property
    def padded_shape(self) -> tuple[int, int]:
        return int(self.tensor.shape[1]), int(self.tensor.shape[2])


def network_size(height: int, width: int, input_size: int) -> tuple[int, int]:
    """(h, w) of the resized photo: longer side = input_size, aspect kept, at least 1 pixel."""
    scale = input_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def padded(size: int) -> int:
    return -(-size // STRIDE) * STRIDE


# The shorter side is padded up to one of these shares of the input size (rounded up to the
# stride): a handful of network input shapes per model, so that ONNX Runtime (which plans and
# keeps memory per input shape) and CUDA graphs / torch.compile (which specialise per shape)
# see few of them, and photos of different aspect ratios share batches. At input 480: 256,
# 320, 384 and 480 (1280x960 and 1600x1204 photos: 480x384, as with a plain stride pad).
SHORT_SIDE_BUCKETS = (0.5, 2 / 3, 0.8, 1.0)


def bucketed(size: int, input_size: int) -> int:
    """The padded length of a side: its bucket, or the stride multiple above input_size."""
    for share in SHORT_SIDE_BUCKETS:
        bucket = padded(int(share * input_size + 0.5))
        if size <= bucket:
            return bucket
    return padded(size)


class Preprocessor:
    """Resizes, normalises and pads RGB uint8 photos for one model card."""

    def __init__(
        self,
        input_size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
    ) -> None:
        if input_size % STRIDE:
            raise ValueError(f"input_size {input_size} is not a multiple of {STRIDE}")
        self.input_size = input_size
        # x/255 - mean) / std folded into one multiply-add per pixel.
        std_array = np.asarray(std, np.float32)
        self._scale = (1.0 / (255.0 * std_array)).astype(np.float32)
        self._offset = (-np.asarray(mean, np.float32) / std_array).astype(np.float32)

    def __call__(
        self,
        rgb: np.ndarray,
        photo_size: tuple[int, int] | None = None,
        place: TensorPlace | None = None,
    ) -> PreparedImage:
        """`photo_size` (height, width): the photo's own size when `rgb` is a reduced decode of
        it, so the network sees the same size either way. `place`: where to write the tensor."""
        height, width = network_size(*(photo_size or rgb.shape[:2]), self.input_size)
        shrinking = height < rgb.shape[0]
        # INTER_AREA averages: a thin chain fades instead of vanishing between samples.
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        resized = cv2.resize(rgb, (width, height), interpolation=interpolation)
        size = self.input_size
        shape = (3, bucketed(height, size), bucketed(width, size))
        if place is None:
            tensor = np.zeros(shape, np.float32)
        else:
            tensor = place(shape)
            tensor[:, height:] = 0  # the padding
            tensor[:, :height, width:] = 0
        # Plane by plane, straight into the tensor: no temporaries, no transposed copy (5x).
        for channel, plane in enumerate(cv2.split(resized)):
            out = tensor[channel, :height, :width]
            np.multiply(plane, self._scale[channel], out=out, dtype=np.float32)
            out += self._offset[channel]
        return PreparedImage(tensor, height, width)


def crop_to_image(probability: np.ndarray, prepared: PreparedImage) -> np.ndarray:
    """Network output (padded_h, padded_w) -> the resized photo's region (height, width)."""
    return np.ascontiguousarray(probability[: prepared.height, : prepared.width])
