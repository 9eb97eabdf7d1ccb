"""Safe decoding: bytes -> RGB uint8 (H, W, 3) with EXIF orientation applied, or ImageFailure.

Only JPEG, PNG and WebP are taken. The header is read first: the format, the pixel count
(decompression bombs are refused before any pixel is decoded) and the minimum side are checked
there. Grey, CMYK, palette, 16-bit and alpha images all come out as RGB; transparent pixels are
composited on white, which is how a marketplace shows such a photo.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import overload

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

try:  # libjpeg-turbo straight into an array: 3-7x Pillow's JPEG decode, the very same pixels
    import simplejpeg
except ImportError:  # the worker extra installs it; Pillow decodes the same photos, slower
    simplejpeg = None

from jewelcut.errors import ImageFailure

ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP"})  # MPO: multi-picture JPEG (cameras)

# Formats that Pillow cannot identify but that we can name precisely, by their first bytes.
_KNOWN_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "PDF"),
    (b"<svg", "SVG"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
)
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"mif1", b"msf1", b"avif")
MAX_PIXELS_SETTING = "JEWELCUT_MAX_PIXELS"


# EXIF orientations that turn the photo a quarter: its width and height swap.
_QUARTER_TURNS = frozenset({5, 6, 7, 8})


@dataclass(frozen=True)
class ReducedPhoto:
    """A photo decoded at reduced scale: `rgb` is the photo or a smaller copy of it (JPEG DCT
    scaling: 1/2, 1/4 or 1/8) whose sides are at least the asked size's; `height` and `width`
    are the photo's own size. Both with EXIF orientation applied."""

    rgb: np.ndarray
    height: int
    width: int


@overload
def decode_image(data: bytes, *, max_pixels: int = ..., min_side: int = ...) -> np.ndarray: ...


@overload
def decode_image(
    data: bytes, *, max_pixels: int = ..., min_side: int = ..., reduce_to: int
) -> ReducedPhoto: ...


def decode_image(
    data: bytes,
    *,
    max_pixels: int = 40_000_000,
    min_side: int = 32,
    reduce_to: int | None = None,
) -> np.ndarray | ReducedPhoto:
    """Decode one photo; raises ImageFailure(decode_error | unsupported_format | too_large |
    too_small).

    With `reduce_to`, a ReducedPhoto: decoded at the smallest JPEG scale whose longer side is at
    least `reduce_to` (a fraction of a full decode's cost); other formats, and photos under
    twice that size, come at full size."""
    if not data:
        raise ImageFailure("decode_error", "empty file (0 bytes)")
    image = _open(data, max_pixels)
    _check_header(image, max_pixels=max_pixels, min_side=min_side)
    orientation = _orientation(image)
    box = None
    stored_w, stored_h = image.size
    if reduce_to is not None and reduce_to < max(stored_w, stored_h):
        longest = max(stored_w, stored_h)
        box = (-(-stored_w * reduce_to // longest), -(-stored_h * reduce_to // longest))
    rgb = _decode_jpeg(data, image, box, orientation)
    if rgb is None:
        if box is not None and image.format in ("JPEG", "MPO"):
            # draft() picks the smallest DCT scale that still covers the requested box.
            image.draft(image.mode, box)
        rgb = _decode(image)
    if reduce_to is None:
        return rgb
    width, height = (stored_h, stored_w) if orientation in _QUARTER_TURNS else (stored_w, stored_h)
    return ReducedPhoto(rgb, height, width)


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1))
    except Exception:  # an unreadable EXIF block is ignored, as exif_transpose does
        return 1


def _decode_jpeg(
    data: bytes, image: Image.Image, box: tuple[int, int] | None, orientation: int
) -> np.ndarray | None:
    """A colour or grey JPEG by libjpeg-turbo, at the smallest DCT scale covering `box` (the
    stored, unrotated size asked for), oriented; None for what it does not take (CMYK, a
    warning such as a truncated file): Pillow decodes those, or says what is wrong."""
    if simplejpeg is None or image.format not in ("JPEG", "MPO") or image.mode not in ("RGB", "L"):
        return None
    min_width, min_height = _dct_scaled_size(image.size, box)
    try:
        rgb = simplejpeg.decode_jpeg(
            data, colorspace="RGB", min_width=min_width, min_height=min_height
        )
    except ValueError:
        return None
    return _oriented(rgb, orientation)


def _dct_scaled_size(size: tuple[int, int], box: tuple[int, int] | None) -> tuple[int, int]:
    """The size at the smallest of the scales 1/8, 1/4, 1/2 and 1 that covers `box`: the
    scales Pillow's draft() takes (libjpeg-turbo has more, such as 3/8, that are slower)."""
    width, height = size
    for factor in (8, 4, 2):
        scaled = (-(-width // factor), -(-height // factor))
        if box is not None and scaled[0] >= box[0] and scaled[1] >= box[1]:
            return scaled
    return size


# EXIF orientation -> the turns and flips that undo it, as ImageOps.exif_transpose does them.
_ORIENT: dict[int, tuple[int | None, int | None]] = {  # (cv2.rotate code, cv2.flip code)
    2: (None, 1),
    3: (cv2.ROTATE_180, None),
    4: (None, 0),
    5: (cv2.ROTATE_90_CLOCKWISE, 1),
    6: (cv2.ROTATE_90_CLOCKWISE, None),
    7: (cv2.ROTATE_90_COUNTERCLOCKWISE, 1),
    8: (cv2.ROTATE_90_COUNTERCLOCKWISE, None),
}


def _oriented(rgb: np.ndarray, orientation: int) -> np.ndarray:
    rotate, flip = _ORIENT.get(orientation, (None, None))
    if rotate is not None:
        rgb = cv2.rotate(rgb, rotate)
    if flip is not None:
        rgb = cv2.flip(rgb, flip)
    return rgb


def _decode(image: Image.Image) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's EXIF/ICC chatter is not the caller's concern
            image.load()
            image = ImageOps.exif_transpose(image) or image
            return to_rgb(image)
    except ImageFailure:
        raise
    except Exception as error:  # Pillow raises OSError, ValueError, SyntaxError, struct.error...
        raise ImageFailure(
            "decode_error", f"{image.format} could not be decoded: {error}"
        ) from error


def _open(data: bytes, max_pixels: int) -> Image.Image:
    named = _sniff_unsupported(data)
    if named:
        raise ImageFailure("unsupported_format", f"{named} is not a supported image format")
    try:
        with warnings.catch_warnings():
            # Our own limit (max_pixels) is checked next; Pillow's warning adds nothing.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except UnidentifiedImageError as error:
        raise ImageFailure("decode_error", f"not an image ({_describe(data)})") from error
    except Image.DecompressionBombError as error:  # over twice Pillow's own limit
        size = _header_size(data)
        if size is None:
            raise ImageFailure("too_large", f"over the limit of {max_pixels} pixels") from error
        raise _too_large(*size, max_pixels) from error
    except Exception as error:
        raise ImageFailure("decode_error", f"unreadable image header: {error}") from error


def _check_header(image: Image.Image, *, max_pixels: int, min_side: int) -> None:
    if image.format not in ACCEPTED_FORMATS:
        raise ImageFailure("unsupported_format", f"{image.format} is not JPEG, PNG or WebP")
    width, height = image.size
    if width * height > max_pixels:
        raise _too_large(width, height, max_pixels)
    if min(width, height) < min_side:
        raise ImageFailure("too_small", f"{width}x{height}, under {min_side} pixels on a side")


def _too_large(width: int, height: int, max_pixels: int) -> ImageFailure:
    """One message for every photo over the limit: ours, and the setting that sets it."""
    return ImageFailure(
        "too_large",
        f"{width}x{height} = {width * height} pixels, over the limit of {max_pixels} "
        f"({MAX_PIXELS_SETTING})",
    )


def _header_size(data: bytes) -> tuple[int, int] | None:
    """The size a header claims, read by the format's own parser: Image.open would refuse a
    header over Pillow's limit before telling us the size."""
    Image.init()
    for name in ACCEPTED_FORMATS:
        factory, accept = Image.OPEN.get(name, (None, None))
        if factory is None or (accept is not None and not accept(data[:16])):
            continue
        try:
            return factory(io.BytesIO(data), "").size
        except Exception:  # not this format: try the next
            continue
    return None


def _sniff_unsupported(data: bytes) -> str | None:
    head = data[:512].lstrip()
    for signature, name in _KNOWN_SIGNATURES:
        if head.startswith(signature):
            return name
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return "HEIF/AVIF"
    lowered = head.lower()
    if lowered.startswith(b"<?xml") and b"<svg" in lowered:
        return "SVG"
    return None


def _describe(data: bytes) -> str:
    head = data[:64].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "an HTML page"
    if all(32 <= byte < 127 or byte in b"\r\n\t" for byte in data[:64]):
        return "text"
    return f"unknown content starting {data[:8].hex()}"


def to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> RGB uint8 array."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _high_depth_grey_to_rgb(np.asarray(image))
    if mode == "P":
        has_alpha = "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    elif mode in ("LA", "PA", "La", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        return _composite_on_white(np.asarray(image))
    if image.mode != "RGB":
        image = image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def _high_depth_grey_to_rgb(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float32)
    top = float(values.max()) if values.size else 0.0
    # 16-bit data spans 0..65535; 32-bit "I" images from 16-bit files do too; else stretch.
    scale = 255.0 / (65535.0 if top > 255 and top <= 65535 else max(top, 255.0))
    grey = np.clip(values * scale + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    alpha = rgba[:, :, 3:4].astype(np.uint16)
    if int(alpha.min()) == 255:
        return np.ascontiguousarray(rgba[:, :, :3])
    rgb = rgba[:, :, :3].astype(np.uint16)
    blended = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return blended.astype(np.uint8)
