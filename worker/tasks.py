"""The Celery tasks of the GPU worker. Thin: the work is in worker.chunk (torch loads lazily,
inside the first chunk, never at import, so beat and the producer can import the app)."""

from __future__ import annotations

from typing import Any

from jewelcut.queue import CHUNK_TASK, app


@app.task(name=CHUNK_TASK, bind=True)
def process_chunk(
    self: Any, image_ids: list[str], model_version: str, run_id: int | None = None
) -> dict[str, Any]:
    from dataclasses import asdict

    from worker.chunk import run_chunk

    summary = run_chunk(image_ids, model_version, run_id=run_id, chunk_id=self.request.id)
    return asdict(summary)
