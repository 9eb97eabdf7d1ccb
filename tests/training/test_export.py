"""The model card export writes: the gate a version carries and the figures measured with it."""

from __future__ import annotations

import pytest

from training.export import build_card
from worker.model import Gate, ModelCard


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
