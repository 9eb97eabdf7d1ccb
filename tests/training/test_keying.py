"""Product photos on white into cutouts: the key finds the piece, not its shadow; keeps a ring's
hole; drops what it cannot trust; and the folder command splits what it keeps by object."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.dataset import SegmentationFolder, read_manifest
from training.evaluate import iou
from training.products import key_folders
from training.synth import Compositor, load_cutouts
from training.synth.backgrounds import Backgrounds
from training.synth.keying import key_product
from training.synth.split import Split


class Studio(Backgrounds):
    """A white sweep, a little graded, as product photos are shot on."""

    def __init__(self, noise: float = 0.0) -> None:
        super().__init__(use_skimage=False)
        self.noise = noise

    def draw(
        self, rng: np.random.Generator, height: int, width: int, style: str | None = None
    ) -> tuple[np.ndarray, str]:
        grade = np.linspace(1.0, 0.93, height, dtype=np.float32)[:, None, None]
        sweep = np.broadcast_to(grade, (height, width, 3)).copy()
        if self.noise:
            blotches = rng.normal(0, self.noise, (height // 8, width // 8, 3)).astype(np.float32)
            sweep += cv2.resize(blotches, (width, height), interpolation=cv2.INTER_LINEAR)
        return np.clip(sweep, 0, 1), "studio"


def product_photo(seed: int, kind: str, noise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(BGR photo, true mask): a procedural piece inside the frame on a white sweep, with the
    soft shadow of a product shot's diffuse light."""
    rng = np.random.default_rng(seed)
    compositor = Compositor(Studio(noise), shadow_share=0.0, degrade=False, listing_styles=False)
    layer = None
    while layer is None or not 0.03 < layer[..., 3].mean() < 0.4 or touches_edge(layer):
        layer, *_ = compositor.pieces(rng, 360, 480, kind, set())
    alpha = layer[..., 3:]
    sweep, _ = compositor.backgrounds.draw(rng, 360, 480)
    shadow = cv2.GaussianBlur(np.roll(alpha[..., 0], 6, axis=0), (0, 0), 8)
    photo = layer[..., :3] + sweep * (1 - 0.3 * shadow[..., None]) * (1 - alpha)
    rgb = (np.clip(photo, 0, 1) * 255 + 0.5).astype(np.uint8)
    return rgb[..., ::-1].copy(), alpha[..., 0] > 0.5


def touches_edge(layer: np.ndarray) -> bool:
    alpha = layer[..., 3]
    return bool(max(alpha[0].max(), alpha[-1].max(), alpha[:, 0].max(), alpha[:, -1].max()) > 0)


@pytest.mark.parametrize("kind", ["ring", "pendant", "earrings", "bracelet", "chain"])
def test_what_passes_the_checks_is_the_piece_without_its_shadow(kind: str) -> None:
    kept = []
    for seed in range(4):
        photo, truth = product_photo(seed, kind)
        keyed = key_product(photo)
        assert keyed.rgba.shape[:2] == truth.shape and keyed.photo.shape == photo.shape
        if not keyed.doubtful:
            kept.append(iou(keyed.mask, truth))
            assert keyed.mask.sum() < 1.3 * truth.sum(), "the shadow was keyed as the piece"
    assert len(kept) >= 2, "most clean product shots should pass"
    assert min(kept) > 0.65 and np.mean(kept) > 0.8, kept


def test_a_ring_keeps_its_hole() -> None:
    kept = 0
    for seed in range(4):
        photo, truth = product_photo(seed, "ring")
        count, labels = cv2.connectedComponents((~truth).astype(np.uint8), connectivity=4)
        border = set(labels[0]) | set(labels[-1]) | set(labels[:, 0]) | set(labels[:, -1])
        holes = np.isin(labels, [lab for lab in range(1, count) if lab not in border])
        holes = cv2.erode(holes.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        if holes.sum() < 200:
            continue
        kept += 1
        assert not key_product(photo).mask[holes].mean() > 0.05, "the ring's hole was filled"
    assert kept >= 2


def test_a_blotchy_background_is_judged_doubtful() -> None:
    photo, _ = product_photo(1, "pendant", noise=0.08)
    keyed = key_product(photo)
    assert keyed.doubtful, keyed.checks


def test_key_folders_keeps_trusted_cutouts_and_splits_them_by_object(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(14):
        photo, _ = product_photo(seed, ["ring", "pendant", "earrings"][seed % 3])
        cv2.imwrite(str(photos / f"product-{seed}.jpg"), photo, [cv2.IMWRITE_JPEG_QUALITY, 95])
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    noisy, _ = product_photo(99, "ring", noise=0.08)
    cv2.imwrite(str(photos / "noisy.jpg"), noisy)
    out = tmp_path / "keyed"
    summary = key_folders([photos], [], out)
    assert summary.photos == 16 and summary.unreadable == 1
    assert 10 <= summary.kept <= 14
    records = [json.loads(line) for line in (out / "keying.jsonl").read_text().splitlines()]
    assert len(records) == 16
    assert next(r for r in records if r["file"].endswith("noisy.jpg"))["kept"] is False
    cutouts = sorted((out / "cutouts").glob("*.png"))
    assert len(cutouts) == summary.kept and (out / "kept.png").exists()
    kinds = (out / "cutouts" / "MANIFEST.tsv").read_text().splitlines()
    assert kinds[0].startswith("file\tkind") and len(kinds) == summary.kept + 1
    # as-is photos: each kept photo once, on the side the cutout split gives it
    sides = {
        side: {s["name"] for s in read_manifest(out / "as-is" / side.value)["samples"]}
        for side in Split
    }
    assert not sides[Split.train] & sides[Split.dev]
    assert sides[Split.train] | sides[Split.dev] == {p.stem for p in cutouts}
    for side in Split:
        assert {p.stem for p in load_cutouts([out / "cutouts"], side)} == sides[side]
    if sides[Split.train]:
        dataset = SegmentationFolder([out / "as-is" / "train"], (0.5,) * 3, (0.25,) * 3)
        image, target = dataset[0]
        assert image.shape[0] == 3 and target.any()
