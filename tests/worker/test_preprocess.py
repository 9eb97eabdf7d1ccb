"""Resize keeping the aspect, pad to a bucket (a multiple of 32) with the mean colour, crop back;
the normalisation the network applies to those pixels."""

from __future__ import annotations

import numpy as np
import pytest

from jewelcut.modelcard import IMAGENET_MEAN, IMAGENET_STD
from worker.preprocess import (
    SHORT_SIDE_BUCKETS,
    Preprocessor,
    crop_to_image,
    network_size,
    normalisation,
)


@pytest.mark.parametrize(
    ("photo", "expected", "padded"),
    [
        ((600, 800), (240, 320), (256, 320)),
        ((800, 600), (320, 240), (320, 256)),
        ((1000, 1000), (320, 320), (320, 320)),
        ((100, 50), (320, 160), (320, 160)),  # small photos are scaled up
        ((40, 4000), (3, 320), (160, 320)),  # padded to the smallest bucket: few shapes
    ],
)
def test_long_side_becomes_input_size_and_pads_to_a_bucket(
    photo: tuple[int, int], expected: tuple[int, int], padded: tuple[int, int]
) -> None:
    assert network_size(*photo, 320) == expected
    prepared = Preprocessor(320, IMAGENET_MEAN)(np.zeros((*photo, 3), np.uint8))
    assert (prepared.height, prepared.width) == expected
    assert prepared.tensor.shape == (3, *padded)
    assert prepared.tensor.dtype == np.uint8, "pixels: the network normalises them itself"


def test_normalisation_uses_the_cards_mean_and_std() -> None:
    scale, offset = normalisation((0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    pixels = np.array([255, 128, 0], np.float32)
    expected = [(1.0 - 0.5) / 0.25, (128 / 255 - 0.5) / 0.5, (0.0 - 0.5) / 1.0]
    assert np.allclose(pixels * scale + offset, expected, atol=1e-6)


def test_pixels_are_kept_and_padding_is_the_mean_colour_cropped_back() -> None:
    rgb = np.full((600, 800, 3), (200, 30, 90), np.uint8)
    prepared = Preprocessor(320, IMAGENET_MEAN)(rgb)
    assert (prepared.tensor[:, :240, :] == np.array([200, 30, 90])[:, None, None]).all()
    padding = prepared.tensor[:, 240:, :].reshape(3, -1)
    scale, offset = normalisation(IMAGENET_MEAN, IMAGENET_STD)
    normalised_padding = padding * scale[:, None] + offset[:, None]
    assert np.abs(normalised_padding).max() < 0.01, "the mean colour: ~0 once normalised"
    output = np.zeros(prepared.padded_shape, np.float32)
    output[:240, :320] = 1.0
    cropped = crop_to_image(output, prepared)
    assert cropped.shape == (240, 320)
    assert cropped.min() == 1.0


def test_input_size_must_be_a_multiple_of_32() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        Preprocessor(300, IMAGENET_MEAN)


def test_few_input_shapes_per_input_size() -> None:
    shapes = {
        Preprocessor(480, IMAGENET_MEAN)(np.zeros((h, w, 3), np.uint8)).padded_shape
        for h in range(40, 1000, 7)
        for w in (480, 640)
    }
    assert len(shapes) <= 2 * len(SHORT_SIDE_BUCKETS)
    assert all(height % 32 == 0 and width % 32 == 0 for height, width in shapes)


@pytest.mark.parametrize("width", [640, 1280, 1920, 4000])  # 3/4 of the input size, down to 1/8
def test_a_one_pixel_chain_survives_any_shrink(width: int) -> None:
    """A bright vertical line one pixel wide, at every phase against the output grid: it never
    vanishes between samples (bilinear down to half size, area averaging further down)."""
    preprocess = Preprocessor(480, IMAGENET_MEAN)
    height = width * 3 // 4
    photo = np.zeros((height, width, 3), np.uint8)
    columns = range(7, width - 7, max(3, width // 40))  # lines at many phases, far apart
    photo[:, list(columns)] = 255
    prepared = preprocess(photo)
    row = prepared.tensor[0, prepared.height // 2, : prepared.width].astype(int)
    scale = prepared.width / width
    for column in columns:
        near = round(column * scale)
        seen = row[max(0, near - 1) : near + 2]
        # Averaged, a line keeps `scale` of its brightness; a sample between lines, none.
        assert seen.max() >= 0.4 * 255 * scale, (column, seen)
