"""Cleanup on drawn shapes: specks and stray thin lines go, a thin chain on a pendant stays."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from worker.cleanup import clean_mask

HEIGHT, WIDTH = 240, 320  # a 4:3 photo at the network's resolution


def canvas() -> np.ndarray:
    return np.zeros((HEIGHT, WIDTH), np.uint8)


def pendant_on_chain(chain_width: int) -> np.ndarray:
    """A disc pendant hanging from a V-shaped chain `chain_width` pixels wide."""
    shape = canvas()
    cv2.circle(shape, (160, 170), 28, 1, -1)
    cv2.line(shape, (60, 10), (160, 142), 1, chain_width)
    cv2.line(shape, (260, 10), (160, 142), 1, chain_width)
    return shape.astype(bool)


def as_probability(mask: np.ndarray) -> np.ndarray:
    return np.where(mask, 0.95, 0.02).astype(np.float32)


@pytest.mark.parametrize("chain_width", [1, 2, 3])
def test_thin_chain_attached_to_pendant_is_kept(chain_width: int) -> None:
    drawn = pendant_on_chain(chain_width)
    cleaned = clean_mask(as_probability(drawn))
    assert np.array_equal(cleaned, drawn)


def test_chain_that_fades_between_links_stays_attached() -> None:
    """At network resolution a fine chain's links blur to p < 0.5 between brighter bits; the
    bits must not be dropped as specks, and the faint gaps must not enter the mask."""
    drawn = pendant_on_chain(1)
    probability = as_probability(drawn)
    chain = drawn.copy()
    chain[110:, :] = False  # the pendant and the chain's last stretch stay solid
    ys, xs = np.nonzero(chain)
    faint = (xs // 6) % 2 == 0  # every other 6-pixel stretch of chain is faint
    probability[ys[faint], xs[faint]] = 0.3
    cleaned = clean_mask(probability)
    assert np.array_equal(cleaned, probability >= 0.5)
    bright_bits = cleaned[:110].sum()
    assert bright_bits > 50  # the fragments are there


def test_isolated_specks_are_removed() -> None:
    drawn = pendant_on_chain(2)
    noisy = drawn.copy()
    specks = [(20, 200), (300, 220), (290, 60), (40, 120)]
    for x, y in specks:
        noisy[y : y + 3, x : x + 3] = True
    cleaned = clean_mask(as_probability(noisy))
    assert np.array_equal(cleaned, drawn)


def test_stray_thin_line_is_removed() -> None:
    drawn = pendant_on_chain(2)
    noisy = drawn.copy().astype(np.uint8)
    cv2.line(noisy, (5, 230), (120, 230), 1, 1)  # e.g. a table edge, not touching the piece
    cleaned = clean_mask(as_probability(noisy.astype(bool)))
    assert np.array_equal(cleaned, drawn)


def test_long_chain_without_pendant_is_kept() -> None:
    drawn = canvas()
    points = np.array([[20, 40], [100, 200], [200, 30], [300, 210]], np.int32)
    cv2.polylines(drawn, [points], False, 1, 2)
    cleaned = clean_mask(as_probability(drawn.astype(bool)))
    assert np.array_equal(cleaned, drawn.astype(bool))


def test_ring_hole_stays_open_and_pinholes_are_filled() -> None:
    ring = canvas()
    cv2.circle(ring, (160, 120), 70, 1, 14)
    cv2.circle(ring, (60, 60), 20, 1, -1)
    ring[58:60, 58:60] = 0  # a 4-pixel pinhole in the disc: noise
    cleaned = clean_mask(as_probability(ring.astype(bool)))
    assert not cleaned[120, 160]  # the ring's hole still shows the background
    assert cleaned[58:60, 58:60].all()
    filled = cleaned & ~ring.astype(bool)
    assert not (ring.astype(bool) & ~cleaned).any()  # nothing of the ring was removed
    assert 4 <= filled.sum() <= 8  # the pinhole, and at most a drawing gap inside the band


def test_threshold_is_at_one_half() -> None:
    probability = np.zeros((HEIGHT, WIDTH), np.float32)
    probability[50:150, 50:150] = 0.5
    probability[50:150, 150:250] = 0.4999
    cleaned = clean_mask(probability)
    assert cleaned[50:150, 50:150].all()
    assert not cleaned[:, 150:].any()


def test_sizes_are_relative_to_the_image() -> None:
    """The same drawing at twice the resolution cleans the same way."""
    drawn = pendant_on_chain(2)
    noisy = drawn.copy()
    noisy[200:203, 20:23] = True
    big = cv2.resize(noisy.astype(np.uint8), (WIDTH * 2, HEIGHT * 2), cv2.INTER_NEAREST)
    cleaned_big = clean_mask(as_probability(big.astype(bool)))
    expected = cv2.resize(drawn.astype(np.uint8), (WIDTH * 2, HEIGHT * 2), cv2.INTER_NEAREST)
    assert np.array_equal(cleaned_big, expected.astype(bool))


def test_empty_probability_gives_empty_mask() -> None:
    assert not clean_mask(np.zeros((HEIGHT, WIDTH), np.float32)).any()


def whole_image_cleanup(probability: np.ndarray) -> np.ndarray:
    """The cleanup's definition computed over the whole image, with nothing skipped: what
    clean_mask computes within the pieces' box."""
    from worker.cleanup import DEFAULT_CLEANUP as params
    from worker.cleanup import opening_kernel

    binary = (probability >= params.threshold).astype(np.uint8)
    linked = (probability >= params.link_threshold).astype(np.uint8)
    size = 2 * max(1, round(params.link_gap * min(binary.shape) / 2)) + 1
    linked = cv2.dilate(linked, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    count, labels = cv2.connectedComponents(linked, connectivity=8)
    opened = cv2.morphologyEx(binary, cv2.MORPH_OPEN, opening_kernel(binary.shape))
    areas = np.bincount(labels[binary > 0], minlength=count)
    cores = np.bincount(labels[opened > 0], minlength=count)
    keep = (cores >= max(1, params.min_core_area * binary.size)) | (
        areas >= params.keep_large_area * binary.size
    )
    keep[0] = False
    kept = keep[labels] & (binary > 0)
    _, background, stats, _ = cv2.connectedComponentsWithStats((~kept).view(np.uint8), 4)
    border = np.unique(
        np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
    )
    small = stats[:, cv2.CC_STAT_AREA] <= int(params.max_hole_area * binary.size)
    small[border] = False
    return kept | (small[background] & ~kept)


@pytest.mark.parametrize("seed", range(12))
def test_cleanup_in_the_pieces_box_matches_the_whole_image(seed: int) -> None:
    """Pieces with holes, specks and faint links, anywhere (at the frame's edges too): the
    mask cleaned within their box is the one cleaned over the whole image."""
    rng = np.random.default_rng(seed)
    drawn = canvas().astype(np.float32)
    for _ in range(rng.integers(1, 5)):
        centre = (int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT)))
        cv2.circle(drawn, centre, int(rng.integers(3, 40)), float(rng.uniform(0.3, 1.0)), -1)
        cv2.circle(drawn, centre, int(rng.integers(0, 4)), 0.0, -1)  # a small hole, or none
    drawn += (rng.random(drawn.shape) > 0.995) * 0.9  # specks
    probability = cv2.GaussianBlur(np.clip(drawn, 0, 1), (5, 5), 1.0).astype(np.float32)
    assert np.array_equal(clean_mask(probability), whole_image_cleanup(probability))
