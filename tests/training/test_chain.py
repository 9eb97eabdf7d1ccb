"""The smoke preset runs synth -> fit -> evaluate -> export on CPU, as CI does."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jewelcut.cli import app
from jewelcut.modelcard import Flips, ModelCard, sha256_file
from worker.model import load_network

SMOKE_BUDGET_S = 180


@pytest.mark.slow
def test_smoke_chain_produces_an_evaluated_loadable_model(tmp_path: Path) -> None:
    started = time.monotonic()
    outcome = CliRunner().invoke(app, ["train", "run", str(tmp_path), "--preset", "smoke"])
    elapsed = time.monotonic() - started
    assert outcome.exit_code == 0, outcome.output
    assert elapsed < SMOKE_BUDGET_S, f"smoke chain took {elapsed:.0f} s"

    report = json.loads((tmp_path / "report.json").read_text())
    assert report["images"] == 12
    assert 0.0 <= report["mean_iou"] <= 1.0
    assert set(report["by_size"]) and report["calibration"]["study_threshold"] == 0.98

    model_dir = tmp_path / "models" / "smoke"
    card = ModelCard.read(model_dir)
    assert card.weights_sha256 == sha256_file(model_dir / "weights.safetensors")
    assert card.weights_dtype == "float16" and card.input_size == 128
    # best.pt: whichever of the two validations (steps 3 and 6) scored higher
    assert card.training["steps"] in (3, 6) and card.training["config"]["loss"] == "bce"
    assert card.data["train"][0]["count"] == 24
    assert card.metrics["images"] == 12
    network = load_network(model_dir, card)
    assert sum(p.numel() for p in network.parameters()) > 10_000_000

    # another input size: measured with evaluate --input-size, carried by export --input-size
    runner = CliRunner()
    evaluate = ["train", "evaluate", str(model_dir), "--data", str(tmp_path / "data" / "heldout")]
    at_96 = tmp_path / "report-96.json"
    outcome = runner.invoke(app, [*evaluate, "--out", str(at_96), "--input-size", "96"])
    assert outcome.exit_code == 0, outcome.output
    assert json.loads(at_96.read_text())["input_size"] == 96
    export = ["train", "export", str(model_dir), "--out", str(tmp_path / "models")]
    outcome = runner.invoke(app, [*export, "--name", "smoke-96", "--report", str(at_96)])
    assert outcome.exit_code != 0, "a report measured at 96 does not describe the card's 128"
    outcome = runner.invoke(
        app, [*export, "--name", "smoke-96", "--report", str(at_96), "--input-size", "96"]
    )
    assert outcome.exit_code == 0, outcome.output
    assert ModelCard.read(tmp_path / "models" / "smoke-96").input_size == 96

    # flip averaging: measured with evaluate --flips, carried by export --flips
    flipped = tmp_path / "report-flip.json"
    flips = ["--flips", "horizontal+vertical"]
    outcome = runner.invoke(app, [*evaluate, "--out", str(flipped), *flips, "--no-sheet"])
    assert outcome.exit_code == 0, outcome.output
    assert json.loads(flipped.read_text())["test_time_flips"] == "horizontal+vertical"
    assert report["test_time_flips"] == "none"
    outcome = runner.invoke(app, [*export, "--name", "smoke-flip", "--report", str(flipped)])
    assert outcome.exit_code != 0, "a report measured with the flips does not describe the card"
    flip_export = [*export, "--name", "smoke-flip", "--report", str(flipped), *flips]
    outcome = runner.invoke(app, flip_export)
    assert outcome.exit_code == 0, outcome.output
    assert ModelCard.read(tmp_path / "models" / "smoke-flip").test_time_flips == Flips.BOTH

    # logit temperature: fitted by export --fit-temperature on a set apart from the evaluation's,
    # then measured running with it
    tempered = tmp_path / "models" / "smoke-t"
    fit = ["--fit-temperature", str(tmp_path / "data" / "val")]
    outcome = runner.invoke(app, [*export, "--name", "smoke-t", *fit])
    assert outcome.exit_code == 0, outcome.output
    card = ModelCard.read(tempered)
    fitted = card.calibration["logit_temperature"]
    assert card.logit_temperature == round(fitted["temperature"], 4) != 1.0
    assert fitted["pixel_nll_after"] <= fitted["pixel_nll_before"] and fitted["images"] == 8
    tempered_report = tmp_path / "report-t.json"
    tempered_evaluate = [
        "train",
        "evaluate",
        str(tempered),
        "--data",
        str(tmp_path / "data" / "heldout"),
    ]
    outcome = runner.invoke(app, [*tempered_evaluate, "--out", str(tempered_report), "--no-sheet"])
    assert outcome.exit_code == 0, outcome.output
    assert json.loads(tempered_report.read_text())["logit_temperature"] == card.logit_temperature
    outcome = runner.invoke(app, [*export, "--name", "smoke-t2", "--report", str(tempered_report)])
    assert outcome.exit_code != 0, "a report measured with a temperature does not describe T = 1"
    again = ["train", "export", str(tempered), "--out", str(tmp_path / "again")]
    outcome = runner.invoke(app, [*again, "--report", str(tempered_report)])
    assert outcome.exit_code == 0, outcome.output
    card = ModelCard.read(tmp_path / "again" / "smoke-t")
    assert card.calibration["logit_temperature"] == fitted, "the fit's record stays on the card"
    assert card.calibration["study_threshold"] == 0.98
