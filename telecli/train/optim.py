"""Losses and learning-rate schedules of the presets (method.md §2–5); optimisers: telecli.optim."""

from __future__ import annotations

import torch

from telecli.config import TrainConfig
from telecli.errors import TelecliError
from telecli.lens.metrics import training_loss


def loss_fn(name: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Batch-mean training loss of the run's kind (lens.metrics.training_loss)."""
    return training_loss(name, output, target)


def make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    """The preset's torch optimiser, built by its module in telecli.optim."""
    from telecli.optim import get

    return get(cfg.optimizer).make(cfg, params)


def learning_rate(cfg: TrainConfig, t: int) -> float:
    """γ_t for step t ≥ 1: linear warmup over the first ``warmup_steps`` steps (γ·t/w), then
    multiplied by ``decay`` once for every milestone m < t (e.g. ÷10 after steps 32k and 48k)."""
    kinds = {"constant", "warmup", "step", "warmup-step"}
    if cfg.schedule not in kinds:
        raise TelecliError(f"unknown schedule '{cfg.schedule}' (use {', '.join(sorted(kinds))})")
    lr = cfg.lr
    if "warmup" in cfg.schedule and cfg.warmup_steps > 0 and t <= cfg.warmup_steps:
        lr = lr * t / cfg.warmup_steps
    if "step" in cfg.schedule.split("-"):
        lr = lr * cfg.decay ** sum(1 for m in cfg.milestones if t > m)
    return lr
