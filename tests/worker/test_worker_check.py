"""The prepared check's last stage: a real `jewelcut worker` over Redis, Postgres and the S3
test server, timed from the enqueue to the last recorded image (here on CPU, tiny)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jewelcut.settings import PROJECT_ROOT
from tests.conftest import POSTGRES_ADMIN_DSN, flush_redis


@pytest.mark.slow
def test_worker_check_times_a_real_worker(
    model_dir: Path, redis_url: str, s3_server: object, tmp_path: Path
) -> None:
    report_path = tmp_path / "worker_check.json"
    command = [
        sys.executable, str(PROJECT_ROOT / "scripts" / "worker_check.py"),
        "--device", "cpu", "--model", str(model_dir), "--images", "6", "--distinct-photos", "3",
        "--photo-size", "320x240", "--chunk-size", "4", "--database-url", POSTGRES_ADMIN_DSN,
        "--redis-url", redis_url, "--s3-endpoint", s3_server.endpoint_url,
        "--json", str(report_path),
    ]  # fmt: skip
    try:
        finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    finally:
        flush_redis(redis_url)  # the check flushed it: the session's claim is put back
    assert finished.returncode == 0, finished.stdout + finished.stderr
    worker = json.loads(report_path.read_text())["worker"]
    assert worker["images"] == worker["done"] == 6 and worker["failed"] == 0
    assert worker["images_per_s"] > 0 and worker["worker_exit_code"] == 0
    assert worker["chunk_size"] == 4
