"""The procedural generator and composites: shapes, holes, masks from alpha, determinism."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.synth import (
    OBJECT_KINDS,
    STYLES,
    Backgrounds,
    Compositor,
    has_real_alpha,
    listing_photo,
    load_cutouts,
    render_object,
)


class FlatBackground(Backgrounds):
    """One plain colour, so what shows through a hole can be told apart from the object."""

    def __init__(self, colour: tuple[float, float, float]) -> None:
        super().__init__(use_skimage=False)
        self.colour = np.asarray(colour, np.float32)

    def draw(
        self, rng: np.random.Generator, height: int, width: int, style: str | None = None
    ) -> tuple[np.ndarray, str]:
        return np.broadcast_to(self.colour, (height, width, 3)).copy(), "flat"


def enclosed_background(mask: np.ndarray) -> np.ndarray:
    """Pixels outside the mask that cannot reach the image border: holes."""
    count, labels = cv2.connectedComponents((~mask).astype(np.uint8), connectivity=4)
    border = set(labels[0]) | set(labels[-1]) | set(labels[:, 0]) | set(labels[:, -1])
    holes = [label for label in range(1, count) if label not in border]
    return np.isin(labels, holes)


@pytest.mark.parametrize("kind", OBJECT_KINDS)
def test_every_kind_renders_an_rgba_object_with_real_transparency(kind: str) -> None:
    rgba = render_object(np.random.default_rng(3), kind, size=160)
    assert rgba.dtype == np.uint8 and rgba.shape[2] == 4
    alpha = rgba[..., 3]
    assert (alpha == 255).sum() > 20, "the object has an opaque body"
    assert (alpha == 0).any() or kind == "gemstone"
    assert ((alpha > 0) & (alpha < 255)).sum() > 0, "edges are anti-aliased"


def test_ring_hole_is_transparent_in_the_object() -> None:
    for seed in range(5):
        rgba = render_object(np.random.default_rng(seed), "ring", size=192)
        assert enclosed_background(rgba[..., 3] > 127).sum() > 50, f"seed {seed}: no hole"


def test_ring_hole_shows_the_background_in_the_composite() -> None:
    compositor = Compositor(FlatBackground((0.1, 0.3, 0.9)), object_size=192, degrade=False)
    checked = 0
    for seed in range(8):
        sample = compositor.sample(np.random.default_rng(seed), 256, 256, kind="ring")
        hole = enclosed_background(sample.mask)
        hole = cv2.erode(hole.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        if hole.sum() < 30:  # a tiny or edge-cut ring: nothing to check
            continue
        checked += 1
        hole_colour = sample.rgb[hole].mean(axis=0)
        assert np.abs(hole_colour - np.array([25, 76, 230])).max() < 60, hole_colour
        assert not sample.mask[hole].any()
    assert checked >= 4


def test_mask_is_the_alpha_that_was_composited() -> None:
    """Over black and over white with the same seed: 1 - (white - black) recovers the alpha."""
    images = {}
    for name, colour in (("black", (0.0, 0.0, 0.0)), ("white", (1.0, 1.0, 1.0))):
        compositor = Compositor(
            FlatBackground(colour), object_size=192, shadow_share=0, degrade=False
        )
        images[name] = compositor.sample(np.random.default_rng(11), 200, 240, kind="pendant")
    black, white = images["black"], images["white"]
    assert np.array_equal(black.mask, black.alpha > 0.5)
    recovered = 1 - (white.rgb.astype(np.float32) - black.rgb).mean(axis=2) / 255
    agreement = ((recovered > 0.5) == black.mask).mean()
    assert agreement > 0.995, agreement
    assert black.mask.any()


def test_listing_photo_is_deterministic_and_shaped() -> None:
    first = listing_photo(np.random.default_rng(5), 320, 240)
    again = listing_photo(np.random.default_rng(5), 320, 240)
    other = listing_photo(np.random.default_rng(6), 320, 240)
    rgb, mask = first
    assert rgb.shape == (240, 320, 3) and rgb.dtype == np.uint8
    assert mask.shape == (240, 320) and mask.dtype == bool
    assert np.array_equal(rgb, again[0]) and np.array_equal(mask, again[1])
    assert not np.array_equal(rgb, other[0])


def test_most_pieces_cover_a_listing_share_of_the_frame() -> None:
    backgrounds = Backgrounds(use_skimage=False)
    areas = [
        listing_photo(np.random.default_rng(s), 160, 160, backgrounds)[1].mean() for s in range(40)
    ]
    in_range = np.mean([(0.02 <= a <= 0.65) for a in areas])
    assert in_range >= 0.7, sorted(areas)
    assert min(areas) > 0


def test_cutout_folders_keep_only_files_whose_alpha_is_used(tmp_path: Path) -> None:
    opaque = np.full((40, 40, 4), 255, np.uint8)
    cutout = opaque.copy()
    cutout[:, :20, 3] = 0
    cv2.imwrite(str(tmp_path / "opaque.png"), opaque)
    cv2.imwrite(str(tmp_path / "cutout.png"), cutout)
    assert not has_real_alpha(opaque) and has_real_alpha(cutout)
    assert [p.name for p in load_cutouts([tmp_path])] == ["cutout.png"]
    compositor = Compositor(
        Backgrounds(use_skimage=False), load_cutouts([tmp_path]), cutout_share=1.0
    )
    sample = compositor.sample(np.random.default_rng(0), 128, 128)
    assert sample.info["kind"] == "cutout" and sample.mask.any()


def test_photo_backgrounds_come_from_the_folders_given(tmp_path: Path) -> None:
    photo = np.zeros((100, 150, 3), np.uint8)
    photo[..., 1] = 200  # green
    cv2.imwrite(str(tmp_path / "green.jpg"), photo)
    backgrounds = Backgrounds([tmp_path], use_skimage=False, photo_share=1.0)
    image, kind = backgrounds.draw(np.random.default_rng(0), 64, 80)
    assert kind == "photo" and image.shape == (64, 80, 3)
    assert image[..., 1].mean() > 0.7 and image[..., 0].mean() < 0.1


def test_synth_is_importable_without_torch() -> None:
    code = "import sys, training.synth; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("style", STYLES)
def test_every_listing_style_gives_a_mask_that_matches_its_alpha(style: str) -> None:
    """The same seed over black and over white: what changes is what shows through, so the
    mask must be the object's alpha > 0.5, and never cover a finger in front of it."""
    images = {}
    for name, colour in (("black", (0.0, 0.0, 0.0)), ("white", (1.0, 1.0, 1.0))):
        compositor = Compositor(
            FlatBackground(colour), object_size=160, shadow_share=0, degrade=False
        )
        images[name] = [
            compositor.sample(np.random.default_rng(seed), 180, 240, style=style)
            for seed in range(3)
        ]
    for black, white in zip(images["black"], images["white"], strict=True):
        assert style in black.info["styles"]
        assert np.array_equal(black.mask, black.alpha > 0.5) and black.mask.any()
        # (the phone's light scales what shows through: judge clear pixels, not the outline)
        covered = 1 - (white.rgb.astype(np.float32) - black.rgb).mean(axis=2) / 255
        solid, clear = black.alpha >= 0.8, black.alpha <= 0.1
        assert (covered[solid] > 0.5).mean() > 0.995, "an opaque piece pixel shows the background"
        if style != "fingers":
            assert (covered[clear] < 0.5).mean() > 0.995, "the background is taken for the piece"
        else:  # the fingers cover the background too, and are not the piece
            assert (black.alpha <= covered + 0.02).all()


def test_fingers_hide_part_of_the_piece_from_the_mask() -> None:
    compositor = Compositor(FlatBackground((0.2, 0.5, 0.8)), object_size=160, degrade=False)
    hidden = []
    for seed in range(6):
        sample = compositor.sample(np.random.default_rng(seed), 180, 240, style="fingers")
        layer, *_ = compositor.pieces(np.random.default_rng(seed), 180, 240, None, set())
        hidden.append(sample.mask.sum() < (layer[..., 3] > 0.5).sum())
    assert any(hidden)


def test_an_unknown_style_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown style"):
        Compositor().sample(np.random.default_rng(0), 64, 64, style="sepia")


def test_sets_drawn_without_listing_styles_keep_the_old_kinds() -> None:
    compositor = Compositor(FlatBackground((0.5, 0.5, 0.5)), listing_styles=False)
    kinds = {compositor.sample(np.random.default_rng(s), 96, 96).info["kind"] for s in range(40)}
    assert kinds <= set(OBJECT_KINDS[:6])
    assert all(
        compositor.sample(np.random.default_rng(s), 96, 96).info["styles"] == [] for s in range(5)
    )


def test_background_only_samples_have_empty_masks() -> None:
    compositor = Compositor(Backgrounds(use_skimage=False))
    for seed in range(4):
        sample = compositor.background_only(np.random.default_rng(seed), 120, 160)
        assert sample.rgb.shape == (120, 160, 3) and not sample.mask.any()
        assert sample.info["kind"] == "none"


def test_cutout_kinds_come_from_the_folders_manifest(tmp_path: Path) -> None:
    cutout = np.zeros((40, 40, 4), np.uint8)
    cutout[10:30, 10:30] = 255
    for name in ("ring-a.png", "drop-b.png", "unlisted.png"):
        cv2.imwrite(str(tmp_path / name), cutout)
    (tmp_path / "MANIFEST.tsv").write_text(
        "file\trepo\tkind\nsub/ring-a.jpg\tx/y\tring\ndrop-b.png\tx/y\tearring\n"
    )
    compositor = Compositor(Backgrounds(use_skimage=False), load_cutouts([tmp_path]))
    assert {p.name: k for p, k in compositor.cutout_kinds.items()} == {
        "drop-b.png": "earring",
        "ring-a.png": "ring",
        "unlisted.png": "cutout",
    }
