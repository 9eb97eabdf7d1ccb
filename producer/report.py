"""The accept-rate report: read the views of migration 0002 and render them as rich tables.

The accept rate is accepted / done (images the gate decided on); failures are counted apart.
Beside it, the reviewed precision of accepted images (the views of migration 0003).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import bindparam, case, func, select, text
from sqlalchemy.engine import Connection

from jewelcut.db import Segmentation, get_engine
from jewelcut.errors import REJECTION_REASONS
from jewelcut.settings import Settings

# Finer near the study's 0.98 threshold, where the decisions are made.
CONFIDENCE_EDGES = (0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0)


@dataclass(frozen=True)
class Totals:
    model_version: str
    finished: int
    done: int
    accepted: int
    rejected: int
    failed: int
    accept_rate: float | None


@dataclass(frozen=True)
class DayTotals:
    day: str
    totals: Totals


@dataclass(frozen=True)
class ReasonCount:
    model_version: str
    reason: str
    images: int


@dataclass(frozen=True)
class Bin:
    low: float
    high: float
    images: int


@dataclass(frozen=True)
class ReviewedPrecision:
    """clean / reviewed among accepted images (migration 0003's view), with Wilson's 95%."""

    reviewed: int
    clean: int
    precision: float
    low: float
    high: float


@dataclass
class Report:
    overall: list[Totals] = field(default_factory=list)
    precision: dict[str, ReviewedPrecision] = field(default_factory=dict)  # by model version
    by_day: list[DayTotals] = field(default_factory=list)
    rejections: list[ReasonCount] = field(default_factory=list)
    failures: list[ReasonCount] = field(default_factory=list)
    histogram: list[Bin] = field(default_factory=list)
    unfinished: int = 0


def build_report(settings: Settings, model_version: str | None = None, days: int = 14) -> Report:
    """Everything `jewelcut report` prints, for one model version or all of them."""
    with get_engine(settings.resolved_database_url).connect() as connection:
        return Report(
            overall=_overall(connection, model_version),
            precision=_precision(connection, model_version),
            by_day=_by_day(connection, model_version, days),
            rejections=_reasons(connection, "rejections_by_reason", model_version),
            failures=_reasons(connection, "failures_by_reason", model_version),
            histogram=confidence_histogram(connection, model_version),
            unfinished=_unfinished(connection, model_version),
        )


def _view(
    connection: Connection, view: str, model_version: str | None, order: str = "model_version"
) -> list[Any]:
    # The view names are this module's constants, never user input; values are bound.
    where = " WHERE model_version = :model_version" if model_version else ""
    query = text(f"SELECT * FROM {view}{where} ORDER BY {order}")
    params = {"model_version": model_version} if model_version else {}
    return list(connection.execute(query, params).mappings())


def _overall(connection: Connection, model_version: str | None) -> list[Totals]:
    return [
        _totals(row) for row in _view(connection, "accept_rate_by_model_version", model_version)
    ]


def _precision(connection: Connection, model_version: str | None) -> dict[str, ReviewedPrecision]:
    rows = _view(connection, "reviewed_precision_by_model_version", model_version)
    return {
        row["model_version"]: ReviewedPrecision(
            int(row["reviewed"]),
            int(row["clean"]),
            float(row["precision"]),
            float(row["precision_low"]),
            float(row["precision_high"]),
        )
        for row in rows
        if row["reviewed"]
    }


def _totals(row: Any) -> Totals:
    rate = row["accept_rate"]
    return Totals(
        model_version=row["model_version"],
        finished=int(row["finished"]),
        done=int(row["done"] or 0),
        accepted=int(row["accepted"] or 0),
        rejected=int(row["rejected"] or 0),
        failed=int(row["failed"] or 0),
        accept_rate=None if rate is None else float(rate),
    )


def _by_day(connection: Connection, model_version: str | None, days: int) -> list[DayTotals]:
    rows = _view(connection, "accept_rate_by_day", model_version, order="day DESC, model_version")
    recent_days = sorted({str(row["day"]) for row in rows}, reverse=True)[:days]
    return [
        DayTotals(str(row["day"]), _totals(row)) for row in rows if str(row["day"]) in recent_days
    ]


def _reasons(connection: Connection, view: str, model_version: str | None) -> list[ReasonCount]:
    rows = _view(connection, view, model_version, order="images DESC, model_version, reason")
    return [
        ReasonCount(row["model_version"], row["reason"] or "(none)", int(row["images"]))
        for row in rows
    ]


def confidence_histogram(
    connection: Connection, model_version: str | None, edges: tuple[float, ...] = CONFIDENCE_EDGES
) -> list[Bin]:
    """Done images by confidence; each bin is [low, high), the last one [low, high]."""
    confidence = Segmentation.__table__.c.confidence
    bin_index = case(
        *((confidence < high, index) for index, high in enumerate(edges[1:-1])),
        else_=len(edges) - 2,
    )
    query = (
        select(bin_index.label("bin"), func.count().label("images"))
        .where(Segmentation.status == "done", confidence.is_not(None))
        .group_by(bin_index)
    )
    if model_version:
        query = query.where(Segmentation.model_version == bindparam("model_version"))
    counts = dict(
        connection.execute(query, {"model_version": model_version} if model_version else {}).all()
    )
    return [
        Bin(edges[index], edges[index + 1], int(counts.get(index, 0)))
        for index in range(len(edges) - 1)
    ]


def _unfinished(connection: Connection, model_version: str | None) -> int:
    query = select(func.count()).where(Segmentation.status.in_(("queued", "processing")))
    if model_version:
        query = query.where(Segmentation.model_version == model_version)
    return int(connection.execute(query).scalar_one())


# --- rendering -----------------------------------------------------------------------------


def format_rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1%}"


def print_table(console: Console, table: Table) -> None:
    """A table whole: at its natural width where the output is not a terminal (a file, a pipe,
    a log: nothing wraps there); in a terminal narrower than the table its cells fold."""
    natural = console.measure(table, options=console.options.update_width(10_000)).maximum
    if console.is_terminal or natural <= console.width:
        console.print(table)
        return
    width = console.width
    console.width = natural
    try:
        console.print(table)
    finally:
        console.width = width


def _column(table: Table, name: str, justify: str = "left") -> None:
    """A column whose cells fold onto more lines rather than lose characters: a model version's
    name is an identifier, never shortened with an ellipsis."""
    table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]


def render_report(report: Report, console: Console) -> None:
    if not report.overall:
        console.print(
            f"No finished images yet; unfinished (queued or processing): {report.unfinished}"
        )
        return
    print_table(console, _totals_table("Accept rate by model version", report.overall))
    if report.precision:
        print_table(console, _precision_table(report.overall, report.precision))
    print_table(console, _day_table(report.by_day))
    print_table(console, _reason_table("Rejections by reason", report.rejections))
    for reason in sorted({row.reason for row in report.rejections}):
        console.print(
            f"  {reason}: {REJECTION_REASONS.get(reason, '')}", highlight=False, soft_wrap=True
        )
    print_table(console, _reason_table("Failures by reason", report.failures))
    print_table(console, _histogram_table(report.histogram))
    console.print(f"Unfinished (queued or processing): {report.unfinished}")


def _totals_columns(table: Table) -> None:
    for name in ("done", "accepted", "rejected", "failed", "accept rate"):
        _column(table, name, justify="right")


def _totals_cells(totals: Totals) -> list[str]:
    return [
        str(totals.done),
        str(totals.accepted),
        str(totals.rejected),
        str(totals.failed),
        format_rate(totals.accept_rate),
    ]


def _totals_table(title: str, rows: list[Totals]) -> Table:
    table = Table(title=title)
    _column(table, "model version")
    _totals_columns(table)
    for totals in rows:
        table.add_row(totals.model_version, *_totals_cells(totals))
    return table


def _precision_table(rows: list[Totals], precision: dict[str, ReviewedPrecision]) -> Table:
    """Beside each version's accept rate, the share of its accepted cutouts people called
    clean (`jewelcut review`), with Wilson's 95% interval."""
    table = Table(title="Reviewed precision of accepted images")
    _column(table, "model version")
    for name in ("accept rate", "reviewed", "precision", "95% interval"):
        _column(table, name, justify="right")
    for totals in rows:
        reviewed = precision.get(totals.model_version)
        if reviewed is None:
            continue
        table.add_row(
            totals.model_version,
            format_rate(totals.accept_rate),
            str(reviewed.reviewed),
            f"{reviewed.precision:.1%}",
            f"{reviewed.low:.1%}-{reviewed.high:.1%}",
        )
    return table


def _day_table(rows: list[DayTotals]) -> Table:
    table = Table(title="Accept rate by day (UTC)")
    _column(table, "day")
    _column(table, "model version")
    _totals_columns(table)
    for row in rows:
        table.add_row(row.day, row.totals.model_version, *_totals_cells(row.totals))
    return table


def _reason_table(title: str, rows: list[ReasonCount]) -> Table:
    table = Table(title=title)
    _column(table, "model version")
    _column(table, "reason")
    _column(table, "images", justify="right")
    for row in rows:
        table.add_row(row.model_version, row.reason, str(row.images))
    return table


def _histogram_table(bins: list[Bin], width: int = 30) -> Table:
    table = Table(title="Confidence of done images")
    _column(table, "confidence")
    _column(table, "images", justify="right")
    _column(table, "")
    peak = max((b.images for b in bins), default=0) or 1
    for index, b in enumerate(bins):
        closing = "]" if index == len(bins) - 1 else ")"
        bar = "█" * round(width * b.images / peak)
        table.add_row(f"[{b.low:.2f}, {b.high:.2f}{closing}", str(b.images), bar)
    return table
