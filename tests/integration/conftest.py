"""Fixtures of the end-to-end flows (the steps themselves are in flow.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest


@pytest.fixture
def photos(listing_photo: Callable[..., bytes]) -> Callable[[int], dict[str, bytes]]:
    """n -> {image_id: JPEG bytes} of n listing photos, every other one a gemstone (the kind the
    shipped default is surest of, so that some pass its gate)."""

    def make(count: int) -> dict[str, bytes]:
        return {
            f"photo-{index:03d}": listing_photo(index, kind="gemstone" if index % 2 == 0 else None)
            for index in range(count)
        }

    return make
