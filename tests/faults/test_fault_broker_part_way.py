"""The broker goes away part way through a command that sends chunks (`enqueue --force`,
`backfill`, `reap`), on Postgres, through the CLI: either the chunk queue's send raises after N
chunks, or the test's own redis-server is killed then. No result is ever erased: every row is as
it was, or queued and sent, or (backfill, reaper) queued and not sent, which the next backfill or
reaper pass sends; the run ends `failed` with its error."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest
import redis
from harness import Rig
from sqlalchemy import select
from typer.testing import CliRunner

import producer.commands
from jewelcut.cli import app
from jewelcut.db import RESULT_COLUMNS, Run, Segmentation, session_scope, utcnow
from jewelcut.queue import BULK_QUEUE, PRIORITY_QUEUE, ChunkQueue, chunk_of_message
from jewelcut.registry import active_model_version, ensure_registered
from jewelcut.settings import Settings
from producer.queueing import chunk_queue
from producer.reaper import reap

pytestmark = pytest.mark.services

FAULTS = ("send fails", "redis killed")
CHUNKS_BEFORE = 1  # chunks sent before the broker goes away
KEPT = ("status", "attempts", "run_id", "enqueued_at", "started_at", *RESULT_COLUMNS)


class BrokerGone(ConnectionError):
    pass


class BrokerFault:
    """Hands the CLI's commands their real chunk queue, whose broker goes away after
    CHUNKS_BEFORE chunks: the send raises, or the test's redis-server is killed (SIGKILL: the
    messages it held are lost) and the send fails for real. `heal()` brings the broker back."""

    def __init__(self, rig: Rig) -> None:
        self.rig, self.kind = rig, rig.fault  # type: ignore[attr-defined]
        self.sent: list[str] = []  # image IDs of the chunks that went out
        self.chunks_sent = 0
        self.broken = True

    def queue(self, settings: Settings, name: str = BULK_QUEUE) -> ChunkQueue:
        return _Dying(self, chunk_queue(settings, name))

    def heal(self) -> None:
        self.broken = False
        redis_server = self.rig.redis
        assert redis_server is not None and redis_server.process is not None
        if redis_server.process.poll() is not None:
            redis_server.start()


class _Dying:
    def __init__(self, fault: BrokerFault, inner: ChunkQueue) -> None:
        self.fault, self.inner = fault, inner

    def send(self, image_ids: Sequence[str], model_version: str, run_id: int | None) -> None:
        fault = self.fault
        if fault.broken and fault.chunks_sent >= CHUNKS_BEFORE:
            if fault.kind == "send fails":
                raise BrokerGone("the broker went away")
            assert fault.rig.redis is not None
            fault.rig.redis.stop()
        self.inner.send(image_ids, model_version, run_id)
        if fault.broken:
            fault.sent.extend(image_ids)
            fault.chunks_sent += 1

    def depth(self) -> int:
        return self.inner.depth()


@pytest.fixture(params=FAULTS)
def rig(request: pytest.FixtureRequest, make_rig: Callable[..., Rig]) -> Rig:
    rig = make_rig(own_redis=True, chunk_size=2, backfill_page_size=4, backfill_max_queued_chunks=0)
    rig.fault = request.param  # type: ignore[attr-defined]
    ensure_registered(active_model_version(rig.settings), rig.settings)
    return rig


@pytest.fixture
def broker(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> BrokerFault:
    fault = BrokerFault(rig)
    monkeypatch.setattr(producer.commands, "chunk_queue", fault.queue)
    return fault


def rows(settings: Settings) -> dict[str, dict[str, Any]]:
    with session_scope(settings.resolved_database_url) as session:
        return {
            row.image_id: {name: getattr(row, name) for name in KEPT}
            for row in session.scalars(select(Segmentation))
        }


def record_results(settings: Settings, image_ids: list[str], status: str = "done") -> None:
    """Finished rows with a result to lose: decision, scores, URIs."""
    model_version = active_model_version(settings)
    finished_at = utcnow() - timedelta(days=1)
    with session_scope(settings.resolved_database_url) as session:
        for n, image_id in enumerate(image_ids):
            accepted = n % 2 == 0
            session.add(
                Segmentation(
                    image_id=image_id,
                    model_version=model_version,
                    status=status,
                    attempts=1,
                    decision="accepted" if accepted else "rejected",
                    reason=None if accepted else "low_confidence",
                    confidence=0.99 if accepted else 0.5,
                    fg_score=0.99,
                    bg_score=0.995,
                    mask_area=0.2,
                    width=160,
                    height=120,
                    cutout_uri=f"s3://bucket/cutouts/{image_id}.png" if accepted else None,
                    preview_uri=f"s3://bucket/previews/{image_id}.jpg",
                    finished_at=finished_at,
                    started_at=finished_at - timedelta(seconds=1),
                    enqueued_at=finished_at - timedelta(seconds=2),
                )
            )


def latest_run(settings: Settings, kind: str) -> Run:
    with session_scope(settings.resolved_database_url) as session:
        run = session.scalars(select(Run).where(Run.kind == kind).order_by(Run.id.desc())).first()
        assert run is not None
        session.expunge(run)
        return run


def messages(rig: Rig, queue: str) -> list[str]:
    """Image IDs in the chunk messages waiting on `queue`, one entry per message they are in."""
    client = redis.Redis.from_url(rig.settings.broker_url)
    try:
        raw = client.lrange(queue, 0, -1)
    finally:
        client.close()
    import json

    chunks = [chunk_of_message(json.loads(message)) for message in raw]
    return [image_id for chunk in chunks if chunk for image_id in chunk[0]]


def assert_failed_run(run: Run, broker: BrokerFault) -> None:
    assert run.status == "failed" and run.finished_at is not None
    expected = "BrokerGone" if broker.kind == "send fails" else "OperationalError"
    assert run.error and expected in run.error, run.error


def test_forced_enqueue_keeps_every_result_when_the_broker_goes_away(
    rig: Rig, broker: BrokerFault
) -> None:
    image_ids = [f"img-{n}" for n in range(8)]
    rig.register({image_id: f"s3://bucket/sources/{image_id}.jpg" for image_id in image_ids})
    record_results(rig.settings, image_ids[:3])
    record_results(rig.settings, image_ids[3:6], status="failed")
    before = rows(rig.settings)  # img-6 and img-7: no row yet

    result = CliRunner().invoke(app, ["enqueue", "--force", *image_ids])

    assert result.exit_code != 0
    assert broker.sent == image_ids[:2]
    run = latest_run(rig.settings, "admin")
    assert_failed_run(run, broker)
    assert (run.enqueued, run.chunks) == (2, 1)
    after = rows(rig.settings)
    assert sorted(after) == sorted(before)  # the unsent new rows are gone again
    for image_id in broker.sent:  # queued again, with their result
        assert (after[image_id]["status"], after[image_id]["run_id"]) == ("queued", run.id)
        assert results(after[image_id]) == results(before[image_id])
    assert {i: after[i] for i in image_ids[2:6]} == {i: before[i] for i in image_ids[2:6]}

    # The broker back, the same command finishes the job; the sent chunk's rows are queued
    # already (their message waits, or was lost with Redis: the reaper's work).
    broker.heal()
    result = CliRunner().invoke(app, ["enqueue", "--force", *image_ids])
    assert result.exit_code == 0, result.output
    assert "2 already recorded" in result.output
    waiting = image_ids if broker.kind == "send fails" else image_ids[2:]
    assert sorted(messages(rig, PRIORITY_QUEUE)) == waiting
    assert latest_run(rig.settings, "admin").status == "finished"


def results(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in RESULT_COLUMNS}


def test_backfill_erases_nothing_and_resumes_when_the_broker_goes_away(
    rig: Rig, broker: BrokerFault
) -> None:
    image_ids = [f"img-{n:02d}" for n in range(10)]
    rig.register({image_id: f"s3://bucket/sources/{image_id}.jpg" for image_id in image_ids})
    done = image_ids[1::3]  # img-01, img-04, img-07: a result each
    record_results(rig.settings, done)
    before = rows(rig.settings)
    to_do = [image_id for image_id in image_ids if image_id not in done]

    result = CliRunner().invoke(app, ["backfill"])

    assert result.exit_code != 0
    assert broker.sent == to_do[:2]
    run = latest_run(rig.settings, "backfill")
    assert_failed_run(run, broker)
    after = rows(rig.settings)
    assert {i: after[i] for i in done} == {i: before[i] for i in done}
    recorded = {i for i in to_do if i in after}
    assert set(broker.sent) <= recorded
    assert all(after[i]["status"] == "queued" for i in recorded)  # sent, or left for the resume

    # The broker back, the next backfill resumes the failed run and sends every image it had not
    # sent, once; none that has a result.
    broker.heal()
    result = CliRunner().invoke(app, ["backfill"])
    assert result.exit_code == 0, result.output
    assert "resumed a crashed run" in result.output
    resumed = latest_run(rig.settings, "backfill")
    assert (resumed.id, resumed.status, resumed.error) == (run.id, "finished", None)
    waiting = to_do if broker.kind == "send fails" else to_do[2:]
    assert sorted(messages(rig, BULK_QUEUE)) == waiting
    assert {i: rows(rig.settings)[i] for i in done} == {i: before[i] for i in done}


def test_reaper_keeps_every_result_and_sends_the_rest_later_when_the_broker_goes_away(
    rig: Rig, broker: BrokerFault
) -> None:
    image_ids = [f"img-{n}" for n in range(6)]
    rig.register({image_id: f"s3://bucket/sources/{image_id}.jpg" for image_id in image_ids})
    # Forced reprocesses whose worker died: `processing` long ago, their old result kept.
    record_results(rig.settings, image_ids, status="processing")
    before = rows(rig.settings)

    result = CliRunner().invoke(app, ["reap"])

    assert result.exit_code != 0
    assert broker.sent == image_ids[:2]
    run = latest_run(rig.settings, "reaper")
    assert_failed_run(run, broker)
    after = rows(rig.settings)
    for image_id in image_ids:  # all marked queued (the unsent ones wait for the next pass) ...
        assert (after[image_id]["status"], after[image_id]["run_id"]) == ("queued", run.id)
        assert results(after[image_id]) == results(before[image_id])  # ... results kept

    # The broker back, a pass after the deadline sends what was recorded and not sent. The sent
    # chunk's message was lost with Redis, or waits: a worker takes it, dies, and it is lost too.
    broker.heal()
    if broker.kind == "send fails":
        assert sorted(messages(rig, BULK_QUEUE)) == image_ids[:2]
        take_waiting_chunk(rig)
    later = utcnow() + timedelta(seconds=rig.settings.processing_timeout_s + 1)
    passed = reap(rig.settings, chunk_queue(rig.settings), now=later)
    assert passed.requeued == len(image_ids)
    assert sorted(messages(rig, BULK_QUEUE)) == image_ids
    assert latest_run(rig.settings, "reaper").status == "finished"
    assert all(results(row) == results(before[i]) for i, row in rows(rig.settings).items())


def take_waiting_chunk(rig: Rig) -> None:
    """What a worker does with a message before it dies running it (its rows stay queued)."""
    from jewelcut.queue import app as celery_app

    with celery_app.connection_for_read() as connection:
        channel = connection.default_channel
        taken = channel.basic_get(BULK_QUEUE, no_ack=False)
        channel.basic_ack(taken.delivery_tag)
