"""The model card export writes: the gate a version carries and the figures measured with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jewelcut.modelcard import Flips, Gate, ModelCard
from training.export import build_card, export_model
from worker.model import save_random_init


def report_at(min_confidence: float) -> dict[str, object]:
    gate = Gate(min_confidence=min_confidence)
    return {"images": 500, "mean_iou": 0.8, "gate": gate.model_dump(), "calibration": {}}


def test_card_takes_the_gate_the_report_measured() -> None:
    card = build_card("v", ModelCard(name="v"), {}, report_at(0.98))
    assert card.gate == Gate() and card.metrics["mean_iou"] == 0.8


def test_calibrated_threshold_goes_into_the_card_with_a_report_measured_at_it() -> None:
    card = build_card("v", ModelCard(name="v"), {}, report_at(0.9815), min_confidence=0.9815)
    assert card.gate.min_confidence == 0.9815
    assert build_card("v", ModelCard(name="v"), {}, None, min_confidence=0.99).gate == Gate(
        min_confidence=0.99
    )


def test_figures_measured_at_another_gate_are_refused() -> None:
    with pytest.raises(ValueError, match="evaluate the exported version"):
        build_card("v", ModelCard(name="v"), {}, report_at(0.98), min_confidence=0.9815)


def test_a_version_can_run_at_another_input_size_measured_for_it(tmp_path: Path) -> None:
    source = save_random_init(tmp_path / "runs", input_size=320, name="r")
    report = tmp_path / "report.json"
    report.write_text(json.dumps({**report_at(0.98), "input_size": 384}))
    directory, card = export_model(source, tmp_path / "models", "r384", report, input_size=384)
    assert card.input_size == 384 and ModelCard.read(directory).input_size == 384
    with pytest.raises(ValueError, match="--input-size 320"):
        export_model(source, tmp_path / "models", "r320", report)


def test_a_flip_averaged_version_needs_figures_measured_with_the_flip(tmp_path: Path) -> None:
    source = save_random_init(tmp_path / "runs", input_size=320, name="r")
    report = tmp_path / "report.json"
    flipped = {**report_at(0.98), "input_size": 320, "test_time_flips": "horizontal"}
    report.write_text(json.dumps(flipped))
    directory, card = export_model(
        source, tmp_path / "models", "rf", report, test_time_flips=Flips.HORIZONTAL
    )
    assert card.test_time_flips == ModelCard.read(directory).test_time_flips == Flips.HORIZONTAL
    assert card.metrics["test_time_flips"] == "horizontal"
    again, _ = export_model(directory, tmp_path / "again", "rf2", report, notes=["flip on"])
    assert ModelCard.read(again).training["notes"] == ["flip on"], "notes of a re-export are kept"
    assert ModelCard.read(again).weights_sha256 == card.weights_sha256, "fp16 -> fp16 is exact"
    with pytest.raises(ValueError, match="measured test_time_flips=horizontal"):
        export_model(source, tmp_path / "models", "r", report)
    with pytest.raises(ValueError, match="measured test_time_flips=horizontal"):
        export_model(directory, tmp_path / "models", "r4", report, test_time_flips=Flips.BOTH)
    report.write_text(json.dumps({**report_at(0.98), "input_size": 320, "flip_average": True}))
    export_model(directory, tmp_path / "legacy", "rf3", report)  # a report from before --flips


def test_other_sets_go_on_the_card_when_measured_alike() -> None:
    real = {
        **report_at(0.98),
        "images": 360,
        "mean_iou": 0.7,
        "calibration": {"calibrated_threshold": 0.97, "risk_coverage": [{"risk": 0.0}]},
    }
    card = build_card("v", ModelCard(name="v"), {}, report_at(0.98), other_reports={"real": real})
    assert card.metrics["mean_iou"] == 0.8
    assert card.metrics["sets"]["real"]["mean_iou"] == 0.7
    assert card.metrics["sets"]["real"]["calibration"] == {"calibrated_threshold": 0.97}
    with pytest.raises(ValueError, match="different gates"):
        build_card(
            "v", ModelCard(name="v"), {}, report_at(0.98), other_reports={"real": report_at(0.97)}
        )
    flipped = {**report_at(0.98), "test_time_flips": "horizontal"}
    with pytest.raises(ValueError, match="measured test_time_flips"):
        build_card("v", ModelCard(name="v"), {}, report_at(0.98), other_reports={"f": flipped})


def test_the_reports_calibration_goes_on_the_card_beside_other_sets() -> None:
    report = {**report_at(0.98), "calibration": {"study_threshold": 0.98}}
    for others in (None, {"real": report_at(0.98)}):
        card = build_card("v", ModelCard(name="v"), {}, report, other_reports=others)
        assert card.calibration == {"study_threshold": 0.98}
