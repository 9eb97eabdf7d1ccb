"""The network and its card, kept apart from the inference wrappers (worker/backends.py).

A model version is a directory with `model.json` (the card) and `weights.safetensors`. The card
says how to build the network, how to feed it, the gate it carries and the weights' sha256.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, model_validator

from worker.gate import GateThresholds

CARD_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


def build_unet(architecture: Architecture | None = None) -> Any:
    """The study's network: smp Unet, logits out. No pretrained weights are ever downloaded."""
    import segmentation_models_pytorch as smp

    arch = architecture or Architecture()
    if arch.type != "Unet":
        raise ValueError(f"unsupported architecture {arch.type!r}")
    return smp.Unet(
        encoder_name=arch.encoder,
        encoder_weights=None,
        in_channels=arch.in_channels,
        classes=arch.classes,
        activation=None,
    )


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


def load_network(directory: Path, card: ModelCard | None = None) -> Any:
    """Build the network and load verified fp32 weights (weights may be stored as fp16)."""
    import torch
    from safetensors.torch import load_file

    card = card or ModelCard.read(directory)
    weights = verify_weights(directory, card)
    network = build_unet(card.architecture)
    state = {key: value.float() for key, value in load_file(str(weights)).items()}
    network.load_state_dict(state)
    return network.eval().requires_grad_(False).to(torch.float32)


def for_inference(network: Any, card: ModelCard, flips_in_one_batch: bool = False) -> Any:
    """The network as the card runs it: flip-averaged when the card says so (the flips as one
    batch with `flips_in_one_batch`, for a GPU), its logits divided by the card's temperature."""
    if card.test_time_flips != Flips.NONE:
        from worker.flip import FlipAveraged

        vertical = card.test_time_flips == Flips.BOTH
        network = FlipAveraged(network, vertical=vertical, one_batch=flips_in_one_batch)
    if card.logit_temperature != 1.0:
        from worker.temperature import TemperatureScaled

        network = TemperatureScaled(network, card.logit_temperature)
    return network


def save_network(
    network: Any, directory: Path, card: ModelCard, dtype: str = "float16"
) -> ModelCard:
    """Write weights (fp16 by default) and the card with their sha256."""
    import torch
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    torch_dtype = {"float16": torch.float16, "float32": torch.float32}[dtype]
    # Integer buffers (BatchNorm's num_batches_tracked) keep their dtype.
    state = {
        key: value.detach()
        .to("cpu", torch_dtype if value.is_floating_point() else value.dtype)
        .contiguous()
        for key, value in network.state_dict().items()
    }
    save_file(state, str(directory / WEIGHTS_FILE))
    card = card.model_copy(
        update={"weights_sha256": sha256_file(directory / WEIGHTS_FILE), "weights_dtype": dtype}
    )
    card.write(directory)
    return card


def save_random_init(models_dir: Path, input_size: int, name: str | None = None) -> Path:
    """A seeded, randomly initialised real Unet version under `models_dir`: for plumbing, speed
    and agreement checks where no trained model is shipped (never for quality)."""
    import torch

    torch.manual_seed(0)
    card = ModelCard(name=name or f"random-init-{input_size}", input_size=input_size)
    save_network(build_unet(card.architecture), models_dir / card.name, card)
    return models_dir / card.name


def shipped_model_dirs(models_dir: Path) -> list[Path]:
    return sorted(p.parent for p in models_dir.glob(f"*/{CARD_FILE}"))


def default_model_dir(models_dir: Path) -> Path:
    """The shipped default: models/<name>/, the newest by name when several are shipped."""
    dirs = shipped_model_dirs(models_dir)
    if not dirs:
        raise FileNotFoundError(f"no model version under {models_dir} (expected */{CARD_FILE})")
    return dirs[-1]
