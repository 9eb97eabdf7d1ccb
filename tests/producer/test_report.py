"""`jewelcut report` against counts computed here from the rows the test writes (Postgres), and
the report views on SQLite (the embedded default)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from typer.testing import CliRunner

from jewelcut.cli import app
from jewelcut.db import Segmentation, get_engine
from jewelcut.errors import REJECTION_REASONS as REJECTION_REASONS_MEANING
from jewelcut.settings import Settings
from producer.report import CONFIDENCE_EDGES, build_report

REJECTION_REASONS = tuple(REJECTION_REASONS_MEANING)
FAILURE_REASONS = ("decode_error", "fetch_error", "too_many_attempts")
DAYS = (datetime(2026, 11, 24, 23, 30, tzinfo=UTC), datetime(2026, 11, 25, 0, 30, tzinfo=UTC))


def outcome_rows(image_ids: list[str], model_version: str, seed: int) -> list[dict[str, Any]]:
    """Random finished (and a few unfinished) rows on two UTC days, 1 hour apart."""
    rng = random.Random(seed)
    rows = []
    for index, image_id in enumerate(image_ids):
        row: dict[str, Any] = {
            "image_id": image_id,
            "model_version": model_version,
            "attempts": 1,
            "finished_at": DAYS[index % 2],
        }
        kind = rng.random()
        if kind < 0.35:
            row |= {"status": "done", "decision": "accepted", "confidence": rng.uniform(0.98, 1)}
        elif kind < 0.8:
            row |= {
                "status": "done",
                "decision": "rejected",
                "reason": rng.choice(REJECTION_REASONS),
                "confidence": rng.uniform(0.3, 0.999),
            }
        elif kind < 0.93:
            row |= {"status": "failed", "reason": rng.choice(FAILURE_REASONS)}
        else:
            row |= {"status": rng.choice(("queued", "processing")), "finished_at": None}
        rows.append(row)
    return rows


def write_rows(settings: Settings, rows: list[dict[str, Any]]) -> None:
    columns = ("decision", "reason", "confidence")
    with get_engine(settings.resolved_database_url).begin() as connection:
        connection.execute(
            Segmentation.__table__.insert(), [{c: None for c in columns} | row for row in rows]
        )


def table_rows(output: str, title: str) -> list[list[str]]:
    """The body rows of the rich table with this title, as lists of cell texts."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == title)
    header_end = next(i for i in range(start, len(lines)) if lines[i].startswith("┡"))
    rows = []
    for line in lines[header_end + 1 :]:
        if line.startswith("└"):
            return rows
        rows.append([cell.strip() for cell in line.strip("│").split("│")])
    raise AssertionError(f"table {title!r} does not end")


@pytest.mark.services
def test_report_matches_counts_computed_from_the_rows(
    distributed_settings: Settings,
    register: Callable[[Settings, str], str],
    fill: Callable[..., list[str]],
) -> None:
    settings = distributed_settings
    register(settings, "v1")
    register(settings, "v2")
    image_ids = fill(settings, 300)
    rows = outcome_rows(image_ids, "v1", seed=3) + outcome_rows(image_ids[:40], "v2", seed=4)
    write_rows(settings, rows)
    v1 = [row for row in rows if row["model_version"] == "v1"]

    result = CliRunner().invoke(app, ["report", "--model-version", "v1"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    output = result.output

    done = [row for row in v1 if row["status"] == "done"]
    accepted = sum(row["decision"] == "accepted" for row in done)
    failed = [row for row in v1 if row["status"] == "failed"]
    assert table_rows(output, "Accept rate by model version") == [["v1", *_totals(done, failed)]]
    assert f"{accepted / len(done):.1%}" in output

    expected_days = []
    for day in sorted({row["finished_at"] for row in done + failed}, reverse=True):
        on_day = [row for row in done if row["finished_at"] == day]
        failed_on_day = [row for row in failed if row["finished_at"] == day]
        expected_days.append([day.date().isoformat(), "v1", *_totals(on_day, failed_on_day)])
    assert table_rows(output, "Accept rate by day (UTC)") == expected_days

    rejections = Counter(row["reason"] for row in done if row["decision"] == "rejected")
    assert _as_counts(table_rows(output, "Rejections by reason")) == rejections
    assert rejections["no_object"] > 0  # its own reason, apart from area_too_small
    for reason in rejections:  # what each means, under the table
        assert f"  {reason}: {REJECTION_REASONS_MEANING[reason]}" in output
    assert _as_counts(table_rows(output, "Failures by reason")) == Counter(
        row["reason"] for row in failed
    )

    histogram = [
        (cells[0], int(cells[1])) for cells in table_rows(output, "Confidence of done images")
    ]
    assert [count for _label, count in histogram] == _histogram(done)
    assert sum(count for _label, count in histogram) == len(done)
    unfinished = sum(row["status"] in ("queued", "processing") for row in v1)
    assert f"Unfinished (queued or processing): {unfinished}" in output


def test_report_views_work_on_sqlite(
    embedded_settings: Settings,
    register: Callable[[Settings, str], str],
    fill: Callable[..., list[str]],
) -> None:
    register(embedded_settings, "v1")
    image_ids = fill(embedded_settings, 50)
    rows = outcome_rows(image_ids, "v1", seed=5)
    write_rows(embedded_settings, rows)

    report = build_report(embedded_settings)

    done = [row for row in rows if row["status"] == "done"]
    [overall] = report.overall
    assert overall.done == len(done)
    assert overall.accepted == sum(row["decision"] == "accepted" for row in done)
    assert overall.failed == sum(row["status"] == "failed" for row in rows)
    assert [day.day for day in report.by_day] == ["2026-11-25", "2026-11-24"]
    assert [b.images for b in report.histogram] == _histogram(done)


def _totals(done: list[dict[str, Any]], failed: list[dict[str, Any]]) -> list[str]:
    accepted = sum(row["decision"] == "accepted" for row in done)
    rate = f"{accepted / len(done):.1%}" if done else "-"
    return [str(len(done)), str(accepted), str(len(done) - accepted), str(len(failed)), rate]


def _as_counts(cells: list[list[str]]) -> Counter[str]:
    assert all(row[0] == "v1" for row in cells)
    return Counter({row[1]: int(row[2]) for row in cells})


def _histogram(done: list[dict[str, Any]]) -> list[int]:
    counts = [0] * (len(CONFIDENCE_EDGES) - 1)
    for row in done:
        index = next(
            (i for i, high in enumerate(CONFIDENCE_EDGES[1:-1]) if row["confidence"] < high),
            len(counts) - 1,
        )
        counts[index] += 1
    return counts


def test_report_never_truncates_a_model_version_name(
    embedded_settings: Settings,
    register: Callable[[Settings, str], str],
    fill: Callable[..., list[str]],
) -> None:
    name = "unet-b3-synth-v8-gpu-flip4-recalibrated-2026-12-01"  # longer than a cell at 80 cols
    register(embedded_settings, name)
    write_rows(embedded_settings, outcome_rows(fill(embedded_settings, 30), name, seed=6))
    result = CliRunner().invoke(app, ["report"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    overall = table_rows(result.output, "Accept rate by model version")
    by_day = table_rows(result.output, "Accept rate by day (UTC)")
    assert [cells[0] for cells in overall] == [name]  # whole, on one line: not a terminal
    assert {cells[1] for cells in by_day} == {name}


def test_tables_fold_identifiers_in_a_narrow_terminal() -> None:
    from rich.console import Console

    from producer.report import Totals, _totals_table, print_table

    name = "unet-b3-synth-v8-gpu-flip4-recalibrated-2026-12-01"
    console = Console(width=60, force_terminal=True, record=True)
    print_table(console, _totals_table("t", [Totals(name, 3, 2, 1, 1, 1, 0.5)]))
    lines = console.export_text().splitlines()
    assert all(len(line) <= 60 for line in lines) and "…" not in "".join(lines)
    folded = "".join(line.strip("│ ").split("│")[0].strip() for line in lines if line[:1] == "│")
    assert folded == name  # folded onto more lines, every character kept
