"""The Celery app's contract: reliability settings, queues, routing, the Celery chunk queue,
queue depth."""

from __future__ import annotations

import json

import pytest
import redis

from jewelcut.queue import (
    BACKFILL_TASK,
    BULK_QUEUE,
    CHUNK_TASK,
    PRIORITY_QUEUE,
    REAP_TASK,
    CeleryChunkQueue,
    app,
    celery_config,
    held_chunks,
    queue_depth,
)
from jewelcut.settings import Settings


def test_reliability_settings(distributed_settings: Settings) -> None:
    config = celery_config(distributed_settings)
    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True
    assert config["worker_prefetch_multiplier"] == 1
    visibility = config["broker_transport_options"]["visibility_timeout"]
    assert visibility == distributed_settings.visibility_timeout_s
    assert visibility > distributed_settings.processing_timeout_s
    assert config["broker_transport_options"]["queue_order_strategy"] == "priority"
    assert app.conf.broker_url == distributed_settings.broker_url


def test_beat_schedules_backfill_and_reaper(distributed_settings: Settings) -> None:
    schedule = celery_config(distributed_settings)["beat_schedule"]
    tasks = {entry["task"] for entry in schedule.values()}
    assert tasks == {BACKFILL_TASK, REAP_TASK}
    nightly = schedule["nightly-backfill"]["schedule"]
    assert nightly.hour == {2} and nightly.minute == {0}


def test_chunk_queue_sends_to_its_named_queue(distributed_settings: Settings) -> None:
    assert queue_depth(distributed_settings) == 0
    CeleryChunkQueue(distributed_settings, PRIORITY_QUEUE).send(["a", "b"], "v1", 7)
    bulk = CeleryChunkQueue(distributed_settings)  # bulk by default
    bulk.send(["c"], "v1", None)
    assert bulk.depth() == 1
    assert queue_depth(distributed_settings, PRIORITY_QUEUE) == 1
    assert queue_depth(distributed_settings, (BULK_QUEUE,)) == 1
    assert queue_depth(distributed_settings) == 2
    client = redis.Redis.from_url(distributed_settings.broker_url)
    message = json.loads(client.lindex(PRIORITY_QUEUE, 0))
    assert message["headers"]["task"] == CHUNK_TASK
    args = json.loads(__import__("base64").b64decode(message["body"]))[0]
    assert args == [["a", "b"], "v1", 7]
    client.close()


def test_held_chunks_are_those_a_worker_took_and_has_not_acknowledged(
    distributed_settings: Settings,
) -> None:
    bulk = CeleryChunkQueue(distributed_settings)
    bulk.send(["a", "b"], "v1", 3)
    bulk.send(["c"], "v2", None)
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        taken = channel.basic_get(BULK_QUEUE, no_ack=False)  # what a worker's consumer does
        assert queue_depth(distributed_settings) == 1
        assert held_chunks(distributed_settings) == [(["a", "b"], "v1")]
        channel.basic_ack(taken.delivery_tag)
    assert held_chunks(distributed_settings) == []
    assert queue_depth(distributed_settings) == 1


def test_embedded_mode_has_no_queue(embedded_settings: Settings) -> None:
    assert queue_depth(embedded_settings) == 0
    assert held_chunks(embedded_settings) == []


def test_an_unknown_chunk_queue_is_refused(distributed_settings: Settings) -> None:
    with pytest.raises(ValueError, match="unknown chunk queue"):
        CeleryChunkQueue(distributed_settings, "control")
