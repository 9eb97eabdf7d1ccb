"""Full-resolution cutouts and what a person is shown.

The alpha is the probability upsampled to the photo's size, sharpened to a ramp a couple of
pixels wide (soft, anti-aliased edges instead of a staircase) and limited to a slightly dilated
cleaned mask (specks that cleanup removed stay removed). Edge colours are decontaminated: a
half-transparent pixel takes the colour of the nearby solid object instead of keeping the old
background's, so no halo shows on a new background; the per-pixel passes are compiled (numba,
off the GIL). PNGs are written at a low compression
level: fast, and still lossless. A full-size cutout is only worked on, and only compressed pixel
by pixel, inside the object's box: outside it every pixel is transparent black, and those rows
cost next to nothing (encode_box_png). What a person is shown is at most PREVIEW_MAX_SIDE on its
longer side.
"""

from __future__ import annotations

import functools
import math
import struct
import zlib
from collections.abc import Callable
from typing import Any

import cv2
import numba
import numpy as np
import simplejpeg

try:  # ISA-L's deflate, adler32 and crc32: 5x zlib's speed at level 1 on a cutout's box
    from isal import isal_zlib as deflate
except ImportError:  # the worker extra installs it; plain zlib writes the same PNGs, slower
    deflate = zlib  # type: ignore[misc]

JPEG_QUALITY = 90
PREVIEW_MAX_SIDE = 640  # what a person is shown: enough for a review, a fraction of the work
# Every PNG's deflate: level 1 with the UP filter. On a 1280x960 cutout's box (4.9 MB of
# filtered rows): zlib 18.5 ms, ISA-L 3.6 ms and 4% smaller; with zlib, UP beat OpenCV's
# run-length matching with SUB by 15% in time and 20% in size.
PNG_ZLIB_LEVEL = 1
_COLOUR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type: grey, RGB, RGBA
DEFAULT_CROP_MARGIN = 0.05  # of the object's longer side
EDGE_LOW, EDGE_HIGH = 0.25, 0.75  # probabilities mapped to alpha 0 and 1
SOLID_ALPHA = 250  # alpha from which a pixel's colour is trusted as the object's own


def _ramp_table() -> np.ndarray:
    probability = np.arange(256, dtype=np.float64) / 255.0
    ramp = np.clip((probability - EDGE_LOW) / (EDGE_HIGH - EDGE_LOW), 0.0, 1.0)
    return np.round(ramp * 255.0).astype(np.uint8)


RAMP = _ramp_table()  # probability (0..255) -> alpha (0..255)


def full_resolution_alpha(
    probability: np.ndarray, mask: np.ndarray, height: int, width: int
) -> np.ndarray:
    """uint8 alpha (height, width) from the network-resolution probability and cleaned mask.
    Works in uint8 (1/255 steps are finer than a soft edge needs): a few times faster; and
    upsamples only the box around the pieces (zero support outside it)."""
    alpha = np.zeros((height, width), np.uint8)
    if not mask.any():
        return alpha
    support = cv2.dilate(mask.astype(np.uint8) * np.uint8(255), np.ones((3, 3), np.uint8))
    x, y, box_width, box_height = cv2.boundingRect(support)
    # 2 rows of zero support around the box: nothing outside it is visible once upsampled.
    rows = _span_on_shared_grid(y, y + box_height, probability.shape[0], height, margin=2)
    columns = _span_on_shared_grid(x, x + box_width, probability.shape[1], width, margin=2)
    in_network = np.s_[rows[0] : rows[1], columns[0] : columns[1]]
    in_photo = np.s_[rows[2] : rows[3], columns[2] : columns[3]]
    size = (columns[3] - columns[2], rows[3] - rows[2])
    probability8 = quantize_probability(probability[in_network])
    ramp = cv2.LUT(cv2.resize(probability8, size, interpolation=cv2.INTER_LINEAR), RAMP)
    upsampled = cv2.resize(support[in_network], size, interpolation=cv2.INTER_LINEAR)
    alpha[in_photo] = cv2.multiply(ramp, upsampled, scale=1.0 / 255.0)
    return alpha


def _span_on_shared_grid(
    start: int, stop: int, size: int, other: int, margin: int = 0
) -> tuple[int, int, int, int]:
    """Rows (or columns) [start, stop) of an axis of `size`, resized to `other`: (a, b, A, B),
    the rows [a, b) that resized give the rows [A, B) exactly as the whole axis would. a and b
    are widened by `margin` and fall on the grid where both sizes meet: there OpenCV's
    bilinear and area weights start over. Where the sizes have no common divisor, that is
    the whole axis."""
    step = size // math.gcd(size, other)
    a = max(0, (start - margin) // step * step)
    b = min(size, -(-(stop + margin) // step) * step)
    return a, b, a * other // size, b * other // size


def quantize_probability(probability: np.ndarray) -> np.ndarray:
    """Probabilities (float) as uint8 0..255: what the alpha is made from, and what is stored.
    Idempotent on its own output divided by 255, so a stored map gives the very same alpha.
    One OpenCV pass (rounded, saturated at 255; a probability is never negative): a fifth of
    numpy's clip, scale and cast."""
    if probability.dtype == np.uint8:
        return probability
    return cv2.convertScaleAbs(probability, alpha=255.0)


def encode_probability_png(probability: np.ndarray) -> bytes:
    return encode_png(quantize_probability(probability))


def encode_mask_png(mask: np.ndarray) -> bytes:
    return encode_png(mask.astype(np.uint8) * np.uint8(255))


def decode_grey_png(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ValueError("not a readable PNG")
    return image


def binary_mask(alpha: np.ndarray) -> np.ndarray:
    """The cleaned mask at full size as 0/255, consistent with the cutout's alpha."""
    return cv2.threshold(alpha, 127, 255, cv2.THRESH_BINARY)[1]


def object_box(alpha: np.ndarray, margin: float = DEFAULT_CROP_MARGIN) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) around the visible object plus a margin; the whole image if empty."""
    height, width = alpha.shape
    x, y, box_width, box_height = cv2.boundingRect(alpha)  # of the non-zero pixels; SIMD
    if box_width == 0:
        return 0, 0, width, height
    pad = round(margin * max(box_width, box_height))
    return (
        max(0, x - pad),
        max(0, y - pad),
        min(width, x + box_width + pad),
        min(height, y + box_height + pad),
    )


def make_cutout(
    rgb: np.ndarray, alpha: np.ndarray, *, crop: bool = False, margin: float = DEFAULT_CROP_MARGIN
) -> np.ndarray:
    """RGBA uint8 cutout at full resolution (or cropped to the object with a margin)."""
    height, width = alpha.shape
    x0, y0, x1, y1 = object_box(alpha, margin) if crop else (0, 0, width, height)
    cutout = np.zeros((y1 - y0, x1 - x0, 4), np.uint8)
    (bx0, by0, bx1, by1), rgba = cutout_in_box(rgb, alpha)
    # The box holds every visible pixel; outside it the cutout is transparent black.
    ix0, iy0, ix1, iy1 = max(x0, bx0), max(y0, by0), min(x1, bx1), min(y1, by1)
    if ix0 < ix1 and iy0 < iy1:
        cutout[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = rgba[
            iy0 - by0 : iy1 - by0, ix0 - bx0 : ix1 - bx0
        ]
    return cutout


def _working_box(alpha: np.ndarray) -> tuple[int, int, int, int] | None:
    """The visible object's box widened by the colour blur's reach; None when nothing shows.
    Outside it a cutout is transparent black."""
    if not alpha.any():
        return None
    x0, y0, x1, y1 = object_box(alpha, margin=0.0)
    pad = _blur_size(alpha.shape) // 2 + 1
    height, width = alpha.shape
    return max(0, x0 - pad), max(0, y0 - pad), min(width, x1 + pad), min(height, y1 + pad)


def cutout_in_box(
    rgb: np.ndarray, alpha: np.ndarray
) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """The full-size cutout as (box, RGBA pixels inside the box): transparent black outside."""
    box = _working_box(alpha) or (0, 0, 1, 1)
    return box, _cutout_pixels(rgb, alpha, box, _NOWHERE)


def _cutout_pixels(
    rgb: np.ndarray, alpha: np.ndarray, box: tuple[int, int, int, int], shown: np.ndarray
) -> np.ndarray:
    """The cutout's RGBA pixels in `box`; unless `shown` is empty, the cutout on white is drawn
    into it (an RGB array of the box's size, white)."""
    x0, y0, x1, y1 = box
    rgba = np.empty((y1 - y0, x1 - x0, 4), np.uint8)
    _decontaminate_box(rgb[y0:y1, x0:x1], alpha[y0:y1, x0:x1], _blur_size(alpha.shape), rgba, shown)
    return rgba


def _blur_size(shape: tuple[int, ...]) -> int:
    # Wide enough to reach past the soft edge (which widens with the upsampling factor).
    return int(max(7, 2 * round(0.006 * max(shape)) + 1))


def _own_colour_table() -> np.ndarray:
    alpha = np.arange(256, dtype=np.float64)
    return np.round(np.clip((alpha - 128.0) / 127.0, 0.0, 1.0) * 255.0).astype(np.float32)


# How much of its own colour (of 255) an edge pixel keeps, by alpha: none when mostly
# transparent (mostly old background), all when solid (fine metal shading is the object's).
OWN_COLOUR = _own_colour_table()
_NOWHERE = np.empty((0, 0, 3), np.uint8)  # `shown` when no cutout on white is asked for


def _compiled(function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` compiled by numba, off the GIL, and cached on disk where numba can write
    (next to this file, or NUMBA_CACHE_DIR); where it cannot (a read-only install and home),
    compiled afresh in each process instead (~2 s), rather than failing the import."""
    try:
        return numba.njit(nogil=True, cache=True)(function)
    except RuntimeError:  # numba found no writable place for its cache
        return numba.njit(nogil=True)(function)


def _decontaminate_box(
    rgb: np.ndarray, alpha: np.ndarray, size: int, rgba: np.ndarray, shown: np.ndarray
) -> None:
    """Writes the cutout: each visible pixel blended from its own colour and the mean colour of
    the solid pixels around it (within `size`), by alpha (OWN_COLOUR); transparent pixels zero.
    The mean is a smooth field: it is summed over 2x2 cells and box-filtered there. Two compiled
    passes over the pixels (as a dozen OpenCV passes it cost 3x as much, and numpy 6x)."""
    cells = _solid_cells(rgb, alpha, SOLID_ALPHA)
    window = ((size // 2) | 1, (size // 2) | 1)
    sums = cv2.boxFilter(cells, cv2.CV_32F, window, normalize=False)
    _blend(rgb, alpha, sums, OWN_COLOUR, rgba, shown)


@_compiled
def _solid_cells(rgb: np.ndarray, alpha: np.ndarray, solid_alpha: int) -> np.ndarray:
    """Per 2x2 cell: how many solid pixels (alpha >= solid_alpha), then their colours' sum."""
    height, width = alpha.shape
    cells = np.zeros(((height + 1) // 2, (width + 1) // 2, 4), np.uint16)
    for y in range(height):
        for x in range(width):
            if alpha[y, x] >= solid_alpha:
                cells[y >> 1, x >> 1, 0] += 1
                for channel in range(3):
                    cells[y >> 1, x >> 1, 1 + channel] += rgb[y, x, channel]
    return cells


@_compiled
def _blend(
    rgb: np.ndarray,
    alpha: np.ndarray,
    sums: np.ndarray,
    own_colour: np.ndarray,
    rgba: np.ndarray,
    shown: np.ndarray,
) -> None:
    """rgba = the decontaminated pixels and alpha; `shown` (unless empty) = them on white.
    `sums`: per cell, the solid pixels around it and their colours' sum."""
    height, width = alpha.shape
    on_white = shown.shape[0] > 0
    for y in range(height):
        for x in range(width):
            visible = alpha[y, x]
            if visible == 0:
                for channel in range(4):
                    rgba[y, x, channel] = 0
                continue
            solid = sums[y >> 1, x >> 1, 0]
            # No solid pixel near: the pixel keeps its own colour.
            own = np.float32(255.0) if solid == 0 else own_colour[visible]
            mean_share = (np.float32(255.0) - own) / max(solid, np.float32(1.0))
            for channel in range(3):
                blended = rgb[y, x, channel] * own + sums[y >> 1, x >> 1, 1 + channel] * mean_share
                value = min(int(blended * np.float32(1.0 / 255.0) + np.float32(0.5)), 255)
                rgba[y, x, channel] = value
                if on_white:
                    shown[y, x, channel] = 255 - ((255 - value) * visible + 127) // 255
            rgba[y, x, 3] = visible


@functools.cache  # once a process; processes forked after it inherit the compiled passes
def compile_passes() -> None:
    """Compile the cutout's passes (or load them from numba's cache, ~0.3 s) on tiny cutouts,
    so that no photo's cutout waits for it. numba compiles once per array layout: an object's
    box inside the photo gives strided slices, a box that is the whole photo contiguous arrays;
    each with and without the preview drawn, which is the box itself (a photo that needs no
    shrinking) or part of a wider canvas (one that does)."""
    shrunk = PREVIEW_MAX_SIDE + 13  # shrunk to 640, no grid shared: a canvas wider than the box
    for side, object_at in (
        (32, np.s_[12:20, 12:20]),
        (8, np.s_[2:6, 2:6]),
        (shrunk, np.s_[2:6, 2:6]),
    ):
        alpha = np.zeros((side, side), np.uint8)
        alpha[object_at] = 255
        rgb = np.full((side, side, 3), 90, np.uint8)
        encode_cutout_and_preview(rgb, alpha)
        make_cutout(rgb, alpha)


def on_white(rgba: np.ndarray) -> np.ndarray:
    """The cutout on a clean white background (RGB uint8): 255 - (255 - rgb) * alpha."""
    alpha = cv2.cvtColor(cv2.extractChannel(rgba, 3), cv2.COLOR_GRAY2RGB)
    ink = cv2.bitwise_not(cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB))  # 255 - rgb
    # OpenCV for the channel shuffles: numpy's strided copies took 5x longer.
    return cv2.bitwise_not(cv2.multiply(ink, alpha, scale=1.0 / 255.0))


def encode_png(image: np.ndarray) -> bytes:
    """Grey, RGB or RGBA uint8 -> PNG bytes."""
    height, width = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    filtered = np.empty((height, 1 + width * channels), np.uint8)
    _up_filter(np.ascontiguousarray(image).reshape(height, width * channels), filtered, 1)
    stream = deflate.compress(filtered.data, PNG_ZLIB_LEVEL)
    return _png(width, height, _COLOUR_TYPES[channels], stream)


def _up_filter(rows: np.ndarray, filtered: np.ndarray, start: int) -> None:
    """PNG scanlines with the UP filter: each row's filter byte, then from `start` on each byte
    of `rows` minus the one above it (bytes between stay as they are)."""
    filtered[:, 0] = 2
    into = filtered[:, start : start + rows.shape[1]]
    into[:1] = rows[:1]
    np.subtract(rows[1:], rows[:-1], out=into[1:])


def _png(width: int, height: int, colour_type: int, zlib_stream: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)  # 8-bit
    chunks = (_png_chunk(b"IHDR", header), _png_chunk(b"IDAT", zlib_stream))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks) + _png_chunk(b"IEND", b"")


def encode_box_png(
    height: int, width: int, box: tuple[int, int, int, int], rgba: np.ndarray
) -> bytes:
    """A (height, width) RGBA PNG, transparent black outside `box` (x0, y0, x1, y1), whose
    pixels inside are `rgba`. Only the box's rows are filtered and compressed: the transparent
    rows above and below it are deflate segments compressed once per width and reused (zlib
    takes as long over zeros as over a photo)."""
    x0, y0, x1, y1 = box
    row = 1 + 4 * width  # the filter byte, then RGBA
    filtered = np.zeros((y1 - y0, row), np.uint8)  # left and right of the box: zero, as filtered
    _up_filter(rgba.reshape(y1 - y0, 4 * (x1 - x0)), filtered, 1 + 4 * x0)
    compressor = deflate.compressobj(PNG_ZLIB_LEVEL, deflate.DEFLATED, -15)  # raw deflate
    segments = [
        *_zero_rows_deflate(row, y0),
        compressor.compress(filtered.data) + compressor.flush(deflate.Z_FULL_FLUSH),
        *_zero_rows_deflate(row, height - y1),
        b"\x03\x00",  # an empty final block
    ]
    checksum = _adler32_of_zeros(1, row * y0)
    checksum = _adler32_of_zeros(deflate.adler32(filtered.data, checksum), row * (height - y1))
    stream = b"\x78\x01" + b"".join(segments) + struct.pack(">I", checksum)
    return _png(width, height, _COLOUR_TYPES[4], stream)


def _zero_rows_deflate(row: int, count: int) -> list[bytes]:
    """Deflate segments (byte-aligned, not final) of `count` all-zero rows of `row` bytes:
    one cached segment per power of two."""
    powers = [1 << bit for bit in range(count.bit_length()) if count >> bit & 1]
    return [_zero_rows_segment(row, power) for power in powers]


@functools.lru_cache(maxsize=512)
def _zero_rows_segment(row: int, count: int) -> bytes:
    compressor = deflate.compressobj(PNG_ZLIB_LEVEL, deflate.DEFLATED, -15)
    return compressor.compress(bytes(row * count)) + compressor.flush(deflate.Z_FULL_FLUSH)


def _adler32_of_zeros(checksum: int, length: int) -> int:
    """zlib.adler32(bytes(length), checksum) without the bytes: zeros leave the low sum as it
    is and add it `length` times to the high one."""
    low, high = checksum & 0xFFFF, checksum >> 16
    return ((high + length * low) % 65521) << 16 | low


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    checksum = deflate.crc32(body, deflate.crc32(kind))
    return b"".join((struct.pack(">I", len(body)), kind, body, struct.pack(">I", checksum)))


def bounded(rgb: np.ndarray, max_side: int = PREVIEW_MAX_SIDE) -> np.ndarray:
    """The image shrunk (area averaging) so its longer side is at most max_side."""
    height, width = rgb.shape[:2]
    size = bounded_size(height, width, max_side)
    if size == (width, height):
        return rgb
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def bounded_size(height: int, width: int, max_side: int = PREVIEW_MAX_SIDE) -> tuple[int, int]:
    """(width, height) of bounded() for an image of that size."""
    scale = max_side / max(height, width)
    if scale >= 1:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def encode_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """RGB uint8 -> JPEG (4:2:0), by libjpeg-turbo from RGB as it is: no channel swap."""
    return simplejpeg.encode_jpeg(np.ascontiguousarray(rgb), quality, "RGB", "420")


def encode_cutout_png(
    rgb: np.ndarray, alpha: np.ndarray, *, crop: bool = False, margin: float = DEFAULT_CROP_MARGIN
) -> bytes:
    """The cutout as an RGBA PNG (full resolution, or cropped to the object with a margin)."""
    if crop:
        return encode_png(make_cutout(rgb, alpha, crop=True, margin=margin))
    box, rgba = cutout_in_box(rgb, alpha)
    return encode_box_png(alpha.shape[0], alpha.shape[1], box, rgba)


def encode_cutout_and_preview(rgb: np.ndarray, alpha: np.ndarray) -> tuple[bytes, bytes]:
    """The full-size cutout PNG and what a person is shown (the cutout on white, bounded), from
    one cutout: (png, jpeg). The cutout on white is drawn and shrunk only around the box (on
    the grid the two sizes share, so the preview is the very one the whole photo would give):
    the rest is white."""
    height, width = alpha.shape
    box = _working_box(alpha) or (0, 0, 1, 1)
    preview_width, preview_height = bounded_size(height, width)
    rows = _span_on_shared_grid(box[1], box[3], height, preview_height)
    columns = _span_on_shared_grid(box[0], box[2], width, preview_width)
    around = np.full((rows[1] - rows[0], columns[1] - columns[0], 3), 255, np.uint8)
    in_around = np.s_[
        box[1] - rows[0] : box[3] - rows[0], box[0] - columns[0] : box[2] - columns[0]
    ]
    rgba = _cutout_pixels(rgb, alpha, box, around[in_around])
    preview = np.full((preview_height, preview_width, 3), 255, np.uint8)
    shrunk = (columns[3] - columns[2], rows[3] - rows[2])
    preview[rows[2] : rows[3], columns[2] : columns[3]] = cv2.resize(
        around, shrunk, interpolation=cv2.INTER_AREA
    )
    return encode_box_png(height, width, box, rgba), encode_jpeg(preview)


def encode_preview_jpeg(
    rgb: np.ndarray,
    alpha: np.ndarray | None,
    *,
    crop: bool = False,
    margin: float = DEFAULT_CROP_MARGIN,
) -> bytes:
    """What a person is shown, at most PREVIEW_MAX_SIDE on its longer side: the cutout on white
    when accepted (pass its alpha), else the original photo (pass None; a reduced decode of the
    photo does as well as the full one)."""
    if alpha is None:
        return encode_jpeg(bounded(rgb))
    return encode_jpeg(bounded(on_white(make_cutout(rgb, alpha, crop=crop, margin=margin))))
