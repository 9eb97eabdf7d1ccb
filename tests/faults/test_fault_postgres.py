"""Postgres restarted mid-run, as the worker sees it: a proxy in front of the server drops every
connection and refuses new ones for a while, then lets them through again. The worker rides it
out (worker.chunk.with_database_retries, a pool that pings before use) and records every result
once, without a second attempt at any image."""

from __future__ import annotations

from collections.abc import Callable

from harness import SLOW_READS, Rig, TcpProxy, check_exactly_once
from sqlalchemy.engine import make_url

PHOTOS = 12
OUTAGE_S = 3.0


def test_postgres_restart_mid_run_the_worker_reconnects_and_records_every_result(
    make_rig: Callable[..., Rig],
    make_proxy: Callable[[str, int], TcpProxy],
    small_photos: Callable[[int], dict[str, bytes]],
) -> None:
    rig = make_rig(chunk_size=4)
    database = make_url(rig.settings.resolved_database_url)
    assert database.host and database.port
    proxy = make_proxy(database.host, database.port)
    through_proxy = database.set(host="127.0.0.1", port=proxy.port)
    worker = rig.worker(
        "gpu0",
        "--gpu",
        "0",
        JEWELCUT_DATABASE_URL=through_proxy.render_as_string(hide_password=False),
        **SLOW_READS,
    )
    image_ids = rig.catalogue(small_photos(PHOTOS))
    rig.enqueue(image_ids)

    rig.wait_for(lambda rows: any(row.status == "processing" for row in rows.values()))
    with proxy.outage(OUTAGE_S):
        pass
    rows = rig.settle(PHOTOS, timeout_s=150)
    checked_rows, checked_objects = check_exactly_once(rig, image_ids)
    assert all(row.attempts == 1 for row in rows.values())  # ridden out, not reprocessed
    retries = [r for r in worker.records() if r["msg"].startswith("database unavailable")]
    assert proxy.refused >= 1 and len(retries) >= 1
    assert worker.alive and not worker.exit_codes
    print(
        f"\ninjected: Postgres unreachable for {OUTAGE_S:.0f}s mid-chunk (every connection "
        f"reset, {proxy.refused} refused); checked: {len(retries)} database retries logged, "
        f"{checked_rows} rows done with 1 attempt each, {checked_objects} objects"
    )
