"""The backfill over a 2,000-image catalogue on Postgres, enqueueing on a real Redis queue with no
worker running: every message is counted in Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest
from sqlalchemy import func, select, update

from jewelcut.db import Run, Segmentation, get_engine, utcnow
from jewelcut.queue import ChunkQueue
from jewelcut.settings import Settings
from producer.backfill import BackfillBusy, BackfillOptions, backfill_lock, run_backfill
from producer.queueing import chunk_queue

pytestmark = pytest.mark.services

CATALOGUE_SIZE = 2000  # the catalogue fixture's
CHUNKS = 7 * 5 - 1  # 300-image pages cut in 64-image chunks: 4 full and one of 44 per page


def image_id(index: int) -> str:
    return f"img-{index:07d}"


class SimulatedCrash(Exception):
    pass


class CrashAfter:
    """The real bulk queue, until the producer 'dies' on its (chunks + 1)th send."""

    def __init__(self, inner: ChunkQueue, chunks: int) -> None:
        self.inner, self.chunks, self.sent = inner, chunks, 0

    def send(self, image_ids: list[str], model_version: str, run_id: int | None) -> None:
        if self.sent == self.chunks:
            raise SimulatedCrash(f"producer died after {self.sent} chunks")
        self.inner.send(image_ids, model_version, run_id)
        self.sent += 1

    def depth(self) -> int:
        return self.inner.depth()


def segmentation_counts(settings: Settings, model_version: str) -> dict[str, int]:
    query = (
        select(Segmentation.status, func.count())
        .where(Segmentation.model_version == model_version)
        .group_by(Segmentation.status)
    )
    with get_engine(settings.resolved_database_url).connect() as connection:
        return dict(connection.execute(query).all())


def runs(settings: Settings) -> list[Run]:
    with get_engine(settings.resolved_database_url).connect() as connection:
        return list(connection.execute(select(Run).order_by(Run.id)).all())


def assert_each_once(sent: Counter[str], expected: list[str]) -> None:
    duplicates = {i: n for i, n in sent.items() if n > 1}
    assert not duplicates, f"{len(duplicates)} images enqueued twice, e.g. {list(duplicates)[:3]}"
    assert set(sent) == set(expected)


def test_backfill_enqueues_each_image_exactly_once(
    producer_settings: Settings,
    catalogue: list[str],
    messages: Callable[[], Counter[str]],
    chunks_in_queue: Callable[[], list[tuple[list[str], str]]],
) -> None:
    result = run_backfill(
        producer_settings, BackfillOptions(model_version="v1"), queue=chunk_queue(producer_settings)
    )

    sent = messages()
    assert_each_once(sent, catalogue)
    assert sum(sent.values()) == CATALOGUE_SIZE
    assert result.enqueued == CATALOGUE_SIZE and result.skipped == 0
    # 300-image pages cut into 64-image chunks: 5 chunks per page (4 full, one of 44), 7 pages.
    assert result.chunks == len(chunks_in_queue()) == CHUNKS
    assert segmentation_counts(producer_settings, "v1") == {"queued": CATALOGUE_SIZE}
    [run] = runs(producer_settings)
    assert (run.status, run.enqueued, run.cursor) == ("finished", CATALOGUE_SIZE, catalogue[-1])


def test_second_run_enqueues_nothing_and_new_version_enqueues_all(
    producer_settings: Settings,
    catalogue: list[str],
    messages: Callable[[], Counter[str]],
    chunks_in_queue: Callable[[], list[tuple[list[str], str]]],
    register: Callable[[Settings, str], str],
) -> None:
    run_backfill(
        producer_settings, BackfillOptions(model_version="v1"), queue=chunk_queue(producer_settings)
    )
    again = run_backfill(
        producer_settings, BackfillOptions(model_version="v1"), queue=chunk_queue(producer_settings)
    )
    assert (again.enqueued, again.skipped, again.chunks) == (0, CATALOGUE_SIZE, 0)
    assert sum(messages().values()) == CATALOGUE_SIZE

    # Done rows are skipped too; a new model version reprocesses the whole catalogue.
    with get_engine(producer_settings.resolved_database_url).begin() as connection:
        connection.execute(update(Segmentation).values(status="done", finished_at=utcnow()))
    assert (
        run_backfill(
            producer_settings,
            BackfillOptions(model_version="v1"),
            queue=chunk_queue(producer_settings),
        ).enqueued
        == 0
    )
    register(producer_settings, "v2")
    result = run_backfill(
        producer_settings, BackfillOptions(model_version="v2"), queue=chunk_queue(producer_settings)
    )

    assert result.enqueued == CATALOGUE_SIZE
    by_version = Counter(version for ids, version in chunks_in_queue() for _ in ids)
    assert by_version == {"v1": CATALOGUE_SIZE, "v2": CATALOGUE_SIZE}
    assert segmentation_counts(producer_settings, "v2") == {"queued": CATALOGUE_SIZE}


@pytest.mark.parametrize("left_as", ["failed", "running"])
def test_crashed_backfill_resumes_and_sends_nothing_twice(
    producer_settings: Settings,
    catalogue: list[str],
    messages: Callable[[], Counter[str]],
    left_as: str,
) -> None:
    crashing = CrashAfter(chunk_queue(producer_settings), chunks=12)
    with pytest.raises(SimulatedCrash):
        run_backfill(producer_settings, BackfillOptions(model_version="v1"), queue=crashing)
    sent_before_crash = 2 * 300 + 2 * 64  # two pages of 5 chunks, then 2 chunks of the third
    assert sum(messages().values()) == sent_before_crash
    if left_as == "running":  # as a SIGKILL leaves it: no chance to mark the run failed
        with get_engine(producer_settings.resolved_database_url).begin() as connection:
            connection.execute(update(Run).values(status="running"))

    resumed = run_backfill(
        producer_settings, BackfillOptions(model_version="v1"), queue=chunk_queue(producer_settings)
    )

    assert resumed.resumed_from == catalogue[sent_before_crash - 1]
    assert resumed.enqueued == CATALOGUE_SIZE - sent_before_crash
    assert_each_once(messages(), catalogue)
    [run] = runs(producer_settings)  # the same run, carried on
    assert (run.status, run.enqueued, run.chunks) == ("finished", CATALOGUE_SIZE, CHUNKS)


def test_backfill_killed_with_sigkill_resumes(
    producer_settings: Settings,
    catalogue: list[str],
    messages: Callable[[], Counter[str]],
    chunks_in_queue: Callable[[], list[tuple[list[str], str]]],
) -> None:
    """The real CLI in a process of its own, held by backpressure (no worker drains the queue)
    half way, then SIGKILLed: its advisory lock dies with it and the next run finishes the job."""
    environment = {
        **os.environ,
        "JEWELCUT_MODEL_VERSION": "v1",
        "JEWELCUT_CHUNK_SIZE": "64",
        "JEWELCUT_BACKFILL_PAGE_SIZE": "300",
        "JEWELCUT_BACKFILL_MAX_QUEUED_CHUNKS": "15",
    }
    process = subprocess.Popen(
        [sys.executable, "-c", "from jewelcut.cli import app; app()", "backfill"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_until(lambda: len(chunks_in_queue()) >= 16 or process.poll() is not None, 120)
        assert process.poll() is None, process.communicate()[1].decode()[-2000:]
        time.sleep(0.5)  # it is waiting for room now
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    sent_before_kill = 3 * 300 + 64  # three pages of 5 chunks, then one chunk of the fourth
    assert sum(messages().values()) == sent_before_kill
    [killed] = runs(producer_settings)
    assert killed.status == "running"

    resumed = run_backfill(
        producer_settings, BackfillOptions(model_version="v1"), queue=chunk_queue(producer_settings)
    )

    assert resumed.run_id == killed.id and resumed.resumed_from == catalogue[sent_before_kill - 1]
    assert_each_once(messages(), catalogue)


def test_backpressure_holds_the_queue_near_its_bound(
    producer_settings: Settings, catalogue: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consumer drains the real queue slowly; the producer never lets it grow past the bound."""
    import redis

    import producer.backfill

    monkeypatch.setattr(producer.backfill, "BACKPRESSURE_POLL_S", 0.01)
    bound = 3
    settings = producer_settings.model_copy(update={"backfill_max_queued_chunks": bound})
    client = redis.Redis.from_url(settings.broker_url)
    drained: list[bytes] = []
    depths: list[int] = []
    finished = threading.Event()

    def drain() -> None:
        while not finished.is_set() or client.llen("bulk"):
            depths.append(client.llen("bulk"))
            message = client.rpop("bulk")
            if message:
                drained.append(message)
            time.sleep(0.03)  # slower than the producer: it must wait

    consumer = threading.Thread(target=drain)
    consumer.start()
    try:
        result = run_backfill(
            settings, BackfillOptions(model_version="v1"), queue=chunk_queue(settings)
        )
    finally:
        finished.set()
        consumer.join(timeout=30)
        client.close()

    assert result.enqueued == CATALOGUE_SIZE and len(drained) == result.chunks
    assert max(depths) <= bound + 1  # one chunk may land after the last check
    assert result.waited_s > 0


def test_limit_since_and_dry_run(
    producer_settings: Settings,
    catalogue: list[str],
    messages: Callable[[], Counter[str]],
    fill: Callable[..., list[str]],
) -> None:
    dry = run_backfill(
        producer_settings,
        BackfillOptions(model_version="v1", dry_run=True),
        queue=chunk_queue(producer_settings),
    )
    assert (dry.enqueued, dry.chunks, dry.run_id) == (CATALOGUE_SIZE, CHUNKS, None)
    assert (
        not messages()
        and not segmentation_counts(producer_settings, "v1")
        and not runs(producer_settings)
    )

    limited = run_backfill(
        producer_settings,
        BackfillOptions(model_version="v1", limit=500),
        queue=chunk_queue(producer_settings),
    )
    assert limited.enqueued == 500 and limited.cursor == image_id(499)
    assert set(messages()) == {image_id(i) for i in range(500)}

    cutoff = utcnow()
    time.sleep(0.01)
    newer = fill(producer_settings, 10, start=CATALOGUE_SIZE)
    recent = run_backfill(
        producer_settings,
        BackfillOptions(model_version="v1", since=cutoff),
        queue=chunk_queue(producer_settings),
    )
    assert recent.enqueued == 10 and recent.scanned == 10
    assert_each_once(messages(), [*catalogue[:500], *newer])


def test_one_backfill_per_model_version_at_a_time(
    producer_settings: Settings, catalogue: list[str]
) -> None:
    engine = get_engine(producer_settings.resolved_database_url)
    with backfill_lock(engine, "v1"), pytest.raises(BackfillBusy):
        run_backfill(
            producer_settings,
            BackfillOptions(model_version="v1"),
            queue=chunk_queue(producer_settings),
        )
    result = run_backfill(
        producer_settings, BackfillOptions(model_version="v1"), queue=chunk_queue(producer_settings)
    )
    assert result.enqueued == CATALOGUE_SIZE


def _wait_until(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout_s}s")
        time.sleep(0.1)
