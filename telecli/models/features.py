"""Fixed random features with a trainable linear readout: f_θ(x) = θ_Wᵀ tanh(A x + c) + θ_b.

The network is linear in θ, so the telescoping model (method.md Eq. 5) and every smoother recursion
(§1.5–1.6) are exact for it: the reference case of the tests and a lazy-regime baseline for users.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class RandomFeatures(nn.Module):
    def __init__(self, input_shape, output_dim, width=200):
        super().__init__()
        d = math.prod(input_shape)
        self.register_buffer("proj", torch.randn(width, d) / math.sqrt(d))
        self.register_buffer("offset", torch.randn(width) * 0.5)
        self.readout = nn.Linear(width, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(torch.tanh(x.flatten(1) @ self.proj.T + self.offset))
