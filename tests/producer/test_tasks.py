"""The beat-scheduled producer tasks: registered under their names, scheduled, and working."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable

import pytest
import redis

from jewelcut.queue import BACKFILL_TASK, REAP_TASK, app, beat_schedule
from jewelcut.settings import Settings
from producer.tasks import backfill_task, reap_task


def test_tasks_are_registered_and_scheduled(embedded_settings: Settings) -> None:
    app.loader.import_default_modules()  # what a worker and beat do: jewelcut.queue includes us
    assert app.tasks[BACKFILL_TASK].run is backfill_task.run
    assert app.tasks[REAP_TASK].run is reap_task.run
    schedule = beat_schedule(embedded_settings.model_copy(update={"backfill_cron": "15 3 * * *"}))
    tasks = {entry["task"]: entry["schedule"] for entry in schedule.values()}
    assert tasks[BACKFILL_TASK].hour == {3} and tasks[BACKFILL_TASK].minute == {15}
    assert tasks[REAP_TASK] == embedded_settings.reaper_interval_s


@pytest.mark.services
def test_beat_tasks_backfill_then_reap(
    distributed_settings: Settings,
    register: Callable[[Settings, str], str],
    fill: Callable[..., list[str]],
    messages: Callable[[], Counter[str]],
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JEWELCUT_MODEL_VERSION", "v1")
    monkeypatch.setenv("JEWELCUT_PROCESSING_TIMEOUT_S", "0")
    from jewelcut.settings import reset_settings_cache

    reset_settings_cache()
    register(distributed_settings, "v1")
    ids = fill(distributed_settings, 20)

    assert backfill_task.run() == {
        "run_id": 1,
        "model_version": "v1",
        "enqueued": 20,
        "chunks": 3,  # the test settings' chunks of 8
    }
    assert backfill_task.run()["enqueued"] == 0
    # A deadline of 0 s, but the messages still wait in Redis: queued rows are left alone.
    assert reap_task.run() == {"requeued": 0, "failed": 0}
    with contextlib.closing(redis.Redis.from_url(redis_url)) as client:
        client.delete("bulk")  # Redis lost them (a restart without persistence)
    assert reap_task.run() == {"requeued": 20, "failed": 0}
    assert messages() == Counter({image_id: 1 for image_id in ids})
