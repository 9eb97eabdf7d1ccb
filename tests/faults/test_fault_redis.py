"""Redis killed (no persistence: every queued and unacknowledged message is gone) and started
again while chunks are queued and one is in flight. The worker reconnects; Postgres is the
source of truth, so the reaper sends again the rows whose messages were lost; nothing is lost."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from harness import SLOW_READS, RedisServer, Rig, check_exactly_once

from jewelcut.queue import queue_depth
from jewelcut.settings import Settings, get_settings

PHOTOS = 16
CHUNK = 4


def test_redis_restart_loses_messages_and_the_reaper_brings_them_back(
    make_rig: Callable[..., Rig], small_photos: Callable[[int], dict[str, bytes]]
) -> None:
    # Chunks in flight share the CPU and each takes longer (two at once: ~5 s a chunk here):
    # none must pass the processing timeout, or the reaper sends it again.
    in_flight_limit = get_settings().chunks_in_flight
    timeout_s = 3 * in_flight_limit**2
    rig = make_rig(own_redis=True, chunk_size=CHUNK, processing_timeout_s=timeout_s)
    assert rig.redis is not None
    worker = rig.worker("gpu0", "--gpu", "0", **SLOW_READS)
    image_ids = rig.catalogue(small_photos(PHOTOS))
    assert rig.enqueue(image_ids) == 4

    rig.wait_for(lambda rows: any(row.status == "processing" for row in rows.values()))
    waiting = queue_depth(rig.settings)
    rig.redis.crash()
    at_crash = rig.rows()
    time.sleep(1.0)
    rig.redis.start()  # empty: the queue and the in-flight message are gone
    assert queue_depth(rig.settings) == 0
    lost = sorted(i for i, row in at_crash.items() if row.status == "queued")
    in_flight = sorted(i for i, row in at_crash.items() if row.status == "processing")
    assert waiting >= 1 and len(lost) >= CHUNK
    # Whole chunks in flight at the crash: one (4 images), or up to the chunks in flight.
    assert len(in_flight) in [CHUNK * chunks for chunks in range(1, in_flight_limit + 1)]

    rows = rig.settle(PHOTOS, timeout_s=150, reap_every_s=1.0)
    checked_rows, checked_objects = check_exactly_once(rig, image_ids)
    assert all(rows[i].attempts == 1 for i in in_flight)  # finished through the restart
    # The reaper re-sent the lost rows (all but, at most, the chunks the worker held unclaimed at
    # the crash). It leaves alone a chunk a worker holds now (test_reaper), but on a slow machine a
    # chunk can still be processing past this test's 3 s timeout and be sent once more:
    # harmless, as check_exactly_once shows, so there is no upper bound here.
    assert rig.requeued >= len(lost) - CHUNK * in_flight_limit and rig.gave_up == 0
    assert worker.alive and not worker.exit_codes  # the same process reconnected
    finished_after = [r for r in worker.messages("chunk finished") if r["claimed"]]
    assert sum(r["claimed"] for r in finished_after) == PHOTOS
    print(
        f"\ninjected: Redis SIGKILLed and restarted empty with {waiting} chunks waiting and "
        f"{len(in_flight)} images in flight; checked: {checked_rows} rows done once, "
        f"{checked_objects} objects, {rig.requeued} rows re-sent by the reaper, one worker "
        f"process throughout"
    )


def test_chunk_queue_follows_the_broker_the_app_is_pointed_at(
    distributed_settings: Settings, tmp_path: Path
) -> None:
    """configure_app once sent every later chunk to the first broker it had published to."""
    from jewelcut.queue import CeleryChunkQueue, configure_app

    other = RedisServer(tmp_path / "redis")
    other.start()
    try:
        elsewhere = distributed_settings.model_copy(update={"broker_url": other.url})
        CeleryChunkQueue(distributed_settings).send(["a"], "v", None)
        CeleryChunkQueue(elsewhere).send(["b"], "v", None)  # re-points the app
        configure_app(distributed_settings)
        CeleryChunkQueue(distributed_settings).send(["c"], "v", None)
        depths = (queue_depth(distributed_settings), queue_depth(elsewhere))
    finally:
        other.stop()
    assert depths == (2, 1)
