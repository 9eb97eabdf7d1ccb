"""Source fetching: only allowed buckets and files under the source root are ever read."""

from __future__ import annotations

import pytest

from jewelcut.errors import ImageFailure
from jewelcut.settings import Settings
from jewelcut.sources import fetch_source
from jewelcut.storage import get_storage


def _reason(uri: str, settings: Settings) -> str:
    with pytest.raises(ImageFailure) as failure:
        fetch_source(uri, settings)
    return failure.value.reason


def test_s3_source_in_an_allowed_bucket(distributed_settings: Settings) -> None:
    uri = get_storage(distributed_settings).put("sources/photo.jpg", b"jpeg bytes")
    assert fetch_source(uri, distributed_settings) == b"jpeg bytes"


def test_s3_failures(distributed_settings: Settings) -> None:
    bucket = distributed_settings.s3_bucket
    assert _reason(f"s3://{bucket}/sources/missing.jpg", distributed_settings) == "fetch_error"
    assert _reason("s3://somebody-elses-bucket/a.jpg", distributed_settings) == (
        "unsupported_source"
    )
    assert _reason(f"s3://{bucket}", distributed_settings) == "unsupported_source"


def test_file_sources_only_under_the_root(embedded_settings: Settings) -> None:
    root = embedded_settings.resolved_source_root
    root.mkdir(parents=True, exist_ok=True)
    (root / "photo.jpg").write_bytes(b"local bytes")
    outside = root.parent / "secret.txt"
    outside.write_text("not yours")
    assert fetch_source((root / "photo.jpg").as_uri(), embedded_settings) == b"local bytes"
    assert _reason((root / "missing.jpg").as_uri(), embedded_settings) == "fetch_error"
    assert _reason(outside.as_uri(), embedded_settings) == "unsupported_source"
    assert _reason(f"file://{root}/../secret.txt", embedded_settings) == "unsupported_source"


@pytest.mark.parametrize(
    "uri", ["http://example.com/a.jpg", "https://x/y.png", "ftp://h/a.jpg", "/etc/passwd", "a.jpg"]
)
def test_other_schemes_are_unsupported(uri: str, embedded_settings: Settings) -> None:
    assert _reason(uri, embedded_settings) == "unsupported_source"
