"""Attempts, without a broker: a claim counts first tries at once, gives up on rows tried
max_attempts times (failed/too_many_attempts), and leaves retried rows to count their attempt
when each runs alone; `jewelcut queue` shows the backlog the reaper works from."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from typer.testing import CliRunner

from jewelcut.cli import app
from jewelcut.db import Image, Segmentation, session_scope, utcnow
from jewelcut.registry import active_model_version, ensure_registered
from jewelcut.settings import Settings
from worker.chunk import claim_chunk, count_attempt


def _rows_with_attempts(settings: Settings, attempts: dict[str, tuple[str, int]]) -> str:
    """Rows {image_id: (status, attempts)}; `processing` ones started past the timeout."""
    version = active_model_version(settings)
    ensure_registered(version, settings)
    stale = utcnow() - timedelta(seconds=settings.processing_timeout_s + 60)
    with session_scope(settings.resolved_database_url) as session:
        session.add_all(Image(id=i, source_uri=f"file:///photos/{i}.jpg") for i in attempts)
        session.flush()
        for image_id, (status, tries) in attempts.items():
            session.add(
                Segmentation(
                    image_id=image_id,
                    model_version=version,
                    status=status,
                    attempts=tries,
                    started_at=stale if status == "processing" else None,
                )
            )
    return version


def _rows(settings: Settings) -> dict[str, Segmentation]:
    with session_scope(settings.resolved_database_url) as session:
        return {row.image_id: row for row in session.scalars(select(Segmentation))}


def test_claim_counts_first_tries_gives_up_and_orders_retries(
    embedded_settings: Settings,
) -> None:
    limit = embedded_settings.max_attempts
    version = _rows_with_attempts(
        embedded_settings,
        {
            "new": ("queued", 0),
            "twice": ("processing", 2),
            "once": ("processing", 1),
            "requeued": ("queued", 1),  # the reaper sent it again
            "worn-out": ("processing", limit),
            "finished": ("done", 1),
        },
    )
    claim = claim_chunk(list(_rows(embedded_settings)), version, embedded_settings)
    assert claim.fresh == ["new"]
    assert claim.retried == ["once", "requeued", "twice"]  # least-tried first
    assert claim.gave_up == ["worn-out"]
    assert sorted(claim.sources) == ["new", "once", "requeued", "twice"]
    rows = _rows(embedded_settings)
    assert (rows["new"].status, rows["new"].attempts) == ("processing", 1)
    assert (rows["once"].status, rows["once"].attempts) == ("processing", 1)  # not yet
    worn = rows["worn-out"]
    assert (worn.status, worn.reason, worn.attempts) == ("failed", "too_many_attempts", limit)
    assert worn.finished_at is not None and "after 3 attempts" in worn.error
    assert rows["finished"].status == "done"

    assert count_attempt("once", version, embedded_settings, claim.claimed_at)
    assert _rows(embedded_settings)["once"].attempts == 2
    again = claim_chunk(list(rows), version, embedded_settings)  # all claimed or finished now
    assert (again.fresh, again.retried, again.gave_up) == ([], [], [])


def test_a_retried_image_sent_again_while_it_waited_still_counts_its_attempt(
    embedded_settings: Settings,
) -> None:
    """Retried images run one at a time; one still waiting its turn past the processing timeout
    is queued again by the reaper. It must not then run uncounted (a poison image would crash
    the worker once more than max_attempts); one that another delivery claimed meanwhile must
    not run here at all."""
    version = _rows_with_attempts(
        embedded_settings, {"requeued": ("processing", 1), "taken": ("processing", 1)}
    )
    claim = claim_chunk(["requeued", "taken"], version, embedded_settings)
    assert claim.retried == ["requeued", "taken"]
    with session_scope(embedded_settings.resolved_database_url) as session:
        session.get_one(Segmentation, ("requeued", version)).status = "queued"  # the reaper
        session.get_one(Segmentation, ("taken", version)).started_at = utcnow()  # another claim

    assert count_attempt("requeued", version, embedded_settings, claim.claimed_at)
    assert not count_attempt("taken", version, embedded_settings, claim.claimed_at)
    rows = _rows(embedded_settings)
    assert (rows["requeued"].status, rows["requeued"].attempts) == ("processing", 2)
    assert rows["taken"].attempts == 1


def test_queue_command_prints_depths_and_the_backlog(distributed_settings: Settings) -> None:
    from jewelcut.queue import CeleryChunkQueue

    _rows_with_attempts(
        distributed_settings, {"a": ("queued", 0), "b": ("queued", 0), "c": ("processing", 1)}
    )
    CeleryChunkQueue(distributed_settings).send(["a", "b"], "v", None)
    result = CliRunner().invoke(app, ["queue"])
    assert result.exit_code == 0, result.output
    assert "queue bulk: 1 chunk messages waiting" in result.output
    assert "queue priority: 0 chunk messages waiting" in result.output
    assert "rows queued: 2, processing: 1 (past the 1800s timeout: 1)" in result.output


def test_claim_images_counts_every_attempt_at_once(embedded_settings: Settings) -> None:
    """The caller that streams all its claimed images together counts all their attempts."""
    from worker.chunk import claim_images

    version = _rows_with_attempts(embedded_settings, {"new": ("queued", 0), "old": ("queued", 1)})
    assert sorted(claim_images(["new", "old"], version, embedded_settings)) == ["new", "old"]
    rows = _rows(embedded_settings)
    assert (rows["new"].attempts, rows["old"].attempts) == (1, 2)
