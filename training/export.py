"""Export a trained network as a model version: `<out>/<name>/weights.safetensors` (fp16) and
`model.json` (jewelcut.modelcard.ModelCard: architecture, input size, gate, metrics, calibration,
training config, data recipe, sha256), plus `model.onnx` on request."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from jewelcut.modelcard import Flips, Gate, ModelCard
from training.checkpoint import load_any
from training.config import FitConfig
from training.dataset import read_manifest
from worker.model import for_inference, save_network

ONNX_FILE = "model.onnx"


def data_recipes(folders: list[str]) -> list[dict[str, Any]]:
    recipes = []
    for folder in folders:
        path = Path(folder)
        if (path / "manifest.json").exists():
            manifest = read_manifest(path)
            files = {"cutout_files": manifest["cutout_files"]} if "cutout_files" in manifest else {}
            recipes.append({"folder": folder, **manifest["recipe"], **files})
    return recipes


def training_record(extra: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    config: FitConfig = extra["config"]
    state = extra["state"]
    return {
        "notes": notes,
        "config": config.to_dict(),
        "steps": state["step"],
        "training_seconds": round(state["seconds"], 1),
        "best_val_iou": round(state["best_val_iou"], 4),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        **({"blend": state["blend"]} if "blend" in state else {}),
    }


def build_card(
    name: str,
    base: ModelCard,
    extra: dict[str, Any],
    report: dict[str, Any] | None,
    notes: list[str] | None = None,
    min_confidence: float | None = None,
    other_reports: dict[str, dict[str, Any]] | None = None,
) -> ModelCard:
    """The card: the network's facts plus how it was trained and what it measured.
    `min_confidence` sets the version's own gate threshold (one calibrated on a set apart from
    the one the report measured); otherwise the gate is the report's. `other_reports` (by set
    name: the real dev set, the no-jewellery set) go in `metrics["sets"]`, each checked the
    same way as the report."""
    update: dict[str, Any] = {
        "name": name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if extra:
        config: FitConfig = extra["config"]
        update["training"] = training_record(extra, notes or [])
        update["data"] = {
            "generator": "training.synth: procedural jewellery and real RGBA cutouts (the "
            "recipes' cutout_files) on photo and procedural backgrounds, listing styles; "
            "keyed product photos as they are (recipes with as_is_products)",
            "train": data_recipes(config.train_data),
            "val": data_recipes([config.val_data] if config.val_data else []),
        }
    elif notes:  # a version exported again (another input size, the flip) keeps its record
        update["training"] = {**base.training, "notes": [*base.training.get("notes", []), *notes]}
    measured = Gate(**report["gate"]) if report else None
    if report:
        check_report_runs_as(report, base)
        update["metrics"] = {k: v for k, v in report.items() if k != "calibration"}
        # the temperature's fit record stays beside the report's thresholds
        update["calibration"] = {**base.calibration, **report.get("calibration", {})}
    if other_reports:
        for other in other_reports.values():
            check_report_runs_as(other, base)
            if report and other["gate"] != report["gate"]:
                raise ValueError("the reports measured different gates: evaluate all alike")
        sets = {name: brief(other) for name, other in other_reports.items()}
        update["metrics"] = {**update.get("metrics", base.metrics), "sets": sets}
    gate = measured or base.gate
    if min_confidence is not None:
        gate = gate.model_copy(update={"min_confidence": min_confidence})
    if measured and gate != measured:
        raise ValueError(
            f"the report measured gate {report['gate']}, the card would carry {gate}: "
            "evaluate the exported version with its own gate and export with that report"
        )
    return base.model_copy(update={**update, "gate": gate})


def brief(report: dict[str, Any]) -> dict[str, Any]:
    """A report for the card: its figures and the calibrated threshold, not the whole curve."""
    calibration = {k: v for k, v in report.get("calibration", {}).items() if k != "risk_coverage"}
    return {**{k: v for k, v in report.items() if k != "calibration"}, "calibration": calibration}


def check_report_runs_as(report: dict[str, Any], card: ModelCard) -> None:
    """Figures go on a card only if they were measured running the network as the card will."""
    if report.get("input_size", card.input_size) != card.input_size:
        raise ValueError(
            f"the report measured the network at input {report['input_size']}, the card would "
            f"run it at {card.input_size}: evaluate with --input-size {card.input_size}"
        )
    legacy = Flips.HORIZONTAL if report.get("flip_average") else Flips.NONE  # older reports
    measured_flips = report.get("test_time_flips", legacy.value)
    if measured_flips != card.test_time_flips.value:
        raise ValueError(
            f"the report measured test_time_flips={measured_flips}, the card would run with "
            f"{card.test_time_flips.value}: export and evaluate with the same --flips"
        )
    if report.get("logit_temperature", 1.0) != card.logit_temperature:
        raise ValueError(
            f"the report measured logit_temperature={report.get('logit_temperature', 1.0)}, the "
            f"card would run with {card.logit_temperature}: evaluate the version with its fitted "
            "temperature and export it with that report"
        )


def with_fitted_temperature(
    network: nn.Module,
    card: ModelCard,
    data: Path,
    advance: Callable[[], None] | None = None,
) -> ModelCard:
    """The card with the logit temperature fitted on `data` (training.temperature) for the
    network as the card otherwise runs it; the fit's figures go in its calibration."""
    from training.temperature import collect_logits, fit_temperature
    from worker.preprocess import Preprocessor

    untempered = card.model_copy(update={"logit_temperature": 1.0})
    runnable = for_inference(network.float().eval(), untempered)

    @torch.inference_mode()
    def predict_logits(batch: np.ndarray) -> np.ndarray:
        return runnable(torch.from_numpy(batch))[:, 0].numpy()

    preprocessor = Preprocessor(card.input_size, card.mean)
    logits, truth = collect_logits(predict_logits, data, preprocessor, advance)
    fit = fit_temperature(logits, truth)
    record = {"data": str(data), "images": len(read_manifest(data)["samples"]), **fit.to_dict()}
    return card.model_copy(
        update={
            "logit_temperature": round(fit.temperature, 4),
            "calibration": {**card.calibration, "logit_temperature": record},
        }
    )


def export_model(
    source: Path,
    out_dir: Path,
    name: str | None = None,
    report_path: Path | None = None,
    onnx: bool = False,
    dtype: str = "float16",
    notes: list[str] | None = None,
    min_confidence: float | None = None,
    input_size: int | None = None,
    test_time_flips: Flips | None = None,
    temperature_data: Path | None = None,
    advance: Callable[[], None] | None = None,
    other_reports: dict[str, Path] | None = None,
) -> tuple[Path, ModelCard]:
    """`temperature_data`: a synthetic set (apart from the evaluation's) to fit the version's
    logit temperature on; `advance` is called once per image of it."""
    network, base, extra = load_any(source, input_size, test_time_flips)
    if temperature_data:
        base = with_fitted_temperature(network, base, temperature_data, advance)
    name = name or base.name
    report = json.loads(report_path.read_text()) if report_path else None
    others = {n: json.loads(p.read_text()) for n, p in (other_reports or {}).items()}
    directory = out_dir / name
    card = save_network(
        network,
        directory,
        build_card(name, base, extra, report, notes, min_confidence, others),
        dtype=dtype,
    )
    if onnx:
        from worker.backends import export_onnx  # the worker's own export: one way to do it

        export_onnx(directory, card, directory / ONNX_FILE)
    return directory, card
