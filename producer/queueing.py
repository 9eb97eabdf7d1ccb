"""The chunk queue a command hands to what it runs (admin enqueue, the backfill, the reaper)."""

from __future__ import annotations

from jewelcut.queue import BULK_QUEUE, CeleryChunkQueue, ChunkQueue
from jewelcut.settings import Settings


def chunk_queue(settings: Settings, name: str = BULK_QUEUE) -> ChunkQueue:
    """The broker's queue `name`, or in embedded mode the worker, in this process."""
    if settings.embedded:
        from worker.inprocess import InProcessChunkQueue

        return InProcessChunkQueue(settings)
    return CeleryChunkQueue(settings, name)
