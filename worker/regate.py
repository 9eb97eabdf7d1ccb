"""`jewelcut regate`: decide every decided image of a model version again, at the version's
current gate, from what was stored, with no inference.

The row keeps the scores (confidence, mask area) and the storage keeps the cleaned mask and the
probability map at network resolution, so the decision, the cutout and the preview come out
byte for byte as a fresh run at the new gate would make them (`worker.chunk.render_cutout`):
the same `worker.gate.decide`, the same alpha from the same quantised probabilities, the same
encoders. Only images whose decision changes are redrawn; the rest get the new threshold
recorded. Images decided before masks were stored cannot be redrawn: they are counted and left
as they were (re-run them with `enqueue --force`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import select, update

from jewelcut.db import Image, ModelVersion, Segmentation, session_scope
from jewelcut.logs import get_logger
from jewelcut.modelcard import GateThresholds
from jewelcut.retry import with_database_retries
from jewelcut.reviews import card_gate, current_min_confidence
from jewelcut.settings import Settings
from jewelcut.sources import fetch_source
from jewelcut.storage import (
    Storage,
    get_storage,
    mask_key,
    probability_key,
)
from worker.gate import GateResult, decide
from worker.stages import DecodeLimits, Prediction, photo_limits, read_photo

log = get_logger(__name__)
PAGE_SIZE = 500


@dataclass
class RegateSummary:
    model_version: str
    min_confidence: float
    examined: int = 0
    unchanged: int = 0
    now_accepted: int = 0
    now_rejected: int = 0
    not_stored: int = 0  # decided before masks were kept: left as they were
    failed: dict[str, str] = field(default_factory=dict)  # image id -> what went wrong


@dataclass(frozen=True)
class _Row:
    image_id: str
    source_uri: str
    decision: str | None
    reason: str | None
    confidence: float
    fg_score: float
    bg_score: float
    mask_area: float
    mask_uri: str | None
    probability_uri: str | None

    def gate(self, decision: str, reason: str | None) -> GateResult:
        return GateResult(
            decision, reason, self.confidence, self.fg_score, self.bg_score, self.mask_area
        )


def regate(
    settings: Settings,
    model_version: str,
    min_confidence: float | None = None,
    on_page: Callable[[int], None] | None = None,
) -> RegateSummary:
    """Re-decide at `min_confidence` (default: the version's current gate)."""
    min_area, max_area, _ = card_gate(settings, model_version)
    threshold = (
        min_confidence
        if min_confidence is not None
        else current_min_confidence(settings, model_version)
    )
    thresholds = GateThresholds(min_area, max_area, threshold)
    summary = RegateSummary(model_version, threshold)
    redraw = _redrawer(settings, get_storage(settings), model_version, threshold)
    with ThreadPoolExecutor(settings.io_threads, thread_name_prefix="jewelcut-regate") as pool:
        for page in _pages(settings, model_version):
            changed, unchanged = [], []
            for row in page:
                decision, reason = decide(row.mask_area, row.confidence, thresholds)
                if (decision, reason) == (row.decision, row.reason):
                    unchanged.append(row.image_id)
                elif row.mask_uri is None or row.probability_uri is None:
                    summary.not_stored += 1
                else:
                    changed.append((row, decision, reason))
            summary.unchanged += len(unchanged)
            results = list(pool.map(lambda item: redraw(*item), changed))
            with_database_retries(
                partial(_record, settings, model_version, threshold, unchanged, results)
            )
            for (row, decision, _reason), values in zip(changed, results, strict=True):
                if "error" in values:
                    summary.failed[row.image_id] = values["error"]
                elif decision == "accepted":
                    summary.now_accepted += 1
                else:
                    summary.now_rejected += 1
            summary.examined += len(page)
            if on_page:
                on_page(len(page))
    return summary


def _pages(settings: Settings, model_version: str) -> Iterator[list[_Row]]:
    after = ""
    while True:
        query = (
            select(
                Segmentation.image_id,
                Image.source_uri,
                Segmentation.decision,
                Segmentation.reason,
                Segmentation.confidence,
                Segmentation.fg_score,
                Segmentation.bg_score,
                Segmentation.mask_area,
                Segmentation.mask_uri,
                Segmentation.probability_uri,
            )
            .join(Image, Image.id == Segmentation.image_id)
            .where(
                Segmentation.model_version == model_version,
                Segmentation.status == "done",
                Segmentation.image_id > after,
            )
            .order_by(Segmentation.image_id)
            .limit(PAGE_SIZE)
        )

        def read(query: Any = query) -> list[_Row]:
            with session_scope(settings.resolved_database_url) as session:
                return [_Row(*values) for values in session.execute(query)]

        page = with_database_retries(read)
        if not page:
            return
        yield page
        after = page[-1].image_id


def _redrawer(
    settings: Settings, storage: Storage, model_version: str, threshold: float
) -> Callable[[_Row, str, str | None], dict[str, Any]]:
    limits = photo_limits(
        _input_size(settings, model_version), settings.max_pixels, settings.min_side
    )

    def redraw(row: _Row, decision: str, reason: str | None) -> dict[str, Any]:
        try:
            gate = row.gate(decision, reason)
            uris = redraw_artifacts(settings, storage, model_version, row, gate, limits)
        except Exception as error:  # one unreadable photo must not stop the re-gate
            log.warning(
                "re-gate failed for an image", extra={"image_id": row.image_id, "error": str(error)}
            )
            return {"image_id": row.image_id, "error": f"{type(error).__name__}: {error}"}
        return {
            "image_id": row.image_id,
            "decision": decision,
            "reason": reason,
            "gate_min_confidence": threshold,
            **uris,
        }

    return redraw


def _input_size(settings: Settings, model_version: str) -> int:
    with session_scope(settings.resolved_database_url) as session:
        row = session.get(ModelVersion, model_version)
        if row is None:
            raise LookupError(f"model version {model_version!r} is not registered")
        return row.input_size


def redraw_artifacts(
    settings: Settings,
    storage: Storage,
    model_version: str,
    row: _Row,
    gate: GateResult,
    limits: DecodeLimits,
) -> dict[str, str | None]:
    """The cutout and preview a fresh run would write for this decision (worker.chunk's
    render_cutout), from the source photo and the stored mask and probabilities."""
    from worker.chunk import render_cutout, store_artifacts
    from worker.cutout import decode_grey_png

    photo = read_photo(fetch_source(row.source_uri, settings), limits)
    probability = decode_grey_png(storage.get(probability_key(model_version, row.image_id)))
    mask = decode_grey_png(storage.get(mask_key(model_version, row.image_id))) > 127
    rendered = render_cutout(photo, Prediction(probability, mask, gate))
    artifacts = store_artifacts(storage, model_version, row.image_id, rendered)
    return {"cutout_uri": artifacts.get("cutout_uri"), "preview_uri": artifacts["preview_uri"]}


def _record(
    settings: Settings,
    model_version: str,
    threshold: float,
    unchanged: list[str],
    results: list[dict[str, Any]],
) -> None:
    in_version = Segmentation.model_version == model_version
    with session_scope(settings.resolved_database_url) as session:
        if unchanged:
            session.execute(
                update(Segmentation)
                .where(in_version, Segmentation.image_id.in_(unchanged))
                .values(gate_min_confidence=threshold)
                .execution_options(synchronize_session=False)
            )
        for values in results:
            if "error" in values:
                continue
            fields = {key: value for key, value in values.items() if key != "image_id"}
            session.execute(
                update(Segmentation)
                .where(in_version, Segmentation.image_id == values["image_id"])
                .values(**fields)
                .execution_options(synchronize_session=False)
            )
