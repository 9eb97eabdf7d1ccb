"""Full-resolution alpha with soft edges, no halo, crop with margin, what a person sees."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from worker.cleanup import clean_mask
from worker.cutout import (
    binary_mask,
    bounded,
    encode_cutout_and_preview,
    encode_cutout_png,
    encode_preview_jpeg,
    full_resolution_alpha,
    make_cutout,
    object_box,
)

RED, GREEN = (220, 30, 30), (30, 200, 30)


def red_disc_on_green(height: int = 600, width: int = 800) -> tuple[np.ndarray, np.ndarray]:
    """A photo (with a soft, anti-aliased edge) and the network-resolution probability for it."""
    mask = np.zeros((height, width), np.uint8)
    cv2.circle(mask, (width // 2, height // 2), height // 4, 255, -1, cv2.LINE_AA)
    coverage = cv2.GaussianBlur(mask, (5, 5), 0)[:, :, None] / 255.0
    rgb = (coverage * RED + (1 - coverage) * GREEN).astype(np.uint8)
    probability = cv2.resize(mask, (320, 240), interpolation=cv2.INTER_AREA) / 255.0
    return rgb, probability.astype(np.float32)


def whole_map_alpha(
    probability: np.ndarray, mask: np.ndarray, height: int, width: int
) -> np.ndarray:
    """The alpha's definition over the whole map: what full_resolution_alpha computes within
    the pieces' box."""
    from worker.cutout import RAMP, quantize_probability

    size = (width, height)
    ramp = cv2.LUT(cv2.resize(quantize_probability(probability), size), RAMP)
    support = cv2.dilate(mask.astype(np.uint8) * np.uint8(255), np.ones((3, 3), np.uint8))
    return cv2.multiply(ramp, cv2.resize(support, size), scale=1.0 / 255.0)


@pytest.mark.parametrize(
    ("network", "photo"),
    [
        ((360, 480), (960, 1280)),
        ((361, 480), (1204, 1600)),
        ((480, 360), (1500, 1125)),
        ((360, 480), (600, 800)),
        ((37, 50), (100, 133)),
        ((240, 320), (240, 320)),
    ],
)
def test_alpha_upsampled_in_the_pieces_box_is_the_whole_maps(
    network: tuple[int, int], photo: tuple[int, int]
) -> None:
    """Pieces anywhere, at the frame's edges too, and sizes that share a grid or none."""
    rng = np.random.default_rng(sum(photo))
    for _ in range(8):
        drawn = np.zeros(network, np.float32)
        for _ in range(rng.integers(1, 4)):
            centre = (int(rng.integers(0, network[1])), int(rng.integers(0, network[0])))
            radius = int(rng.integers(2, max(3, network[0] // 4)))
            cv2.circle(drawn, centre, radius, float(rng.uniform(0.6, 1.0)), -1)
        probability = cv2.GaussianBlur(drawn, (7, 7), 2.0)
        mask = clean_mask(probability)
        alpha = full_resolution_alpha(probability, mask, *photo)
        assert np.array_equal(alpha, whole_map_alpha(probability, mask, *photo))


def test_alpha_is_full_size_with_soft_edges() -> None:
    _, probability = red_disc_on_green()
    alpha = full_resolution_alpha(probability, clean_mask(probability), 600, 800)
    assert alpha.shape == (600, 800)
    assert alpha[300, 400] == 255 and alpha[10, 10] == 0
    edge_row = alpha[300, 400 + 140 : 400 + 160]  # across the disc's right edge (r = 150)
    partial = edge_row[(edge_row > 0) & (edge_row < 255)]
    assert partial.size in range(1, 9)  # a ramp a few pixels wide: no staircase, no blur
    assert np.all(np.diff(edge_row.astype(int)) <= 0)


def test_removed_specks_stay_out_of_the_alpha() -> None:
    _, probability = red_disc_on_green()
    probability[10:12, 10:12] = 1.0  # a speck the cleanup drops
    mask = clean_mask(probability)
    alpha = full_resolution_alpha(probability, mask, 600, 800)
    assert not mask[10:12, 10:12].any()
    assert alpha[20:40, 20:40].max() == 0


def test_edges_carry_the_objects_colour_not_the_background() -> None:
    rgb, probability = red_disc_on_green()
    alpha = full_resolution_alpha(probability, clean_mask(probability), 600, 800)
    rgba = make_cutout(rgb, alpha)
    edge = (alpha > 0) & (alpha < 200)
    assert edge.sum() > 100
    colours = rgba[edge][:, :3].astype(int)
    original = rgb[edge].astype(int)
    # Green (the old background) is what shows as a halo; decontamination takes it out.
    assert colours[:, 1].mean() < 0.5 * original[:, 1].mean()
    assert colours[:, 0].mean() > original[:, 0].mean()


def test_crop_keeps_the_object_and_a_margin() -> None:
    rgb, probability = red_disc_on_green()
    alpha = full_resolution_alpha(probability, clean_mask(probability), 600, 800)
    x0, y0, x1, y1 = object_box(alpha, margin=0.0)
    cropped = make_cutout(rgb, alpha, crop=True, margin=0.1)
    pad = round(0.1 * max(x1 - x0, y1 - y0))
    assert cropped.shape == (y1 - y0 + 2 * pad, x1 - x0 + 2 * pad, 4)
    assert cropped[:, :, 3].sum() == alpha.sum()  # nothing of the object was cut


def test_encoded_outputs_round_trip() -> None:
    rgb, probability = red_disc_on_green()
    alpha = full_resolution_alpha(probability, clean_mask(probability), 600, 800)
    cutout = cv2.imdecode(
        np.frombuffer(encode_cutout_png(rgb, alpha), np.uint8), cv2.IMREAD_UNCHANGED
    )
    assert cutout.shape == (600, 800, 4)
    assert np.array_equal(cutout[:, :, 3], alpha)  # lossless
    shown = cv2.imdecode(np.frombuffer(encode_preview_jpeg(rgb, alpha), np.uint8), cv2.IMREAD_COLOR)
    assert shown.shape == (480, 640, 3)  # what a person is shown is bounded: PREVIEW_MAX_SIDE
    assert shown[10, 10].min() > 245  # white where the background was
    assert shown[240, 320, 2] > 180  # the red disc (BGR)
    original = cv2.imdecode(
        np.frombuffer(encode_preview_jpeg(rgb, None), np.uint8), cv2.IMREAD_COLOR
    )
    assert original.shape == (480, 640, 3)
    assert original[10, 10, 1] > 170  # a rejected photo is shown as it was: green


def decoded_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.mode) == ("PNG", "RGBA")
        return np.asarray(image)


@pytest.mark.parametrize("where", ["middle", "touching-the-edges", "empty"])
def test_full_size_cutout_png_is_encoded_from_the_object_box_alone(where: str) -> None:
    """The box PNG holds exactly make_cutout's pixels, at full size, read back by Pillow and
    OpenCV alike."""
    rgb, probability = red_disc_on_green()
    if where == "touching-the-edges":
        probability = np.roll(probability, (110, 150), axis=(0, 1))
    if where == "empty":
        probability = np.zeros_like(probability)
    alpha = full_resolution_alpha(probability, clean_mask(probability), 600, 800)
    png = encode_cutout_png(rgb, alpha)
    expected = make_cutout(rgb, alpha)
    assert np.array_equal(decoded_png(png), expected)
    by_opencv = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(cv2.cvtColor(by_opencv, cv2.COLOR_BGRA2RGBA), expected)
    assert not expected[alpha == 0].any()  # transparent pixels are zeroed, colour and all


def test_cutout_and_preview_come_from_one_cutout() -> None:
    rgb, probability = red_disc_on_green()
    alpha = full_resolution_alpha(probability, clean_mask(probability), 600, 800)
    png, preview = encode_cutout_and_preview(rgb, alpha)
    assert np.array_equal(decoded_png(png), make_cutout(rgb, alpha))
    alone = cv2.imdecode(np.frombuffer(encode_preview_jpeg(rgb, alpha), np.uint8), cv2.IMREAD_COLOR)
    shown = cv2.imdecode(np.frombuffer(preview, np.uint8), cv2.IMREAD_COLOR)
    assert shown.shape == (480, 640, 3)
    assert np.abs(shown.astype(int) - alone).max() <= 8  # the same picture, JPEG noise apart
    assert bounded(rgb).shape == (480, 640, 3) and bounded(rgb[:100, :100]).shape == (100, 100, 3)


@pytest.mark.parametrize("size", [(960, 1280), (1204, 1600), (1125, 1500), (601, 803), (60, 80)])
def test_preview_drawn_around_the_box_is_the_whole_photos(size: tuple[int, int]) -> None:
    """The preview drawn and shrunk only around the pieces is the very JPEG that drawing the
    cutout on a white photo and shrinking all of it gives."""
    from worker.cutout import _cutout_pixels, _working_box, encode_jpeg

    rng = np.random.default_rng(size[0])
    height, width = size
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    alpha = np.zeros(size, np.uint8)
    top, left = int(rng.integers(0, height * 3 // 4)), int(rng.integers(0, width * 3 // 4))
    alpha[top : top + height // 5, left : left + width // 4] = 255
    alpha[top : top + 3, left : left + width // 3] = 120  # a soft part
    shown = np.full((height, width, 3), 255, np.uint8)
    x0, y0, x1, y1 = box = _working_box(alpha)
    _cutout_pixels(rgb, alpha, box, shown[y0:y1, x0:x1])
    _, preview = encode_cutout_and_preview(rgb, alpha)
    assert preview == encode_jpeg(bounded(shown))


def test_binary_mask_is_0_or_255_and_follows_alpha() -> None:
    alpha = np.array([[0, 127, 128, 255]], np.uint8)
    assert binary_mask(alpha).tolist() == [[0, 0, 255, 255]]


def test_empty_mask_gives_transparent_cutout() -> None:
    alpha = full_resolution_alpha(np.zeros((24, 32), np.float32), np.zeros((24, 32), bool), 60, 80)
    assert not alpha.any()
    rgba = make_cutout(np.full((60, 80, 3), 99, np.uint8), alpha, crop=True)
    assert rgba.shape == (60, 80, 4) and not rgba.any()


def test_compiled_decontamination_matches_the_rule_written_in_numpy() -> None:
    """The compiled passes against the documented rule: a visible pixel blends its own colour
    (OWN_COLOUR by alpha, all of it with no solid pixel near) with the mean colour of the solid
    pixels (alpha >= SOLID_ALPHA) in the box-filtered 2x2 cells around it; transparent: zero."""
    from worker.cutout import OWN_COLOUR, SOLID_ALPHA, _blur_size, cutout_in_box

    rng = np.random.default_rng(7)
    height, width = 61, 83  # odd: the last row and column of cells are half cells
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    alpha = np.zeros((height, width), np.uint8)
    alpha[15:45, 20:60] = 255
    alpha[10:50, 14:66] = np.maximum(alpha[10:50, 14:66], rng.integers(0, 256, (40, 52)))
    alpha[2, 2] = 90  # far from any solid pixel: keeps its own colour
    (x0, y0, x1, y1), rgba = cutout_in_box(rgb, alpha)
    assert (x0, y0) == (0, 0) and (x1, y1) == (70, 54)  # the visible pixels + the blur's reach
    window = (_blur_size(alpha.shape) // 2) | 1
    rgb, alpha = rgb[y0:y1, x0:x1], alpha[y0:y1, x0:x1]
    height, width = alpha.shape

    solid = alpha >= SOLID_ALPHA
    cells = np.zeros((-(-height // 2), -(-width // 2), 4))
    for y, x in zip(*np.nonzero(solid), strict=True):
        cells[y // 2, x // 2] += (1, *rgb[y, x])
    sums = cv2.boxFilter(cells, -1, (window, window), normalize=False)
    expected = np.zeros((height, width, 4), np.uint8)
    for y, x in zip(*np.nonzero(alpha), strict=True):
        count, *colour = sums[y // 2, x // 2]
        own = 255.0 if count == 0 else float(OWN_COLOUR[alpha[y, x]])
        mean = np.asarray(colour) / max(count, 1.0)
        value = (rgb[y, x] * own + mean * (255.0 - own)) / 255.0
        expected[y, x] = (*np.minimum(np.floor(value + 0.5), 255), alpha[y, x])
    assert np.abs(rgba.astype(int) - expected).max() <= 1  # float32 against float64 rounding
    assert np.array_equal(rgba[2, 2, :3], rgb[2, 2])


def test_compiled_passes_still_compile_where_numba_cannot_write_its_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read-only install with no writable home: numba finds no cache location, and the
    passes are compiled in the process instead of the import failing."""
    from numba.core.caching import CacheImpl

    from worker.cutout import _compiled

    def add_one(value: int) -> int:
        return value + 1

    monkeypatch.setattr(CacheImpl, "_locator_classes", [])
    with pytest.raises(RuntimeError, match="no locator"):  # what numba does without a place
        __import__("numba").njit(cache=True)(add_one)
    assert _compiled(add_one)(41) == 42


def test_compile_passes_leaves_nothing_to_compile_for_a_photo() -> None:
    """After compile_passes() (Segmenter.load), no photo's cutout waits for numba: every array
    layout a cutout passes is compiled already."""
    from worker import cutout

    cutout.compile_passes()
    compiled = len(cutout._blend.signatures), len(cutout._solid_cells.signatures)
    rgb, probability = red_disc_on_green()
    for where in ((0, 0), (110, 150)):  # the box inside the photo; touching its edges
        shifted = np.roll(probability, where, axis=(0, 1))
        alpha = full_resolution_alpha(shifted, clean_mask(shifted), 600, 800)
        encode_cutout_and_preview(rgb, alpha)
        make_cutout(rgb, alpha, crop=True)
    assert (len(cutout._blend.signatures), len(cutout._solid_cells.signatures)) == compiled
