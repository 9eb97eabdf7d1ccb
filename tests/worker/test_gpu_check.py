"""The prepared GPU check runs (here on CPU, tiny), so it is known to work before a GPU lease."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jewelcut.settings import PROJECT_ROOT


@pytest.mark.slow
def test_gpu_check_runs_on_cpu(model_dir: Path, model_cache_dir: Path, tmp_path: Path) -> None:
    report_path = tmp_path / "gpu_check.json"
    command = [
        sys.executable, str(PROJECT_ROOT / "scripts" / "gpu_check.py"),
        "--device", "cpu", "--max-batch", "2", "--seconds", "0.5", "--photos", "2",
        "--distinct-photos", "2", "--photo-size", "640x480", "--e2e-images", "2",
        "--cpu-workers", "2", "--model", str(model_dir), "--cache-dir", str(model_cache_dir),
        "--worker-images", "0",
        "--json", str(report_path),
    ]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    report = json.loads(report_path.read_text())
    assert report["agreement"]["ok"] and report["agreement"]["max_abs_diff"] <= 1e-4
    assert [row["batch"] for row in report["throughput"]["rows"]] == [1, 2]
    runs = report["end_to_end"]
    assert [(run["done"], run["cpu_workers"]) for run in runs] == [(2, 0), (2, 2)]
    for run in runs:  # threads, then CPU-stage processes: the stages' figures come back
        assert run["median_stage_ms"]["infer"] > 0 and run["median_stage_ms"]["decode"] > 0
        assert run["cpu_ms_per_image"] > 0 and 0 < run["network_busy_share"] <= 1
