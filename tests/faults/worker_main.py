"""`jewelcut worker` as the fault tests start it: the real command in its own process, with the
faults the test harness injects from outside the product code (all off unless their variable is
set):

- JEWELCUT_TEST_POISON_MARKER: decoding bytes that contain the marker kills the process with
  SIGSEGV, as a crashing image library would;
- JEWELCUT_TEST_READ_DELAY_S: every source read first sleeps this long, so a chunk is still in
  flight when the test injects its fault.

Run as `python tests/faults/worker_main.py worker --device cpu ...`.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

POISON_MARKER = "JEWELCUT_TEST_POISON_MARKER"
READ_DELAY = "JEWELCUT_TEST_READ_DELAY_S"


def crash_on_poison(marker: bytes) -> None:
    import resource

    import worker.pipeline
    import worker.stages

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash, but no core file left behind
    decode = worker.stages.decode_image

    def decode_or_crash(data: bytes, **limits: Any) -> Any:
        if marker in data:
            os.kill(os.getpid(), signal.SIGSEGV)
        return decode(data, **limits)

    # Where the pipeline decodes: the reduced read (worker.stages) and the full-size decode.
    worker.stages.decode_image = decode_or_crash
    worker.pipeline.decode_image = decode_or_crash


def slow_reads(delay_s: float) -> None:
    import worker.chunk

    fetch = worker.chunk.fetch_source

    def slow_fetch(uri: str, settings: Any) -> bytes:
        time.sleep(delay_s)
        return fetch(uri, settings)

    worker.chunk.fetch_source = slow_fetch


def main() -> None:
    if marker := os.environ.get(POISON_MARKER):
        crash_on_poison(marker.encode())
    if delay := float(os.environ.get(READ_DELAY) or 0):
        slow_reads(delay)
    from jewelcut.cli import app

    app(prog_name="jewelcut")


if __name__ == "__main__":
    main()
