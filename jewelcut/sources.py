"""Fetch a photo's bytes from its source URI, and nothing else.

Only two kinds of source are ever read: `s3://bucket/key` in an allowed bucket (the settings'
source buckets and the cutout bucket) and `file://` paths under the configured source root.
Anything else ends the image as `unsupported_source`; a missing object, or an S3 endpoint still
unreachable after jewelcut.storage's retries (about half a minute), ends it as `fetch_error`.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from jewelcut.errors import ImageFailure
from jewelcut.settings import Settings
from jewelcut.storage import read_object, s3_client


def fetch_source(uri: str, settings: Settings) -> bytes:
    scheme = urlparse(uri).scheme
    if scheme == "s3":
        return _fetch_s3(uri, settings)
    if scheme == "file":
        return _fetch_file(uri, settings)
    raise ImageFailure("unsupported_source", f"scheme {scheme or '(none)'!r} is not fetched: {uri}")


def allowed_buckets(settings: Settings) -> set[str]:
    buckets = set(settings.source_buckets)
    if settings.s3_bucket:
        buckets.add(settings.s3_bucket)
    return buckets


def _fetch_s3(uri: str, settings: Settings) -> bytes:
    from botocore.exceptions import BotoCoreError, ClientError

    parsed = urlparse(uri)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if not bucket or not key:
        raise ImageFailure("unsupported_source", f"not an s3://bucket/key URI: {uri}")
    if bucket not in allowed_buckets(settings):
        raise ImageFailure("unsupported_source", f"bucket {bucket!r} is not a source bucket")
    try:
        return read_object(s3_client(settings), bucket, key)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "error")
        raise ImageFailure("fetch_error", f"{uri}: S3 said {code}") from error
    except BotoCoreError as error:
        raise ImageFailure("fetch_error", f"{uri}: {type(error).__name__}: {error}") from error


def _fetch_file(uri: str, settings: Settings) -> bytes:
    parsed = urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        raise ImageFailure("unsupported_source", f"file URI names a host: {uri}")
    root = settings.resolved_source_root
    path = Path(unquote(parsed.path)).resolve()  # resolves '..' and symlinks before the check
    if not path.is_relative_to(root):
        raise ImageFailure("unsupported_source", f"{path} is outside the source root {root}")
    try:
        return path.read_bytes()
    except FileNotFoundError as error:
        raise ImageFailure("fetch_error", f"{uri}: no such file") from error
    except OSError as error:
        raise ImageFailure("fetch_error", f"{uri}: {error.strerror or error}") from error
