"""The producer's view of the queue: send a chunk, read the queue's depth.

Everything goes through jewelcut.queue (`send_chunk` is the one way to enqueue); this adapter
only fixes the queue the producer uses (bulk) so that tests can hand the backfill a recorder.
"""

from __future__ import annotations

from typing import Protocol

from jewelcut.settings import Settings


class ChunkQueue(Protocol):
    def send(self, image_ids: list[str], model_version: str, run_id: int | None) -> None: ...

    def depth(self) -> int:
        """Chunks waiting in the queue (0 where it cannot be known, e.g. embedded mode)."""
        ...


class BulkQueue:
    """The bulk queue of jewelcut.queue: backfill and reaper traffic."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def send(self, image_ids: list[str], model_version: str, run_id: int | None) -> None:
        from jewelcut.queue import BULK_QUEUE, send_chunk

        send_chunk(
            image_ids, model_version, run_id=run_id, queue=BULK_QUEUE, settings=self.settings
        )

    def depth(self) -> int:
        from jewelcut.queue import BULK_QUEUE, queue_depth

        return queue_depth(self.settings, queues=(BULK_QUEUE,))


def bulk_queue(settings: Settings) -> ChunkQueue:
    return BulkQueue(settings)
