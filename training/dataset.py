"""Pre-generated synthetic datasets: `images/NNNNNN.jpg`, `masks/NNNNNN.png` (0/255) and
`manifest.json` (recipe + one record per sample). Writing is torch-free; reading for training
(`SegmentationFolder`) returns numpy arrays that the training loop turns into tensors."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from training.config import SynthConfig
from training.synth import Backgrounds, Compositor, load_cutouts
from training.synth.split import Split

MANIFEST = "manifest.json"


@dataclass
class DataRecipe:
    """How a dataset was made; stored in its manifest and in the model card."""

    count: int
    height: int
    width: int
    seed: int
    background_folders: list[str] = field(default_factory=list)
    cutout_folders: list[str] = field(default_factory=list)
    use_skimage_photos: bool = True
    photo_share: float = 0.45
    object_size: int = 384
    # The side of the train/dev split of the real cutouts and background photos (None: all).
    split: Split | None = None
    cutout_share: float = 0.5  # share of samples made from the cutouts, when there are any
    # synth.listing's styles and the newer procedural kinds; False draws a set defined before
    # them (the held-out sets of seeds 20261126 and 20261127) exactly as it was.
    listing_styles: bool = True
    no_object: bool = False  # backgrounds alone, empty masks: what must never be accepted

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "split": self.split.value if self.split else None}


def preset_recipes(out: Path, synth: SynthConfig, **common: Any) -> dict[Path, DataRecipe]:
    """A preset's three sets: `out`/train, `out`/val and `out`/heldout (its own seed and
    shape); `common`: the DataRecipe fields they share (folders, shares, split, ...)."""
    size = {"object_size": synth.object_size, **common}
    return {
        out / "train": DataRecipe(
            synth.train_count, synth.size, synth.size, synth.train_seed, **size
        ),
        out / "val": DataRecipe(synth.val_count, synth.size, synth.size, synth.val_seed, **size),
        out / "heldout": DataRecipe(
            synth.eval_count, synth.eval_height, synth.eval_width, synth.eval_seed, **size
        ),
    }


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """One generator per sample, so any sample can be remade alone and order does not matter."""
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def make_compositor(recipe: DataRecipe) -> Compositor:
    backgrounds = Backgrounds(
        [Path(p) for p in recipe.background_folders],
        use_skimage=recipe.use_skimage_photos,
        photo_share=recipe.photo_share,
        split=recipe.split,
    )
    cutouts = load_cutouts([Path(p) for p in recipe.cutout_folders], recipe.split)
    return Compositor(
        backgrounds,
        cutouts,
        cutout_share=recipe.cutout_share,
        object_size=recipe.object_size,
        listing_styles=recipe.listing_styles,
    )


def write_dataset(
    out: Path, recipe: DataRecipe, advance: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Generate `recipe.count` samples into `out`; returns the manifest."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    compositor = make_compositor(recipe)
    records = []
    for index in range(recipe.count):
        rng = sample_rng(recipe.seed, index)
        sample = (
            compositor.background_only(rng, recipe.height, recipe.width)
            if recipe.no_object
            else compositor.sample(rng, recipe.height, recipe.width)
        )
        name = f"{index:06d}"
        cv2.imwrite(
            str(out / "images" / f"{name}.jpg"),
            sample.rgb[..., ::-1],
            [cv2.IMWRITE_JPEG_QUALITY, 95],
        )
        cv2.imwrite(str(out / "masks" / f"{name}.png"), sample.mask.astype(np.uint8) * 255)
        records.append({"name": name, **sample.info})
        if advance:
            advance()
    manifest = {
        "recipe": recipe.to_dict(),
        "cutouts_used": len(compositor.cutouts),
        "cutout_files": sorted(p.name for p in compositor.cutouts),
        "photo_backgrounds": len(compositor.backgrounds.photo_files),
        "samples": records,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / MANIFEST).read_text())


def read_sample(folder: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    rgb = cv2.imread(str(folder / "images" / f"{name}.jpg"), cv2.IMREAD_COLOR)[..., ::-1]
    mask = cv2.imread(str(folder / "masks" / f"{name}.png"), cv2.IMREAD_GRAYSCALE) > 127
    return np.ascontiguousarray(rgb), mask


class SegmentationFolder:
    """Samples of a dataset folder as (normalised float32 CHW, float32 HW target).

    With `crop` set, takes random crops (of `crop_scale` x the shorter side, resized to `crop`)
    plus flips (training); without it, whole images (validation). Sometimes blanks a
    bottom/right strip as the inference padding does.
    """

    def __init__(
        self,
        folders: Sequence[Path],
        mean: Sequence[float],
        std: Sequence[float],
        crop: int | None = None,
        seed: int = 0,
        crop_scale: tuple[float, float] = (1.0, 1.0),
    ) -> None:
        self.items = [(f, s["name"]) for f in folders for s in read_manifest(f)["samples"]]
        self.mean = np.asarray(mean, np.float32) * 255
        self.std = np.asarray(std, np.float32) * 255
        self.crop = crop
        self.crop_scale = crop_scale
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        folder, name = self.items[index]
        rgb, mask = read_sample(folder, name)
        image = (rgb.astype(np.float32) - self.mean) / self.std
        target = mask.astype(np.float32)
        if self.crop:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, index]))
            image, target = augment(rng, image, target, self.crop, self.crop_scale)
        return np.ascontiguousarray(image.transpose(2, 0, 1)), np.ascontiguousarray(target)


def augment(
    rng: np.random.Generator,
    image: np.ndarray,
    target: np.ndarray,
    crop: int,
    scale: tuple[float, float] = (1.0, 1.0),
) -> tuple[np.ndarray, np.ndarray]:
    """A random square crop of `scale` x the shorter side, resized to `crop` (shrunk, the target
    is area-averaged, so thin parts keep a soft share; magnified, both are interpolated
    linearly), flips, and sometimes a padding strip."""
    height, width = target.shape
    side = min(max(int(min(height, width) * rng.uniform(*scale)), 8), height, width)
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    image = image[top : top + side, left : left + side]
    target = target[top : top + side, left : left + side]
    if side != crop:
        interpolation = cv2.INTER_AREA if side > crop else cv2.INTER_LINEAR
        image = cv2.resize(image, (crop, crop), interpolation=interpolation)
        target = cv2.resize(target, (crop, crop), interpolation=interpolation)
    if rng.random() < 0.5:
        image, target = image[:, ::-1], target[:, ::-1]
    if rng.random() < 0.5:
        image, target = image[::-1], target[::-1]
    if rng.random() < 0.2:  # the zero padding a non-square photo gets at inference
        image, target = image.copy(), target.copy()
        strip = int(crop * rng.uniform(0.1, 0.3))
        if rng.random() < 0.5:
            image[-strip:], target[-strip:] = 0, 0
        else:
            image[:, -strip:], target[:, -strip:] = 0, 0
    return image, target
