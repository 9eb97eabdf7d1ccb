"""CPU-stage processes: decode, preprocess, cleanup, gate and rendering off the main process.

In threads these stages hold the GIL for about 15% of their CPU time (py-spy --gil on 1280x960
listing photos: 23% for decode + preprocess, 12% for encoding): threads then top out at a few
cores, and on a GPU host the inference thread queues for the GIL behind them. In processes they
scale with cores and leave the main process to inference and I/O. Per call only small
arguments and the encoded artifacts go through a pipe; the photo's file, the network input and
the probability map are written in place in memory shared with the processes (SharedSlots).

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
import mmap
import multiprocessing
import multiprocessing.connection
import os
import pickle
import queue
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, NoReturn

import cv2
import numpy as np

from jewelcut.errors import ImageFailure
from jewelcut.modelcard import GateThresholds
from worker.cutout import PREVIEW_MAX_SIDE, bounded
from worker.gate import GateResult
from worker.preprocess import PreparedImage
from worker.stages import CpuStages, Photo, Renderer, keep_freed_memory, timed

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
DEATH_WAIT_S = 10.0

# Photos in flight through the pool with their arrays in shared memory: above any stream's
# window (2 x batch + 2 x I/O threads); past it, arrays go through the pipe (slower, no less right).
SLOTS = 64
# A photo's file up to this size goes to the processes through its slot, once, for both calls
# (prepare, and finish, which decodes it at full size when accepted); a larger one through the
# pipe. Only the pages a file touches are ever mapped in.
PHOTO_FILE_BYTES = 4 << 20

_stages: CpuStages | None = None  # set in each CPU-stage process
_slots: SharedSlots | None = None


class SharedSlots:
    """Memory shared with the CPU-stage processes, one slot per photo in flight, holding its
    file and its large arrays: the network input (written there by preprocessing), the
    probability map (written by the main process for cleanup) and the reduced photo bounded to
    what a person is shown (kept from decoding for the preview of a rejected photo, which is
    not decoded again).
    Pickled through a pipe, they cost over 10 ms of CPU a photo at the two ends (measured when
    the input was float32: 4 MB a photo at input 480), more than decoding; a 200 KB file sent
    twice costs ~0.16 ms of CPU a photo and as many waits on the pipe. An anonymous shared
    mapping, made before the processes are forked: nothing to name or clean up, and no /dev/shm
    (64 MB in a container)."""

    def __init__(self, count: int, input_size: int) -> None:
        sizes = {  # region: (dtype, most elements)
            "file": (np.uint8, PHOTO_FILE_BYTES),
            "tensor": (np.uint8, 3 * input_size * input_size),
            "probability": (np.float32, input_size * input_size),
            "shown": (np.uint8, 3 * PREVIEW_MAX_SIDE * PREVIEW_MAX_SIDE),
        }
        self.regions: dict[str, tuple[type[np.generic], int, int]] = {}  # dtype, offset, size
        offset = 0
        for region, (dtype, elements) in sizes.items():
            size = elements * np.dtype(dtype).itemsize
            self.regions[region] = (dtype, offset, size)
            offset += -(-size // 64) * 64  # cache-line aligned
        self.slot_bytes = offset
        self.buffer = mmap.mmap(-1, count * self.slot_bytes)  # MAP_SHARED | MAP_ANONYMOUS
        # Last in, first out: the same few slots serve a stream, their pages mapped and warm.
        self.free: queue.LifoQueue[int] = queue.LifoQueue()
        for slot in reversed(range(count)):
            self.free.put(slot)

    def acquire(self) -> int | None:
        """A free slot, or None when all are in use."""
        try:
            return self.free.get_nowait()
        except queue.Empty:
            return None

    def release(self, slot: int | None) -> None:
        if slot is not None:
            self.free.put(slot)

    def holds(self, slot: int | None, data: bytes) -> bool:
        """Whether `data` fits (and so, once put, is kept in) the slot's file region."""
        return slot is not None and len(data) <= self.regions["file"][2]

    def put_file(self, slot: int | None, data: bytes) -> bytes | int:
        """What a call sends for a photo's file: its length once written into the slot, when it
        fits; else the bytes themselves."""
        if not self.holds(slot, data):
            return data
        self.array(slot, "file", (len(data),))[...] = np.frombuffer(data, np.uint8)
        return len(data)

    def file(self, slot: int | None, sent: bytes | int) -> bytes:
        """The photo's file from what a call was sent (put_file's result)."""
        if isinstance(sent, bytes):
            return sent
        assert slot is not None
        return self.array(slot, "file", (sent,)).tobytes()

    def array(self, slot: int, region: str, shape: tuple[int, ...]) -> np.ndarray:
        """The slot's `region` as an array of `shape` (within the region's size)."""
        dtype, offset, size = self.regions[region]
        if int(np.prod(shape)) * np.dtype(dtype).itemsize > size:
            raise ValueError(f"{shape} does not fit the slot's {region}")
        return np.ndarray(shape, dtype, self.buffer, slot * self.slot_bytes + offset)


class CpuPool:
    """`workers` processes running CpuStages, each behind its own pipe; a call takes an idle
    one and blocks the calling (I/O) thread. No executor: concurrent.futures' manager and
    feeder threads cost the main process ~1.5 ms of CPU a photo, which on a GPU host is the
    process that feeds the accelerator."""

    def __init__(self, stages: CpuStages, workers: int) -> None:
        self.stages = stages
        self.slots = SharedSlots(SLOTS, stages.preprocess.input_size)
        # One core per process: the pool is the parallelism. Set here, before the fork: an
        # OpenCV thread pool inherited by a forked child deadlocks it on first use.
        cv2.setNumThreads(1)
        context = multiprocessing.get_context("fork")
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self.idle: queue.SimpleQueue[Connection] = queue.SimpleQueue()
        self.connections: list[Connection] = []
        # Linux sends the death signal when the forking THREAD ends, not its process: forked
        # from another thread (a Celery threads-pool worker loading the model in its first
        # chunk), the processes would be killed with it. There the pipe's EOF ends them.
        die_with_parent = threading.current_thread() is threading.main_thread()
        for _ in range(workers):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_serve,
                args=(theirs, stages, self.slots, die_with_parent),
                name="jewelcut-cpu",
                daemon=True,
            )
            process.start()
            theirs.close()
            self.processes.append(process)
            self.connections.append(ours)
            self.idle.put(ours)
        log.info("CPU-stage processes started", extra={"cpu_workers": workers})

    def close(self) -> None:
        """Stop the processes once their calls in progress are done."""
        for _ in self.connections:
            connection = self.idle.get()  # waits for a call in progress
            with contextlib.suppress(OSError):
                connection.send(None)
            connection.close()
        for process in self.processes:
            process.join(DEATH_WAIT_S)
            if process.exitcode is None:
                process.kill()

    def prepare(
        self, data: bytes, timings: dict[str, float]
    ) -> tuple[Photo, PreparedImage, int | None]:
        """Decode (reduced) and preprocess; raises ImageFailure as in-process. Returns the
        photo's slot (None: none was free), which holds its network input and its reduced
        photo (bounded to the preview's size) until it is released: `slots.release(slot)`,
        once the photo is finished (the arrays are not to be used after that)."""
        slot = self.slots.acquire()
        try:
            sent = self.slots.put_file(slot, data)
            height, width, prepared, child_timings = self._call(_prepare, sent, slot)
        except BaseException:
            self.slots.release(slot)
            raise
        timings.update(child_timings)
        if slot is None:
            return Photo(data, height, width, self.stages.limits), prepared, slot
        shape, net_height, net_width, shown_shape = prepared  # the arrays are in the slot
        shown = self.slots.array(slot, "shown", shown_shape)
        tensor = self.slots.array(slot, "tensor", shape)
        photo = Photo(data, height, width, self.stages.limits, shown)
        return photo, PreparedImage(tensor, net_height, net_width), slot

    def finish(
        self,
        photo: Photo,
        probability: np.ndarray,
        thresholds: GateThresholds,
        render: Renderer,
        timings: dict[str, float],
        slot: int | None,
    ) -> tuple[GateResult, dict[str, bytes]]:
        """Cleanup, gate at `thresholds` (the version's gate of the moment: a calibrated one
        may be applied after the processes started) and render; raises ImageFailure as
        in-process. `slot`: the photo's, from prepare(); the probability goes through it."""
        sent: np.ndarray | tuple[tuple[int, ...], ...] = probability
        if slot is not None:
            self.slots.array(slot, "probability", probability.shape)[...] = probability
            sent = (probability.shape, photo.reduced.shape)
        # The file is in the slot still, when it fitted: put there by prepare().
        data = len(photo.data) if self.slots.holds(slot, photo.data) else photo.data
        gate, rendered, child_timings = self._call(
            _finish, data, photo.height, photo.width, sent, slot, thresholds, render
        )
        timings.update(child_timings)
        return gate, rendered

    def _call(self, function: Callable[..., tuple[Any, ...]], *args: Any) -> tuple[Any, ...]:
        connection = self.idle.get()
        try:
            connection.send((function, args))  # pickled whole before a byte is sent
        except (EOFError, OSError):  # the process is gone
            self._died()
        except BaseException:  # an argument that cannot be pickled: nothing was sent
            self.idle.put(connection)
            raise
        try:
            outcome, result = connection.recv()
        except (EOFError, OSError):  # the process died mid-call
            self._died()
        self.idle.put(connection)
        if outcome == "raised":
            raise result
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
        """The signal that killed a CPU-stage process, and every process's exit code. A dead
        child's exit code can lag the end of its pipe, so this waits for it, within
        DEATH_WAIT_S; SIGKILL if it never shows."""
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


def _serve(
    connection: Connection, stages: CpuStages, slots: SharedSlots, die_with_parent: bool
) -> None:
    """A CPU-stage process: calls from its pipe until told to stop (None) or the pipe closes.
    An exception other than a photo's own failure goes back to be raised in the caller."""
    _start(stages, slots, die_with_parent)
    while True:
        try:
            call = connection.recv()
        except EOFError:
            return
        if call is None:
            return
        function, args = call
        try:
            reply: tuple[str, Any] = ("returned", function(*args))
        except Exception as error:
            reply = ("raised", error)
        try:
            connection.send(reply)
        except (pickle.PicklingError, TypeError, AttributeError):  # an unpicklable exception
            connection.send(("raised", RuntimeError(repr(reply[1]))))


def _start(stages: CpuStages, slots: SharedSlots, die_with_parent: bool) -> None:
    global _stages, _slots
    _stages, _slots = stages, slots
    keep_freed_memory()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if die_with_parent:  # even killed outright, in the middle of a call
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _prepare(sent: bytes | int, slot: int | None) -> tuple[Any, ...]:
    assert _stages is not None and _slots is not None
    timings: dict[str, float] = {}
    slots = _slots
    data = slots.file(slot, sent)
    place = None if slot is None else lambda shape: slots.array(slot, "tensor", shape)
    try:
        with timed(timings, "decode"):
            photo = _stages.read_photo(data)
        with timed(timings, "preprocess"):
            prepared = _stages.prepare(photo, place)
            if slot is not None:
                shown = bounded(photo.reduced)
                slots.array(slot, "shown", shown.shape)[...] = shown
    except ImageFailure as failure:
        return "failed", failure.reason, failure.message
    if slot is None:
        return "ok", photo.height, photo.width, prepared, timings
    # The arrays are in the slot already: only their shapes go back.
    shapes = (prepared.tensor.shape, prepared.height, prepared.width, shown.shape)
    return "ok", photo.height, photo.width, shapes, timings


def _finish(
    sent: bytes | int,
    height: int,
    width: int,
    probability: np.ndarray | tuple[tuple[int, ...], ...],
    slot: int | None,
    thresholds: GateThresholds,
    render: Renderer,
) -> tuple[Any, ...]:
    assert _stages is not None and _slots is not None
    timings: dict[str, float] = {}
    data = _slots.file(slot, sent)
    photo = Photo(data, height, width, _stages.limits)
    if slot is not None:  # only shapes came: the arrays are in the slot
        probability_shape, shown_shape = probability
        probability = _slots.array(slot, "probability", probability_shape)
        photo = Photo(data, height, width, _stages.limits, _slots.array(slot, "shown", shown_shape))
    assert isinstance(probability, np.ndarray)
    try:
        with timed(timings, "cleanup"):
            prediction = _stages.finish(probability, thresholds)
        with timed(timings, "write"):
            rendered = render(photo, prediction)
    except ImageFailure as failure:
        return "failed", failure.reason, failure.message
    return "ok", prediction.gate, rendered, timings
