"""Tasks (data sets), deterministic from a seed; the exact tensors are stored with every run.

Every task returns a :class:`Task` with float64 numpy arrays: inputs ``x`` of shape (n, *input_shape)
and targets ``y`` of shape (n, k). Binary pairs use one output with 0/1 targets (method.md §8.2);
``one_hot`` gives k outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from telecli.config import TaskConfig
from telecli.errors import TelecliError


@dataclass
class Task:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable description

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def output_dim(self) -> int:
        return int(self.y_train.shape[1])


TASKS = ("poly", "digits", "mnist", "cifar10", "svhn", "mnist1d", "tabular", "modular")  # modules of telecli.data


def _loader(name: str):
    """The ``load(cfg) -> Task`` function of task ``name`` (its module telecli.data.NAME)."""
    import importlib

    return importlib.import_module(f"telecli.data.{name}").load


def build_task(cfg: TaskConfig) -> Task:
    """Build the task named by ``cfg.name`` (one of TASKS)."""
    if cfg.name not in TASKS:
        raise TelecliError(f"unknown task '{cfg.name}' (known: {', '.join(TASKS)})")
    task = _loader(cfg.name)(cfg)
    for key in ("x_train", "y_train", "x_test", "y_test"):
        arr = getattr(task, key)
        if not np.all(np.isfinite(arr)):
            raise TelecliError(f"task '{cfg.name}': {key} has non-finite values")
    task.info.setdefault("name", cfg.name)
    task.info.update(n_train=int(task.x_train.shape[0]), n_test=int(task.x_test.shape[0]))
    return task
