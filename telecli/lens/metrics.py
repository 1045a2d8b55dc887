"""Losses, error rates and approximation errors: each defined once (method.md §2, §5.2); the mean and
standard error over seeds are telecli.lens.stats (numpy only, for the figures).

The loss kinds are the run's: ``mse`` is ½‖f − y‖² per example (method.md §1.5: ∂ℓ/∂f = f − y), ``ce`` is
cross-entropy on logits (binary with one output, soft or one-hot targets with k outputs). A single
output is a class decision at 0.5 for ``mse`` (f predicts y ∈ {0, 1}) and at 0 for ``ce`` (f is a logit:
probability ½).

>>> import torch
>>> f, y = torch.tensor([[0.2], [0.9]]), torch.tensor([[0.0], [1.0]])
>>> float(error_rate(f, y, "mse")), float(error_rate(f, y, "ce"))  # logits 0.2 > 0 → class 1
(0.0, 0.5)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from telecli.errors import TelecliError

LOSSES = ("mse", "ce")


def training_loss(kind: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The batch-mean training loss (differentiable): ``mse`` ½‖f − y‖² per example, ``ce`` cross-entropy."""
    if kind == "mse":
        return 0.5 * ((output - target) ** 2).sum(dim=1).mean()
    if kind == "ce":
        if output.shape[1] == 1:
            return F.binary_cross_entropy_with_logits(output, target)
        return F.cross_entropy(output, target)
    raise TelecliError(f"unknown loss '{kind}' (use {' or '.join(LOSSES)})")


def loss(f: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean loss over the points (axis −2) of f (…, n, k), as in training; leading axes are kept."""
    if kind == "mse":
        return 0.5 * ((f - y) ** 2).sum(dim=-1).mean(dim=-1)
    if f.shape[-1] == 1:
        z, t = f[..., 0], y[..., 0]
        return (torch.clamp(z, min=0) - z * t + torch.log1p(torch.exp(-z.abs()))).mean(dim=-1)
    return -(y * torch.log_softmax(f, dim=-1)).sum(dim=-1).mean(dim=-1)


def decision_threshold(kind: str) -> float:
    """Where one output splits the two classes: 0.5 for a prediction of y (``mse``), 0 for a logit (``ce``)."""
    return 0.0 if kind == "ce" else 0.5


def error_rate(f: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """Misclassification rate over the points: one output against 0/1 targets at
    :func:`decision_threshold`, argmax for k > 1. Regression targets (not 0/1) give NaN."""
    if f.shape[-1] == 1:
        yt = y[..., 0]
        if not torch.all((yt == 0) | (yt == 1)):
            return torch.full(f.shape[:-2], float("nan"), dtype=f.dtype, device=f.device)
        return ((f[..., 0] > decision_threshold(kind)).to(yt.dtype) != yt).to(f.dtype).mean(dim=-1)
    return (f.argmax(dim=-1) != y.argmax(dim=-1)).to(f.dtype).mean(dim=-1)


def accuracy(f: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """Classification accuracy over the points, the same decision as :func:`error_rate` (NaN for
    regression targets)."""
    if f.shape[-1] == 1:
        yt = y[..., 0]
        if not torch.all((yt == 0) | (yt == 1)):
            return torch.full(f.shape[:-2], float("nan"), dtype=f.dtype, device=f.device)
        return ((f[..., 0] > decision_threshold(kind)).to(yt.dtype) == yt).to(f.dtype).mean(dim=-1)
    return (f.argmax(dim=-1) == y.argmax(dim=-1)).to(f.dtype).mean(dim=-1)


def approximation_error(f: torch.Tensor, f_approx: torch.Tensor) -> torch.Tensor:
    """Mean absolute approximation error over points and outputs, (1/m) Σ_x |f(x) − f̃(x)| (§2);
    leading axes other than the last two are kept."""
    return (f - f_approx).abs().mean(dim=(-2, -1))
