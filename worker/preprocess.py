"""Photo -> network input and back.

The photo is resized so its longer side is the card's `input_size` (aspect kept) and padded
at the bottom and right to a multiple of 32 (the Unet's stride): the shorter side to one of a
few buckets (SHORT_SIDE_BUCKETS), so there are few shapes. The network's input stays uint8:
the network normalises it with the card's mean/std itself (worker.normalise), and the padding
is the mean colour, which normalises to ~0. The network's output is cropped back to the
resized photo ("network resolution"): cleanup and the gate work there; only the cutout's alpha
goes up to the photo's full size.
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
    tensor: np.ndarray  # uint8 RGB (3, padded_h, padded_w): pixels, padded with the mean colour
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


def normalisation(
    mean: tuple[float, float, float], std: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """float32 (scale, offset) per channel: (x/255 - mean) / std as one multiply-add."""
    std_array = np.asarray(std, np.float32)
    scale = (1.0 / (255.0 * std_array)).astype(np.float32)
    return scale, (-np.asarray(mean, np.float32) / std_array).astype(np.float32)


class Preprocessor:
    """Resizes and pads RGB uint8 photos for one model card."""

    def __init__(self, input_size: int, mean: tuple[float, float, float]) -> None:
        """`mean`: the card's, whose colour pads the photo (the network normalises by itself)."""
        if input_size % STRIDE:
            raise ValueError(f"input_size {input_size} is not a multiple of {STRIDE}")
        self.input_size = input_size
        self.padding = tuple(round(255.0 * channel) for channel in mean)

    def __call__(
        self,
        rgb: np.ndarray,
        photo_size: tuple[int, int] | None = None,
        place: TensorPlace | None = None,
    ) -> PreparedImage:
        """`photo_size` (height, width): the photo's own size when `rgb` is a reduced decode of
        it, so the network sees the same size either way. `place`: where to write the tensor."""
        height, width = network_size(*(photo_size or rgb.shape[:2]), self.input_size)
        resized = cv2.resize(rgb, (width, height), interpolation=_interpolation(rgb, height))
        size = self.input_size
        shape = (3, bucketed(height, size), bucketed(width, size))
        tensor = np.empty(shape, np.uint8) if place is None else place(shape)
        for channel, plane in enumerate(cv2.split(resized)):
            out = tensor[channel]
            out[:height, :width] = plane
            out[height:] = self.padding[channel]
            out[:height, width:] = self.padding[channel]
        return PreparedImage(tensor, height, width)


def _interpolation(rgb: np.ndarray, height: int) -> int:
    """Bilinear down to half size, where every pixel still weighs in some output pixel (a JPEG
    decoded at reduced scale is always there, within twice the size asked: 0.2 ms against
    INTER_AREA's 0.9 at 640x480 -> 480x360, the same decisions and masks within 1% IoU on
    listing photos). Further down INTER_AREA averages: a thin chain fades instead of vanishing
    between samples."""
    return cv2.INTER_AREA if 2 * height < rgb.shape[0] else cv2.INTER_LINEAR


def crop_to_image(probability: np.ndarray, prepared: PreparedImage) -> np.ndarray:
    """Network output (padded_h, padded_w) -> the resized photo's region (height, width)."""
    return np.ascontiguousarray(probability[: prepared.height, : prepared.width])
