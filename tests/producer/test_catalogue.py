"""Catalogue import: CSV (file and stdin) and a storage listing (S3 prefix), idempotent upserts."""

from __future__ import annotations

import io
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from jewelcut.cli import app
from jewelcut.db import Image, get_engine
from jewelcut.settings import Settings
from producer.catalogue import (
    ImportSummary,
    import_rows,
    rows_from_csv,
    rows_from_listing,
    storage_for_listing,
)

pytestmark = pytest.mark.services


def catalogue_rows(settings: Settings) -> dict[str, tuple[str | None, str]]:
    with get_engine(settings.resolved_database_url).connect() as connection:
        rows = connection.execute(select(Image.id, Image.listing_id, Image.source_uri))
        return {image_id: (listing_id, uri) for image_id, listing_id, uri in rows}


def test_csv_import_is_idempotent_and_reports_bad_rows(distributed_settings: Settings) -> None:
    text = (
        "image_id,listing_id,uri\n"
        "a1,L1,s3://photos/a1.jpg\n"
        "a2,,s3://photos/a2.jpg\n"
        "a3,L3\n"  # a missing column
        ",L4,s3://photos/x.jpg\n"  # no ID
        "a1,L1,s3://photos/a1-new.jpg\n"  # the same ID again in one batch: the last row wins
    )
    summary = ImportSummary()
    import_rows(
        distributed_settings, rows_from_csv(io.StringIO(text), summary.add_invalid), summary
    )

    assert (summary.read, summary.inserted, summary.duplicates, summary.invalid) == (3, 2, 1, 2)
    assert summary.errors == ["line 4: expected 3 columns, got 2", "line 5: empty image_id"]
    assert catalogue_rows(distributed_settings) == {
        "a1": ("L1", "s3://photos/a1-new.jpg"),
        "a2": (None, "s3://photos/a2.jpg"),
    }

    again = ImportSummary()
    changed = "a1,L9,s3://photos/a1-new.jpg\na2,,s3://photos/a2.jpg\n"
    import_rows(distributed_settings, rows_from_csv(io.StringIO(changed), again.add_invalid), again)
    assert (again.inserted, again.updated, again.unchanged) == (0, 1, 1)
    assert catalogue_rows(distributed_settings)["a1"] == ("L9", "s3://photos/a1-new.jpg")


def test_cli_imports_csv_from_stdin_with_a_summary(distributed_settings: Settings) -> None:
    stdin = "".join(f"s{i},L{i},s3://photos/s{i}.jpg\n" for i in range(2500))  # > one batch
    result = CliRunner().invoke(app, ["catalogue", "import", "--csv", "-"], input=stdin)
    assert result.exit_code == 0, result.output
    assert len(catalogue_rows(distributed_settings)) == 2500
    assert "inserted" in result.output and "2500" in result.output

    again = CliRunner().invoke(app, ["catalogue", "import", "--csv", "-"], input=stdin)
    assert again.exit_code == 0 and "unchanged" in again.output
    assert len(catalogue_rows(distributed_settings)) == 2500


def test_listing_import_takes_the_key_stem_as_image_id(
    distributed_settings: Settings, s3_bucket: str, s3_client: Any
) -> None:
    settings = distributed_settings
    keys = ["listing/shop-a/1001.jpg", "listing/shop-b/1002.png", "listing/.hidden", "other/9.jpg"]
    for key in keys:
        s3_client.put_object(Bucket=s3_bucket, Key=key, Body=b"photo")

    result = CliRunner().invoke(
        app, ["catalogue", "import", "--listing", f"s3://{s3_bucket}/listing/"]
    )

    assert result.exit_code == 0, result.output
    assert catalogue_rows(settings) == {
        "1001": (None, f"s3://{s3_bucket}/listing/shop-a/1001.jpg"),
        "1002": (None, f"s3://{s3_bucket}/listing/shop-b/1002.png"),
    }
    storage, prefix = storage_for_listing(f"s3://{s3_bucket}/listing/", settings)
    summary = import_rows(settings, rows_from_listing(storage, prefix, print))
    assert (summary.read, summary.unchanged) == (2, 2)


def test_cli_needs_exactly_one_source(distributed_settings: Settings) -> None:
    result = CliRunner().invoke(app, ["catalogue", "import"])
    assert result.exit_code != 0
    assert "exactly one" in result.output
