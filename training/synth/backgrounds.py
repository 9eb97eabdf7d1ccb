"""Backgrounds for composites: blurred colour fields, blurred abstract shapes, cloth-like folds,
photos from folders the caller names (hands, rooms, surfaces) and scikit-image's bundled photos.
Nothing here reads a folder on its own: photo folders are always passed in."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from training.synth import listing
from training.synth.split import Split, select

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
# Photos and textures that ship inside scikit-image's wheel (no download needed).
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "brick", "grass", "gravel", "camera")
PHOTO_MAX_SIDE = 640
LISTING_BACKGROUNDS = {"velvet": listing.velvet, "satin": listing.satin, "studio": listing.studio}


def random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 1, 3).astype(np.float32)


def colour_field(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A few random colours on a coarse grid, upsampled and blurred: a smooth colour field."""
    cells = int(rng.integers(2, 5))
    grid = rng.uniform(0, 1, (cells, cells, 3)).astype(np.float32)
    if rng.random() < 0.5:  # mostly pale, like a studio backdrop
        grid = 0.55 + 0.45 * grid
    field = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    sigma = max(height, width) * rng.uniform(0.02, 0.1)
    return np.clip(cv2.GaussianBlur(field, (0, 0), sigma), 0, 1)


def abstract_shapes(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Random circles, boxes, polygons and lines in various colours, then blurred."""
    image = colour_field(rng, height, width)
    for _ in range(int(rng.integers(3, 14))):
        colour = tuple(float(c) for c in random_colour(rng))
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        extent = int(max(height, width) * rng.uniform(0.05, 0.4))
        shape = rng.integers(4)
        if shape == 0:
            cv2.circle(image, centre, extent, colour, -1, cv2.LINE_AA)
        elif shape == 1:
            corner = (centre[0] + extent, centre[1] + int(extent * rng.uniform(0.3, 1.5)))
            cv2.rectangle(image, centre, corner, colour, -1)
        elif shape == 2:
            points = rng.normal(0, extent / 2, (int(rng.integers(3, 7)), 2)) + centre
            cv2.fillPoly(image, [points.astype(np.int32)], colour, cv2.LINE_AA)
        else:
            end = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.line(image, centre, end, colour, int(rng.integers(2, 12)), cv2.LINE_AA)
    sigma = rng.uniform(1.0, 8.0)
    return np.clip(cv2.GaussianBlur(image, (0, 0), sigma), 0, 1)


def cloth(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Soft folds of a fabric or a wood-like grain: sums of slanted sine waves over one colour."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32) / max(height, width)
    waves = np.zeros_like(x)
    for _ in range(3):
        angle = rng.uniform(0, np.pi)
        frequency = rng.uniform(2, 18)
        waves += np.sin(
            (x * np.cos(angle) + y * np.sin(angle)) * frequency * 2 * np.pi + rng.uniform(0, 6)
        )
    shade = 0.75 + 0.08 * waves
    return np.clip(random_colour(rng) * 0.7 + 0.25, 0, 1) * shade[..., None]


def load_photo(path: Path) -> np.ndarray | None:
    """An RGB float photo no larger than PHOTO_MAX_SIDE, or None when it cannot be read."""
    data = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if data is None:
        return None
    return shrink(cv2.cvtColor(data, cv2.COLOR_BGR2RGB))


def shrink(image: np.ndarray, side: int = PHOTO_MAX_SIDE) -> np.ndarray:
    """`image` (any channels) area-averaged down so its longest side is at most `side`."""
    scale = side / max(image.shape[:2])
    if scale >= 1:
        return image
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def skimage_photos() -> list[np.ndarray]:
    """scikit-image's bundled public-domain photos (empty if scikit-image is absent)."""
    try:
        from skimage import data
    except ImportError:
        return []
    photos = []
    for name in SKIMAGE_PHOTOS:
        try:
            image = getattr(data, name)()
        except Exception:  # some builds fetch a few images on demand; skip what is missing
            continue
        if image.ndim == 2:
            image = np.dstack([image] * 3)
        photos.append(shrink(image[..., :3].astype(np.uint8)))
    return photos


def list_photos(folders: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for folder in folders:
        files.extend(
            p for p in sorted(Path(folder).rglob("*")) if p.suffix.lower() in PHOTO_SUFFIXES
        )
    return files


class Backgrounds:
    """Draws a background of a given size. Photos are read lazily and kept in memory.

    `photo_folders`: folders of photos (hands, rooms, surfaces) the caller names;
    `photo_share`: the share of backgrounds that are photos when any are available;
    `split`: only the folder photos on that side of the train/dev split.
    """

    def __init__(
        self,
        photo_folders: Sequence[Path] = (),
        use_skimage: bool = True,
        photo_share: float = 0.45,
        split: Split | None = None,
    ) -> None:
        self.photo_files = select(list_photos(photo_folders), split)
        self._cache: dict[Path, np.ndarray | None] = {}
        self._bundled = skimage_photos() if use_skimage else []
        self.photo_share = photo_share

    @property
    def has_photos(self) -> bool:
        return bool(self.photo_files or self._bundled)

    def draw(
        self, rng: np.random.Generator, height: int, width: int, style: str | None = None
    ) -> tuple[np.ndarray, str]:
        """A float RGB background in 0..1 and the name of its kind; `style` asks for one of
        listing.BACKGROUND_STYLES (a card lies on a background drawn as usual)."""
        if style == "card":
            under, _ = self.draw(rng, height, width)
            return listing.card(rng, height, width, under), style
        if style is not None:
            return LISTING_BACKGROUNDS[style](rng, height, width), style
        if self.has_photos and rng.random() < self.photo_share:
            photo = self._pick_photo(rng)
            if photo is not None:
                return random_crop(rng, photo, height, width), "photo"
        kind = rng.choice(["colour", "shapes", "cloth"], p=[0.4, 0.45, 0.15])
        draw = {"colour": colour_field, "shapes": abstract_shapes, "cloth": cloth}[str(kind)]
        return draw(rng, height, width), str(kind)

    def _pick_photo(self, rng: np.random.Generator) -> np.ndarray | None:
        bundled_share = 0.1 if self.photo_files else 1.0
        if self._bundled and rng.random() < bundled_share:
            return self._bundled[int(rng.integers(len(self._bundled)))]
        path = self.photo_files[int(rng.integers(len(self.photo_files)))]
        if path not in self._cache:
            self._cache[path] = load_photo(path)
        return self._cache[path]


def random_crop(rng: np.random.Generator, photo: np.ndarray, height: int, width: int) -> np.ndarray:
    """A random crop at a random zoom, resized to (height, width), maybe mirrored; float 0..1."""
    ph, pw = photo.shape[:2]
    zoom = rng.uniform(0.5, 1.0)
    aspect = width / height
    crop_h = int(min(ph, pw / aspect) * zoom)
    crop_w = max(int(crop_h * aspect), 1)
    crop_h = max(crop_h, 1)
    top = int(rng.integers(0, ph - crop_h + 1))
    left = int(rng.integers(0, pw - crop_w + 1))
    crop = photo[top : top + crop_h, left : left + crop_w]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    resized = cv2.resize(np.ascontiguousarray(crop), (width, height), interpolation=cv2.INTER_AREA)
    return resized.astype(np.float32) / 255
