"""The per-step validity flags of a results file (docs/format.md §2, docs/effective-parameters.md "When p
means what it says"): /validity/{split}/telescoping (mean |f − f̃| over the split ≤ 0.1 × the targets'
spread), /validity/{split}/smoother (mean |s·y + c − f| ≤ 0.1 × spread) and their conjunction with the
recipe and parameter checks, /validity/{split}/ok, recomputed here by brute force (plain Python loops
over the stored predictions, float64) on real tiny runs: one that must not flag (γ = 0.05) and one that
must (γ = 1: the telescoping error passes a tenth of the spread on the test points from step 15 while
the smoother still tracks the network). Also the summary telecli reproduce writes into claims.json.
"""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from helpers import write_cfg
from telecli.jobs.telescope import SMOOTHER_TOLERANCE, TELESCOPING_TOLERANCE, run_telescope
from telecli.config import load
from telecli.train.loop import run_training


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """γ = 0.05 and γ = 1 on the tiny preset of tests/helpers.py (20 SGD steps), with p."""
    tmp = tmp_path_factory.mktemp("validity")
    out = {}
    for lr in (0.05, 1.0):
        run = run_training(load(write_cfg(tmp), [f"train.lr={lr}"]), tmp / f"lr{lr}", progress=False)
        out[lr] = run_telescope(run, effective_params=True, progress=False)
    return out


def _spread(y: np.ndarray) -> float:
    """Standard deviation of all target values, by hand."""
    vals = [float(v) for v in y.ravel()]
    mean = sum(vals) / len(vals)
    return math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals)) or 1.0


def _mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    diffs = [abs(float(u) - float(v)) for u, v in zip(a.ravel(), b.ravel())]
    return sum(diffs) / len(diffs)


def _brute(f: h5py.File, split: str) -> dict[str, np.ndarray]:
    """The flags from the stored predictions, one step at a time."""
    spread = _spread(f[f"{split}/targets"][...])
    actual, tele, smooth = (f[f"{split}/{k}"][...] for k in ("actual", "telescoped", "smoother"))
    telescoping = np.array([_mean_abs(actual[t], tele[t]) <= TELESCOPING_TOLERANCE * spread
                            for t in range(len(actual))])
    smoother = np.array([_mean_abs(actual[t], smooth[t]) <= SMOOTHER_TOLERANCE * spread for t in range(len(actual))])
    return {"telescoping": telescoping, "smoother": smoother,
            "ok": telescoping & smoother & f["validity/recipe"][...] & f["validity/parameters"][...]}


@pytest.mark.parametrize("lr", [0.05, 1.0])
def test_the_flags_match_a_brute_force_recomputation(runs, lr):
    with h5py.File(runs[lr], "r") as f:
        assert f.attrs["telescoping_tolerance"] == TELESCOPING_TOLERANCE
        for s in ("train", "test"):
            assert f.attrs[f"target_spread_{s}"] == pytest.approx(_spread(f[f"{s}/targets"][...]), rel=1e-12)
            want = _brute(f, s)
            for check, flags in want.items():
                got = f[f"validity/{s}/{check}"][...]
                assert got.dtype == bool and np.array_equal(got, flags), (lr, s, check)


def test_a_small_step_run_is_not_flagged_and_a_large_step_one_is(runs):
    with h5py.File(runs[0.05], "r") as f:
        assert all(f[f"validity/{s}/{c}"][...].all() for s in ("train", "test") for c in ("telescoping", "ok"))
    with h5py.File(runs[1.0], "r") as f:
        bad = ~f["validity/test/telescoping"][...]
        assert bad.any() and not bad[:5].any()  # the telescoping error grows over the run
        assert f["validity/test/smoother"][...].all()  # the smoother alone would not have flagged it
        assert np.array_equal(~f["validity/test/ok"][...], bad)
        first = int(f["steps"][int(np.argmax(bad))])
        err = f["test/approx_error_telescoped"][...] / f.attrs["target_spread_test"]
        assert err[np.argmax(bad)] > TELESCOPING_TOLERANCE >= err[np.argmax(bad) - 1]
    assert first == 15  # measured for this preset (telecli 0.x, float64, CPU)


def test_a_results_file_without_p_carries_the_telescoping_flag(tmp_path):
    run = run_training(load(write_cfg(tmp_path), ["train.lr=1.0"]), tmp_path / "run", progress=False)
    with h5py.File(run_telescope(run, progress=False), "r") as f:
        assert "validity/test/telescoping" in f and "validity/test/ok" not in f and "validity/recipe" not in f
        spread = _spread(f["test/targets"][...])
        err = np.array([_mean_abs(a, b) for a, b in zip(f["test/actual"][...], f["test/telescoped"][...])])
        assert np.array_equal(f["validity/test/telescoping"][...], err <= TELESCOPING_TOLERANCE * spread)


def test_reproduce_summarises_the_flags_per_setting(runs, tmp_path):
    """reading.validity (claims.json's ``validity``): per setting, check and split the share of flagged
    (seed, step) pairs and the first flagged step over the seeds."""
    import shutil

    from telecli.reproduce.cells import Cell
    from telecli.reproduce.reading import validity

    cells = [Cell(f"x{lr}.toml", (), 0, tags={"lr": lr}) for lr in (0.05, 1.0)]
    for c, lr in zip(cells, (0.05, 1.0)):
        c.folder(tmp_path).mkdir(parents=True)
        shutil.copy(runs[lr], c.results(tmp_path))
    doc = validity(cells, tmp_path)
    with h5py.File(runs[1.0], "r") as f:
        bad = ~f["validity/test/ok"][...]
        first = float(f["steps"][int(np.argmax(bad))])
        n_steps = len(bad)
    assert doc["settings"]["lr=0.05"]["test"]["ok"] == {"fraction": 0.0, "first_step": None}
    assert doc["settings"]["lr=1.0"]["test"]["telescoping"] == {"fraction": bad.sum() / n_steps, "first_step": first}
    assert doc["settings"]["lr=1.0"]["train"]["ok"]["first_step"] is None
    assert doc["flagged_fraction"] == pytest.approx(bad.sum() / (4 * n_steps))  # 2 cells × 2 splits
    assert doc["thresholds_of_target_spread"] == {"telescoping_tolerance": 0.1, "smoother_tolerance": 0.1}
