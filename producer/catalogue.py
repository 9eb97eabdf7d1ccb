"""Catalogue import: register listing photos in the `images` table, idempotently and in bulk.

Two sources: a storage listing (an S3 prefix `s3://bucket/prefix`, paginated by the storage
layer, or a local folder; the image ID is the key's stem) or CSV rows of
(image_id, listing_id, uri) from a file or stdin. Rows are upserted in batches: a new ID is
inserted, a changed listing or URI is updated, an unchanged row is left alone, so importing the
same source twice changes nothing.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path, PurePosixPath
from typing import TextIO

from sqlalchemy import select
from sqlalchemy.engine import Connection

from jewelcut.db import Image, get_engine, utcnow
from jewelcut.logs import get_logger
from jewelcut.settings import Settings
from jewelcut.sql import upsert_statement
from jewelcut.storage import LocalStorage, S3Storage, Storage, s3_client

log = get_logger(__name__)

IMPORT_BATCH_SIZE = 2000
MAX_ID_LENGTH = 128  # images.id is String(128)


@dataclass(frozen=True)
class CatalogueRow:
    image_id: str
    listing_id: str | None
    uri: str


@dataclass
class ImportSummary:
    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    invalid: int = 0
    duplicates: int = 0  # the same image ID twice in one batch: the last row wins
    errors: list[str] = field(default_factory=list)  # the first few invalid rows, for the user

    def add_invalid(self, message: str) -> None:
        self.invalid += 1
        if len(self.errors) < 10:
            self.errors.append(message)


class InvalidRow(ValueError):
    pass


def make_row(image_id: str, listing_id: str | None, uri: str) -> CatalogueRow:
    image_id, uri = image_id.strip(), uri.strip()
    if not image_id:
        raise InvalidRow("empty image_id")
    if len(image_id) > MAX_ID_LENGTH:
        raise InvalidRow(f"image_id longer than {MAX_ID_LENGTH} characters")
    if not uri:
        raise InvalidRow(f"image {image_id}: empty uri")
    return CatalogueRow(image_id, (listing_id or "").strip() or None, uri)


def rows_from_csv(handle: TextIO, on_invalid: Callable[[str], None]) -> Iterator[CatalogueRow]:
    """Rows of (image_id, listing_id, uri); a header line naming image_id is skipped."""
    for line_number, cells in enumerate(csv.reader(handle), start=1):
        if not cells or (line_number == 1 and cells[0].strip().lower() == "image_id"):
            continue
        if len(cells) != 3:
            on_invalid(f"line {line_number}: expected 3 columns, got {len(cells)}")
            continue
        try:
            yield make_row(*cells)
        except InvalidRow as error:
            on_invalid(f"line {line_number}: {error}")


def storage_for_listing(location: str, settings: Settings) -> tuple[Storage, str]:
    """`s3://bucket/prefix` or a local folder -> (storage, key prefix)."""
    if location.startswith("s3://"):
        bucket, _, prefix = location[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"no bucket in {location!r}")
        return S3Storage(s3_client(settings), bucket), prefix
    return LocalStorage(_local_folder(location)), ""


def _local_folder(location: str) -> Path:
    folder = Path(location.removeprefix("file://")).resolve()
    if not folder.is_dir():
        raise ValueError(f"{location!r} is neither s3://bucket/prefix nor a folder")
    return folder


def rows_from_listing(
    storage: Storage, prefix: str, on_invalid: Callable[[str], None]
) -> Iterator[CatalogueRow]:
    """One row per object under the prefix; the image ID is the key's stem (a/b/123.jpg -> 123).

    Folder markers and hidden names are not photos and are passed over silently.
    """
    for key in storage.list(prefix):
        name = PurePosixPath(key).name
        if key.endswith("/") or not name or name.startswith("."):
            continue
        try:
            yield make_row(PurePosixPath(name).stem, None, storage.uri(key))
        except InvalidRow as error:
            on_invalid(f"key {key}: {error}")


def import_rows(
    settings: Settings,
    rows: Iterable[CatalogueRow],
    summary: ImportSummary | None = None,
    on_batch: Callable[[int], None] | None = None,
    batch_size: int = IMPORT_BATCH_SIZE,
) -> ImportSummary:
    """Upsert rows in batches; memory stays at one batch whatever the catalogue's size."""
    summary = summary or ImportSummary()
    engine = get_engine(settings.resolved_database_url)
    iterator = iter(rows)
    while batch := list(islice(iterator, batch_size)):
        with engine.begin() as connection:
            _upsert_batch(connection, batch, summary)
        log.info(
            "catalogue batch imported",
            extra={"rows": len(batch), "last_image_id": batch[-1].image_id},
        )
        if on_batch:
            on_batch(len(batch))
    return summary


def _upsert_batch(
    connection: Connection, batch: list[CatalogueRow], summary: ImportSummary
) -> None:
    summary.read += len(batch)
    by_id = {row.image_id: row for row in batch}
    summary.duplicates += len(batch) - len(by_id)
    existing = {
        image_id: (listing_id, uri)
        for image_id, listing_id, uri in connection.execute(
            select(Image.id, Image.listing_id, Image.source_uri).where(Image.id.in_(by_id))
        )
    }
    changed = []
    for row in by_id.values():
        known = existing.get(row.image_id)
        if known == (row.listing_id, row.uri):
            summary.unchanged += 1
            continue
        if known is None:
            summary.inserted += 1
        else:
            summary.updated += 1
        changed.append(row)
    if not changed:
        return
    now = utcnow()
    values = [
        {
            "id": row.image_id,
            "listing_id": row.listing_id,
            "source_uri": row.uri,
            "created_at": now,
            "updated_at": now,
        }
        for row in changed
    ]
    statement = upsert_statement(
        connection, Image.__table__, ["id"], ["listing_id", "source_uri", "updated_at"]
    )
    connection.execute(statement, values)
