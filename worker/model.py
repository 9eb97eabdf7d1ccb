"""The network a model card describes (jewelcut.modelcard), kept apart from the inference
wrappers (worker/backends.py): build it, load and save its weights, wrap it as the card runs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jewelcut.modelcard import (
    WEIGHTS_FILE,
    Architecture,
    Flips,
    ModelCard,
    sha256_file,
    verify_weights,
)


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
    """The network as the card runs it: on uint8 pixels, normalised with the card's mean/std
    (worker.normalise); flip-averaged when the card says so (the flips as one batch with
    `flips_in_one_batch`, for a GPU); its logits divided by the card's temperature."""
    from worker.normalise import Normalised

    if card.test_time_flips != Flips.NONE:
        from worker.flip import FlipAveraged

        vertical = card.test_time_flips == Flips.BOTH
        network = FlipAveraged(network, vertical=vertical, one_batch=flips_in_one_batch)
    if card.logit_temperature != 1.0:
        from worker.temperature import TemperatureScaled

        network = TemperatureScaled(network, card.logit_temperature)
    return Normalised(network, card.mean, card.std)


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
