"""The producer runs on machines without torch: importing it (and its CLI) must not load torch."""

from __future__ import annotations

import subprocess
import sys

PRODUCER_MODULES = (
    "producer.backfill",
    "producer.catalogue",
    "producer.commands",
    "producer.demo",
    "producer.queueing",
    "producer.reaper",
    "producer.report",
    "producer.tasks",
    "jewelcut.cli",
)


def test_producer_imports_without_torch() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {module}\n" for module in PRODUCER_MODULES)
        + "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnxruntime'))\n"
        + "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "", f"heavy modules loaded: {result.stdout[:300]}"
