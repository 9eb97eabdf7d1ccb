"""A model version's card, torch-free (the producer reads it too; worker/model.py builds the
network it describes).

A model version is a directory with `model.json` (the card) and `weights.safetensors`. The card
says how to build the network, how to feed it, the gate it carries and the weights' sha256.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, model_validator

CARD_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class GateThresholds:
    """Belongs to a model version: a recalibrated model carries its own."""

    min_area: float = 0.05
    max_area: float = 0.50
    min_confidence: float = 0.98

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, float] | None) -> GateThresholds:
        return cls(**(values or {}))


class Architecture(BaseModel):
    type: str = "Unet"
    encoder: str = "efficientnet-b3"
    in_channels: int = 3
    classes: int = 1


class Gate(BaseModel):
    min_area: float = 0.05
    max_area: float = 0.50
    min_confidence: float = 0.98

    def thresholds(self) -> GateThresholds:
        return GateThresholds(self.min_area, self.max_area, self.min_confidence)


class Flips(StrEnum):
    """Test-time flip averaging: the logits are the mean of the photo's and of its flipped
    copies' (flipped back). Each copy costs one more pass of the network."""

    NONE = "none"
    HORIZONTAL = "horizontal"  # the photo and its mirror image
    BOTH = "horizontal+vertical"  # those two and both upside down


class ModelCard(BaseModel):
    name: str
    architecture: Architecture = Field(default_factory=Architecture)
    input_size: int = 320  # longest side fed to the network, a multiple of 32
    # Measured per version, README "Training".
    test_time_flips: Flips = Flips.NONE
    # Logits are divided by this before the sigmoid (training.temperature fits it on a
    # calibration set): networks trained with a Dice term come out overconfident.
    logit_temperature: float = Field(default=1.0, gt=0)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    gate: Gate = Field(default_factory=Gate)
    weights_sha256: str = ""
    weights_dtype: str = "float16"
    metrics: dict[str, Any] = Field(default_factory=dict)
    calibration: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)
    created_at: str = ""

    @model_validator(mode="before")
    @classmethod
    def _read_flip_average(cls, data: Any) -> Any:
        """Cards written before test_time_flips said `flip_average: true` for a mirror."""
        if isinstance(data, dict) and "flip_average" in data:
            data = dict(data)
            mirrored = data.pop("flip_average")
            data.setdefault("test_time_flips", Flips.HORIZONTAL if mirrored else Flips.NONE)
        return data

    @classmethod
    def read(cls, directory: Path) -> ModelCard:
        return cls.model_validate_json((directory / CARD_FILE).read_text())

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        card_json = json.dumps(self.model_dump(mode="json"), indent=2)
        (directory / CARD_FILE).write_text(card_json + "\n")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ChecksumMismatch(RuntimeError):
    pass


def verify_weights(directory: Path, card: ModelCard) -> Path:
    """Refuse weights whose sha256 is not the card's."""
    weights = directory / WEIGHTS_FILE
    actual = sha256_file(weights)
    if card.weights_sha256 and actual != card.weights_sha256:
        raise ChecksumMismatch(
            f"model {card.name}: {weights} has sha256 {actual}, card says {card.weights_sha256}"
        )
    return weights


def shipped_model_dirs(models_dir: Path) -> list[Path]:
    return sorted(p.parent for p in models_dir.glob(f"*/{CARD_FILE}"))


def default_model_dir(models_dir: Path) -> Path:
    """The shipped default: models/<name>/, the newest by name when several are shipped."""
    dirs = shipped_model_dirs(models_dir)
    if not dirs:
        raise FileNotFoundError(f"no model version under {models_dir} (expected */{CARD_FILE})")
    return dirs[-1]
