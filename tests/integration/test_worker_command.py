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

from flow import Flow

from jewelcut.settings import Settings


def test_worker_process_consumes_chunks_and_logs_them(
    distributed_settings: Settings,
    photos: Callable[[int], dict[str, bytes]],
    tmp_path: Path,
) -> None:
    flow = Flow(distributed_settings)
    batch = photos(4)
    flow.register(flow.put_photos(batch))
    flow.enqueue(list(batch))  # queued before the worker starts: it must find them

    environment = os.environ | {"JEWELCUT_LOG_JSON": "true", "JEWELCUT_LOG_LEVEL": "INFO"}
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log_file:
        worker = subprocess.Popen(
            [shutil.which("jewelcut") or "jewelcut", "worker", "--device", "cpu"],
            env=environment,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            rows = flow.wait_until_finished(len(batch), timeout_s=300)
        finally:
            worker.send_signal(signal.SIGTERM)
            exit_code = worker.wait(timeout=60)
    assert all(row.status == "done" for row in rows)
    assert exit_code == 0
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line[:1] == "{"]
    finished = [record for record in records if record["msg"] == "chunk finished"]
    assert len(finished) == 1
    assert finished[0]["chunk_id"] and finished[0]["done"] == len(batch)
    assert finished[0]["model_version"] == rows[0].model_version
