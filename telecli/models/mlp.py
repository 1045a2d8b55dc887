"""Fully connected network: ``depth`` Linear layers of ``width`` units (method.md §2, §3.2, §3.4)."""

from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "identity": nn.Identity, "sigmoid": nn.Sigmoid}


class MLP(nn.Module):
    def __init__(self, input_shape, output_dim, depth=3, width=200, activation="relu", sigmoid=False):
        super().__init__()
        from telecli.errors import TelecliError

        if activation not in ACTIVATIONS:
            raise TelecliError(f"unknown activation '{activation}' (known: {', '.join(ACTIVATIONS)})")
        if depth < 1:
            raise TelecliError(f"mlp depth must be ≥ 1, got {depth}")
        d_in = math.prod(input_shape)
        dims = [d_in] + [width] * (depth - 1) + [output_dim]
        layers: list[nn.Module] = [nn.Flatten()]
        for i in range(depth):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < depth - 1:
                layers.append(ACTIVATIONS[activation]())
        if sigmoid:
            layers.append(nn.Sigmoid())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
