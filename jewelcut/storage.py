"""One storage interface over S3 (boto3; MinIO, moto, AWS) and over a local folder.

Keys are deterministic (`cutout_key`, `preview_key`), so a retried image overwrites its objects
and never duplicates them. Credentials come only from the settings (environment or secret files).

An S3 call that cannot reach the endpoint (connection refused or reset, timeouts, 5xx after
boto3's own quick retries) is tried again with backoff for about half a minute
(`with_s3_retries`), so a restart or a short outage of the S3 server delays images instead of
failing them; after that the caller's error says what happened.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlparse

from jewelcut.retry import with_retries
from jewelcut.settings import Settings

T = TypeVar("T")
S3_MAX_ATTEMPTS = 3  # boto3 tries per call, the first included (throttling, 5xx: 50 ms base)
S3_RETRY_DELAYS_S = (0.5, 1, 2, 4, 8, 15)  # then ours, while the endpoint is unreachable


def cutout_key(model_version: str, image_id: str) -> str:
    return f"cutouts/{model_version}/{image_id}.png"


def preview_key(model_version: str, image_id: str) -> str:
    return f"previews/{model_version}/{image_id}.jpg"


def mask_key(model_version: str, image_id: str) -> str:
    """The cleaned mask at network resolution (grey PNG, 0/255)."""
    return f"masks/{model_version}/{image_id}.png"


def probability_key(model_version: str, image_id: str) -> str:
    """The probability map at network resolution (grey PNG, 0..255)."""
    return f"probabilities/{model_version}/{image_id}.png"


class Storage(Protocol):
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Write `data` at `key` (overwriting) and return its URI."""
        ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def uri(self, key: str) -> str: ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under `prefix`, in key order."""
        ...


class S3Storage:
    """A bucket. The boto3 client is thread-safe and shared by all I/O threads."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        with_s3_retries(
            lambda: self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType=content_type
            )
        )
        return self.uri(key)

    def get(self, key: str) -> bytes:
        return read_object(self.client, self.bucket, key)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            with_s3_retries(lambda: self.client.head_object(Bucket=self.bucket, Key=key))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def list(self, prefix: str = "") -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"]


class LocalStorage:
    """A folder that stands in for a bucket in embedded mode. Writes are atomic (temp + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"key {key!r} leaves the storage folder")
        return path

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(handle, "wb") as temp:
                temp.write(data)
            os.replace(temp_name, path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        return self.uri(key)

    def get(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def uri(self, key: str) -> str:
        return self.path(key).as_uri()

    def list(self, prefix: str = "") -> Iterator[str]:
        if not self.root.is_dir():
            return
        keys = (
            path.relative_to(self.root).as_posix()
            for path in self.root.rglob("*")
            if path.is_file() and not path.name.startswith(".")
        )
        yield from sorted(key for key in keys if key.startswith(prefix))


def read_object(client: Any, bucket: str, key: str) -> bytes:
    """An object's bytes; the body is read inside the retry, so a reset mid-body retries too."""
    return with_s3_retries(lambda: client.get_object(Bucket=bucket, Key=key)["Body"].read())


def with_s3_retries(action: Callable[[], T]) -> T:
    """Run an S3 call, retrying with backoff while the endpoint is unreachable."""
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as S3ConnectionError

    return with_retries(
        action,
        retry_on=(S3ConnectionError, HTTPClientError, ClientError),
        retryable=_unreachable,
        delays_s=S3_RETRY_DELAYS_S,
        what="S3",
    )


def _unreachable(error: BaseException) -> bool:
    """Connection errors, and server errors (5xx) boto3's own retries did not get past."""
    response = getattr(error, "response", None)
    if response is None:
        return True
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0) >= 500


_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()


def s3_client(settings: Settings) -> Any:
    """The process's shared S3 client for these settings (one per endpoint and credentials).

    Path-style addressing and checksums only `when_required` let MinIO and other S3 servers work;
    the connection pool is as large as the I/O thread count so threads never wait on it.
    """
    access_key = settings.s3_access_key_id
    secret_key = settings.s3_secret_access_key
    identity = (
        settings.s3_endpoint_url,
        settings.s3_region,
        access_key.get_secret_value() if access_key else None,
        secret_key.get_secret_value() if secret_key else None,
        settings.io_threads,
    )
    with _clients_lock:
        if identity not in _clients:
            _clients[identity] = _make_s3_client(settings, *identity[2:4])
        return _clients[identity]


def _make_s3_client(settings: Settings, access_key: str | None, secret_key: str | None) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": "path"},
        retries={"mode": "standard", "total_max_attempts": S3_MAX_ATTEMPTS},
        # Every chunk in flight has its own I/O threads, each reading and writing at once.
        max_pool_connections=max(10, settings.io_threads * 2 * settings.chunks_in_flight),
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=5,
        read_timeout=30,
    )
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=config,
    )


def get_storage(settings: Settings) -> Storage:
    """Where cutouts and previews go: the S3 bucket when one is set, else the local folder."""
    if settings.s3_bucket:
        return S3Storage(s3_client(settings), settings.s3_bucket)
    return LocalStorage(settings.storage_root)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/key` -> (bucket, key)."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.lstrip("/"):
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")
