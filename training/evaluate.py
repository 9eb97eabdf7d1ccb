"""Evaluation and calibration on a held-out synthetic set, through the product's own steps:
worker.preprocess (resize to the card's input size, pad), the network, worker.cleanup.clean_mask
and worker.gate.score_and_gate, all at network resolution as the worker does.

Figures: mean IoU (cleaned and raw mask), boundary IoU, results by object size and kind, the
gate's accept rate and accepted precision (share of accepted with IoU >= 0.90), the
risk-coverage curve and the confidence threshold calibrated for a target precision.

`evaluate_model` runs it all for a checkpoint or a model version and writes the report, the
per-image records and a sheet of the worst images (`jewelcut train evaluate`, the chain).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from jewelcut.modelcard import Flips, GateThresholds
from training.dataset import read_manifest, read_sample
from worker.cleanup import clean_mask
from worker.gate import decide, score_and_gate
from worker.preprocess import Preprocessor, crop_to_image

GOOD_IOU = 0.90
SIZE_BUCKETS = (
    (0.0, 0.03, "tiny <3%"),
    (0.03, 0.10, "small 3-10%"),
    (0.10, 0.30, "medium 10-30%"),
    (0.30, 0.60, "large 30-60%"),
    (0.60, 1.01, "huge >60%"),
)
MIN_CALIBRATION_ACCEPTED = 20


@dataclass
class ImageResult:
    name: str
    kind: str
    background: str
    true_area: float
    iou: float
    raw_iou: float
    boundary_iou: float
    confidence: float
    fg_score: float
    bg_score: float
    mask_area: float
    decision: str
    reason: str | None


def iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    union = np.logical_or(predicted, truth).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(predicted, truth).sum() / union)


def boundary_band(mask: np.ndarray, width: int) -> np.ndarray:
    """The mask's pixels within `width` of its contour (Cheng et al., Boundary IoU, 2021)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    padded = cv2.copyMakeBorder(
        mask.astype(np.uint8), width, width, width, width, cv2.BORDER_CONSTANT, value=0
    )
    eroded = cv2.erode(padded, kernel)[width:-width, width:-width]
    return mask & ~eroded.astype(bool)


def boundary_iou(predicted: np.ndarray, truth: np.ndarray, dilation_ratio: float = 0.02) -> float:
    width = max(1, round(dilation_ratio * float(np.hypot(*truth.shape))))
    return iou(boundary_band(predicted, width), boundary_band(truth, width))


def truth_at(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """The ground truth at network resolution (area-averaged, then > 0.5)."""
    small = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    return small > 0.5


def evaluate_folder(
    predict: Callable[[np.ndarray], np.ndarray],
    folder: Path,
    preprocessor: Preprocessor,
    thresholds: GateThresholds,
    batch_size: int = 8,
    advance: Callable[[], None] | None = None,
    limit: int | None = None,
) -> list[ImageResult]:
    """`predict(batch float32 [N,3,H,W]) -> probabilities [N,H,W]` for every sample of `folder`."""
    samples = read_manifest(folder)["samples"][:limit]
    results: list[ImageResult] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        loaded = [read_sample(folder, s["name"]) for s in chunk]
        prepared = [preprocessor(rgb) for rgb, _ in loaded]
        shapes = {p.padded_shape for p in prepared}
        groups = [prepared] if len(shapes) == 1 else [[p] for p in prepared]
        probabilities = [
            prob for group in groups for prob in predict(np.stack([p.tensor for p in group]))
        ]
        for sample, (_, mask), ready, probability in zip(
            chunk, loaded, prepared, probabilities, strict=True
        ):
            probability = crop_to_image(probability, ready)
            results.append(score_image(sample, mask, probability, thresholds))
            if advance:
                advance()
    return results


def score_image(
    sample: dict[str, Any], mask: np.ndarray, probability: np.ndarray, thresholds: GateThresholds
) -> ImageResult:
    truth = truth_at(mask, *probability.shape)
    cleaned = clean_mask(probability)
    gate = score_and_gate(probability, cleaned, thresholds)
    return ImageResult(
        name=sample["name"],
        kind=sample.get("kind", "?"),
        background=sample.get("background", "?"),
        true_area=float(truth.mean()),
        iou=iou(cleaned, truth),
        raw_iou=iou(probability >= 0.5, truth),
        boundary_iou=boundary_iou(cleaned, truth),
        confidence=gate.confidence,
        fg_score=gate.fg_score,
        bg_score=gate.bg_score,
        mask_area=gate.mask_area,
        decision=gate.decision,
        reason=gate.reason,
    )


# --- summaries ----------------------------------------------------------------------------------


def summarise(
    results: Sequence[ImageResult], thresholds: GateThresholds, target_precision: float
) -> dict[str, Any]:
    accepted = [r for r in results if r.decision == "accepted"]
    gate_sized = [r for r in results if thresholds.min_area <= r.true_area <= thresholds.max_area]
    reasons: dict[str, int] = defaultdict(int)
    for r in results:
        if r.reason:
            reasons[r.reason] += 1
    return {
        "images": len(results),
        "mean_iou": mean(r.iou for r in results),
        "median_iou": float(np.median([r.iou for r in results])) if results else float("nan"),
        "mean_raw_iou": mean(r.raw_iou for r in results),
        "mean_boundary_iou": mean(r.boundary_iou for r in results),
        "share_iou_ge_0.90": mean(r.iou >= GOOD_IOU for r in results),
        "gate": thresholds.to_dict(),
        "accept_rate": len(accepted) / max(len(results), 1),
        "accepted": len(accepted),
        # the images the gate could accept at all, judged by their true area
        "gate_sized_images": len(gate_sized),
        "accept_rate_gate_sized": mean(r.decision == "accepted" for r in gate_sized),
        "accepted_precision": mean(r.iou >= GOOD_IOU for r in accepted),
        "accepted_mean_iou": mean(r.iou for r in accepted),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "by_size": by_group(results, size_bucket),
        "by_kind": by_group(results, lambda r: r.kind),
        "by_background": by_group(results, lambda r: r.background),
        "calibration": calibrate(results, thresholds, target_precision),
    }


def mean(values: Any) -> float:
    values = [float(v) for v in values]
    return float(np.mean(values)) if values else float("nan")


def size_bucket(result: ImageResult) -> str:
    return next(name for low, high, name in SIZE_BUCKETS if low <= result.true_area < high)


def by_group(results: Sequence[ImageResult], key: Callable[[ImageResult], str]) -> dict[str, Any]:
    groups: dict[str, list[ImageResult]] = defaultdict(list)
    for r in results:
        groups[key(r)].append(r)
    return {
        name: {
            "images": len(members),
            "mean_iou": round(mean(r.iou for r in members), 4),
            "mean_boundary_iou": round(mean(r.boundary_iou for r in members), 4),
            "accept_rate": round(mean(r.decision == "accepted" for r in members), 4),
            "accepted_precision": round(
                mean(r.iou >= GOOD_IOU for r in members if r.decision == "accepted"), 4
            ),
        }
        for name, members in sorted(groups.items())
    }


def risk_coverage(
    results: Sequence[ImageResult], thresholds: GateThresholds
) -> list[dict[str, float]]:
    """For each confidence threshold (the area rule unchanged): coverage (accept rate) and risk
    (share of accepted with IoU < 0.90), from the most to the least confident image."""
    in_area = sorted(
        (r for r in results if decide(r.mask_area, 1.0, thresholds)[0] == "accepted"),
        key=lambda r: -r.confidence,
    )
    curve, bad = [], 0
    for count, r in enumerate(in_area, start=1):
        bad += r.iou < GOOD_IOU
        curve.append(
            {
                "threshold": r.confidence,
                "coverage": count / max(len(results), 1),
                "risk": bad / count,
            }
        )
    return curve


def calibrate(
    results: Sequence[ImageResult], thresholds: GateThresholds, target_precision: float
) -> dict[str, Any]:
    """The lowest confidence threshold whose accepted precision stays >= target (with at least
    MIN_CALIBRATION_ACCEPTED accepted), next to the model's current threshold."""
    curve = risk_coverage(results, thresholds)
    chosen = None
    for point in curve:
        if (
            point["coverage"] * len(results) >= MIN_CALIBRATION_ACCEPTED
            and 1 - point["risk"] >= target_precision
        ):
            chosen = point
    step = max(len(curve) // 50, 1)
    return {
        "target_precision": target_precision,
        "study_threshold": thresholds.min_confidence,
        "calibrated_threshold": None if chosen is None else round(chosen["threshold"], 6),
        "calibrated_accept_rate": None if chosen is None else round(chosen["coverage"], 4),
        "calibrated_precision": None if chosen is None else round(1 - chosen["risk"], 4),
        "risk_coverage": [{k: round(v, 5) for k, v in p.items()} for p in curve[::step]],
    }


def results_to_records(results: Sequence[ImageResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]


def evaluate_model(
    model: Path,
    data: Path,
    out: Path,
    *,
    target_precision: float = 0.98,
    batch_size: int = 8,
    limit: int | None = None,
    sheet: bool = True,
    input_size: int | None = None,
    test_time_flips: Flips | None = None,
    advance: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint or model version on `data` as its card runs it (or at another
    input size / flips); writes `out` (the report), `out`.images.jsonl and, with `sheet`,
    `out`.worst.png. `advance` is called once per image."""
    import json

    from training.checkpoint import load_any
    from worker.model import for_inference

    network, card, _ = load_any(model, input_size, test_time_flips)
    predict = probabilities_of(for_inference(network, card))
    thresholds = card.gate.thresholds()
    preprocessor = Preprocessor(card.input_size, card.mean)
    results = evaluate_folder(
        predict, data, preprocessor, thresholds, batch_size, advance or (lambda: None), limit
    )
    report = {
        "model": str(model),
        "data": str(data),
        "input_size": card.input_size,
        "test_time_flips": card.test_time_flips.value,
        "logit_temperature": card.logit_temperature,
        **summarise(results, thresholds, target_precision),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    records = out.with_suffix(".images.jsonl")
    records.write_text("".join(json.dumps(r) + "\n" for r in results_to_records(results)))
    if sheet:
        write_worst_sheet(results, data, out.with_suffix(".worst.png"), predict, preprocessor)
    return report


def probabilities_of(network: Any) -> Callable[[np.ndarray], np.ndarray]:
    """A batch (N, 3, H, W float32) -> the network's foreground probabilities (N, H, W)."""
    import torch

    @torch.inference_mode()
    def predict(batch: np.ndarray) -> np.ndarray:
        return torch.sigmoid(network(torch.from_numpy(batch))[:, 0]).numpy()

    return predict


def write_worst_sheet(
    results: Sequence[ImageResult],
    data: Path,
    path: Path,
    predict: Callable[[np.ndarray], np.ndarray],
    preprocessor: Preprocessor,
    count: int = 12,
) -> Path:
    """The `count` lowest-IoU images with the cleaned predicted mask outlined."""
    from training.preview import write_sheet

    pairs = []
    for result in sorted(results, key=lambda r: r.iou)[:count]:
        rgb, _ = read_sample(data, result.name)
        prepared = preprocessor(rgb)
        probability = crop_to_image(predict(prepared.tensor[None])[0], prepared)
        size = (prepared.width, prepared.height)
        small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        pairs.append((small, clean_mask(probability)))
    return write_sheet(pairs, path)
