"""The paper's stopping rule (method.md §3.2; telecli/train/stopping.py): the rule against a brute-force
re-implementation of its definition, on random loss curves and on the losses a run recorded; the
recorded per-epoch values against the network recomputed from the stored θ; a run that stops by 100 %
training accuracy and one that stops by patience; the stopped run is complete at T_stop for telescope,
verify and info; Eq. 5 stays exact on it; an interrupted run resumes to the same files.

Tolerances: float64; the recorded epoch loss equals the recomputation to 1e-12; Eq. 5 for a network
linear in θ to 1e-12 (as tests/test_telescope.py).
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from helpers import cli, run_hashes
from telecli import config
from telecli.errors import TelecliError
from telecli.jobs.common import rebuild_network
from telecli.jobs.telescope import run_telescope
from telecli.lens.metrics import accuracy, loss
from telecli.store.trajectory import MANIFEST, Trajectory
from telecli.store.verify import verify_run
from telecli.train import loop
from telecli.train.loop import run_training
from telecli.train.stopping import ACCURACY, PATIENCE, PaperStop


def brute_force(losses, accs, patience: int, tol: float) -> tuple[int, str] | None:
    """(epoch, reason) of the first epoch e (1-based) at which the rule stops, straight from its
    definition: accuracy 1, or no loss of epochs e−P+1..e below the best of epochs 1..e−P by more than tol."""
    for e in range(1, len(losses) + 1):
        if accs[e - 1] == 1.0:
            return e, ACCURACY
        if e > patience:
            before = min(losses[: e - patience])
            if all(not (l < before - tol) for l in losses[e - patience: e]):
                return e, PATIENCE
    return None


def feed(losses, accs, patience, tol):
    rule = PaperStop(patience, tol)
    for e, (l, a) in enumerate(zip(losses, accs), 1):
        why = rule.update(e, l, a)
        if why is not None:
            return e, why
    return None


def test_the_rule_is_its_definition_on_random_curves():
    rng = np.random.default_rng(0)
    stops = {ACCURACY: 0, PATIENCE: 0, None: 0}
    for trial in range(400):
        E = int(rng.integers(1, 60))
        P = int(rng.integers(1, 12))
        tol = float(rng.choice([0.0, 1e-3, 1e-2, 5e-2]))
        # decreasing, plateauing, noisy and repeated values
        steps = rng.choice([0.0, -1e-3, -2e-2, 1e-2, -0.1], size=E, p=[0.3, 0.2, 0.2, 0.2, 0.1])
        losses = list(np.round(1.0 + np.cumsum(steps), 3))
        accs = list(np.where(rng.random(E) < 0.02, 1.0, rng.choice([0.5, 0.9, np.nan], size=E)))
        want = brute_force(losses, accs, P, tol)
        assert feed(losses, accs, P, tol) == want, (trial, losses, accs, P, tol)
        stops[None if want is None else want[1]] += 1
    assert min(stops.values()) > 20, stops  # every outcome was exercised


DIGITS = {"name": "stop-acc", "seed": 0, "dtype": "float64",
          "task": {"name": "digits", "classes": [0, 1]},
          "model": {"name": "mlp", "depth": 2, "width": 8},
          "train": {"loss": "mse", "optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "batch_size": 50,
                    "steps": 400, "stop": "paper", "stop_patience_epochs": 5},
          "store": {"every": 6}}  # 252 training digits: 6 batches per epoch, every epoch end stored
POLY = {"name": "stop-patience", "seed": 0, "dtype": "float64",
        "task": {"name": "poly", "dim": 6, "n_train": 40, "n_test": 10},
        "model": {"name": "mlp", "depth": 2, "width": 12},
        "train": {"loss": "mse", "optimizer": "sgd", "lr": 0.05, "batch_size": 8, "steps": 1000,
                  "stop": "paper", "stop_patience_epochs": 4, "stop_tolerance": 1e-3},
        "store": {"every": 5}}  # 5 batches per epoch


def _epochs(run) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    meta = Trajectory(run).meta()
    at = np.isfinite(meta["epoch_loss"])
    return meta["step"][at], meta["epoch_loss"][at], meta["epoch_accuracy"][at]


def _check_stop(run, cfg, reason):
    m = json.loads((run / MANIFEST).read_text())
    steps, losses, accs = _epochs(run)
    per_epoch = -(-m["data"]["n_train"] // cfg["train"]["batch_size"])
    assert np.array_equal(steps, per_epoch * np.arange(1, len(steps) + 1))  # every epoch end, in order
    want = brute_force(list(losses), list(accs), cfg["train"]["stop_patience_epochs"],
                       cfg["train"].get("stop_tolerance", 1e-4))
    assert want is not None and want[1] == reason and want[0] == len(steps)  # it stopped at the first epoch it may
    stop = m["stopped_early"]
    assert m["status"] == "complete" and stop["step"] == want[0] * per_epoch == m["last_step"]
    assert stop["epoch"] == want[0] and stop["planned_steps"] == cfg["train"]["steps"] > stop["step"]
    assert (reason == ACCURACY) == (stop["reason"] == ACCURACY) and stop["train_loss"] == losses[-1]
    traj = Trajectory(run)
    assert traj.last_step == stop["step"] and traj.meta()["step"][-1] == stop["step"]
    return traj, steps, losses, accs


def test_a_run_stops_at_100_percent_training_accuracy(tmp_path):
    run = run_training(config.from_dict(DIGITS), tmp_path / "acc", progress=False)
    traj, steps, losses, accs = _check_stop(run, DIGITS, ACCURACY)
    assert accs[-1] == 1.0 and np.all(accs[:-1] < 1.0)
    # the recorded values are the whole training set's at θ_t, recomputed here from the stored θ
    model = rebuild_network(traj, torch.device("cpu"))
    data = traj.data()
    x, y = data["x_train"], data["y_train"]
    for t, l, a in zip(steps, losses, accs):
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(traj.theta(int(t))[name])
            f = model(x)
        assert abs(float(loss(f, y, "mse")) - l) < 1e-12 and float(accuracy(f, y, "mse")) == a
    assert verify_run(run) == ([], [])
    code, out, err = cli("info", run)
    assert code == 0 and "stopped early" in out and "train accuracy 100 %" in out, err
    code, out, err = cli("info", run, "--json")
    assert json.loads(out)["stopped_early"]["step"] == traj.last_step
    code, out, err = cli("verify", run)
    assert code == 0, out + err
    res = run_telescope(run, progress=False)
    with h5py.File(res) as f:
        assert f["steps"][-1] == traj.last_step and f["train/actual"].shape[0] == len(f["steps"])


def test_a_run_stops_when_the_loss_stops_improving(tmp_path):
    run = run_training(config.from_dict(POLY), tmp_path / "pat", progress=False)
    _, steps, losses, accs = _check_stop(run, POLY, PATIENCE)
    assert np.all(np.isnan(accs))  # regression targets: only the loss criterion applies
    # with the tolerance at 0 the same run trains on (its loss still falls a little): the tolerance matters
    longer = dict(POLY, train={**POLY["train"], "stop_tolerance": 0.0})
    run0 = run_training(config.from_dict(longer), tmp_path / "pat0", progress=False)
    assert Trajectory(run0).last_step > Trajectory(run).last_step


def test_resume_rebuilds_the_rule_and_an_early_stopped_run_is_complete(tmp_path, monkeypatch):
    cfg = dict(POLY, store={"every": 5, "shard_mb": 0})  # one stored step per shard: a resumable prefix
    whole = run_training(config.from_dict(cfg), tmp_path / "whole", progress=False)
    real = loop.train_step

    def interrupted(setup, cfg_, order, t):
        if t == 23:  # mid-epoch, after 4 epoch ends were recorded
            raise KeyboardInterrupt
        return real(setup, cfg_, order, t)

    monkeypatch.setattr(loop, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_training(config.from_dict(cfg), tmp_path / "cut", progress=False)
    assert json.loads((tmp_path / "cut" / MANIFEST).read_text())["status"] == "interrupted"
    monkeypatch.setattr(loop, "train_step", real)
    run_training(config.from_dict(cfg), tmp_path / "cut", resume=True, progress=False)
    assert run_hashes(tmp_path / "cut") == run_hashes(whole)
    # an early-stopped run is complete: resuming it does nothing
    before = run_hashes(whole)
    run_training(config.from_dict(cfg), whole, resume=True, progress=False)
    assert run_hashes(whole) == before


def test_telescoping_stays_exact_on_an_early_stopped_run(tmp_path):
    """A network linear in θ (fixed random features): Eq. 5 holds with equality up to T_stop."""
    cfg = {**DIGITS, "model": {"name": "features", "width": 40},
           "store": {"every": 1}}
    run = run_training(config.from_dict(cfg), tmp_path / "lin", progress=False)
    traj = Trajectory(run)
    stop = traj.manifest["stopped_early"]
    assert stop["step"] == traj.last_step < cfg["train"]["steps"]
    with h5py.File(run_telescope(run, progress=False, effective_params=True)) as f:
        assert f["steps"][-1] == stop["step"]
        for split in ("train", "test"):
            actual = f[f"{split}/actual"][...]
            assert np.abs(actual[-1] - actual[0]).max() > 1e-2
            assert np.abs(f[f"{split}/telescoped"][...] - actual).max() < 1e-12
            smoother = f[f"{split}/smoother"][...]
            assert np.abs(smoother - actual).max() < 1e-10  # s_t(x)·y + c_t(x) = f_θt(x)


def test_the_settings_are_checked():
    with pytest.raises(TelecliError, match="train.stop"):
        config.load_text('train.stop = "early"')
    with pytest.raises(TelecliError, match="stop_patience_epochs"):
        config.load_text("train.stop_patience_epochs = 0")
    with pytest.raises(TelecliError, match="stop_tolerance"):
        config.load_text("train.stop_tolerance = -1e-4")
    assert config.load_text("").train.stop == "none"


def test_the_paper_presets_of_double_descent_use_the_rule():
    from telecli.reproduce.cells import SAMPLE_RUNS

    for name in ("double-descent-cifar", "double-descent-mnist"):
        tr = config.load(SAMPLE_RUNS / "paper" / f"{name}.toml").train
        assert (tr.stop, tr.stop_patience_epochs, tr.stop_tolerance, tr.steps) == ("paper", 500, 1e-4, 300_000)
    assert config.load(SAMPLE_RUNS / "paper" / "double-descent-mnist1d.toml").train.stop == "none"  # 500 epochs
