"""The streaming image pipeline shared by the Celery worker and the folder CLI.

    read (I/O threads) -> decode + preprocess (I/O threads) -> batch by shape
    -> inference (calling thread) -> cleanup + gate + write (I/O threads) -> ImageOutcome

Queues are bounded (a window of images in flight), so memory stays flat on any stream length.
One failing image becomes a failed outcome with a reason; the stream goes on.
"""

from __future__ import annotations

import contextvars
import copy
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from jewelcut import metrics
from jewelcut.errors import ImageFailure
from jewelcut.modelcard import GateThresholds, ModelCard
from worker.cutout import compile_passes
from worker.decode import decode_image
from worker.preprocess import PreparedImage, Preprocessor, crop_to_image
from worker.stages import (
    CpuStages,
    Photo,
    Prediction,
    Renderer,
    keep_freed_memory,
    photo_limits,
    timed,
)

if TYPE_CHECKING:
    from jewelcut.settings import Settings
    from worker.backends import InferenceBackend
    from worker.cpu_pool import CpuPool

log = logging.getLogger(__name__)
T = TypeVar("T")

ReadFn = Callable[[str], bytes]
WriteFn = Callable[[str, "Photo", "Prediction"], dict[str, str]]  # or a Writer


@dataclass(frozen=True)
class Writer:
    """A `write` in two parts: `render(photo, prediction) -> {name: bytes}` is the CPU work
    (encoding); it must be picklable, as it runs in a CPU-stage process when there is a pool.
    `store(key, rendered) -> artifacts` is the I/O (uploads, files) in an I/O thread."""

    render: Renderer
    store: Callable[[str, dict[str, bytes]], dict[str, str]]

    def __call__(self, key: str, photo: Photo, prediction: Prediction) -> dict[str, str]:
        return self.store(key, self.render(photo, prediction))


@dataclass
class ImageOutcome:
    key: str
    status: Literal["done", "failed"]
    decision: str | None = None
    reason: str | None = None  # rejection reason, or failure reason when failed
    confidence: float | None = None
    fg_score: float | None = None
    bg_score: float | None = None
    mask_area: float | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    artifacts: dict[str, str] = field(default_factory=dict)

    @classmethod
    def failed(cls, key: str, failure: ImageFailure, **extra: Any) -> ImageOutcome:
        return cls(key=key, status="failed", reason=failure.reason, error=str(failure), **extra)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Segmenter:
    """One model version ready to segment photos. Cheap to create; `load()` builds the backend."""

    def __init__(
        self,
        model_dir: Path,
        *,
        device: str = "auto",
        backend: str = "auto",
        batch_size: int = 0,
        cache_dir: Path | None = None,
        max_pixels: int = 40_000_000,
        min_side: int = 32,
        threads: int | None = None,
        cpu_workers: int = 0,
        compile_mode: str = "off",
    ) -> None:
        """`cpu_workers`: processes for the CPU stages (decode, preprocess, cleanup, gate,
        rendering); 0 runs them in this process's I/O threads."""
        self.model_dir = Path(model_dir)
        self.card = ModelCard.read(self.model_dir)
        self.device = device
        self.backend_name = backend
        self.requested_batch_size = batch_size
        self.cache_dir = cache_dir
        self.max_pixels = max_pixels
        self.min_side = min_side
        self.threads = threads
        self.cpu_workers = cpu_workers
        self.compile_mode = compile_mode
        self.preprocess = Preprocessor(self.card.input_size, self.card.mean)
        limits = photo_limits(self.card.input_size, max_pixels, min_side)
        self.stages = CpuStages(self.preprocess, limits)
        self._backend: InferenceBackend | None = None
        # One batch on the accelerator at a time, whichever chunk's stream it comes from.
        self._infer_lock = threading.Lock()
        self._gate: GateThresholds | None = None
        self._cpu_pool: CpuPool | None = None

    @classmethod
    def from_settings(cls, settings: Settings, model_dir: Path | None = None) -> Segmenter:
        """`model_dir` is a resolved model version; None takes the shipped default."""
        from jewelcut.modelcard import default_model_dir

        return cls(
            model_dir or default_model_dir(settings.models_dir),
            device=settings.device,
            backend=settings.backend,
            batch_size=settings.batch_size,
            cache_dir=settings.resolved_model_cache_dir,
            max_pixels=settings.max_pixels,
            min_side=settings.min_side,
            cpu_workers=settings.resolved_cpu_workers,
            compile_mode=settings.torch_compile,
        )

    @property
    def thresholds(self) -> GateThresholds:
        return self._gate or self.card.gate.thresholds()

    def with_gate(self, thresholds: GateThresholds) -> Segmenter:
        """This segmenter (its backend shared, so load it first) deciding with `thresholds`."""
        gated = copy.copy(self)
        gated._gate = thresholds
        return gated

    @property
    def model_version(self) -> str:
        return self.card.name

    @property
    def backend(self) -> InferenceBackend:
        return self.load()

    @property
    def batch_size(self) -> int:
        return self.load().batch_size

    @property
    def cpu_pool(self) -> CpuPool | None:
        """The CPU-stage processes (started by load()), or None without cpu_workers."""
        self.load()
        return self._cpu_pool

    def load(self) -> InferenceBackend:
        """Start the CPU-stage processes, then build the backend (verifies the weights' sha256;
        may export ONNX). Idempotent. This process's malloc keeps freed memory from now on
        (stages.keep_freed_memory): its CPU stages and batches reuse warm pages."""
        keep_freed_memory()
        compile_passes()
        if self.cpu_workers and self._cpu_pool is None:
            from worker.cpu_pool import CpuPool

            # Forked before the backend's threads exist, and before any stream's.
            self._cpu_pool = CpuPool(self.stages, self.cpu_workers)
        if self._backend is None:
            from worker.backends import make_backend

            self._backend = make_backend(
                self.card,
                self.model_dir,
                device=self.device,
                backend=self.backend_name,
                cache_dir=self.cache_dir,
                batch_size=self.requested_batch_size,
                threads=self.threads,
                compile_mode=self.compile_mode,
            )
        return self._backend

    def decode(self, data: bytes) -> np.ndarray:
        """The photo at full size."""
        return decode_image(data, max_pixels=self.max_pixels, min_side=self.min_side)

    def read_photo(self, data: bytes) -> Photo:
        return self.stages.read_photo(data)

    def prepare(self, photo: Photo) -> PreparedImage:
        return self.stages.prepare(photo)

    def infer(self, prepared: list[PreparedImage]) -> list[np.ndarray]:
        """Probabilities at network resolution for images of the same padded shape."""
        batch = np.stack([item.tensor for item in prepared])
        with self._infer_lock:
            probabilities = self.load().predict(batch)
        return [crop_to_image(p, item) for p, item in zip(probabilities, prepared, strict=True)]

    def finish(self, probability: np.ndarray) -> Prediction:
        return self.stages.finish(probability, self.thresholds)

    def close(self) -> None:
        """Stop the CPU-stage processes (a later load() starts them again)."""
        if self._cpu_pool is not None:
            self._cpu_pool.close()
            self._cpu_pool = None

    def predict(self, images: list[np.ndarray]) -> list[Prediction]:
        """Segment RGB uint8 photos synchronously (any sizes; batched by padded shape)."""
        prepared = [self.preprocess(image) for image in images]
        probabilities: list[np.ndarray | None] = [None] * len(images)
        for indices in _group_by_shape(prepared).values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                for index, p in zip(chunk, self.infer([prepared[i] for i in chunk]), strict=True):
                    probabilities[index] = p
        return [self.finish(p) for p in probabilities if p is not None]


def _group_by_shape(prepared: list[PreparedImage]) -> dict[tuple[int, int], list[int]]:
    groups: dict[tuple[int, int], list[int]] = {}
    for index, item in enumerate(prepared):
        groups.setdefault(item.padded_shape, []).append(index)
    return groups


@dataclass
class _Decoded:
    key: str
    photo: Photo
    prepared: PreparedImage
    timings: dict[str, float]
    slot: int | None = None  # its shared memory in the CPU-stage pool, till finished


def process_stream(
    segmenter: Segmenter,
    keys: Iterable[str],
    read: ReadFn,
    write: WriteFn,
    io_threads: int = 8,
) -> Iterator[ImageOutcome]:
    """Segment every key's photo; yields one ImageOutcome per key, in completion order.

    `read(key) -> bytes` and `write(key, photo, prediction) -> artifacts` run in I/O threads and
    may raise ImageFailure (any other exception fails that image as fetch_error/processing_error).
    """
    stream = _Stream(segmenter, read, write, io_threads)
    try:
        yield from stream.run(iter(keys))
    finally:
        stream.close()


class _Stream:
    """The moving parts of one process_stream call."""

    def __init__(self, segmenter: Segmenter, read: ReadFn, write: WriteFn, io_threads: int) -> None:
        self.segmenter = segmenter
        self.read = read
        self.write = write
        self.batch_size = segmenter.batch_size  # loads the backend up front
        self.cpu_pool = segmenter.cpu_pool
        self.window = max(2 * self.batch_size, io_threads) + io_threads
        self.decoding: set[Future[_Decoded | ImageOutcome]] = set()
        self.finishing: set[Future[ImageOutcome]] = set()
        self.ready: dict[tuple[int, int], list[_Decoded]] = {}
        self.ready_count = 0
        self.io_pool = ThreadPoolExecutor(io_threads, thread_name_prefix="jewelcut-io")
        self.finish_pool = ThreadPoolExecutor(io_threads, thread_name_prefix="jewelcut-finish")
        self.held_slots: set[int | None] = set()  # the CPU-stage pool's, by photos not finished
        self.completed: queue.SimpleQueue[Future[Any]] = queue.SimpleQueue()

    def close(self) -> None:
        for future in self.decoding | self.finishing:
            future.cancel()
        self.io_pool.shutdown(wait=True, cancel_futures=True)
        self.finish_pool.shutdown(wait=True, cancel_futures=True)
        for slot in list(self.held_slots):  # photos the stream was left with, unfinished
            self._release(slot)

    def run(self, keys: Iterator[str]) -> Iterator[ImageOutcome]:
        exhausted = False
        while True:
            exhausted = exhausted or self._top_up(keys)
            yield from self._harvest(block=False)
            bucket = self._next_bucket(flush=exhausted and not self.decoding)
            if bucket is not None:
                self._infer(bucket)
                continue
            if not self.decoding and not self.finishing:
                if exhausted and not self.ready_count:
                    return
                continue
            yield from self._harvest(block=True)

    def _in_flight(self) -> int:
        return len(self.decoding) + self.ready_count + len(self.finishing)

    def _top_up(self, keys: Iterator[str]) -> bool:
        """Submit reads while the window has room; True once the keys are exhausted."""
        while self._in_flight() < self.window:
            key = next(keys, None)
            if key is None:
                return True
            self.decoding.add(self._submit_watched(self.io_pool, self._read_and_decode, key))
        return False

    def _submit_watched(
        self, pool: ThreadPoolExecutor, function: Callable[..., T], *args: Any
    ) -> Future[T]:
        """Submit, and have the future put on `completed` once it is done."""
        future = _submit(pool, function, *args)
        future.add_done_callback(self.completed.put)
        return future

    def _harvest(self, block: bool) -> Iterator[ImageOutcome]:
        """Take in what has completed, in completion order (first waiting for one, if `block`):
        decoded photos join the batches, finished ones are yielded. A queue of completions,
        not a poll of every future in flight: a GPU's main process has no time to spare."""
        while True:
            try:
                future = self.completed.get(block=block)
            except queue.Empty:
                return
            block = False
            if future in self.finishing:
                self.finishing.remove(future)
                yield future.result()
                continue
            self.decoding.discard(future)
            result = future.result()
            if isinstance(result, ImageOutcome):
                yield result
                continue
            self.ready.setdefault(result.prepared.padded_shape, []).append(result)
            self.ready_count += 1

    def _next_bucket(self, flush: bool) -> list[_Decoded] | None:
        """A full batch of one shape; or, when flushing or the window is full, the largest one."""
        if not self.ready:
            return None
        shape, items = max(self.ready.items(), key=lambda entry: len(entry[1]))
        window_full = self.ready_count + len(self.decoding) >= self.window - len(self.finishing)
        if len(items) < self.batch_size and not flush and not window_full:
            return None
        bucket, rest = items[: self.batch_size], items[self.batch_size :]
        if rest:
            self.ready[shape] = rest
        else:
            del self.ready[shape]
        self.ready_count -= len(bucket)
        return bucket

    def _infer(self, bucket: list[_Decoded]) -> None:
        metrics.BATCH_SIZE.observe(len(bucket))
        started = time.perf_counter()
        probabilities = self._infer_or_fail_singly(bucket)
        per_image = (time.perf_counter() - started) / len(bucket)
        for item, probability in zip(bucket, probabilities, strict=True):
            item.timings["infer"] = per_image
            finishing = self._submit_watched(self.finish_pool, self._finish, item, probability)
            self.finishing.add(finishing)

    def _infer_or_fail_singly(self, bucket: list[_Decoded]) -> list[np.ndarray | ImageFailure]:
        try:
            return list(self.segmenter.infer([item.prepared for item in bucket]))
        except Exception:
            if len(bucket) == 1:
                log.exception("inference failed", extra={"image_id": bucket[0].key})
                return [ImageFailure("processing_error", "inference failed")]
            log.warning("batch inference failed; retrying one by one", exc_info=True)
            results: list[np.ndarray | ImageFailure] = []
            for item in bucket:
                results.extend(self._infer_or_fail_singly([item]))
            return results

    def _read_and_decode(self, key: str) -> _Decoded | ImageOutcome:
        timings: dict[str, float] = {}
        try:
            with timed(timings, "read"):
                data = _call_read(self.read, key)
            slot = None
            if self.cpu_pool is not None:
                photo, prepared, slot = self.cpu_pool.prepare(data, timings)
                self.held_slots.add(slot)
            else:
                with timed(timings, "decode"):
                    photo = self.segmenter.read_photo(data)
                with timed(timings, "preprocess"):
                    prepared = self.segmenter.prepare(photo)
        except ImageFailure as failure:
            log.info("image failed: %s", failure, extra={"image_id": key, "reason": failure.reason})
            return ImageOutcome.failed(key, failure, timings=timings)
        except Exception as error:
            log.exception("image failed", extra={"image_id": key})
            failure = ImageFailure("processing_error", f"{type(error).__name__}: {error}")
            return ImageOutcome.failed(key, failure, timings=timings)
        return _Decoded(key, photo, prepared, timings, slot)

    def _finish(self, item: _Decoded, probability: np.ndarray | ImageFailure) -> ImageOutcome:
        try:
            return self._finish_in_slot(item, probability)
        finally:
            self._release(item.slot)

    def _release(self, slot: int | None) -> None:
        if self.cpu_pool is not None and slot is not None:
            self.held_slots.discard(slot)
            self.cpu_pool.slots.release(slot)

    def _finish_in_slot(
        self, item: _Decoded, probability: np.ndarray | ImageFailure
    ) -> ImageOutcome:
        height, width = item.photo.height, item.photo.width
        timings = item.timings
        size = {"width": width, "height": height}
        if isinstance(probability, ImageFailure):
            return ImageOutcome.failed(item.key, probability, timings=timings, **size)
        try:
            if self.cpu_pool is not None and isinstance(self.write, Writer):
                gate, rendered = self.cpu_pool.finish(
                    item.photo,
                    probability,
                    self.segmenter.thresholds,
                    self.write.render,
                    timings,
                    item.slot,
                )
                with timed(timings, "store"):
                    artifacts = self.write.store(item.key, rendered)
                timings["write"] += timings.pop("store")
            else:
                with timed(timings, "cleanup"):
                    prediction = self.segmenter.finish(probability)
                with timed(timings, "write"):
                    artifacts = self.write(item.key, item.photo, prediction)
                gate = prediction.gate
        except ImageFailure as failure:
            log.warning("image failed: %s", failure, extra={"image_id": item.key})
            return ImageOutcome.failed(item.key, failure, timings=timings, **size)
        except Exception as error:
            log.exception("image failed while writing", extra={"image_id": item.key})
            failure = ImageFailure("processing_error", f"{type(error).__name__}: {error}")
            return ImageOutcome.failed(item.key, failure, timings=timings, **size)
        return ImageOutcome(
            key=item.key,
            status="done",
            decision=gate.decision,
            reason=gate.reason,
            confidence=gate.confidence,
            fg_score=gate.fg_score,
            bg_score=gate.bg_score,
            mask_area=gate.mask_area,
            width=width,
            height=height,
            timings=timings,
            artifacts=artifacts,
        )


def _submit(pool: ThreadPoolExecutor, function: Callable[..., T], *args: Any) -> Future[T]:
    """Run in the pool with the caller's context variables (log fields such as the chunk id)."""
    return pool.submit(contextvars.copy_context().run, function, *args)


def _call_read(read: ReadFn, key: str) -> bytes:
    try:
        return read(key)
    except ImageFailure:
        raise
    except Exception as error:
        raise ImageFailure("fetch_error", f"{type(error).__name__}: {error}") from error
