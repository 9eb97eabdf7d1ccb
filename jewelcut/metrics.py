"""Prometheus metrics a worker exposes (`JEWELCUT_METRICS_PORT`), and the producer's queue depth.

The names are the numbers to watch in production: images by outcome and reason, per-stage
latency, batch sizes, chunk duration, GPU memory. Counting happens in one place
(`record_outcome`) so the worker and the folder CLI cannot drift apart.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Protocol

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

IMAGES = Counter(
    "jewelcut_images_total",
    "Images finished, by outcome (accepted / rejected / failed) and reason.",
    ["outcome", "reason"],
)
STAGE_SECONDS = Histogram(
    "jewelcut_stage_seconds",
    "Seconds one image spent in each stage (fetch, decode, infer, postprocess, write).",
    ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BATCH_SIZE = Histogram(
    "jewelcut_batch_size",
    "Images per model call.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
CHUNK_SECONDS = Histogram(
    "jewelcut_chunk_seconds",
    "Seconds to process one chunk message, end to end.",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
)
CHUNKS = Counter("jewelcut_chunks_total", "Chunk messages handled, by result.", ["result"])
GPU_MEMORY_BYTES = Gauge("jewelcut_gpu_memory_bytes", "GPU memory held by the model process.")
QUEUE_DEPTH = Gauge("jewelcut_queue_depth", "Chunk messages waiting, by queue.", ["queue"])


class OutcomeLike(Protocol):
    status: str
    decision: str | None
    reason: str | None
    timings: dict[str, float]


def record_outcome(outcome: OutcomeLike) -> None:
    if outcome.status == "failed":
        IMAGES.labels("failed", outcome.reason or "unknown").inc()
    else:
        IMAGES.labels(outcome.decision or "unknown", outcome.reason or "").inc()
    for stage, seconds in outcome.timings.items():
        STAGE_SECONDS.labels(stage).observe(seconds)


def record_gpu_memory() -> None:
    """Only where torch is already imported and CUDA is in use; never imports torch itself."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        GPU_MEMORY_BYTES.set(torch.cuda.memory_allocated())


def watch_queue_depth(depth: Callable[[str], int], queues: Sequence[str]) -> None:
    """Read each queue's depth when Prometheus scrapes (NaN while the broker is unreachable)."""
    for queue in queues:
        QUEUE_DEPTH.labels(queue).set_function(partial(_depth_or_nan, depth, queue))


def _depth_or_nan(depth: Callable[[str], int], queue: str) -> float:
    try:
        return float(depth(queue))
    except Exception:  # a scrape must never fail because the broker is down
        log.debug("queue depth unavailable", exc_info=True, extra={"queue": queue})
        return math.nan


def serve_metrics(port: int | None) -> None:
    """Start the /metrics HTTP endpoint in a daemon thread (no-op without a port)."""
    if port:
        start_http_server(port)
        log.info("metrics endpoint started", extra={"port": port})
