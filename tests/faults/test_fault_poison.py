"""A poison image that crashes the decoding process (SIGSEGV, injected by the harness's worker
wrapper when the bytes carry a marker): the worker dies with its whole chunk in flight, is
started again, and the reaper re-sends the stale rows. A retried image runs alone, counting its
attempt first, so the poison takes down only itself: the rest of its chunk completes and the
poison ends failed/too_many_attempts after max_attempts."""

from __future__ import annotations

import signal
from collections.abc import Callable

from harness import Rig, check_exactly_once
from worker_main import POISON_MARKER

PHOTOS = 5
MAX_ATTEMPTS = 2
MARKER = "jewelcut-test-poison-8c1f"


def test_poison_image_fails_alone_and_the_rest_of_its_chunk_completes(
    make_rig: Callable[..., Rig], small_photos: Callable[[int], dict[str, bytes]]
) -> None:
    rig = make_rig(chunk_size=8, processing_timeout_s=2, max_attempts=MAX_ATTEMPTS)
    worker = rig.worker("gpu0", "--gpu", "0", **{POISON_MARKER: MARKER})
    photos = small_photos(PHOTOS)
    good = sorted(photos)
    # A valid JPEG with the marker after its end: the harness's decoder hook crashes on it.
    photos["poison"] = small_photos(1, "spare")["spare-000"] + MARKER.encode()
    image_ids = rig.catalogue(photos)
    assert rig.enqueue(image_ids) == 1  # one chunk holds them all

    rows = rig.settle(len(image_ids), timeout_s=150, reap_every_s=1.0)
    checked_rows, checked_objects = check_exactly_once(rig, good, failed=("poison",))
    poison = rows["poison"]
    assert (poison.status, poison.reason) == ("failed", "too_many_attempts")
    assert poison.attempts == MAX_ATTEMPTS and poison.preview_uri is None
    assert all(rows[i].attempts <= MAX_ATTEMPTS for i in good)
    crashes = worker.exit_codes
    assert crashes == [-signal.SIGSEGV] * MAX_ATTEMPTS  # one crash per attempt, no more
    print(
        f"\ninjected: a poison image that SIGSEGVs the worker while decoding, in a chunk of "
        f"{len(image_ids)}; checked: {len(crashes)} crashes, poison failed/too_many_attempts "
        f"after {poison.attempts} attempts, {checked_rows} rows ({len(good)} done), "
        f"{checked_objects} objects, {rig.requeued} rows re-sent by the reaper"
    )
