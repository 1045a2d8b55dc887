"""Kumar et al.'s polynomial network (method.md §3.3, Eq. 25): f(x) = (1/n_h) Σ_j φ(θ_jᵀx),
φ(h) = h + ε/2·h², fixed uniform readout, no biases, standard normal initialisation."""

from __future__ import annotations

import math

import torch
from torch import nn


class PolyNet(nn.Module):
    def __init__(self, input_shape, output_dim=1, epsilon=0.2, hidden=500):
        super().__init__()
        d = math.prod(input_shape)
        self.epsilon = float(epsilon)
        self.hidden = nn.Linear(d, hidden, bias=False)  # θ ∈ R^{n_h × d}: rows θ_j
        nn.init.normal_(self.hidden.weight)  # N(0, 1) entries
        self.output_dim = output_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hidden(x.flatten(1))
        phi = h + 0.5 * self.epsilon * h * h
        return phi.mean(dim=1, keepdim=True).expand(-1, self.output_dim)
