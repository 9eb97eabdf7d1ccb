"""A network to evaluate, export or start from: from a training checkpoint (.pt, written by
training.fit) or from a model version directory (its card and verified weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from jewelcut.modelcard import CARD_FILE, Flips, ModelCard
from training.config import FitConfig
from worker.model import build_unet, load_network


def load_any(
    source: Path, input_size: int | None = None, test_time_flips: Flips | None = None
) -> tuple[nn.Module, ModelCard, dict[str, Any]]:
    """The bare network with its card from a checkpoint (.pt) or a model version directory;
    `input_size` and `test_time_flips` change how the card runs it (worker.model.for_inference)."""
    if source.is_dir() and (source / CARD_FILE).exists():
        card = ModelCard.read(source)
        network, extra = load_network(source, card), {}
    else:
        network, extra = load_checkpoint_network(source)
        config: FitConfig = extra["config"]
        card = ModelCard(
            name=config.name, architecture=config.architecture, input_size=config.input_size
        )
        network = network.float()
    if input_size:
        card = card.model_copy(update={"input_size": input_size})
    if test_time_flips is not None:
        card = card.model_copy(update={"test_time_flips": test_time_flips})
    return network, card, extra


def write_checkpoint(payload: dict[str, Any], path: Path) -> Path:
    """torch.save through a temporary file: a write that fails part way leaves an earlier
    checkpoint at `path` whole."""
    temporary = path.with_suffix(".tmp")
    torch.save(payload, temporary)
    temporary.replace(path)
    return path


def load_checkpoint_network(path: Path, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The network of a checkpoint (eval mode; the weights' moving average when the run kept
    one, as its validation did) and the checkpoint's config and state."""
    payload = torch.load(path, map_location=device)
    config = FitConfig.model_validate(payload["config"])
    network = build_unet(config.architecture)
    network.load_state_dict(payload.get("average") or payload["model"])
    return network.eval(), {"config": config, "state": payload["state"]}
