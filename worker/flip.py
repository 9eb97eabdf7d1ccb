"""Test-time flip averaging, part of the network so that the PyTorch and ONNX backends and the
training evaluation all run the same graph."""

from __future__ import annotations

import torch
from torch import nn


class FlipAveraged(nn.Module):
    """Logits of the photo averaged with the mirrored logits of its mirror image. Logits rather
    than probabilities: the same IoU on the held-out set and more photos accepted at the same
    precision (v5, first 200 held-out images: 67 against 60, all with IoU >= 0.90)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # `x`: the ONNX export names its axes
        return (self.network(x) + self.network(x.flip(-1)).flip(-1)) / 2
