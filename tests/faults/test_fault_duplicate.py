"""The same chunk delivered twice at once, to two worker processes: the claim is one
UPDATE .. RETURNING, so each image is claimed by one delivery only; one row and one object per
image."""

from __future__ import annotations

from collections.abc import Callable

from harness import Rig, check_exactly_once, eventually

from jewelcut.queue import CeleryChunkQueue
from jewelcut.registry import active_model_version

PHOTOS = 8


def test_the_same_chunk_delivered_twice_at_once_is_processed_once(
    make_rig: Callable[..., Rig], small_photos: Callable[[int], dict[str, bytes]]
) -> None:
    rig = make_rig(chunk_size=PHOTOS)
    workers = [rig.worker(f"gpu{n}", "--gpu", str(n)) for n in (0, 1)]  # both idle, waiting
    image_ids = rig.catalogue(small_photos(PHOTOS))
    assert rig.enqueue(image_ids) == 1  # records the rows queued and sends the chunk ...
    CeleryChunkQueue(rig.settings).send(image_ids, active_model_version(rig.settings), None)

    rig.settle(PHOTOS, timeout_s=120)
    checked_rows, checked_objects = check_exactly_once(rig, image_ids)
    assert all(row.attempts == 1 for row in rig.rows().values())
    eventually(lambda: all(w.messages("chunk finished") for w in workers), what="both logged")
    deliveries = [worker.messages("chunk finished") for worker in workers]
    assert [len(records) for records in deliveries] == [1, 1]  # one delivery each, at once
    claimed = sorted(records[0]["claimed"] for records in deliveries)
    skipped = sum(records[0]["skipped"] for records in deliveries)
    assert sum(claimed) == PHOTOS and skipped == PHOTOS  # each image claimed by one of them
    print(
        f"\ninjected: one chunk of {PHOTOS} sent twice to two idle workers; checked: "
        f"{len(deliveries)} deliveries claimed {claimed} images, {checked_rows} rows done "
        f"once, {checked_objects} objects"
    )
