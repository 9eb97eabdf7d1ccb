"""The card's normalisation, part of the network: the network takes the photo's pixels as they
are (uint8 RGB, N x 3 x H x W) and normalises them itself. So the CPU stages hand over a quarter
of the bytes (no float32 copy of every photo is made, moved between processes or sent to the
device), and on a GPU the normalisation runs there. The PyTorch and ONNX backends and the
training evaluation all run it the same way (worker.onnx_graph adds the same arithmetic)."""

from __future__ import annotations

import torch
from torch import nn

from worker.preprocess import normalisation


class Normalised(nn.Module):
    """(pixels * scale + offset) per channel, in float32, then the network."""

    def __init__(
        self,
        network: nn.Module,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
    ) -> None:
        super().__init__()
        self.network = network
        scale, offset = normalisation(mean, std)
        self.register_buffer("scale", torch.from_numpy(scale).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("offset", torch.from_numpy(offset).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # `x`: the ONNX export names its axes
        return self.network(torch.addcmul(self.offset, x.float(), self.scale))
