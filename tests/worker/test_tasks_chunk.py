"""The Celery task is thin, named as the queue expects, and importable without torch."""

from __future__ import annotations

import subprocess
import sys

from jewelcut.queue import CHUNK_TASK, TASK_MODULES, app
from jewelcut.settings import Settings


def test_task_is_registered_under_the_queue_name() -> None:
    import worker.tasks

    assert worker.tasks.process_chunk.name == CHUNK_TASK
    assert app.tasks[CHUNK_TASK].name == CHUNK_TASK
    assert "worker.tasks" in TASK_MODULES


def test_task_runs_the_chunk_and_returns_its_summary(embedded_settings: Settings) -> None:
    from jewelcut.registry import active_model_version, ensure_registered
    from worker.tasks import process_chunk

    version = active_model_version(embedded_settings)
    ensure_registered(version, embedded_settings)
    result = process_chunk.apply(args=[["not-in-catalogue", "nor-this"], version], task_id="t-1")
    summary = result.get()
    assert summary["chunk_id"] == "t-1" and summary["model_version"] == version
    assert (summary["requested"], summary["claimed"], summary["skipped"]) == (2, 0, 2)


def test_importing_the_tasks_does_not_import_torch() -> None:
    code = (
        "import sys, worker.tasks, jewelcut.queue, jewelcut.registry, worker.chunk;"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
