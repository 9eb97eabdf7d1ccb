"""`jewelcut worker` as operators run it: its own process, solo pool, both chunk queues, JSON
logs naming the chunk; a warm shutdown on SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flow import Flow

from jewelcut.settings import Settings


def run_worker_until_finished(
    flow: Flow, count: int, log_path: Path, **environment: str
) -> tuple[list[Any], int]:
    """`jewelcut worker --device cpu` in its own process, JSON logs to `log_path`, until `count`
    rows are finished; then SIGTERM. Returns the rows and the worker's exit code."""
    environment = os.environ | {"JEWELCUT_LOG_JSON": "true", **environment}
    with log_path.open("wb") as log_file:
        worker = subprocess.Popen(
            [shutil.which("jewelcut") or "jewelcut", "worker", "--device", "cpu"],
            env=environment,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            rows = flow.wait_until_finished(count, timeout_s=300)
        finally:
            worker.send_signal(signal.SIGTERM)
            exit_code = worker.wait(timeout=60)
    return rows, exit_code


def chunks_finished(log: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in log.splitlines() if line[:1] == "{"]
    return [record for record in records if record["msg"] == "chunk finished"]


def test_worker_process_consumes_chunks_and_logs_them(
    distributed_settings: Settings,
    photos: Callable[[int], dict[str, bytes]],
    tmp_path: Path,
) -> None:
    flow = Flow(distributed_settings)
    batch = photos(4)
    flow.register(flow.put_photos(batch))
    flow.enqueue(list(batch))  # queued before the worker starts: it must find them

    log_path = tmp_path / "worker.log"
    rows, exit_code = run_worker_until_finished(
        flow, len(batch), log_path, JEWELCUT_LOG_LEVEL="INFO"
    )
    assert all(row.status == "done" for row in rows)
    assert exit_code == 0
    finished = chunks_finished(log_path.read_text())
    assert len(finished) == 1
    assert finished[0]["chunk_id"] and finished[0]["done"] == len(batch)
    assert finished[0]["model_version"] == rows[0].model_version


def test_worker_with_two_chunks_in_flight_records_every_image_once(
    distributed_settings: Settings,
    photos: Callable[[int], dict[str, bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """JEWELCUT_CHUNKS_IN_FLIGHT=2: a threads pool of two, sharing one model; three chunks
    queued up front, so two run at once."""
    from jewelcut.settings import reset_settings_cache

    monkeypatch.setenv("JEWELCUT_CHUNK_SIZE", "2")
    reset_settings_cache()
    flow = Flow(distributed_settings)
    batch = photos(6)
    flow.register(flow.put_photos(batch))
    flow.enqueue(list(batch))

    log_path = tmp_path / "worker.log"
    rows, exit_code = run_worker_until_finished(
        flow, len(batch), log_path, JEWELCUT_LOG_LEVEL="INFO", JEWELCUT_CHUNKS_IN_FLIGHT="2"
    )
    assert sorted(row.image_id for row in rows) == sorted(batch)
    assert all(row.status == "done" for row in rows)
    assert exit_code == 0
    output = log_path.read_text()
    assert "concurrency: 2 (thread)" in output, "the threads pool, two at once"
    finished = chunks_finished(output)
    assert len({record["chunk_id"] for record in finished}) == len(finished) == 3
    assert sum(record["done"] for record in finished) == len(batch)
