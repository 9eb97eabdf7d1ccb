"""A worker process killed with SIGKILL in the middle of a chunk: the broker gives the chunk to
the worker that starts in its place (visibility timeout), which claims the dead delivery's rows
(processing past the processing timeout) and runs them; every image ends done exactly once."""

from __future__ import annotations

import signal
from collections.abc import Callable

from harness import SLOW_READS, Rig, check_exactly_once

PHOTOS = 12
CHUNK = 4


def test_sigkill_mid_chunk_then_redelivery_processes_every_image_once(
    make_rig: Callable[..., Rig], small_photos: Callable[[int], dict[str, bytes]]
) -> None:
    rig = make_rig(chunk_size=CHUNK, processing_timeout_s=4, visibility_timeout_s=6)
    worker = rig.worker("gpu0", "--gpu", "0", **SLOW_READS)
    image_ids = rig.catalogue(small_photos(PHOTOS))
    assert rig.enqueue(image_ids) == 3

    rig.wait_for(lambda rows: any(row.status == "processing" for row in rows.values()))
    worker.kill(signal.SIGKILL)
    at_kill = rig.rows()
    in_flight = sorted(i for i, row in at_kill.items() if row.status == "processing")
    # Whole chunks mid-way when the process died: one (4 images), or with chunks in flight up
    # to that many.
    possible = [CHUNK * chunks for chunks in range(1, rig.settings.chunks_in_flight + 1)]
    assert len(in_flight) in possible
    dead_chunks = len(in_flight) // CHUNK

    rows = rig.settle(PHOTOS, timeout_s=150)  # the worker is started again, as compose would
    checked_rows, checked_objects = check_exactly_once(rig, image_ids)
    attempts = {image_id: row.attempts for image_id, row in rows.items()}
    assert all(attempts[i] == 2 for i in in_flight)  # the killed try and the one that finished
    assert all(attempts[i] == 1 for i in image_ids if i not in in_flight)
    retried = [r["retried"] for r in worker.messages("chunk finished") if r["retried"]]
    assert retried == [CHUNK] * dead_chunks  # a redelivery per dead chunk ran its images
    assert worker.exit_codes == [-signal.SIGKILL] and len(worker.pids) == 2
    print(
        f"\ninjected: SIGKILL of worker pid {worker.pids[0]} with {len(in_flight)} images "
        f"in flight; checked: {checked_rows} rows done once, {checked_objects} objects, "
        f"{len(in_flight)} redelivered images with 2 attempts, {PHOTOS - len(in_flight)} with 1"
    )
