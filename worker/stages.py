"""The CPU work on one photo around the network, in plain picklable parts: a photo read at
reduced scale (full size on demand), the network's input, cleanup and gate. The pipeline runs
them in its threads, or in CPU-stage processes (worker.cpu_pool): the same code either way."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from jewelcut.modelcard import GateThresholds
from worker.cleanup import clean_mask
from worker.cutout import PREVIEW_MAX_SIDE
from worker.decode import decode_image
from worker.gate import GateResult, score_and_gate
from worker.preprocess import PreparedImage, Preprocessor, TensorPlace


@dataclass(frozen=True)
class DecodeLimits:
    reduced_side: int  # a reduced decode's longer side is at least this
    max_pixels: int
    min_side: int


@dataclass
class Photo:
    """A photo as the pipeline holds it. `reduced` is decoded at reduced scale (JPEG DCT
    scaling), its longer side at least the network's input and PREVIEW_MAX_SIDE (or the photo
    itself): the network and what a person is shown of a rejected photo need no more. `rgb`,
    the full-size photo, is decoded on first use: only for the photos whose cutout is written.
    `height` and `width` are the photo's own (EXIF orientation applied)."""

    data: bytes
    height: int
    width: int
    limits: DecodeLimits | None  # None: made from pixels, nothing to decode
    _reduced: np.ndarray | None = field(default=None, repr=False)
    _full: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def of(cls, rgb: np.ndarray) -> Photo:
        """A photo already decoded at full size."""
        return cls(b"", rgb.shape[0], rgb.shape[1], None, rgb, rgb)

    @property
    def reduced(self) -> np.ndarray:
        if self._reduced is None:
            assert self.limits is not None
            self._reduced = decode_image(
                self.data,
                reduce_to=self.limits.reduced_side,
                max_pixels=self.limits.max_pixels,
                min_side=self.limits.min_side,
            ).rgb
        return self._reduced

    @property
    def rgb(self) -> np.ndarray:
        if self._full is None:
            if self._reduced is not None and self._reduced.shape[:2] == (self.height, self.width):
                self._full = self._reduced
            else:
                assert self.limits is not None
                self._full = decode_image(
                    self.data, max_pixels=self.limits.max_pixels, min_side=self.limits.min_side
                )
        return self._full


@dataclass(frozen=True)
class Prediction:
    """What the model said about one photo, at network resolution (padding cropped)."""

    probability: np.ndarray  # float32 (h, w), sigmoid of the logits
    mask: np.ndarray  # bool (h, w), cleaned
    gate: GateResult

    @property
    def accepted(self) -> bool:
        return self.gate.decision == "accepted"

    def alpha(self, height: int, width: int) -> np.ndarray:
        """The cutout's alpha (uint8) at the photo's full size, with soft edges."""
        from worker.cutout import full_resolution_alpha

        return full_resolution_alpha(self.probability, self.mask, height, width)


def photo_limits(input_size: int, max_pixels: int, min_side: int) -> DecodeLimits:
    """How a model version at `input_size` reads photos: reduced to what the network and a
    preview need, within the size limits."""
    return DecodeLimits(max(input_size, PREVIEW_MAX_SIDE), max_pixels, min_side)


def read_photo(data: bytes, limits: DecodeLimits) -> Photo:
    """The photo decoded at reduced scale; at full size later, if asked (Photo.rgb)."""
    reduced = decode_image(
        data,
        reduce_to=limits.reduced_side,
        max_pixels=limits.max_pixels,
        min_side=limits.min_side,
    )
    return Photo(data, reduced.height, reduced.width, limits, reduced.rgb)


@dataclass(frozen=True)
class CpuStages:
    """The CPU work on one photo around the network, in plain picklable parts: it runs in this
    process or in a CPU-stage process (worker.cpu_pool), the same code either way."""

    preprocess: Preprocessor
    limits: DecodeLimits

    def read_photo(self, data: bytes) -> Photo:
        return read_photo(data, self.limits)

    def prepare(self, photo: Photo, place: TensorPlace | None = None) -> PreparedImage:
        """The network's input for a photo: the same size as from its full-size decode."""
        return self.preprocess(photo.reduced, (photo.height, photo.width), place)

    def finish(self, probability: np.ndarray, thresholds: GateThresholds) -> Prediction:
        """Cleanup and gate one probability map."""
        mask = clean_mask(probability)
        return Prediction(probability, mask, score_and_gate(probability, mask, thresholds))


Renderer = Callable[[Photo, Prediction], dict[str, bytes]]

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt() parameters
KEEP_FREED_BYTES = 64 << 20
LARGEST_HEAP_ALLOCATION = 32 << 20  # glibc's ceiling for the mmap threshold


@functools.cache  # once a process: Segmenter.load() runs on every batch, and forks inherit it
def keep_freed_memory() -> None:
    """Let this process's malloc keep freed memory for reuse instead of giving each large
    array back to the kernel. By default glibc maps every allocation over 128 KB afresh (a
    photo, a cutout, every OpenCV result) and unmaps it when freed: each page then faults in
    again on first touch, about 2 us apiece on a virtual machine, 6,700 faults (15 ms) for
    one 1280x960 cutout. Kept, the same pages serve photo after photo; memory stays bounded by
    the largest working set plus KEEP_FREED_BYTES. Nothing happens off glibc."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, LARGEST_HEAP_ALLOCATION)
        libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES)


class timed:
    """Adds the seconds spent in a block to timings[stage]."""

    def __init__(self, timings: dict[str, float], stage: str) -> None:
        self.timings = timings
        self.stage = stage

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *_: object) -> None:
        self.timings[self.stage] = time.perf_counter() - self.started
