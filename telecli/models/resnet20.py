"""CIFAR ResNet-20 (He et al. 2016) as implemented by Idelbayev, akamaster/pytorch_resnet_cifar10
``resnet.py`` — the network of the linear-mode-connectivity experiments (method.md §5.2).

conv3x3(C→16) + BN + ReLU, then 3 stages × 3 BasicBlocks with 16/32/64 channels (the first block of
stages 2 and 3 has stride 2), option-A shortcuts (parameter-free: subsample x[:, :, ::2, ::2] and
zero-pad the channels), global average pool, Linear(64 → k) (``self.linear``). Conv2d and Linear
weights use Kaiming-normal initialisation; convolutions have no bias. 269,722 parameters for 3 input
channels and 10 outputs (the often quoted 272,474 is the option-B variant with 1×1-conv shortcuts).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from telecli.errors import TelecliError


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.subsample = stride != 1
        self.pad = planes - in_planes  # option A: zero channels, split evenly (planes//4 each side)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.subsample:
            x = x[:, :, ::2, ::2]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    def __init__(self, input_shape, output_dim):
        super().__init__()
        shape = [int(s) for s in input_shape]
        if len(shape) != 3:
            raise TelecliError(
                f"resnet20 needs image inputs (C, H, W), got input_shape {shape}: set task.flatten = false"
            )
        c, h, w = shape
        if h < 8 or w < 8:
            raise TelecliError(f"resnet20 needs images of at least 8×8 pixels, got {h}×{w}")
        self.input_shape = (c, h, w)
        self.conv1 = _conv3x3(c, 16)
        self.bn1 = nn.BatchNorm2d(16)
        layers, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(3):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(64, output_dim)  # the final (readout) layer
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.input_shape)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(out.mean(dim=(2, 3)))  # global average pool
