"""Small convolutional network for 8×8 digits and 32×32 CIFAR-style images (method.md §5).

conv3x3(C→c, pad 1) → ReLU → conv3x3(c→2c, stride 2, pad 1) → ReLU → global average pool
→ Linear(2c → k) (``self.head``) → optional Sigmoid. No BatchNorm and no dropout, so the network is a
deterministic function that behaves identically in train and eval mode.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from telecli.errors import TelecliError


def image_shape(input_shape) -> tuple[int, int, int]:
    """(C, H, W) of an input. (C, H, W) is kept; (H, W) becomes (1, H, W); a flat (d,) becomes
    (1, s, s) when d = s² is a perfect square, else (1, 1, d) (a 1-pixel-high image)."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        return shape  # type: ignore[return-value]
    if len(shape) == 2:
        return (1, *shape)
    if len(shape) == 1:
        d = shape[0]
        s = math.isqrt(d)
        return (1, s, s) if s * s == d else (1, 1, d)
    raise TelecliError(f"cnn input_shape must be (C, H, W), (H, W) or (d,), got {list(shape)}")


class CNN(nn.Module):
    def __init__(self, input_shape, output_dim, channels=16, sigmoid=False):
        super().__init__()
        if channels < 1:
            raise TelecliError(f"cnn channels must be ≥ 1, got {channels}")
        self.input_shape = image_shape(input_shape)
        c_in = self.input_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(c_in, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(2 * channels, output_dim)  # the final (readout) layer
        self.out_act = nn.Sigmoid() if sigmoid else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.input_shape)  # accepts flattened or image-shaped batches
        h = self.features(x).mean(dim=(2, 3))  # global average pool
        return self.out_act(self.head(h))
