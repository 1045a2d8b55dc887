"""Polynomial regression of Kumar et al. (2024), method.md §3.3.

x ~ N(0, I/d), target y = ½(βᵀx)² with β ~ N(0, I_d) (the paper leaves β's law open, §8.6), no noise;
550 training and 500 test points by default.
"""

from __future__ import annotations

import numpy as np

from telecli.config import TaskConfig
from telecli.data import Task


def load(cfg: TaskConfig) -> Task:
    rng = np.random.default_rng(cfg.seed)
    d = cfg.dim
    n_train = cfg.n_train or 550
    n_test = cfg.n_test or 500
    beta = rng.standard_normal(d)
    x = rng.standard_normal((n_train + n_test, d)) / np.sqrt(d)
    y = 0.5 * (x @ beta) ** 2
    info = {"source": "generated", "target": "0.5*(beta^T x)^2", "dim": d}
    return Task(x[:n_train], y[:n_train, None], x[n_train:], y[n_train:, None], info)
