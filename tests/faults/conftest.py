"""Fixtures of the fault tests: a rig per test (the session's Postgres, Redis and S3 server, or
a Redis of its own), TCP proxies to cut, and small listing photos."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import RedisServer, Rig

from jewelcut.settings import Settings, get_settings, reset_settings_cache
from tests.conftest import draw_listing_photo

PHOTO_SIZE = (160, 120)


@pytest.fixture
def make_rig(
    distributed_settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Callable[..., Rig]]:
    """(own_redis, settings overrides such as chunk_size=4) -> a Rig on the session's services,
    or on a Redis server of its own (to restart); the test and its workers read the same
    JEWELCUT_* environment."""
    from jewelcut.queue import configure_app

    rigs: list[Rig] = []

    def make(own_redis: bool = False, **overrides: object) -> Rig:
        environment = {f"JEWELCUT_{name.upper()}": str(value) for name, value in overrides.items()}
        redis = RedisServer(tmp_path / "redis") if own_redis else None
        if redis:
            redis.start()
            environment["JEWELCUT_BROKER_URL"] = redis.url
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        reset_settings_cache()
        settings = get_settings()
        configure_app(settings)
        rig = Rig(settings, redis, tmp_path)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()
    configure_app(distributed_settings)


@pytest.fixture
def small_photos() -> Callable[[int, str], dict[str, bytes]]:
    """(count, prefix) -> {image_id: JPEG bytes} of 160x120 listing photos."""

    def make(count: int, prefix: str = "photo") -> dict[str, bytes]:
        return {f"{prefix}-{n:03d}": draw_listing_photo(n, PHOTO_SIZE) for n in range(count)}

    return make
