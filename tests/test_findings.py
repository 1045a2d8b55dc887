"""Acceptance: small presets reproduce the paper's qualitative findings on effective parameters.

p⁰ = (n/|I₀|) Σ_{j∈I₀} ‖s(x_j)‖² (method.md §3.1), from ``telecli telescope --effective-params``, on
runs recorded by ``telecli record`` (both through the Python API: ``run_training``, ``run_telescope``).

* Polynomial grokking (method.md §3.3, paper Fig. 4 col. 1): once the training loss has fallen, the
  test loss keeps falling, and over that same stretch p_train and p_test diverge (p_train > p_test).
* Double descent (method.md §3.2, paper Fig. 3 / Fig. 9 left): p_train grows with width towards n,
  while p_test peaks around the interpolation threshold and then *decreases* as the width grows.

Both use plain full-batch GD in float64, so the smoother follows the cheap kernel recursion (§1.5)
instead of the per-example-Jacobian path that momentum / Adam / weight decay need. The figures quoted
in the comments were measured on the CPU development machine (2 shared cores, torch.set_num_threads(1));
the asserted thresholds sit at about half of the measured effects. Runtime of this file there: about
55–65 s (grokking ≈ 20 s, double descent ≈ 35 s).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from telecli import config
from telecli.pipelines.telescope import run_telescope
from telecli.train.loop import run_training

SAMPLE_RUNS = Path(__file__).resolve().parents[1] / "sample_runs"
KEYS = ("steps", "train/loss_actual", "test/loss_actual", "train/error_actual", "test/error_actual",
        "train/effective_parameters", "test/effective_parameters", "train/smoother_gap", "test/smoother_gap")


@pytest.fixture
def one_thread():
    """These runs are many small kernels per step: one thread is faster than two on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def record_and_telescope(preset: str, overrides: list[str], out: Path) -> dict[str, np.ndarray]:
    cfg = config.load(SAMPLE_RUNS / preset, overrides)
    run = run_training(cfg, out / "run", progress=False)
    lens = run_telescope(run, out / "lens.h5", effective_params=True, progress=False)
    with h5py.File(lens) as f:
        return {key: f[key][...] for key in KEYS}


# ---------------------------------------------------------------------------------------------------
# Polynomial grokking
# ---------------------------------------------------------------------------------------------------

# poly-grokking.toml (d = 50, 275 / 250 points, n_h = 500, γ = 500, 3000 steps) takes ~90 s to record and
# telescope here, so the test shrinks it, keeping n = 5.5·d, ε = 0.2, γ = n_h and full-batch GD:
#   * d = 40 with 220 / 200 points: the slow quadratic modes (NTK eigenvalue ∝ 1/d², method.md §3.3) are
#     faster, so the late test improvement fits in 1500 steps. (d = 30 or 20 is faster still but then
#     p_train and p_test do NOT separate: at d = 30, 1500 steps, p_train = 69.3, p_test = 70.2; at
#     d = 20, p_test > p_train throughout. The divergence needs d ≳ 40 at this n/d.)
#   * n_h = 250 and γ = 250 (γ = n_h kept): the smoother's kernels cost ∝ n_h; at d = 50 the curves of
#     n_h = 250 / γ = 250 match n_h = 500 / γ = 500 to within ~3 % (train loss, test loss, p).
#   * 1500 steps, θ at ~40 log-spaced steps (steps in between are replayed).
# Measured (step: train loss, test loss, p_train, p_test), the initial train loss is 0.148:
#     0: 0.148  0.125    0.0    0.0
#   131: 0.095  0.127   34.8   37.4     (test loss still at its initial level, p_test ≥ p_train)
#   ~390: 0.031  0.085   44.6   47.9    (first stored step with train loss < 0.148 / 4)
#   566: 0.019  0.065   51.8   51.6
#   921: 0.0092 0.045   66.9   60.3
#  1500: 0.0045 0.031   86.2   74.4
# After the training fit the test loss falls a further ~2.8× while p_train − p_test grows by ~15.
GROKKING = ["task.dim=40", "task.n_train=220", "task.n_test=200", "model.hidden=250", "train.lr=250",
            "train.steps=1500", "store.log_points=40"]


def test_polynomial_grokking_effective_parameters_diverge(tmp_path, one_thread):
    r = record_and_telescope("poly-grokking.toml", GROKKING, tmp_path)
    train, test = r["train/loss_actual"], r["test/loss_actual"]
    p_train, p_test = r["train/effective_parameters"], r["test/effective_parameters"]
    assert r["steps"][-1] == 1500 and np.all(np.isfinite(p_train)) and np.all(np.isfinite(p_test))

    # the training fit: first stored step where the training loss is below a quarter of its start
    fit = int(np.argmax(train < train[0] / 4))
    assert fit > 0 and 200 <= r["steps"][fit] <= 700  # measured ≈ 390
    gap = p_train - p_test
    # before and at the fit, the test smoother is at least as "parameter-hungry" as the train one
    assert gap[fit] < 2.0  # measured ≈ −3
    # test loss keeps improving after the fit: measured ≈ 2.8×, asserted ≥ 2×
    assert test[fit] / test[-1] >= 2.0
    assert np.all(np.diff(test[fit:]) < 0)  # monotone decrease from the fit on
    # … while p_train and p_test diverge: measured growth of p_train − p_test ≈ 15, asserted ≥ 7
    assert gap[-1] - gap[fit] >= 7.0
    assert gap[-1] >= 5.0  # measured ≈ 11.8
    # both keep growing (the model keeps using more effective parameters as it fits)
    assert p_train[-1] > p_train[fit] and p_test[-1] > p_test[fit]


# ---------------------------------------------------------------------------------------------------
# Double descent
# ---------------------------------------------------------------------------------------------------

# double-descent-mnist.toml (digits 3 vs 5, 20 % label noise, 1-hidden-layer ReLU MLP, squared loss,
# float64) with these deviations, all for speed (the paper: SGD momentum 0.95, γ = 0.0025, batch 100,
# up to 300k steps, stopping at 100 % train accuracy):
#   * n_train = 100 (20 flipped labels) instead of 255: the noisy labels are fitted ~3× sooner and the
#     smoother's n × n recursion is cheaper. The 110 test points are kept.
#   * full-batch GD without momentum, γ = 0.3, 1500 steps (fixed T, no stopping rule): the cheap kernel
#     recursion (§1.5). Momentum or Adam fit the noise faster, but their smoother path needs per-example
#     Jacobians every step (Adam, width 512: ~0.7 s/step here, vs ~12 ms for the GD recursion).
#     γ = 0.3 is just below the stability edge 2/λ_max(K_0/n) of width 128 (λ_max ≈ 6.0); at width 512
#     (λ_max ≈ 21.5) it catapults (loss spike, p ≈ 4·10⁴ transiently), so 128 is the largest width.
#   * widths 4, 8, 16, 32, 128. Width 1 dies (constant output) and width 2 (133 parameters, the
#     parameter-count threshold p ≈ n) does not fit the noise (train error 0.13) and has p_test = 118 >
#     p_train = 74: a degenerate case (2 ReLUs extrapolating), left out.
# Measured at T = 1500 (train error, p_train, p_test, test error):
#     width   4: 0.07   64.9   57.3   0.164
#     width   8: 0.02   88.8   72.5   0.191   ← p_test peaks where the network starts to interpolate
#     width  16: 0.02   93.4   63.0   0.191
#     width  32: 0.00   97.6   58.2   0.218
#     width 128: 0.00   99.9   47.9   0.218   (p_train → n = 100: S → I on the training points)
# So p_train rises monotonically to n while p_test falls by ~1/3 from its peak past the threshold
# (the test error has not yet come down again at width 128 and T = 1500; not asserted).
# With 1000 steps the same shape is weaker (p_test 47.4, 63.7, 57.7, 55.0, 47.7).
DD_WIDTHS = (4, 8, 16, 32, 128)
DOUBLE_DESCENT = ["task.n_train=100", "train.momentum=0.0", "train.batch_size=0", "train.lr=0.3",
                  "train.steps=1500", "store.every=0", "store.log_points=4"]


def test_double_descent_test_effective_parameters_fall_past_threshold(tmp_path, one_thread):
    n = 100
    res = {w: record_and_telescope("double-descent-mnist.toml", [f"model.width={w}", *DOUBLE_DESCENT],
                                   tmp_path / f"w{w}")
           for w in DD_WIDTHS}
    final = {w: {k: float(v[-1]) for k, v in r.items()} for w, r in res.items()}
    p_train = np.array([final[w]["train/effective_parameters"] for w in DD_WIDTHS])
    p_test = np.array([final[w]["test/effective_parameters"] for w in DD_WIDTHS])
    train_err = np.array([final[w]["train/error_actual"] for w in DD_WIDTHS])
    for w in DD_WIDTHS:
        assert final[w]["steps"] == 1500
        # the smoother must track the network for p to mean anything (no catapult, no blow-up)
        assert final[w]["train/smoother_gap"] < 0.1 and final[w]["test/smoother_gap"] < 0.1
        assert np.all(np.isfinite(res[w]["test/effective_parameters"]))

    # the narrowest width does not fit the noisy labels, the widest ones interpolate them
    assert train_err[0] >= 0.04  # measured 0.07
    assert train_err[-1] == 0.0 and final[DD_WIDTHS[-1]]["train/loss_actual"] < 0.01  # measured 0.0022
    # p_train increases with width (monotone up to 1 unit of slack) towards n
    assert np.all(np.diff(p_train) > -1.0)
    assert p_train[-1] - p_train[0] >= 15.0  # measured 35.0
    assert p_train[-1] > 0.9 * n  # measured 99.9
    # p_test peaks below the largest width and then decreases: measured 47.9 / 72.5 = 0.66 at width
    # 128 vs the peak (width 8); asserted ≤ 0.83 (half of the measured 34 % drop)
    peak = int(np.argmax(p_test))
    assert DD_WIDTHS[peak] < DD_WIDTHS[-1]
    assert p_test[-1] <= 0.83 * p_test[peak]
    # past the peak, p_test does not come back up at the largest width, and the train/test gap widens
    assert p_test[-1] <= p_test[peak + 1:].min() + 1.0
    gap = p_train - p_test
    assert gap[-1] - gap[peak] >= 15.0  # measured 52.0 − 16.3 = 35.7
