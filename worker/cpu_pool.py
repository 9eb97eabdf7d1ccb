"""CPU-stage processes: decode, preprocess, cleanup, gate and rendering off the main process.

In threads these stages hold the GIL for about 15% of their CPU time (py-spy --gil on 1280x960
listing photos: 23% for decode + preprocess, 12% for encoding): threads then top out at a few
cores, and on a GPU host the inference thread queues for the GIL behind them. In processes they
scale with cores and leave the main process to inference and I/O. Per call only the photo's
bytes, the network input, the probability map and the encoded artifacts cross over.

The processes are forked at Segmenter.load(), before the backend's threads and any stream's
exist: quick to start, and they run the very modules the parent set up. One that dies (a
poison photo crashing a decoder) breaks the pool, and this process then dies with the same
signal, as it would have with the decoder in-process: which photo did it cannot be told here,
and the chunk's redelivery (worker.chunk) runs each retried photo alone, so a poison photo ends
failed on its own while the rest of its chunk completes. A photo that merely fails (bad bytes,
a writer's error) fails alone, as in-process.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, NoReturn, TypeVar

import cv2
import numpy as np

from jewelcut.errors import ImageFailure
from jewelcut.modelcard import GateThresholds
from worker.gate import GateResult
from worker.preprocess import PreparedImage
from worker.stages import CpuStages, Photo, Renderer, timed

log = logging.getLogger(__name__)
T = TypeVar("T")
PR_SET_PDEATHSIG = 1
DEATH_WAIT_S = 10.0

_stages: CpuStages | None = None  # set in each CPU-stage process


class CpuPool:
    """`workers` processes running CpuStages; calls block the calling (I/O) thread."""

    def __init__(self, stages: CpuStages, workers: int) -> None:
        self.stages = stages
        # One core per process: the pool is the parallelism. Set here, before the fork: an
        # OpenCV thread pool inherited by a forked child deadlocks it on first use.
        cv2.setNumThreads(1)
        self.executor = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_start,
            initargs=(stages,),
        )
        wait([self.executor.submit(os.getpid) for _ in range(workers)])  # all started now
        self.processes = list(self.executor._processes.values())  # their exit codes, if they die
        log.info("CPU-stage processes started", extra={"cpu_workers": workers})

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)

    def prepare(self, data: bytes, timings: dict[str, float]) -> tuple[Photo, PreparedImage]:
        """Decode (reduced) and preprocess; raises ImageFailure as in-process."""
        height, width, prepared, child_timings = self._call(self.executor.submit(_prepare, data))
        timings.update(child_timings)
        return Photo(data, height, width, self.stages.limits), prepared

    def finish(
        self,
        photo: Photo,
        probability: np.ndarray,
        thresholds: GateThresholds,
        render: Renderer,
        timings: dict[str, float],
    ) -> tuple[GateResult, dict[str, bytes]]:
        """Cleanup, gate at `thresholds` (the version's gate of the moment: a calibrated one
        may be applied after the processes started) and render; raises ImageFailure as
        in-process."""
        future = self.executor.submit(
            _finish, photo.data, photo.height, photo.width, probability, thresholds, render
        )
        gate, rendered, child_timings = self._call(future)
        timings.update(child_timings)
        return gate, rendered

    def _call(self, future: Future[tuple[Any, ...]]) -> tuple[Any, ...]:
        try:
            result = future.result()
        except BrokenProcessPool:
            self._died()
        if result[0] == "failed":
            _, reason, message = result
            raise ImageFailure(reason, message)
        return result[1:]

    def _died(self) -> NoReturn:
        crash, codes = self._crash_signal()
        log.critical(
            "a CPU-stage process died; going down the same way (signal %d)",
            crash,
            extra={"exit_codes": codes},
        )
        logging.shutdown()
        os.kill(os.getpid(), crash)
        raise SystemExit(128 + crash)  # not reached: the signal's default action ends us

    def _crash_signal(self) -> tuple[int, list[int | None]]:
        """The signal that killed a CPU-stage process, and every process's exit code. The pool
        stops the others with SIGTERM, so the first other signal is the crash. A dead child's
        exit code can lag its sentinel (the pool's own thread may be reaping it), so this
        waits for it, within DEATH_WAIT_S; SIGKILL if it never shows."""
        deadline = time.monotonic() + DEATH_WAIT_S
        while True:
            codes = [process.exitcode for process in self.processes]
            crashes = [
                -code for code in codes if code is not None and code < 0 and -code != signal.SIGTERM
            ]
            if crashes or None not in codes or time.monotonic() > deadline:
                return (crashes[0] if crashes else signal.SIGKILL), codes
            alive = [process.sentinel for process in self.processes if process.exitcode is None]
            multiprocessing.connection.wait(alive, timeout=0.05)


def _start(stages: CpuStages) -> None:
    global _stages
    _stages = stages
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    with contextlib.suppress(OSError, AttributeError):  # die with the parent, even killed outright
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _prepare(data: bytes) -> tuple[Any, ...]:
    assert _stages is not None
    timings: dict[str, float] = {}
    try:
        with timed(timings, "decode"):
            photo = _stages.read_photo(data)
        with timed(timings, "preprocess"):
            prepared = _stages.prepare(photo)
    except ImageFailure as failure:
        return "failed", failure.reason, failure.message
    return "ok", photo.height, photo.width, prepared, timings


def _finish(
    data: bytes,
    height: int,
    width: int,
    probability: np.ndarray,
    thresholds: GateThresholds,
    render: Renderer,
) -> tuple[Any, ...]:
    assert _stages is not None
    timings: dict[str, float] = {}
    photo = Photo(data, height, width, _stages.limits)
    try:
        with timed(timings, "cleanup"):
            prediction = _stages.finish(probability, thresholds)
        with timed(timings, "write"):
            rendered = render(photo, prediction)
    except ImageFailure as failure:
        return "failed", failure.reason, failure.message
    return "ok", prediction.gate, rendered, timings
