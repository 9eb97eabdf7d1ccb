"""The train/dev split of real files: deterministic, disjoint, and closed over near-duplicates."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from training.synth import Backgrounds, load_cutouts
from training.synth.split import Split, assign_splits, hashed_side, picture_hash


def names_on(side: Split, count: int, prefix: str) -> list[str]:
    """File stems that hash to `side`."""
    found, index = [], 0
    while len(found) < count:
        name = f"{prefix}{index}"
        if hashed_side(name) is side:
            found.append(name)
        index += 1
    return found


def cutout(seed: int, side: int = 96) -> np.ndarray:
    """A distinct RGBA blob: a textured disc with a transparent surround."""
    rng = np.random.default_rng(seed)
    rgb = cv2.resize(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8), (side, side))
    alpha = np.zeros((side, side), np.uint8)
    cv2.circle(alpha, (side // 2, side // 2), side // 3, 255, -1)
    return np.dstack([rgb, alpha])


def write_objects(folder: Path, stems: list[str], first_seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for offset, stem in enumerate(stems):
        path = folder / f"{stem}.png"
        cv2.imwrite(str(path), cutout(first_seed + offset))
        paths.append(path)
    return paths


def test_the_side_of_a_name_is_fixed_and_about_the_dev_share() -> None:
    names = [f"object-{i}" for i in range(2000)]
    sides = [hashed_side(n) for n in names]
    assert sides == [hashed_side(n) for n in names]
    share = sides.count(Split.dev) / len(sides)
    assert 0.15 <= share <= 0.21, share


def test_train_and_dev_cutouts_are_disjoint_and_cover_the_folder(tmp_path: Path) -> None:
    write_objects(tmp_path, [f"piece-{i}" for i in range(40)])
    train = set(load_cutouts([tmp_path], Split.train))
    dev = set(load_cutouts([tmp_path], Split.dev))
    assert train and dev and not train & dev
    assert train | dev == set(load_cutouts([tmp_path]))
    copy = tmp_path.parent / "copy"
    copy.mkdir()
    for path in tmp_path.iterdir():  # the same files elsewhere split the same way
        (copy / path.name).write_bytes(path.read_bytes())
    assert {p.name for p in load_cutouts([copy], Split.dev)} == {p.name for p in dev}


def test_a_near_duplicate_of_a_dev_object_never_reaches_training(tmp_path: Path) -> None:
    (dev_stem,) = names_on(Split.dev, 1, "dev-")
    train_stems = names_on(Split.train, 6, "train-")
    original, *_ = write_objects(tmp_path / "shop-a", [dev_stem])
    others = write_objects(tmp_path / "shop-b", train_stems[1:], first_seed=100)
    # The same product re-published by another shop: rescaled, recompressed, a little brighter.
    image = cv2.imread(str(original), cv2.IMREAD_UNCHANGED)
    image = cv2.resize(image, (120, 120))
    image[..., :3] = np.clip(image[..., :3].astype(int) + 6, 0, 255).astype(np.uint8)
    duplicate = tmp_path / "shop-b" / f"{train_stems[0]}.png"
    cv2.imwrite(str(duplicate), image)
    assert (picture_hash(original) ^ picture_hash(duplicate)).bit_count() <= 6
    folders = [tmp_path / "shop-a", tmp_path / "shop-b"]
    train = load_cutouts(folders, Split.train)
    assert duplicate not in train and original not in train
    assert set(load_cutouts(folders, Split.dev)) == {original, duplicate}
    assert set(train) == set(others)


def test_background_photos_split_the_same_way(tmp_path: Path) -> None:
    for i in range(30):
        rng = np.random.default_rng(i)
        photo = cv2.resize(rng.integers(0, 255, (5, 5, 3), dtype=np.uint8), (64, 48))
        cv2.imwrite(str(tmp_path / f"photo-{i}.jpg"), photo)
    train = set(Backgrounds([tmp_path], use_skimage=False, split=Split.train).photo_files)
    dev = set(Backgrounds([tmp_path], use_skimage=False, split=Split.dev).photo_files)
    assert train and dev and not train & dev and len(train | dev) == 30
    sides = assign_splits(sorted(tmp_path.iterdir()))
    assert dev == {p for p, side in sides.items() if side is Split.dev}
