"""What the review page shows of one image, drawn from what the worker stored: the photo, the
cutout (RGBA, shown on a checkerboard) and the cleaned mask's outline over the photo."""

from __future__ import annotations

import cv2
import numpy as np

from jewelcut.settings import Settings
from jewelcut.storage import get_storage
from worker.cutout import encode_jpeg, encode_png
from worker.sheet import stored_images, thumbnail

KINDS = ("photo", "cutout", "outline")
SIDE = 560  # pixels on the longer side
OUTLINE_RGB = (255, 0, 200)


def render(
    settings: Settings, model_version: str, image_id: str, source_uri: str, kind: str
) -> tuple[bytes, str] | None:
    """(bytes, media type) of one view, or None when what it needs was not stored."""
    stored = stored_images(get_storage(settings), settings, model_version, image_id, source_uri)
    if kind == "photo":
        photo = stored.photo()
        return None if photo is None else (encode_jpeg(thumbnail(photo, SIDE), 88), "image/jpeg")
    if kind == "cutout":
        cutout = stored.cutout()
        return None if cutout is None else (encode_png(thumbnail(cutout, SIDE)), "image/png")
    photo, mask = stored.photo(), stored.cleaned_mask()
    if photo is None or mask is None:
        return None
    return encode_jpeg(outline(thumbnail(photo, SIDE), mask), 88), "image/jpeg"


def outline(photo: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The mask's outline (any resolution) drawn over the photo."""
    height, width = photo.shape[:2]
    full = cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR) > 127
    contours, _ = cv2.findContours(full.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    drawn = np.ascontiguousarray(photo.copy())
    cv2.drawContours(drawn, contours, -1, OUTLINE_RGB, thickness=2, lineType=cv2.LINE_AA)
    return drawn
