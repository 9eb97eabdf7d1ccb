"""Fixtures of the end-to-end flows (the steps themselves are in flow.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest


@pytest.fixture
def photos(listing_photo: Callable[[int], bytes]) -> Callable[[int], dict[str, bytes]]:
    """n -> {image_id: JPEG bytes} of n listing photos."""

    def make(count: int) -> dict[str, bytes]:
        return {f"photo-{index:03d}": listing_photo(index) for index in range(count)}

    return make
