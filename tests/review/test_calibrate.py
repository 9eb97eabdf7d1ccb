"""Calibration against verdicts with a known answer: Wilson's interval, the lowest gate whose
lower bound meets the target, the accept rate it gives, the reviews that would let it go lower,
`--apply` (the worker then decides with it), the precision views and `jewelcut report`."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from jewelcut.cli import app
from jewelcut.db import Review, get_engine, session_scope
from jewelcut.precision import Candidate, calibrate, reviews_needed, wilson_interval
from jewelcut.reviews import applied_min_confidence
from jewelcut.settings import Settings
from tests.review.conftest import VERSION, decided_rows

# Textbook values: Wilson's 95% interval for 98 of 100 is [0.9300, 0.9945]; for 0 of 10,
# [0, 0.2775]; for 10 of 10, [0.7225, 1].
KNOWN_INTERVALS = [
    ((98, 100), (0.92999, 0.99450)),
    ((0, 10), (0.0, 0.27753)),
    ((10, 10), (0.72247, 1.0)),
]


@pytest.mark.parametrize(("counts", "bounds"), KNOWN_INTERVALS)
def test_wilson_interval_matches_known_values(
    counts: tuple[int, int], bounds: tuple[float, float]
) -> None:
    interval = wilson_interval(*counts)
    assert interval.low == pytest.approx(bounds[0], abs=5e-5)
    assert interval.high == pytest.approx(bounds[1], abs=5e-5)


def group(confidence: float, clean: int, flawed: int) -> list[tuple[float, bool]]:
    return [(confidence, True)] * clean + [(confidence, False)] * flawed


def test_calibrate_picks_the_lowest_threshold_whose_lower_bound_meets_the_target() -> None:
    # 300/300 at >= 0.995: low 300/303.84 = 0.98736; 398/400 at >= 0.985: low 0.98196;
    # 488/500 at >= 0.975: precision 0.976, below the target even as observed.
    verdicts = group(0.995, 300, 0) + group(0.985, 98, 2) + group(0.975, 90, 10)
    result = calibrate(verdicts, 0.98)

    assert [c.threshold for c in result.candidates] == [0.995, 0.985, 0.975]
    assert result.chosen is not None
    assert (result.chosen.threshold, result.chosen.reviewed, result.chosen.clean) == (
        0.985,
        400,
        398,
    )
    assert result.chosen.interval.low == pytest.approx(0.981955, abs=1e-6)
    assert result.chosen.interval.high == pytest.approx(0.998628, abs=1e-6)
    assert result.candidates[0].interval.low == pytest.approx(300 / (300 + 1.959964**2))
    assert result.next_lower is None  # 0.975's observed precision is under the target


def test_calibrate_says_how_many_more_reviews_would_let_the_gate_go_lower() -> None:
    # At >= 0.975: 416/420 = 0.9905 observed, but its lower bound (0.9757) misses 0.98.
    verdicts = group(0.995, 300, 0) + group(0.985, 98, 2) + group(0.975, 18, 2)
    result = calibrate(verdicts, 0.98)

    assert result.chosen is not None and result.chosen.threshold == 0.985
    assert result.next_lower is not None and result.next_lower.threshold == 0.975
    assert result.next_lower.interval.low < 0.98 <= result.next_lower.interval.estimate
    extra = result.reviews_for_next_lower
    assert extra is not None and extra > 0
    share = 416 / 420
    enough, one_short = 420 + extra, 420 + extra - 1
    assert wilson_interval(round(share * enough), enough).low >= 0.98
    assert wilson_interval(round(share * one_short), one_short).low < 0.98


def test_no_threshold_when_the_target_is_out_of_reach() -> None:
    result = calibrate(group(0.999, 50, 0), 0.98)  # 50/50: lower bound 0.9287
    assert result.chosen is None
    assert result.next_lower is not None and result.next_lower.threshold == 0.999
    assert result.reviews_for_next_lower == reviews_needed(result.next_lower, 0.98)
    assert reviews_needed(Candidate(0.9, 100, 90, wilson_interval(90, 100)), 0.98) is None


def fill(settings: Settings) -> None:
    """The first known case in the database: 1,001 decided images, 501 of them reviewed."""
    results: list[tuple[str, str, float, float]] = []
    verdicts: list[tuple[str, str]] = []
    groups = [(0.995, 300, 0), (0.985, 98, 2), (0.975, 90, 10)]
    for confidence, clean, flawed in groups:
        for n in range(clean + flawed):
            image_id = f"img-{confidence}-{n:03d}"
            decision = "accepted" if confidence >= 0.98 else "rejected"
            results.append((image_id, decision, confidence, 0.2))
            verdicts.append((image_id, "clean" if n < clean else "flawed"))
    results += [(f"unreviewed-{n:03d}", "rejected", 0.95, 0.2) for n in range(500)]
    results.append(("too-large", "rejected", 0.999, 0.7))  # outside the area bounds
    verdicts.append(("too-large", "flawed"))
    decided_rows(settings, results)
    with session_scope(settings.resolved_database_url) as session:
        session.add_all(
            Review(image_id=i, model_version=VERSION, verdict=v, reviewer="ann")
            for i, v in verdicts
        )


def test_calibrate_command_applies_the_gate_and_the_worker_reads_it(
    postgres_settings: Settings,
) -> None:
    fill(postgres_settings)
    runner = CliRunner()
    arguments = ["calibrate", "--model-version", VERSION, "--target-precision", "0.98"]

    shown = runner.invoke(app, arguments)
    assert shown.exit_code == 0, shown.output
    assert "gate 0.985: precision 0.9950 [0.9820, 0.9986] over 400 reviews" in shown.output
    assert "accepts 40.0% of 1001" in shown.output  # 400 of the 1,001 decided images
    assert "current gate 0.98 accepts 40.0% of 1001" in shown.output
    assert applied_min_confidence(postgres_settings, VERSION) is None  # not applied yet

    applied = runner.invoke(app, [*arguments, "--apply"])
    assert applied.exit_code == 0, applied.output
    assert applied_min_confidence(postgres_settings, VERSION) == 0.985
    with get_engine(postgres_settings.resolved_database_url).connect() as connection:
        gate = connection.execute(
            text("SELECT min_confidence, target_precision, reviewed FROM gates")
        ).one()
    assert tuple(gate) == (0.985, 0.98, 400)

    from worker.chunk import gated
    from worker.pipeline import Segmenter

    segmenter = Segmenter.from_settings(postgres_settings)  # not loaded: the gate is the card's
    worker_gate = gated(segmenter, VERSION, postgres_settings).thresholds
    assert worker_gate.min_confidence == 0.985
    assert (worker_gate.min_area, worker_gate.max_area) == (
        segmenter.card.gate.min_area,
        segmenter.card.gate.max_area,
    )


def test_calibrate_apply_refuses_when_nothing_meets_the_target(
    postgres_settings: Settings,
) -> None:
    fill(postgres_settings)
    arguments = ["calibrate", "--model-version", VERSION, "--target-precision", "0.999", "--apply"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 1
    assert "no threshold meets the target yet" in result.output
    assert applied_min_confidence(postgres_settings, VERSION) is None


def test_precision_views_and_the_report(postgres_settings: Settings) -> None:
    fill(postgres_settings)
    with get_engine(postgres_settings.resolved_database_url).connect() as connection:
        by_version = (
            connection.execute(text("SELECT * FROM reviewed_precision_by_model_version"))
            .mappings()
            .one()
        )
        bands = {
            row["band"]: row
            for row in connection.execute(
                text("SELECT * FROM reviewed_precision_by_confidence_band")
            ).mappings()
        }
    # accepted (at the 0.98 gate) and reviewed: the 0.995 and 0.985 groups, 398 clean of 400
    assert (by_version["reviewed"], by_version["clean"], by_version["flawed"]) == (400, 398, 2)
    interval = wilson_interval(398, 400)
    assert by_version["precision_low"] == pytest.approx(interval.low)
    assert by_version["precision_high"] == pytest.approx(interval.high)
    assert {band: row["reviewed"] for band, row in bands.items()} == {
        "[0.980, 0.990)": 100,
        "[0.995, 0.999)": 300,
    }
    assert bands["[0.980, 0.990)"]["precision_low"] == pytest.approx(wilson_interval(98, 100).low)

    report = CliRunner().invoke(app, ["report", "--model-version", VERSION])
    assert report.exit_code == 0, report.output
    assert "Reviewed precision of accepted images" in report.output
    assert "99.5%" in report.output and "98.2%-99.9%" in report.output
