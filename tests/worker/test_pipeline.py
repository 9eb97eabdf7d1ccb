"""process_stream: every bad-input kind fails alone with its reason; the rest of the batch is
processed; outcomes, timings and artifacts are complete; memory is bounded by a window."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jewelcut.errors import ImageFailure
from jewelcut.modelcard import GateThresholds
from tests.worker.conftest import encode
from tests.worker.test_decode import png_header_only
from worker.pipeline import ImageOutcome, Photo, Prediction, Segmenter, Writer, process_stream

GOOD_KEYS = ("good-1", "good-2", "good-3")


def truncated_jpeg(photo: bytes) -> bytes:
    return photo[: len(photo) // 2]


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (64, 64), colour) for colour in ("red", "blue")]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:])


BAD_INPUTS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "zero-bytes": (lambda _photo: b"", "decode_error"),
    "truncated-jpeg": (truncated_jpeg, "decode_error"),
    "text": (lambda _photo: b"this is not an image\n", "decode_error"),
    "html-error-page": (lambda _photo: b"<html><body>404 Not Found</body></html>", "decode_error"),
    "gif": (lambda _photo: animated_gif(), "unsupported_format"),
    "pdf": (lambda _photo: b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "unsupported_format"),
    "svg": (lambda _photo: b"<svg xmlns='http://www.w3.org/2000/svg'/>", "unsupported_format"),
    "pixel-bomb": (lambda _photo: png_header_only(50_000, 50_000), "too_large"),
    "one-pixel": (lambda _photo: encode(Image.new("RGB", (1, 1)), "PNG"), "too_small"),
}


def record_writes(store: dict[str, Prediction]) -> Callable[..., dict[str, str]]:
    def write(key: str, photo: Photo, prediction: Prediction) -> dict[str, str]:
        store[key] = prediction
        return {"written": f"{key}:{photo.width}x{photo.height}"}

    return write


def run(segmenter: Segmenter, photos: dict[str, bytes]) -> dict[str, ImageOutcome]:
    outcomes = list(
        process_stream(segmenter, list(photos), photos.__getitem__, record_writes({}), io_threads=2)
    )
    assert len(outcomes) == len(photos)
    return {outcome.key: outcome for outcome in outcomes}


def assert_done(outcome: ImageOutcome, width: int, height: int) -> None:
    assert outcome.status == "done", outcome.error
    assert outcome.decision in ("accepted", "rejected")
    assert (outcome.decision == "accepted") == (outcome.reason is None)
    for score in (outcome.confidence, outcome.fg_score, outcome.bg_score, outcome.mask_area):
        assert score is not None and 0.0 <= score <= 1.0
    assert (outcome.width, outcome.height) == (width, height)
    assert outcome.artifacts == {"written": f"{outcome.key}:{width}x{height}"}
    assert set(outcome.timings) == {"read", "decode", "preprocess", "infer", "cleanup", "write"}


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_bad_input_fails_alone(
    kind: str, onnx_segmenter: Segmenter, listing_photo: Callable[[int], bytes]
) -> None:
    make_bad, reason = BAD_INPUTS[kind]
    photos = {key: listing_photo(seed) for seed, key in enumerate(GOOD_KEYS)}
    photos = {"good-1": photos["good-1"], kind: make_bad(photos["good-1"]), **photos}
    outcomes = run(onnx_segmenter, photos)
    failed = outcomes[kind]
    assert (failed.status, failed.reason) == ("failed", reason)
    assert failed.error and failed.error.startswith(reason)
    assert failed.decision is None and failed.confidence is None
    for key in GOOD_KEYS:
        assert_done(outcomes[key], 320, 240)


def test_read_and_write_errors_fail_only_their_image(
    onnx_segmenter: Segmenter, listing_photo: Callable[[int], bytes]
) -> None:
    photos = {key: listing_photo(seed) for seed, key in enumerate(GOOD_KEYS)}

    def read(key: str) -> bytes:
        if key == "missing-object":
            raise ImageFailure("fetch_error", "NoSuchKey")
        if key == "network-down":
            raise ConnectionError("connection reset")
        return photos[key]

    def write(key: str, photo: Photo, prediction: Prediction) -> dict[str, str]:
        if key == "good-2":
            raise OSError("disk full")
        return {"written": f"{key}:{photo.width}x{photo.height}"}

    keys = ["missing-object", *GOOD_KEYS, "network-down"]
    outcomes = {o.key: o for o in process_stream(onnx_segmenter, keys, read, write, io_threads=2)}
    assert outcomes["missing-object"].reason == "fetch_error"
    assert outcomes["network-down"].reason == "fetch_error"
    assert "ConnectionError" in (outcomes["network-down"].error or "")
    assert (outcomes["good-2"].status, outcomes["good-2"].reason) == ("failed", "processing_error")
    assert (outcomes["good-2"].width, outcomes["good-2"].height) == (320, 240)
    assert_done(outcomes["good-1"], 320, 240)
    assert_done(outcomes["good-3"], 320, 240)


def test_stream_agrees_with_predict_on_mixed_sizes(
    onnx_segmenter: Segmenter, listing_photo: Callable[[int], bytes]
) -> None:
    import cv2

    sizes = [(320, 240), (240, 320), (200, 200), (320, 240), (97, 61)]
    photos: dict[str, bytes] = {}
    images: list[np.ndarray] = []
    for seed, (width, height) in enumerate(sizes):
        rgb = cv2.imdecode(np.frombuffer(listing_photo(seed), np.uint8), cv2.IMREAD_COLOR)[
            :, :, ::-1
        ]
        rgb = np.ascontiguousarray(cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA))
        images.append(rgb)
        photos[f"photo-{seed}"] = encode(Image.fromarray(rgb), "PNG")
    outcomes = run(onnx_segmenter, photos)
    predictions = onnx_segmenter.predict(images)
    for seed, ((width, height), prediction) in enumerate(zip(sizes, predictions, strict=True)):
        outcome = outcomes[f"photo-{seed}"]
        assert_done(outcome, width, height)
        assert outcome.decision == prediction.gate.decision
        assert outcome.confidence == pytest.approx(prediction.gate.confidence, abs=1e-6)
        assert outcome.mask_area == pytest.approx(prediction.gate.mask_area, abs=1e-9)


def test_images_in_flight_are_bounded(
    onnx_segmenter: Segmenter, listing_photo: Callable[[int], bytes]
) -> None:
    photo = listing_photo(0)
    total, io_threads = 40, 2
    reads: list[str] = []
    yielded = 0
    most_in_flight = 0

    def read(key: str) -> bytes:
        reads.append(key)
        return photo

    keys = (f"photo-{index}" for index in range(total))
    for _outcome in process_stream(onnx_segmenter, keys, read, lambda *_: {}, io_threads):
        yielded += 1
        most_in_flight = max(most_in_flight, len(reads) - yielded)
    window = max(2 * onnx_segmenter.batch_size, io_threads) + io_threads
    assert yielded == total
    assert most_in_flight <= window < total


def test_failing_batch_is_retried_image_by_image(
    onnx_segmenter: Segmenter,
    listing_photo: Callable[[int], bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An inference error fails only the image that causes it, not its batch-mates."""
    poisoned = listing_photo(7)
    real_infer = onnx_segmenter.infer

    def infer(prepared: list) -> list:
        if any(np.array_equal(item.tensor, poisoned_tensor) for item in prepared):
            raise RuntimeError("kernel failure")
        return real_infer(prepared)

    poisoned_tensor = onnx_segmenter.preprocess(onnx_segmenter.decode(poisoned)).tensor
    monkeypatch.setattr(onnx_segmenter, "infer", infer)
    photos = {
        "poisoned": poisoned,
        **{key: listing_photo(seed) for seed, key in enumerate(GOOD_KEYS)},
    }
    outcomes = run(onnx_segmenter, photos)
    assert (outcomes["poisoned"].status, outcomes["poisoned"].reason) == (
        "failed",
        "processing_error",
    )
    for key in GOOD_KEYS:
        assert_done(outcomes[key], 320, 240)


def test_logs_from_io_threads_name_the_chunk_and_image(
    onnx_segmenter: Segmenter, listing_photo: Callable[[int], bytes]
) -> None:
    import logging

    from jewelcut.logs import log_context, record_fields

    seen: list[dict[str, object]] = []

    class FieldsAtEmit(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record_fields(record))  # as the real formatter does, in the same thread

    handler = FieldsAtEmit(level=logging.INFO)
    pipeline_log = logging.getLogger("worker.pipeline")
    pipeline_log.addHandler(handler)
    previous_level = pipeline_log.level
    pipeline_log.setLevel(logging.INFO)
    try:
        with log_context(chunk_id="chunk-42"):
            run(onnx_segmenter, {"good": listing_photo(0), "empty": b""})
    finally:
        pipeline_log.removeHandler(handler)
        pipeline_log.setLevel(previous_level)
    assert {"chunk_id": "chunk-42", "image_id": "empty", "reason": "decode_error"}.items() <= seen[
        0
    ].items()


# The reduced decode (JPEG DCT scaling to 1/2) against the full decode, for 1280x960 listing
# photos through the shipped model (8 photos measured: max 134, 99.9% within 22, mean 0.12).
MAX_ALPHA_DIFFERENCE = 160  # where a mask-edge pixel at network resolution flips
P999_ALPHA_DIFFERENCE = 32
MEAN_ALPHA_DIFFERENCE = 0.5


def test_cutout_from_the_reduced_decode_matches_the_full_decode_path(
    onnx_segmenter: Segmenter, listing_photo: Callable[..., bytes]
) -> None:
    from worker.cutout import make_cutout

    for seed in range(3):
        data = listing_photo(seed, size=(1280, 960))
        photo = onnx_segmenter.read_photo(data)
        assert photo.reduced.shape == (480, 640, 3)  # 1/2 the pixels each way
        full_path, reduced_path = (
            onnx_segmenter.predict([onnx_segmenter.decode(data)])[0],
            (onnx_segmenter.finish(onnx_segmenter.infer([onnx_segmenter.prepare(photo)])[0])),
        )
        assert reduced_path.gate.decision == full_path.gate.decision
        assert reduced_path.gate.confidence == pytest.approx(full_path.gate.confidence, abs=2e-3)
        expected = make_cutout(onnx_segmenter.decode(data), full_path.alpha(960, 1280))
        cutout = make_cutout(photo.rgb, reduced_path.alpha(photo.height, photo.width))
        difference = np.abs(cutout[:, :, 3].astype(int) - expected[:, :, 3])
        assert difference.max() <= MAX_ALPHA_DIFFERENCE
        assert np.quantile(difference, 0.999) <= P999_ALPHA_DIFFERENCE
        assert difference.mean() <= MEAN_ALPHA_DIFFERENCE


def pooled_segmenter(model_dir: Path, cache_dir: Path, cpu_workers: int) -> Segmenter:
    """The test model on ONNX Runtime with CPU-stage processes (close() it)."""
    return Segmenter(
        model_dir,
        device="cpu",
        backend="onnx",
        cache_dir=cache_dir,
        batch_size=4,
        threads=1,
        cpu_workers=cpu_workers,
    )


def render_nothing(photo: Photo, prediction: Prediction) -> dict[str, bytes]:
    return {}  # module level: a CPU-stage process unpickles it


def test_cpu_stage_processes_decide_with_the_gate_of_the_moment(
    onnx_segmenter: Segmenter,
    model_dir: Path,
    model_cache_dir: Path,
    photo_bytes: Callable[..., bytes],
) -> None:
    """A gate applied after the CPU-stage processes started (`jewelcut calibrate --apply`, read
    by the worker at each chunk) is the one they decide with, as in-process."""
    photos = {f"photo-{i}": photo_bytes(96 + 16 * i, 64 + 8 * i) for i in range(4)}
    pooled = pooled_segmenter(model_dir, model_cache_dir, cpu_workers=1)
    writer = Writer(render_nothing, lambda _key, _rendered: {})

    def decisions(segmenter: Segmenter) -> dict[str, tuple[str | None, str | None]]:
        stream = process_stream(segmenter, list(photos), photos.__getitem__, writer, io_threads=2)
        return {outcome.key: (outcome.decision, outcome.reason) for outcome in stream}

    try:
        pooled.load()
        assert pooled.cpu_pool is not None
        by_gate = {}
        for min_confidence in (0.0, 1.01):  # everything found passes / nothing passes
            gate = GateThresholds(0.0, 1.0, min_confidence)
            by_gate[min_confidence] = decisions(pooled.with_gate(gate))
            assert by_gate[min_confidence] == decisions(onnx_segmenter.with_gate(gate))
    finally:
        pooled.close()
    assert all(decision == "rejected" for decision, _ in by_gate[1.01].values())
    assert by_gate[0.0] != by_gate[1.01]  # the gate decided, not the card's


def test_cpu_stage_processes_outlive_the_thread_that_started_them(
    model_dir: Path, model_cache_dir: Path, photo_bytes: Callable[..., bytes]
) -> None:
    """A Celery threads-pool worker (two chunks in flight) loads the model inside its first
    chunk, in a pool thread: the processes must not die with that thread (Linux's death signal
    follows the forking thread). Were they killed, the pool would take this process down."""
    pooled = pooled_segmenter(model_dir, model_cache_dir, cpu_workers=1)
    loader = threading.Thread(target=pooled.load)
    loader.start()
    loader.join()
    photos = {f"photo-{i}": photo_bytes(96, 64 + 8 * i) for i in range(3)}
    writer = Writer(render_nothing, lambda _key, _rendered: {})
    try:
        stream = process_stream(pooled, list(photos), photos.__getitem__, writer, io_threads=2)
        assert [outcome.status for outcome in stream] == ["done"] * len(photos)
        assert pooled.cpu_pool is not None
        assert all(process.is_alive() for process in pooled.cpu_pool.processes)
    finally:
        pooled.close()


def what_differs(ours: tuple[object, ...], theirs: tuple[object, ...]) -> str:
    """Of two (status, decision, reason, confidence, artifacts) outcomes: what differs."""
    if ours[:-1] != theirs[:-1]:
        return f"{ours[:-1]} != {theirs[:-1]}"
    artifacts, expected = ours[-1] or {}, theirs[-1] or {}
    assert isinstance(artifacts, dict) and isinstance(expected, dict)
    names = sorted(set(artifacts) | set(expected))
    return "artifacts differ: " + ", ".join(n for n in names if artifacts.get(n) != expected.get(n))


def test_cpu_stage_processes_render_what_the_process_does_and_hand_back_every_slot(
    onnx_segmenter: Segmenter,
    model_dir: Path,
    model_cache_dir: Path,
    listing_photo: Callable[..., bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through the CPU-stage processes (files and arrays in shared memory, a file too large for
    its slot through the pipe) the same outcomes and the same artifact bytes as in this
    process, bad photos failing alone; every shared slot comes back, after a whole stream and
    after one abandoned part way."""
    from worker import cpu_pool
    from worker.chunk import render_artifacts
    from worker.cpu_pool import SLOTS

    sizes = [(1280, 960), (960, 1280), (1600, 1204), (800, 600), (1024, 1024)]
    photos = {f"photo-{i}": listing_photo(i, size=size) for i, size in enumerate(sizes)}
    photos["truncated"] = truncated_jpeg(photos["photo-0"])
    photos["text"] = b"not a photo"
    gate = GateThresholds(0.0, 1.0, 0.0)  # everything found is accepted: cutouts drawn too

    def rendered(segmenter: Segmenter) -> dict[str, tuple[object, ...]]:
        stored: dict[str, dict[str, bytes]] = {}
        writer = Writer(render_artifacts, lambda key, out: stored.setdefault(key, out) and {})
        stream = process_stream(segmenter, list(photos), photos.__getitem__, writer, io_threads=2)
        outcomes = {o.key: (o.status, o.decision, o.reason, o.confidence) for o in stream}
        return {key: (*outcome, stored.get(key)) for key, outcome in outcomes.items()}

    file_sizes = sorted(len(photo) for photo in photos.values() if len(photo) > 100)
    limit = file_sizes[len(file_sizes) // 2]  # the larger files go through the pipe
    assert file_sizes[0] <= limit < file_sizes[-1]
    monkeypatch.setattr(cpu_pool, "PHOTO_FILE_BYTES", limit)
    pooled = pooled_segmenter(model_dir, model_cache_dir, cpu_workers=2)
    try:
        pooled.load()
        assert pooled.cpu_pool is not None
        assert pooled.cpu_pool.slots.regions["file"][2] == limit
        free = pooled.cpu_pool.slots.free
        in_process = rendered(onnx_segmenter.with_gate(gate))
        through_pool = rendered(pooled.with_gate(gate))
        assert through_pool.keys() == in_process.keys()
        # Named, not `through_pool == in_process`: a diff of the bytes would bury what differs.
        differing = {
            key: what_differs(through_pool[key], in_process[key])
            for key in in_process
            if through_pool[key] != in_process[key]
        }
        assert not differing
        assert free.qsize() == SLOTS
        assert in_process["truncated"][:3] == ("failed", None, "decode_error")
        assert sum(o[1] == "accepted" for o in in_process.values()) >= 3

        stream = process_stream(pooled, list(photos), photos.__getitem__, lambda *_: {}, 2)
        next(stream)
        assert free.qsize() < SLOTS  # photos in flight hold their slots
        stream.close()
        assert free.qsize() == SLOTS
    finally:
        pooled.close()


def test_a_write_the_cpu_stage_processes_cannot_take_fails_its_photos_not_the_pool(
    model_dir: Path, model_cache_dir: Path, photo_bytes: Callable[..., bytes]
) -> None:
    """A render that cannot be pickled fails each photo as processing_error; the processes
    stay usable (no connection is lost) and the next stream completes."""
    photos = {f"photo-{i}": photo_bytes(96 + 16 * i, 64) for i in range(3)}
    pooled = pooled_segmenter(model_dir, model_cache_dir, cpu_workers=1)

    def unpicklable(photo: Photo, prediction: Prediction) -> dict[str, bytes]:
        return {}  # a local function: pickle refuses it

    try:
        pooled.load()
        broken = Writer(unpicklable, lambda _key, _rendered: {})
        outcomes = list(process_stream(pooled, list(photos), photos.__getitem__, broken, 2))
        assert {o.reason for o in outcomes} == {"processing_error"}
        working = Writer(render_nothing, lambda _key, _rendered: {})
        outcomes = list(process_stream(pooled, list(photos), photos.__getitem__, working, 2))
        assert {o.status for o in outcomes} == {"done"}
    finally:
        pooled.close()
