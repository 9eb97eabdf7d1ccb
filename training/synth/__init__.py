"""Synthetic jewellery listing photos, torch-free (numpy + OpenCV), for training, tests and demos.

Public API:

- ``render_object(rng, kind=None, size=384) -> np.ndarray``: one procedural piece (ring with a
  see-through hole, chain of small links, pendant on a chain, pair of earrings, bracelet,
  gemstone; kinds in ``OBJECT_KINDS``) as RGBA uint8 cropped to the object; alpha is coverage.
- ``listing_photo(rng, width, height, backgrounds=None, kind=None) -> (rgb, mask)``: a listing-like
  photo (H x W x 3 uint8) of one piece on a background with a soft shadow, colour jitter, blur,
  noise and JPEG artefacts, and its ground-truth mask (H x W bool, the object's alpha > 0.5).
  ``backgrounds`` is a ``Backgrounds`` (procedural only when None); pass
  ``Backgrounds([Path("hands"), ...])`` to use photo folders.
- ``Compositor`` for more control (RGBA cutout folders, object render size) and ``Sample.info``;
  ``Compositor.sample(..., style=NAME)`` forces one of the listing styles in ``STYLES``
  (close-ups, sets, fingers, perspective, recoloured metal, phone look, velvet, satin, card,
  studio white), which are otherwise mixed in by their shares.
- ``split`` (train/dev split of real files by object) and ``keying`` (product photos on white
  into cutouts).

Everything is driven by the numpy Generator given, so a seed reproduces a photo exactly.
"""

from __future__ import annotations

import numpy as np

from training.synth.backgrounds import Backgrounds
from training.synth.compose import Compositor, Sample, has_real_alpha, load_cutouts
from training.synth.listing import STYLES
from training.synth.objects import OBJECT_KINDS, render_object

__all__ = [
    "OBJECT_KINDS",
    "STYLES",
    "Backgrounds",
    "Compositor",
    "Sample",
    "has_real_alpha",
    "listing_photo",
    "load_cutouts",
    "render_object",
]


def listing_photo(
    rng: np.random.Generator,
    width: int,
    height: int,
    backgrounds: Backgrounds | None = None,
    kind: str | None = None,
    listing_styles: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic listing photo (rgb uint8 HxWx3) and its mask (bool HxW); drawn as before
    the listing styles unless `listing_styles` (so a seed gives the photo it always gave)."""
    compositor = Compositor(
        backgrounds,
        object_size=max(min(max(width, height), 512), 128),
        listing_styles=listing_styles,
    )
    sample = compositor.sample(rng, height, width, kind)
    return sample.rgb, sample.mask
