"""Decoding: every accepted layout comes out RGB; every bad input fails with its precise reason."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

import cv2
import numpy as np
import pytest
from PIL import Image

from jewelcut.errors import ImageFailure
from tests.worker.conftest import encode
from worker.decode import decode_image


def png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size but holds (almost) no pixel data: a decompression bomb's head."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def failure_reason(data: bytes, **limits: int) -> str:
    with pytest.raises(ImageFailure) as caught:
        decode_image(data, **limits)
    return caught.value.reason


def test_jpeg_png_webp_decode_to_rgb(photo_bytes: Callable[..., bytes]) -> None:
    for fmt in ("JPEG", "PNG", "WEBP"):
        rgb = decode_image(photo_bytes(96, 64, fmt))
        assert rgb.shape == (64, 96, 3)
        assert rgb.dtype == np.uint8
        assert rgb[32, 48, 0] > 200  # the disc's red channel


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (80, 40), (200, 0, 0))
    image.paste((0, 0, 200), (0, 0, 10, 40))  # blue stripe on the left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display turns it 90 degrees clockwise
    rgb = decode_image(encode(image, "JPEG", exif=exif.tobytes(), quality=95))
    assert rgb.shape == (80, 40, 3)
    assert rgb[2, 20, 2] > 150  # the left stripe is now along the top


@pytest.mark.parametrize("mode", ["L", "1", "CMYK", "YCbCr"])
def test_other_modes_become_rgb(mode: str) -> None:
    fmt = "PNG" if mode == "1" else "JPEG"
    image = Image.new("RGB", (40, 40), (250, 250, 250)).convert(mode)
    rgb = decode_image(encode(image, fmt))
    assert rgb.shape == (40, 40, 3)
    assert rgb.mean() > 230


def test_palette_with_transparency_is_composited_on_white() -> None:
    image = Image.new("P", (40, 40), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (0, 0, 20, 40))  # left half red, right half palette 0 = transparent
    rgb = decode_image(encode(image, "PNG", transparency=0))
    assert tuple(rgb[10, 5]) == (255, 0, 0)
    assert tuple(rgb[10, 35]) == (255, 255, 255)


def test_alpha_is_composited_on_white() -> None:
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[:, :20] = (0, 0, 255, 255)
    rgba[:, 20:] = (0, 0, 0, 0)
    rgb = decode_image(encode(Image.fromarray(rgba), "PNG"))
    assert tuple(rgb[5, 5]) == (0, 0, 255)
    assert tuple(rgb[5, 35]) == (255, 255, 255)
    grey_alpha = Image.fromarray(rgba[:, :, 2]).convert("LA")
    assert decode_image(encode(grey_alpha, "PNG")).shape == (40, 40, 3)


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    values = np.array([[0, 32896, 65535] * 12] * 36, np.uint16)
    ok, data = cv2.imencode(".png", values)
    assert ok
    rgb = decode_image(data.tobytes())
    assert rgb.shape == (36, 36, 3)
    assert tuple(rgb[0, :3, 0]) == (0, 128, 255)


def test_sixteen_bit_colour_decodes() -> None:
    bgr = np.zeros((36, 36, 3), np.uint16)
    bgr[:, :, 2] = 65535  # red
    ok, data = cv2.imencode(".png", bgr)
    assert ok
    rgb = decode_image(data.tobytes())
    assert tuple(rgb[0, 0]) == (255, 0, 0)


BAD_BYTES = [
    (b"", "decode_error"),
    (b"just some text, renamed .jpg\n", "decode_error"),
    (b"<!DOCTYPE html><html><body>503 Service Unavailable</body></html>", "decode_error"),
    (b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, "decode_error"),  # JPEG magic, junk body
    (b"%PDF-1.7\n1 0 obj\n<< >>\nendobj\n", "unsupported_format"),
    (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "unsupported_format"),
    (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "unsupported_format"),
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "unsupported_format"),
]
BAD_BYTES_IDS = ["zero-bytes", "text", "html", "jpeg-junk", "pdf", "svg", "svg-xml", "heic"]


@pytest.mark.parametrize(("data", "reason"), BAD_BYTES, ids=BAD_BYTES_IDS)
def test_bad_bytes_fail_with_their_reason(data: bytes, reason: str) -> None:
    assert failure_reason(data) == reason


def test_truncated_jpeg_and_png_fail_as_decode_error(photo_bytes: Callable[..., bytes]) -> None:
    for fmt in ("JPEG", "PNG"):
        whole = photo_bytes(200, 150, fmt)
        assert failure_reason(whole[: len(whole) // 2]) == "decode_error"


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_other_image_formats_are_unsupported(fmt: str) -> None:
    frames = [Image.new("RGB", (40, 40), colour) for colour in ("red", "blue")]
    extra = {"save_all": True, "append_images": frames[1:]} if fmt == "GIF" else {}
    assert failure_reason(encode(frames[0], fmt, **extra)) == "unsupported_format"


def test_pixel_bomb_is_refused_from_the_header() -> None:
    assert failure_reason(png_header_only(100_000, 100_000)) == "too_large"
    assert failure_reason(png_header_only(5000, 5000), max_pixels=20_000_000) == "too_large"


@pytest.mark.parametrize("side", [8000, 100_000])  # under and over Pillow's own bomb limit
def test_too_large_quotes_our_limit_and_setting(side: int) -> None:
    with pytest.raises(ImageFailure) as caught:
        decode_image(png_header_only(side, side), max_pixels=40_000_000)
    assert caught.value.message == (
        f"{side}x{side} = {side * side} pixels, over the limit of 40000000 (JEWELCUT_MAX_PIXELS)"
    )


def test_limit_applies_to_real_photos(photo_bytes: Callable[..., bytes]) -> None:
    data = photo_bytes(200, 100, "JPEG")
    assert failure_reason(data, max_pixels=19_999) == "too_large"
    assert decode_image(data, max_pixels=20_000).shape == (100, 200, 3)


def test_tiny_images_are_too_small(photo_bytes: Callable[..., bytes]) -> None:
    assert failure_reason(encode(Image.new("RGB", (1, 1)), "PNG")) == "too_small"
    assert failure_reason(photo_bytes(200, 31, "PNG"), min_side=32) == "too_small"
    assert decode_image(photo_bytes(200, 32, "PNG"), min_side=32).shape == (32, 200, 3)


def test_reduced_decode_scales_large_jpegs_and_keeps_the_photos_size(
    photo_bytes: Callable[..., bytes],
) -> None:
    reduced = decode_image(photo_bytes(1280, 960, "JPEG"), reduce_to=480)
    assert (reduced.height, reduced.width) == (960, 1280)
    assert reduced.rgb.shape == (480, 640, 3)  # 1/2: the smallest DCT scale covering 480
    assert reduced.rgb[240, 320, 0] > 200  # the disc, where it was
    full = decode_image(photo_bytes(1280, 960, "PNG"), reduce_to=480)  # no DCT scaling outside JPEG
    assert full.rgb.shape == (960, 1280, 3)
    small = decode_image(photo_bytes(900, 600, "JPEG"), reduce_to=480)  # under twice the size asked
    assert small.rgb.shape == (600, 900, 3)


def test_reduced_decode_applies_exif_orientation() -> None:
    image = Image.new("RGB", (1600, 800), (200, 0, 0))
    image.paste((0, 0, 200), (0, 0, 200, 800))  # blue stripe on the left edge
    exif = Image.Exif()
    exif[0x0112] = 6
    reduced = decode_image(encode(image, "JPEG", exif=exif.tobytes(), quality=95), reduce_to=400)
    assert (reduced.height, reduced.width) == (1600, 800)
    assert reduced.rgb.shape == (400, 200, 3)  # 1/4
    assert reduced.rgb[10, 100, 2] > 150  # the left stripe is now along the top


@pytest.mark.parametrize(("data", "reason"), BAD_BYTES, ids=BAD_BYTES_IDS)
def test_reduced_decode_fails_as_the_full_decode(data: bytes, reason: str) -> None:
    with pytest.raises(ImageFailure) as failure:
        decode_image(data, reduce_to=480)
    assert failure.value.reason == reason


def _pillow_only(monkeypatch: pytest.MonkeyPatch, data: bytes, **options: int) -> object:
    import worker.decode

    with monkeypatch.context() as patch:
        patch.setattr(worker.decode, "simplejpeg", None)
        return decode_image(data, **options)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("reduce_to", [None, 100, 300, 400])
def test_libjpeg_turbo_decode_gives_pillows_pixels(
    monkeypatch: pytest.MonkeyPatch, orientation: int, reduce_to: int | None
) -> None:
    """The fast JPEG path (simplejpeg) and Pillow's: the same pixels, orientation and scale."""
    blocks = np.random.default_rng(orientation).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    image = Image.fromarray(np.kron(blocks, np.ones((8, 8, 1), np.uint8)))
    data = encode(image, "JPEG", exif=exif.tobytes(), quality=95)
    options = {} if reduce_to is None else {"reduce_to": reduce_to}
    fast, pillow = decode_image(data, **options), _pillow_only(monkeypatch, data, **options)
    if reduce_to is not None:
        assert (fast.height, fast.width) == (pillow.height, pillow.width)
        fast, pillow = fast.rgb, pillow.rgb
    assert fast.shape == pillow.shape
    assert np.array_equal(fast, pillow)


def test_grey_and_cmyk_jpegs_decode_to_rgb(monkeypatch: pytest.MonkeyPatch) -> None:
    grey = np.kron(np.arange(48, dtype=np.uint8).reshape(6, 8) * 5, np.ones((8, 8), np.uint8))
    for image in (Image.fromarray(grey), Image.fromarray(grey).convert("CMYK")):
        data = encode(image, "JPEG", quality=95)
        fast, pillow = decode_image(data), _pillow_only(monkeypatch, data)
        assert fast.shape == (48, 64, 3)
        assert np.array_equal(fast, pillow)
