"""Chunk processing without a broker: claims, redelivery, concurrent delivery, recorded results."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import numpy as np
import pytest
from PIL import Image as PILImage
from prometheus_client import REGISTRY
from sqlalchemy import select

from jewelcut.db import Image, Segmentation, session_scope, utcnow
from jewelcut.modelcard import GateThresholds
from jewelcut.registry import active_model_version, ensure_registered
from jewelcut.settings import Settings
from jewelcut.storage import cutout_key, get_storage, mask_key, preview_key, probability_key
from worker.chunk import (
    AloneLock,
    claim_chunk,
    claim_images,
    get_segmenter,
    record_outcomes,
    run_chunk,
    write_artifacts,
)
from worker.cutout import decode_grey_png
from worker.gate import score_and_gate
from worker.pipeline import ImageOutcome, Photo, Prediction


def _catalogue(settings: Settings, sources: dict[str, str], statuses: dict[str, str]) -> str:
    """Images with rows in the given statuses under the active model version; its name."""
    version = active_model_version(settings)
    ensure_registered(version, settings)
    with session_scope(settings.resolved_database_url) as session:
        for image_id, uri in sources.items():
            session.add(Image(id=image_id, source_uri=uri))
        session.flush()
        for image_id, status in statuses.items():
            session.add(Segmentation(image_id=image_id, model_version=version, status=status))
    return version


def _rows(settings: Settings) -> dict[str, Segmentation]:
    with session_scope(settings.resolved_database_url) as session:
        return {row.image_id: row for row in session.scalars(select(Segmentation))}


def test_claim_takes_queued_and_stale_rows_once(distributed_settings: Settings) -> None:
    statuses = {
        "q": "queued",
        "d": "done",
        "f": "failed",
        "busy": "processing",
        "dead": "processing",
    }
    version = _catalogue(distributed_settings, {i: f"s3://x/{i}" for i in statuses}, statuses)
    stale = utcnow() - timedelta(seconds=distributed_settings.processing_timeout_s + 60)
    with session_scope(distributed_settings.resolved_database_url) as session:
        session.get_one(Segmentation, ("busy", version)).started_at = utcnow()
        session.get_one(Segmentation, ("dead", version)).started_at = stale

    claimed = claim_images([*statuses, "unknown"], version, distributed_settings)
    assert claimed == {"q": "s3://x/q", "dead": "s3://x/dead"}
    assert claim_images(list(statuses), version, distributed_settings) == {}  # nothing twice
    rows = _rows(distributed_settings)
    assert rows["q"].status == "processing" and rows["q"].attempts == 1
    assert rows["dead"].started_at > stale
    assert rows["d"].status == "done" and rows["d"].attempts == 0


def test_a_claim_retried_after_a_lost_reply_takes_its_own_rows_again(
    distributed_settings: Settings,
) -> None:
    """The claim committed but its reply was lost (Postgres restarted): the retry, with the same
    claim time, must take those rows again, not leave them to the reaper, and count no attempt."""
    statuses = {"a": "queued", "b": "queued", "other": "processing"}
    version = _catalogue(distributed_settings, {i: f"s3://x/{i}" for i in statuses}, statuses)
    claimed_at = utcnow()
    with session_scope(distributed_settings.resolved_database_url) as session:
        session.get_one(Segmentation, ("other", version)).started_at = utcnow()

    unseen = claim_chunk(list(statuses), version, distributed_settings, claimed_at=claimed_at)
    retried = claim_chunk(list(statuses), version, distributed_settings, claimed_at=claimed_at)
    assert unseen.fresh == retried.fresh == ["a", "b"]
    assert retried.sources == {"a": "s3://x/a", "b": "s3://x/b"}
    rows = _rows(distributed_settings)
    assert [rows[i].attempts for i in ("a", "b", "other")] == [1, 1, 0]


def test_concurrent_deliveries_claim_disjoint_images(distributed_settings: Settings) -> None:
    ids = [f"img-{n:03d}" for n in range(60)]
    statuses = dict.fromkeys(ids, "queued")
    version = _catalogue(distributed_settings, {i: f"s3://x/{i}" for i in ids}, statuses)
    results: list[set[str]] = []
    barrier = threading.Barrier(4)

    def deliver() -> None:
        barrier.wait()
        results.append(set(claim_images(ids, version, distributed_settings)))

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(len(claimed) for claimed in results) == len(ids)  # each image exactly once
    assert set().union(*results) == set(ids)


def test_redelivered_chunk_skips_done_images(
    embedded_settings: Settings, listing_photo: Callable[[int], bytes]
) -> None:
    storage = get_storage(embedded_settings)
    sources = {f"p{n}": storage.put(f"sources/p{n}.jpg", listing_photo(n)) for n in range(3)}
    version = _catalogue(embedded_settings, sources, dict.fromkeys(sources, "queued"))

    first = run_chunk(list(sources), version, settings=embedded_settings)
    assert (first.claimed, first.done, first.failed) == (3, 3, 0)
    finished = {i: row.finished_at for i, row in _rows(embedded_settings).items()}
    again = run_chunk(list(sources), version, settings=embedded_settings)
    assert (again.claimed, again.skipped, again.done) == (0, 3, 0)
    assert {i: row.finished_at for i, row in _rows(embedded_settings).items()} == finished


def test_source_failures_are_recorded_per_image(
    embedded_settings: Settings, listing_photo: Callable[[int], bytes]
) -> None:
    storage = get_storage(embedded_settings)
    sources = {
        "good": storage.put("sources/good.jpg", listing_photo(1)),
        "missing": storage.uri("sources/missing.jpg"),
        "web": "https://example.com/photo.jpg",
        "outside": "file:///etc/hostname",
    }
    version = _catalogue(embedded_settings, sources, dict.fromkeys(sources, "queued"))
    before = _failures_counted("unsupported_source")
    summary = run_chunk(list(sources), version, settings=embedded_settings)
    assert (summary.done, summary.failed) == (1, 3)
    assert _failures_counted("unsupported_source") == before + 2  # Prometheus saw them too
    assert summary.failures == {"fetch_error": 1, "unsupported_source": 2}
    rows = _rows(embedded_settings)
    assert rows["good"].status == "done"
    assert (rows["missing"].status, rows["missing"].reason) == ("failed", "fetch_error")
    assert rows["web"].reason == "unsupported_source" and "scheme" in rows["web"].error
    assert rows["outside"].reason == "unsupported_source"


def _failures_counted(reason: str) -> float:
    labels = {"outcome": "failed", "reason": reason}
    return REGISTRY.get_sample_value("jewelcut_images_total", labels) or 0.0


def test_record_outcomes_is_one_upsert_of_every_field(distributed_settings: Settings) -> None:
    version = _catalogue(distributed_settings, {"a": "s3://x/a", "b": "s3://x/b"}, {"a": "queued"})
    outcomes = [
        ImageOutcome(
            key="a",
            status="done",
            decision="rejected",
            reason="low_confidence",
            confidence=0.5,
            fg_score=0.5,
            bg_score=0.9,
            mask_area=0.2,
            width=40,
            height=30,
            timings={"infer": 0.25},
            artifacts={"preview_uri": "s3://bucket/previews/v/a.jpg"},
        ),
        ImageOutcome(key="b", status="failed", reason="decode_error", error="decode_error: bad"),
    ]
    record_outcomes(outcomes, version, distributed_settings)
    rows = _rows(distributed_settings)
    a, b = rows["a"], rows["b"]
    assert (a.status, a.decision, a.reason, a.confidence, a.mask_area) == (
        "done",
        "rejected",
        "low_confidence",
        0.5,
        0.2,
    )
    assert (a.width, a.height, a.timings, a.cutout_uri) == (40, 30, {"infer": 0.25}, None)
    assert a.preview_uri == "s3://bucket/previews/v/a.jpg" and a.finished_at is not None
    assert (b.status, b.reason, b.error) == ("failed", "decode_error", "decode_error: bad")


def test_segmenter_is_loaded_once_per_process(embedded_settings: Settings) -> None:
    version = active_model_version(embedded_settings)
    first = get_segmenter(version, embedded_settings)
    assert get_segmenter(version, embedded_settings) is first
    assert first.model_version == version


def test_a_broken_stream_keeps_what_finished(
    embedded_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources = {"first": "file:///x/first.jpg", "second": "file:///x/second.jpg"}
    version = _catalogue(embedded_settings, sources, dict.fromkeys(sources, "queued"))

    def breaks_after_one(_segmenter: object, keys: list[str], *_: object) -> Iterator[ImageOutcome]:
        yield ImageOutcome(key=sorted(keys)[0], status="failed", reason="decode_error")
        raise RuntimeError("the accelerator fell over")

    monkeypatch.setattr("worker.pipeline.process_stream", breaks_after_one)
    with pytest.raises(RuntimeError, match="fell over"):
        run_chunk(list(sources), version, settings=embedded_settings)
    rows = _rows(embedded_settings)
    assert (rows["first"].status, rows["first"].reason) == ("failed", "decode_error")
    assert rows["second"].status == "processing"  # left for the reaper, attempts counted
    assert rows["second"].attempts == 1


def _prediction(accepted: bool) -> Prediction:
    """A hand-made prediction at network resolution: a confident square (or a vague one)."""
    probability = np.full((48, 64), 0.001, dtype=np.float32)
    probability[12:36, 16:48] = 0.999 if accepted else 0.6
    mask = probability > 0.5
    gate = score_and_gate(probability, mask, GateThresholds())
    assert (gate.decision == "accepted") is accepted
    return Prediction(probability, mask, gate)


def test_accepted_images_get_a_full_size_cutout_and_a_preview(
    distributed_settings: Settings,
) -> None:
    storage = get_storage(distributed_settings)
    photo = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    bucket = distributed_settings.s3_bucket

    prediction = _prediction(accepted=True)
    accepted = write_artifacts(storage, "v1", "img-a", Photo.of(photo), prediction)
    assert accepted == {
        "cutout_uri": f"s3://{bucket}/{cutout_key('v1', 'img-a')}",
        "preview_uri": f"s3://{bucket}/{preview_key('v1', 'img-a')}",
        "mask_uri": f"s3://{bucket}/{mask_key('v1', 'img-a')}",
        "probability_uri": f"s3://{bucket}/{probability_key('v1', 'img-a')}",
    }
    stored_mask = decode_grey_png(storage.get(mask_key("v1", "img-a")))
    assert np.array_equal(stored_mask > 127, prediction.mask)  # at network resolution
    stored_probability = decode_grey_png(storage.get(probability_key("v1", "img-a")))
    assert np.abs(stored_probability / 255.0 - prediction.probability).max() <= 0.5 / 255
    with PILImage.open(io.BytesIO(storage.get(cutout_key("v1", "img-a")))) as cutout:
        assert (cutout.format, cutout.mode, cutout.size) == ("PNG", "RGBA", (320, 240))
        alpha = np.asarray(cutout)[:, :, 3]
    assert alpha[120, 160] == 255 and alpha[5, 5] == 0  # object kept, background cleared
    with PILImage.open(io.BytesIO(storage.get(preview_key("v1", "img-a")))) as preview:
        assert (preview.format, preview.size) == ("JPEG", (320, 240))
        assert np.asarray(preview)[5, 5].min() > 240  # the cutout on white

    rejected = write_artifacts(storage, "v1", "img-r", Photo.of(photo), _prediction(accepted=False))
    # no cutout, the person sees the photo; the mask is kept for the reviewer all the same
    assert set(rejected) == {"preview_uri", "mask_uri", "probability_uri"}
    assert not storage.exists(cutout_key("v1", "img-r"))


def wait_until(condition: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "state not reached"
        time.sleep(0.01)


def test_a_retried_image_runs_alone_among_the_chunks_in_flight() -> None:
    """AloneLock: an exclusive holder (a retried image) waits for the chunks streaming beside
    it, and a chunk arriving while it waits goes after it, not before."""
    lock = AloneLock()
    order: list[str] = []
    release_first = threading.Event()

    def streaming() -> None:
        with lock.shared():
            order.append("first chunk")
            release_first.wait()

    def retried() -> None:
        with lock.exclusive():
            order.append("retried image")

    def next_chunk() -> None:
        with lock.shared():
            order.append("next chunk")

    threads = [threading.Thread(target=streaming)]
    threads[0].start()
    wait_until(lambda: order == ["first chunk"])
    threads.append(threading.Thread(target=retried))
    threads[1].start()
    wait_until(lambda: lock._waiting_exclusive == 1)
    threads.append(threading.Thread(target=next_chunk))
    threads[2].start()
    wait_until(lambda: len(lock._condition._waiters) == 2)  # type: ignore[attr-defined]
    assert order == ["first chunk"], "both wait: the retried image, and the chunk behind it"
    release_first.set()
    for thread in threads:
        thread.join(timeout=30)
    assert order == ["first chunk", "retried image", "next chunk"]
