"""Embedded mode's chunk queue (no broker): each chunk runs here and now, in this process."""

from __future__ import annotations

from collections.abc import Sequence

from jewelcut.settings import Settings
from worker.chunk import run_chunk


class InProcessChunkQueue:
    """A jewelcut.queue.ChunkQueue that runs each chunk synchronously as it is sent."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def send(self, image_ids: Sequence[str], model_version: str, run_id: int | None) -> None:
        run_chunk(list(image_ids), model_version, run_id=run_id, settings=self.settings)

    def depth(self) -> int:
        return 0
