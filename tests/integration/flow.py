"""The steps of the batch job as the end-to-end tests drive them: put photos where sources
live, register them in the catalogue, enqueue through the admin command, wait for the rows."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from jewelcut.cli import app
from jewelcut.db import Image, Segmentation, session_scope
from jewelcut.settings import Settings
from jewelcut.storage import get_storage

CORRUPT_JPEG = b"\xff\xd8\xff\xe0 this is not really a JPEG"


@dataclass
class Flow:
    """One deployment's view for a test: its settings and the steps of the batch job."""

    settings: Settings

    def put_photos(self, photos: dict[str, bytes]) -> dict[str, str]:
        """Upload photos as sources (S3 bucket or local folder); {image_id: source_uri}."""
        storage = get_storage(self.settings)
        return {
            image_id: storage.put(f"sources/{image_id}.jpg", data, "image/jpeg")
            for image_id, data in photos.items()
        }

    def register(self, sources: dict[str, str]) -> None:
        with session_scope(self.settings.resolved_database_url) as session:
            for image_id, uri in sources.items():
                session.add(Image(id=image_id, listing_id=f"listing-{image_id}", source_uri=uri))

    def enqueue(self, image_ids: Sequence[str], *options: str) -> str:
        result = CliRunner().invoke(app, ["enqueue", *options, *image_ids])
        assert result.exit_code == 0, result.output
        return result.output

    def rows(self) -> list[Segmentation]:
        with session_scope(self.settings.resolved_database_url) as session:
            return list(session.scalars(select(Segmentation).order_by(Segmentation.image_id)))

    def row_count(self) -> int:
        with session_scope(self.settings.resolved_database_url) as session:
            return session.scalar(select(func.count()).select_from(Segmentation)) or 0

    def wait_until_finished(self, count: int, timeout_s: float = 240) -> list[Segmentation]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rows = self.rows()
            if len(rows) >= count and all(row.status in ("done", "failed") for row in rows):
                return rows
            time.sleep(0.5)
        states = {row.image_id: row.status for row in self.rows()}
        pytest.fail(f"rows not finished after {timeout_s}s: {states}")

    def objects(self) -> list[str]:
        storage = get_storage(self.settings)
        return [*storage.list("cutouts/"), *storage.list("previews/")]
