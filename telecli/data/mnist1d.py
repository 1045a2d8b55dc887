"""MNIST-1D (Greydanus & Kobak), generated procedurally (method.md §3.2: classes 0 vs 1, 15 % label noise).

Uses ``mnist1d.data.make_dataset`` with the package's default arguments except ``seed = task.seed``
and ``num_samples``; nothing is downloaded. The package's own train/test split (80/20 of a shuffled,
class-balanced set) is kept; ``num_samples`` is 5,000 (the standard 4,000/1,000 set, 500 per class)
unless ``n_train``/``n_test`` need more of the selected classes, in which case it grows until
they fit. ``task.seed = 42`` with the defaults gives ``make_dataset(get_dataset_args())``.
Inputs are the 40-sample signals, already centred and scaled by ``make_dataset``: (n, 40), or
(n, 1, 40) when ``flatten = false``. ``make_dataset`` reseeds numpy's and Python's global random
generators; their states are saved and restored, so loading has no side effect.
"""

from __future__ import annotations

import math
import random

import numpy as np

from telecli.config import TaskConfig
from telecli.data.labels import finish_classification, select_classes
from telecli.errors import TelecliError


def generate(seed: int, num_samples: int) -> dict:
    """Run ``make_dataset`` without touching the global random state; returns its dict (x, y, x_test, y_test)."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:
        raise TelecliError(f"mnist1d needs the 'mnist1d' package ({e}); install it with: pip install mnist1d") from None
    args = get_dataset_args()
    args.seed, args.num_samples = int(seed), int(num_samples)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        return make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def load(cfg: TaskConfig):
    """MNIST-1D as a :class:`~telecli.data.Task`: pair (e.g. ``classes=[0, 1]`` → 0/1) or all 10."""
    k = len(cfg.classes) or 10
    # Expected share of the selected classes in each split is k/10 × (0.8 train, 0.2 test); 10 % slack.
    need = max(cfg.n_train / 0.8, cfg.n_test / 0.2) * 10 / k * 1.1
    num = max(5000, 10 * math.ceil(need / 10))
    for _ in range(8):
        d = generate(cfg.seed, num)
        x_tr, lab_tr, classes = select_classes(d["x"], d["y"], cfg.classes, 10, "mnist1d")
        x_te, lab_te, _ = select_classes(d["x_test"], d["y_test"], cfg.classes, 10, "mnist1d")
        if len(lab_tr) >= cfg.n_train and len(lab_te) >= cfg.n_test:
            break
        num = 10 * math.ceil(num * 1.25 / 10)
    if not cfg.flatten:
        x_tr, x_te = x_tr[:, None, :], x_te[:, None, :]
    info = {
        "source": "mnist1d.data.make_dataset (procedural, no download)",
        "num_samples": int(num),
        "generator_seed": int(cfg.seed),
        "available_train": int(len(lab_tr)),
        "available_test": int(len(lab_te)),
        "flatten": bool(cfg.flatten),
    }
    rng = np.random.default_rng(cfg.seed)
    return finish_classification(x_tr, lab_tr, x_te, lab_te, cfg, classes, rng, info)
