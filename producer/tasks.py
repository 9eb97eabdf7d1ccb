"""Beat-scheduled producer tasks: the nightly backfill and the reaper (jewelcut.queue routes them
to the control queue, never behind GPU work). Both are thin: the work is in producer.backfill and
producer.reaper, which the CLI calls too."""

from __future__ import annotations

from typing import Any

from jewelcut.logs import get_logger
from jewelcut.queue import BACKFILL_TASK, REAP_TASK, app
from jewelcut.settings import get_settings
from producer.backfill import BackfillBusy, BackfillOptions, run_backfill
from producer.queueing import chunk_queue
from producer.reaper import reap

log = get_logger(__name__)


@app.task(name=BACKFILL_TASK, ignore_result=True, acks_late=False)
def backfill_task(model_version: str | None = None, limit: int | None = None) -> dict[str, Any]:
    """The nightly backfill. acks_late off: a backfill killed half way is resumed from its cursor
    by the next run, not redelivered to a second producer while the first may still be alive."""
    settings = get_settings()
    try:
        result = run_backfill(
            settings, BackfillOptions(model_version, limit), queue=chunk_queue(settings)
        )
    except BackfillBusy as busy:
        log.warning("backfill skipped: already running", extra={"detail": str(busy)})
        return {"skipped": str(busy)}
    return {
        "run_id": result.run_id,
        "model_version": result.model_version,
        "enqueued": result.enqueued,
        "chunks": result.chunks,
    }


@app.task(name=REAP_TASK, ignore_result=True, acks_late=False)
def reap_task() -> dict[str, int]:
    settings = get_settings()
    result = reap(settings, chunk_queue(settings))
    return {"requeued": result.requeued, "failed": result.failed}
