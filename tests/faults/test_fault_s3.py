"""The S3 server unreachable for a while (a proxy in front of it drops every connection and
refuses new ones): downloads and uploads are retried with backoff, so a short outage only delays
images; an outage longer than the retries ends each image failed with its reason, never
missing."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlparse

import pytest
from harness import SLOW_READS, Rig, TcpProxy, catalogue, check_exactly_once

from jewelcut.db import Segmentation, session_scope
from jewelcut.registry import active_model_version, ensure_registered
from jewelcut.settings import Settings
from jewelcut.storage import S3_MAX_ATTEMPTS
from worker.chunk import run_chunk

PHOTOS = 16
OUTAGE_S = 3.0


def s3_proxy(settings: Settings, make_proxy: Callable[[str, int], TcpProxy]) -> TcpProxy:
    endpoint = urlparse(settings.s3_endpoint_url)
    assert endpoint.hostname and endpoint.port
    return make_proxy(endpoint.hostname, endpoint.port)


def test_s3_outage_is_ridden_out_with_backoff(
    make_rig: Callable[..., Rig],
    make_proxy: Callable[[str, int], TcpProxy],
    small_photos: Callable[[int], dict[str, bytes]],
) -> None:
    rig = make_rig(chunk_size=4)
    proxy = s3_proxy(rig.settings, make_proxy)
    endpoint = f"http://127.0.0.1:{proxy.port}"
    worker = rig.worker("gpu0", "--gpu", "0", JEWELCUT_S3_ENDPOINT_URL=endpoint, **SLOW_READS)
    image_ids = rig.catalogue(small_photos(PHOTOS))
    rig.enqueue(image_ids)

    rig.wait_for(lambda rows: any(row.status == "done" for row in rows.values()))
    with proxy.outage(OUTAGE_S):
        pass
    rig.settle(PHOTOS, timeout_s=150)
    checked_rows, checked_objects = check_exactly_once(rig, image_ids)
    retries = [r for r in worker.records() if r["msg"].startswith("S3 unavailable; retrying")]
    assert proxy.refused >= 1 and len(retries) >= 1
    assert worker.alive and not worker.exit_codes
    print(
        f"\ninjected: S3 unreachable for {OUTAGE_S:.0f}s ({proxy.refused} connections refused); "
        f"checked: {len(retries)} retries logged, {checked_rows} rows done once, "
        f"{checked_objects} objects"
    )


def test_s3_unreachable_past_the_retries_fails_each_image_with_its_reason(
    distributed_settings: Settings,
    make_proxy: Callable[[str, int], TcpProxy],
    small_photos: Callable[[int], dict[str, bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    delays = (0.05, 0.05)
    monkeypatch.setattr("jewelcut.storage.S3_RETRY_DELAYS_S", delays)
    image_ids = catalogue(distributed_settings, small_photos(3))
    version = active_model_version(distributed_settings)
    ensure_registered(version, distributed_settings)
    with session_scope(distributed_settings.resolved_database_url) as session:
        session.add_all(Segmentation(image_id=i, model_version=version) for i in image_ids)
    proxy = s3_proxy(distributed_settings, make_proxy)
    proxy.cut()  # and never restored
    unreachable = distributed_settings.model_copy(
        update={"s3_endpoint_url": f"http://127.0.0.1:{proxy.port}"}
    )

    summary = run_chunk(image_ids, version, settings=unreachable)
    assert (summary.claimed, summary.done, summary.failures) == (3, 0, {"fetch_error": 3})
    with session_scope(distributed_settings.resolved_database_url) as session:
        rows = {row.image_id: row for row in session.query(Segmentation)}
    assert sorted(rows) == image_ids
    for row in rows.values():
        assert (row.status, row.reason) == ("failed", "fetch_error")
        assert row.error and "Connection" in row.error and row.preview_uri is None
    tries = len(image_ids) * (len(delays) + 1) * S3_MAX_ATTEMPTS
    assert proxy.refused == tries  # each image: our retries, each with boto3's own attempts
    print(
        f"\ninjected: S3 unreachable for good; checked: {len(rows)} rows failed/fetch_error, "
        f"{proxy.refused} connection attempts = {len(image_ids)} images x "
        f"{len(delays) + 1} tries x {S3_MAX_ATTEMPTS} boto3 attempts"
    )
