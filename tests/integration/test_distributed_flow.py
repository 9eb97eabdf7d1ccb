"""The spine on real services: photos in the S3 test server, the catalogue in Postgres, the admin
command enqueues over Redis, a real Celery worker (solo pool, in a thread; not eager) segments
them, cutouts and previews land in S3 and the results in Postgres."""

from __future__ import annotations

import io
import time
from collections.abc import Callable

from flow import CORRUPT_JPEG, Flow
from PIL import Image as PILImage

from jewelcut.db import Segmentation
from jewelcut.queue import queue_depth
from jewelcut.registry import active_model_version
from jewelcut.settings import DEFAULT_MODELS_DIR, Settings
from jewelcut.storage import cutout_key, get_storage, preview_key, split_s3_uri
from worker.chunk import get_segmenter

PHOTOS = 20


def _check_done_row(row: Segmentation, flow: Flow, photo_size: tuple[int, int]) -> None:
    assert row.status == "done", (row.image_id, row.reason, row.error)
    assert row.decision in ("accepted", "rejected")
    assert (row.reason is None) == (row.decision == "accepted")
    for score in (row.confidence, row.fg_score, row.bg_score, row.mask_area):
        assert score is not None and 0.0 <= score <= 1.0
    assert (row.width, row.height) == photo_size
    assert row.attempts == 1 and row.finished_at is not None and row.timings
    storage = get_storage(flow.settings)
    bucket, key = split_s3_uri(row.preview_uri)
    assert bucket == flow.settings.s3_bucket
    assert key == preview_key(row.model_version, row.image_id)
    assert storage.exists(key)
    if row.decision != "accepted":
        assert row.cutout_uri is None
        return
    bucket, key = split_s3_uri(row.cutout_uri)
    assert key == cutout_key(row.model_version, row.image_id)
    with PILImage.open(io.BytesIO(storage.get(key))) as cutout:
        assert (cutout.format, cutout.mode, cutout.size) == ("PNG", "RGBA", photo_size)


def test_admin_enqueue_to_worker_to_s3_and_postgres(
    distributed_settings: Settings,
    celery_worker_thread: object,
    photos: Callable[[int], dict[str, bytes]],
) -> None:
    flow = Flow(distributed_settings)
    batch = photos(PHOTOS)
    flow.register(flow.put_photos(batch))
    with PILImage.open(io.BytesIO(next(iter(batch.values())))) as first:
        photo_size = first.size

    # Load the model (and export ONNX) before the clock starts: the worker thread shares it.
    get_segmenter(active_model_version(distributed_settings), distributed_settings)
    started = time.perf_counter()
    flow.enqueue(list(batch))
    rows = flow.wait_until_finished(PHOTOS)
    seconds = time.perf_counter() - started
    print(f"\nend to end: {PHOTOS} photos in {seconds:.1f}s = {PHOTOS / seconds:.2f} images/s")

    assert [row.image_id for row in rows] == sorted(batch)  # one row per image
    for row in rows:
        _check_done_row(row, flow, photo_size)
    accepted = sum(row.decision == "accepted" for row in rows)
    print(f"accepted {accepted}/{PHOTOS}")
    if distributed_settings.models_dir == DEFAULT_MODELS_DIR:
        assert accepted > 0  # the trained default accepts some clean listing photos
    assert len(flow.objects()) == PHOTOS + accepted  # a preview each, a cutout per accepted


def test_enqueue_again_adds_nothing_and_force_reprocesses(
    distributed_settings: Settings,
    celery_worker_thread: object,
    photos: Callable[[int], dict[str, bytes]],
) -> None:
    flow = Flow(distributed_settings)
    batch = photos(6)
    flow.register(flow.put_photos(batch))
    flow.enqueue(list(batch))
    first = {row.image_id: row for row in flow.wait_until_finished(6)}
    objects = flow.objects()

    output = flow.enqueue(list(batch))  # again: nothing new
    assert "0 queued" in output and "6 already recorded" in output and "0 chunks" in output
    assert queue_depth(distributed_settings) == 0
    time.sleep(1.0)
    again = {row.image_id: row for row in flow.rows()}
    assert flow.row_count() == 6 and flow.objects() == objects
    assert all(again[i].finished_at == first[i].finished_at for i in batch)

    output = flow.enqueue(list(batch), "--force")
    assert "6 reset" in output
    forced = {row.image_id: row for row in flow.wait_until_finished(6)}
    assert flow.row_count() == 6 and flow.objects() == objects  # overwritten, not duplicated
    for image_id in batch:
        assert forced[image_id].status == "done"
        assert forced[image_id].finished_at > first[image_id].finished_at
        assert forced[image_id].attempts == 1


def test_corrupt_photo_fails_alone_and_the_worker_goes_on(
    distributed_settings: Settings,
    celery_worker_thread: object,
    photos: Callable[[int], dict[str, bytes]],
) -> None:
    flow = Flow(distributed_settings)
    batch = photos(5)
    batch["photo-corrupt"] = CORRUPT_JPEG
    flow.register(flow.put_photos(batch))
    flow.enqueue(list(batch))  # chunk size 8: one chunk holds them all
    rows = {row.image_id: row for row in flow.wait_until_finished(6)}
    corrupt = rows.pop("photo-corrupt")
    assert (corrupt.status, corrupt.reason) == ("failed", "decode_error")
    assert corrupt.error and corrupt.preview_uri is None
    assert all(row.status == "done" for row in rows.values())

    later = photos(7)
    later = {"after-" + k: v for k, v in list(later.items())[5:]}  # the worker still takes work
    flow.register(flow.put_photos(later))
    flow.enqueue(list(later))
    rows = flow.wait_until_finished(8)
    assert sum(row.status == "done" for row in rows) == 7


def test_priority_chunks_are_taken_before_bulk_ones(
    distributed_settings: Settings, photos: Callable[[int], dict[str, bytes]]
) -> None:
    from celery.contrib.testing.worker import start_worker

    from jewelcut.enqueue import enqueue_images
    from jewelcut.queue import CHUNK_QUEUES, PRIORITY_QUEUE, CeleryChunkQueue, app

    flow = Flow(distributed_settings)
    batch = photos(8)
    flow.register(flow.put_photos(batch))
    ids = sorted(batch)
    bulk = CeleryChunkQueue(distributed_settings)
    priority = CeleryChunkQueue(distributed_settings, PRIORITY_QUEUE)
    for start in (0, 2, 4):  # three bulk chunks waiting first ...
        enqueue_images(ids[start : start + 2], distributed_settings, bulk)
    for image_id in ids[6:]:  # ... then two admin ones (round robin would interleave them)
        enqueue_images([image_id], distributed_settings, priority)
    assert queue_depth(distributed_settings) == 5

    with start_worker(app, pool="solo", perform_ping_check=False, queues=list(CHUNK_QUEUES)):
        rows = {row.image_id: row for row in flow.wait_until_finished(8)}
    priority_done = max(rows[i].finished_at for i in ids[6:])
    bulk_done = min(rows[i].finished_at for i in ids[:6])
    assert priority_done < bulk_done
