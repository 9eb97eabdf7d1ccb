"""The reaper on Postgres + Redis: a row a dead worker left `processing` is sent again and a real
Celery worker finishes it; a queued row is sent again only when its message is really gone (not
waiting, not held by a worker); a poison image ends `failed` with too_many_attempts."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from jewelcut.db import Segmentation, get_engine, utcnow
from jewelcut.queue import BULK_QUEUE, app, held_chunks
from jewelcut.registry import ensure_registered
from jewelcut.settings import Settings
from producer.backfill import BackfillOptions, run_backfill
from producer.catalogue import import_rows, rows_from_listing, storage_for_listing
from producer.queueing import chunk_queue
from producer.reaper import reap
from worker.chunk import claim_images

pytestmark = pytest.mark.services


def segmentation(settings: Settings, image_id: str) -> Segmentation:
    with get_engine(settings.resolved_database_url).connect() as connection:
        return connection.execute(
            select(Segmentation).where(Segmentation.image_id == image_id)
        ).one()


def leave_processing(settings: Settings, image_id: str, started_ago_s: float) -> None:
    """What a worker that claimed the row and then died leaves behind."""
    with get_engine(settings.resolved_database_url).begin() as connection:
        connection.execute(
            update(Segmentation)
            .where(Segmentation.image_id == image_id)
            .values(
                status="processing",
                attempts=Segmentation.attempts + 1,
                started_at=utcnow() - timedelta(seconds=started_ago_s),
            )
        )


def test_row_left_processing_by_a_dead_worker_is_reenqueued_and_finishes(
    distributed_settings: Settings,
    s3_client: Any,
    s3_bucket: str,
    listing_photo: Callable[[int], bytes],
    test_model_name: str,
    celery_worker_thread: object,
) -> None:
    settings = distributed_settings
    s3_client.put_object(Bucket=s3_bucket, Key="reaper/shop-1/ring-1.jpg", Body=listing_photo(11))
    storage, prefix = storage_for_listing(f"s3://{s3_bucket}/reaper/", settings)
    assert import_rows(settings, rows_from_listing(storage, prefix, print)).inserted == 1
    ensure_registered(test_model_name, settings)
    with get_engine(settings.resolved_database_url).begin() as connection:
        connection.execute(
            Segmentation.__table__.insert().values(
                image_id="ring-1", model_version=test_model_name, status="queued", attempts=0
            )
        )
    leave_processing(settings, "ring-1", started_ago_s=settings.processing_timeout_s + 60)

    result = reap(settings, chunk_queue(settings))

    assert (result.requeued, result.failed) == (1, 0)
    row = _wait_for_status(settings, "ring-1", {"done", "failed"}, timeout_s=240)
    assert (row.status, row.attempts) == ("done", 2)
    assert row.decision in ("accepted", "rejected") and row.confidence is not None
    assert row.preview_uri.startswith(f"s3://{s3_bucket}/previews/{test_model_name}/")
    assert reap(settings, chunk_queue(settings)).requeued == 0  # finished rows are never reaped


def test_only_queued_rows_whose_message_is_gone_are_sent_again(
    distributed_settings: Settings,
    register: Callable[[Settings, str], str],
    fill: Callable[..., list[str]],
    chunks_in_queue: Callable[[], list[tuple[list[str], str]]],
) -> None:
    settings = distributed_settings
    register(settings, "v1")
    image_ids = fill(settings, 2 * settings.chunk_size)
    assert (
        run_backfill(
            settings, BackfillOptions(model_version="v1"), queue=chunk_queue(settings)
        ).chunks
        == 2
    )
    past_deadline = utcnow() + timedelta(seconds=settings.processing_timeout_s + 1)
    assert (
        reap(settings, chunk_queue(settings), now=past_deadline).requeued == 0
    )  # both still wait in the queue

    with app.connection_for_read() as connection:
        channel = connection.default_channel
        held = channel.basic_get(BULK_QUEUE, no_ack=False)  # a worker took it, not claimed yet
        channel.basic_get(BULK_QUEUE, no_ack=True)  # gone: taken and never seen again
        [(held_ids, _)] = held_chunks(settings)
        lost_ids = sorted(set(image_ids) - set(held_ids))

        result = reap(settings, chunk_queue(settings), now=past_deadline)

        channel.basic_ack(held.delivery_tag)
    assert (result.requeued, result.failed) == (len(lost_ids), 0)
    assert chunks_in_queue() == [(lost_ids, "v1")]


def test_poison_image_ends_failed_after_max_attempts(
    distributed_settings: Settings,
    register: Callable[[Settings, str], str],
    fill: Callable[..., list[str]],
    messages: Callable[[], Counter[str]],
) -> None:
    """Each try claims the row with the worker's own claim (attempts + 1), then the worker dies
    on the image; the reaper sends it again until max_attempts, then gives up."""
    settings = distributed_settings.model_copy(update={"max_attempts": 3})
    register(settings, "v1")
    [poison] = fill(settings, 1)
    run_backfill(settings, BackfillOptions(model_version="v1"), queue=chunk_queue(settings))
    assert messages() == {poison: 1}
    assert reap(settings, chunk_queue(settings)).requeued == 0  # just queued: not past its deadline

    tries = 0
    later = utcnow()
    while segmentation(settings, poison).status != "failed":
        assert list(claim_images([poison], "v1", settings)) == [poison]
        tries += 1
        later += timedelta(seconds=settings.processing_timeout_s + 1)
        result = reap(settings, chunk_queue(settings), now=later)
        assert tries <= settings.max_attempts
        if tries < settings.max_attempts:
            assert (result.requeued, result.failed) == (1, 0)

    row = segmentation(settings, poison)
    assert tries == settings.max_attempts == row.attempts
    assert (row.status, row.reason, row.decision) == ("failed", "too_many_attempts", None)
    assert "3 attempts" in row.error and row.finished_at is not None
    # sent by the backfill, then again after each of the first two tries; never after the third
    assert messages()[poison] == 1 + settings.max_attempts - 1


def _wait_for_status(
    settings: Settings, image_id: str, statuses: set[str], timeout_s: float
) -> Segmentation:
    deadline = time.monotonic() + timeout_s
    while (row := segmentation(settings, image_id)).status not in statuses:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{image_id} still {row.status} after {timeout_s}s")
        time.sleep(0.5)
    return row
