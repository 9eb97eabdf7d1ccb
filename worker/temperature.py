"""Temperature scaling, part of the network so that the PyTorch and ONNX backends and the
training evaluation all run the same graph (the temperature is fitted by training.temperature)."""

from __future__ import annotations

import torch
from torch import nn


class TemperatureScaled(nn.Module):
    """Logits divided by the version's temperature: the mask (logits >= 0) is unchanged, the
    probabilities the gate scores and the cutout's soft edges come out calibrated."""

    def __init__(self, network: nn.Module, temperature: float) -> None:
        super().__init__()
        self.network = network
        self.temperature = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # `x`: the ONNX export names its axes
        return self.network(x) / self.temperature
