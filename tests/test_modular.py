"""The modular-arithmetic task (method.md §10.2): a deterministic split that covers every pair of Z_P once,
correct residues for +, − and ·, and token ids that survive the float64 storage exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from telecli import config
from telecli.config import TaskConfig
from telecli.data import TASKS, build_task
from telecli.errors import TelecliError
from telecli.store.trajectory import Trajectory
from telecli.train.loop import run_training


def _task(**kw):
    return build_task(TaskConfig(name="modular", **kw))


def _rows(x: np.ndarray) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b, _ in x}


def test_registered():
    assert "modular" in TASKS


@pytest.mark.parametrize("P,fraction", [(7, 0.3), (23, 0.3), (13, 0.5)])
def test_split_covers_every_pair_once(P, fraction):
    t = _task(modulus=P, train_fraction=fraction)
    train, test = _rows(t.x_train), _rows(t.x_test)
    assert len(train) == len(t.x_train) and len(test) == len(t.x_test)  # no pair twice within a split
    assert train.isdisjoint(test)
    assert train | test == {(a, b) for a in range(P) for b in range(P)}
    assert len(train) == round(fraction * P * P)
    assert t.info["n_train"] + t.info["n_test"] == P * P and t.info["vocab"] == P + 1


def test_split_is_deterministic_and_seeded():
    a, b, c = _task(modulus=11), _task(modulus=11), _task(modulus=11, seed=1)
    for key in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert _rows(a.x_train) != _rows(c.x_train)


@pytest.mark.parametrize("op,fn", [("add", lambda a, b: a + b), ("sub", lambda a, b: a - b),
                                   ("mul", lambda a, b: a * b)])
def test_targets_are_one_hot_residues(op, fn):
    P = 11
    t = _task(modulus=P, operation=op)
    for x, y in ((t.x_train, t.y_train), (t.x_test, t.y_test)):
        assert x.dtype == np.float64 and y.shape == (len(x), P)
        assert np.all(x[:, 2] == P)  # the "=" token
        assert np.all(y.sum(1) == 1) and set(np.unique(y)) == {0.0, 1.0}
        want = np.array([fn(int(a), int(b)) % P for a, b, _ in x])
        np.testing.assert_array_equal(y.argmax(1), want)


def test_refused_settings():
    with pytest.raises(TelecliError, match="n_train"):
        _task(modulus=7, n_train=10)
    with pytest.raises(TelecliError, match="training pairs"):
        _task(modulus=2, train_fraction=0.1)
    with pytest.raises(TelecliError, match="operation"):
        config.from_dict({"task": {"name": "modular", "operation": "div"}})


def test_token_ids_round_trip_through_the_store(tmp_path):
    """Token ids are stored as float64 (design.md); read back they are the same integers."""
    cfg = config.from_dict({"task": {"name": "modular", "modulus": 7},
                            "model": {"name": "transformer", "d_model": 8, "heads": 2, "d_mlp": 8},
                            "train": {"optimizer": "adamw", "lr": 1e-3, "steps": 1}})
    run = run_training(cfg, tmp_path / "run", progress=False)
    data = Trajectory(run).data()
    task = build_task(cfg.task)
    for split in ("train", "test"):
        x = data[f"x_{split}"]
        assert x.dtype == torch.float64
        np.testing.assert_array_equal(x.numpy(), getattr(task, f"x_{split}"))
        assert torch.equal(x.long().double(), x)
