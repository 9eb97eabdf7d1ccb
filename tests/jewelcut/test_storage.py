"""Storage: the S3 bucket (test server) and the local folder behave the same."""

from __future__ import annotations

from pathlib import Path

import pytest

from jewelcut.settings import Settings
from jewelcut.storage import (
    LocalStorage,
    S3Storage,
    Storage,
    cutout_key,
    get_storage,
    preview_key,
    s3_client,
    split_s3_uri,
)


def test_keys_are_deterministic() -> None:
    assert cutout_key("v1", "img-7") == "cutouts/v1/img-7.png"
    assert preview_key("v1", "img-7") == "previews/v1/img-7.jpg"


def _round_trip(storage: Storage, prefix: str) -> None:
    uri = storage.put(f"{prefix}/a.png", b"first", "image/png")
    storage.put(f"{prefix}/a.png", b"second", "image/png")  # a retry overwrites
    storage.put(f"{prefix}/b.jpg", b"other", "image/jpeg")
    assert uri == storage.uri(f"{prefix}/a.png")
    assert storage.get(f"{prefix}/a.png") == b"second"
    assert storage.exists(f"{prefix}/b.jpg")
    assert not storage.exists(f"{prefix}/missing.png")
    assert list(storage.list(prefix)) == [f"{prefix}/a.png", f"{prefix}/b.jpg"]


def test_s3_storage_round_trip(distributed_settings: Settings) -> None:
    storage = get_storage(distributed_settings)
    assert isinstance(storage, S3Storage)
    _round_trip(storage, "storage-test")
    assert storage.uri("x/y.png") == f"s3://{distributed_settings.s3_bucket}/x/y.png"


def test_s3_client_is_shared_and_configured_for_any_s3_server(
    distributed_settings: Settings,
) -> None:
    client = s3_client(distributed_settings)
    assert client is s3_client(distributed_settings)  # one client shared by the I/O threads
    config = client.meta.config
    assert config.s3["addressing_style"] == "path"
    assert config.retries["mode"] == "standard"
    in_flight = distributed_settings.chunks_in_flight
    assert config.max_pool_connections >= distributed_settings.io_threads * in_flight
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"


def test_local_storage_round_trip_and_atomic_writes(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    _round_trip(storage, "storage-test")
    assert storage.uri("x/y.png") == (tmp_path / "root" / "x" / "y.png").as_uri()
    leftovers = [p for p in (tmp_path / "root").rglob(".*") if p.is_file()]
    assert leftovers == []  # temporary files were renamed into place


def test_local_storage_refuses_keys_that_leave_its_folder(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root")
    with pytest.raises(ValueError, match="leaves the storage folder"):
        storage.put("../escape.png", b"x")


def test_embedded_settings_store_in_a_local_folder(embedded_settings: Settings) -> None:
    storage = get_storage(embedded_settings)
    assert isinstance(storage, LocalStorage)
    assert storage.root == embedded_settings.storage_root


def test_split_s3_uri() -> None:
    assert split_s3_uri("s3://bucket/a/b.jpg") == ("bucket", "a/b.jpg")
    with pytest.raises(ValueError):
        split_s3_uri("s3://bucket-only")
