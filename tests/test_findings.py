"""Acceptance: small presets reproduce the paper's qualitative findings on effective parameters.

p⁰ = (n/|I₀|) Σ_{j∈I₀} ‖s(x_j)‖² (method.md §3.1), from ``telecli telescope --effective-params``, on
runs recorded by ``telecli record`` (both through the Python API: ``run_training``, ``run_telescope``).

* Polynomial grokking (method.md §3.3, paper Fig. 4 col. 1): once the training loss has fallen, the
  test loss keeps falling, and over that same stretch p_train and p_test diverge (p_train > p_test).
* Double descent (method.md §3.2, paper Fig. 3; here the MNIST-1D setting of Fig. 10): p_train grows
  with width towards n, while p_test peaks around the interpolation threshold and then *decreases* as
  the width grows.

Both use plain full-batch GD in float64, so the smoother follows the cheap kernel recursion (§1.5)
instead of the per-example-Jacobian path that momentum / Adam / weight decay need. The figures quoted
in the comments were measured on the CPU development machine (2 shared cores, torch.set_num_threads(1));
the asserted thresholds sit at about half of the measured effects. Runtime of this file there: about
60–70 s (grokking ≈ 18 s, double descent ≈ 42–47 s).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from telecli import config
from telecli.jobs.telescope import run_telescope
from telecli.train.loop import run_training

SAMPLE_RUNS = Path(__file__).resolve().parents[1] / "sample_runs"
KEYS = ("steps", "train/loss_actual", "test/loss_actual", "train/error_actual", "test/error_actual",
        "train/effective_parameters", "test/effective_parameters", "train/smoother_gap", "test/smoother_gap")


@pytest.fixture
def one_thread():
    """Many small kernels per step: on the 2 shared cores one thread is faster (grokking run: 19 s vs 47 s)."""
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
#     p_train and p_test do NOT separate: at d = 30, n_h = 500, 1500 steps, p_train = 69.3, p_test = 70.2; at
#     d = 20, p_test > p_train throughout. The divergence needs d ≳ 40 at this n/d.)
#   * n_h = 250 and γ = 250 (γ = n_h kept): the smoother's kernels cost ∝ n_h; at d = 50 the curves of
#     n_h = 250 / γ = 250 match n_h = 500 / γ = 500 to within ~4 % (train loss, test loss, p).
#   * 1500 steps, θ at ~40 log-spaced steps (steps in between are replayed).
# Measured (step: train loss, test loss, p_train, p_test), 40 log-spaced stored steps:
#     0: 0.148   0.125    0.0    0.0
#   131: 0.095   0.127   34.8   37.4    (test loss still at its initial level, p_test > p_train)
#   335: 0.040   0.094   43.1   47.0
#   404: 0.030   0.083   45.4   48.3    ← first stored step with train loss < 0.148 / 4 ("the fit")
#   587: 0.018   0.064   52.7   52.0
#   855: 0.010   0.048   64.2   58.6
#  1500: 0.0045  0.031   86.2   74.4
# After the fit the test loss falls a further 2.73× (monotonically) while p_train − p_test grows from
# −2.9 to +11.8 (by 14.7). (The full preset at 3000 steps: gap +27.7 at the end; 1000 steps of this
# variant: test-loss fall only 2.07× after the fit, gap growth 11.)
GROKKING = ["task.dim=40", "task.n_train=220", "task.n_test=200", "model.hidden=250", "train.lr=250",
            "train.steps=1500", "store.log_points=40"]


def test_polynomial_grokking_effective_parameters_diverge(tmp_path, one_thread):
    r = record_and_telescope("poly-grokking.toml", GROKKING, tmp_path)
    train, test = r["train/loss_actual"], r["test/loss_actual"]
    p_train, p_test = r["train/effective_parameters"], r["test/effective_parameters"]
    assert r["steps"][-1] == 1500 and np.all(np.isfinite(p_train)) and np.all(np.isfinite(p_test))

    # the training fit: first stored step where the training loss is below a quarter of its start
    fit = int(np.argmax(train < train[0] / 4))
    assert fit > 0 and 200 <= r["steps"][fit] <= 700  # measured 404
    gap = p_train - p_test
    # before and at the fit, the test smoother is at least as "parameter-hungry" as the train one
    assert gap[fit] < 2.0  # measured −2.9
    # test loss keeps improving after the fit: measured 2.73× (0.083 → 0.031), asserted ≥ 2×
    assert test[fit] / test[-1] >= 2.0
    assert np.all(np.diff(test[fit:]) < 0)  # monotone decrease from the fit on
    # … while p_train and p_test diverge: measured growth of p_train − p_test 14.7, asserted ≥ 7
    assert gap[-1] - gap[fit] >= 7.0
    assert gap[-1] >= 5.0  # measured 11.8
    # both keep growing (the model keeps using more effective parameters as it fits)
    assert p_train[-1] > p_train[fit] and p_test[-1] > p_test[fit]


# ---------------------------------------------------------------------------------------------------
# Double descent
# ---------------------------------------------------------------------------------------------------

# double-descent-mnist1d.toml (paper Fig. 10: MNIST-1D 0 vs 1, 15 % label noise, 1-hidden-layer ReLU MLP,
# squared loss on 0/1 targets, float64), with these deviations, all for speed:
#   * n_train = 100 (15 flipped labels) instead of 800; all ~194 test signals kept. The parameter-count
#     interpolation threshold P = 42·width + 1 ≈ n is then crossed between width 2 (P = 85) and 3 (127).
#   * full-batch GD without momentum, γ = 0.05, 2000 steps (fixed T; the preset: SGD momentum 0.9,
#     γ = 0.01, batch 100, 4000 steps). Plain GD uses the cheap kernel recursion (§1.5); momentum needs
#     per-example Jacobians every step (~40 ms/step at width 128 here vs ~5 ms for GD).
#     γ·λ_max(NTK/n) stays ≤ 0.8 for widths ≤ 100 over the run (width 400 would start near 1.7, the edge of
#     stability, so 100 is the largest width).
#   * widths 2, 3, 10, 100 out of the paper's 1 … 400.
# Why not the digits preset (double-descent-mnist.toml, d = 64, 8×8 in [0, 1])? Fitting its noisy labels
# with plain GD needs either γ ≥ 0.1, where progressive sharpening drives the run to the edge of
# stability (sharpness → 2/γ) and the telescoping model breaks down (mean |f̃ − f| on the training set
# ≈ 3–19 after 1500 steps at γ = 0.1–0.3, smoother gap up to 0.31: p from it is meaningless, though it
# showed p_test falling past width 8), or γ ≈ 0.02–0.03 for ≳ 5000 steps per width (sharpness grows from
# ~6–12 to ~45 while the noise is fitted), over the time budget. With γ 0.08 → 0.02 over 4000
# steps at n = 100 the widths ≤ 32 had not fitted yet and p_test still rose with width (32.4, 41.3,
# 43.7, 41.1, 49.0 at widths 4, 8, 16, 32, 128).
# Measured at T = 2000 (train error, p_train, p_test, mean |smoother − network| on test):
#     width   2: 0.05   67.2   79.9   0.14
#     width   3: 0.02   77.3   92.0   0.12   ← p_test peaks just past P ≈ n
#     width  10: 0.00   92.1   84.5   0.08
#     width 100: 0.00   99.6   61.5   0.03   (p_train → n = 100: S → I on the training points)
# p_test at width 100 is converged (60.9 at T = 1500, 60.85 with γ/4 and 4× the steps), while the peak
# still grows with T (60.9 at T = 1000, 77.9 at 1500, 92.0 at 2000): longer training only deepens the
# fall. The smoother gap is not a discretisation error (identical with γ/2 and 2× the steps): ReLU
# pre-activations of training points chatter around their kink once the noise is fitted.
# The test error does not show a clean second descent at these sizes (0.24, 0.23, 0.22, 0.23); not asserted.
DD_WIDTHS = (2, 3, 10, 100)
DOUBLE_DESCENT = ["task.n_train=100", "train.momentum=0.0", "train.batch_size=0", "train.lr=0.05",
                  "train.steps=2000", "store.log_points=4"]


def test_double_descent_test_effective_parameters_fall_past_threshold(tmp_path, one_thread):
    n = 100
    res = {w: record_and_telescope("double-descent-mnist1d.toml", [f"model.width={w}", *DOUBLE_DESCENT],
                                   tmp_path / f"w{w}")
           for w in DD_WIDTHS}
    final = {w: {k: float(v[-1]) for k, v in r.items()} for w, r in res.items()}
    p_train = np.array([final[w]["train/effective_parameters"] for w in DD_WIDTHS])
    p_test = np.array([final[w]["test/effective_parameters"] for w in DD_WIDTHS])
    train_err = np.array([final[w]["train/error_actual"] for w in DD_WIDTHS])
    for w in DD_WIDTHS:
        assert final[w]["steps"] == 2000
        assert np.all(np.isfinite(res[w]["train/effective_parameters"]))
        # sanity bound: the smoother roughly follows the network (measured ≤ 0.11 train, ≤ 0.14 test). It
        # catches blow-ups (a catapult at too large γ gives p ≈ 10⁴), not the milder edge-of-stability
        # drift of the digits runs above (test gaps 0.14–0.31)
        assert final[w]["train/smoother_gap"] < 0.2 and final[w]["test/smoother_gap"] < 0.25
        assert res[w]["test/effective_parameters"].max() < 2 * n

    # the narrowest width does not fit the noisy labels, the wider ones interpolate them
    assert train_err[0] >= 0.02  # measured 0.05
    assert np.all(train_err[2:] == 0.0) and final[DD_WIDTHS[-1]]["train/loss_actual"] < 1e-3  # measured < 1e-4
    # p_train increases with width towards n
    assert np.all(np.diff(p_train) > 0)
    assert p_train[-1] - p_train[0] >= 15.0  # measured 32.4
    assert p_train[-1] > 0.95 * n  # measured 99.6
    # p_test peaks at (or just past) the interpolation threshold, then decreases with width
    peak = int(np.argmax(p_test))
    assert DD_WIDTHS[peak] in (3, 10)  # measured 3
    assert np.all(np.diff(p_test[peak:]) < 0)  # measured 92.0 → 84.5 → 61.5
    # measured 61.5 / 92.0 = 0.67 at width 100; asserted ≤ 0.83 (half of the measured 33 % fall)
    assert p_test[-1] <= 0.83 * p_test[peak]
    # before the threshold p_test ≥ p_train; well past it p_test falls far below p_train
    assert p_test[0] > p_train[0] - 2.0  # measured 79.9 vs 67.2
    assert p_train[-1] - p_test[-1] >= 19.0  # measured 38.1


@pytest.mark.skipif(not __import__("os").environ.get("TELECLI_FINDINGS"),
                    reason="minutes per figure: set TELECLI_FINDINGS=1 (not run by make test / CI)")
@pytest.mark.timeout(1800)
def test_reproduce_fig7_small_every_setting_beats_linearisation(tmp_path):
    """telecli reproduce fig7 --scale small --seeds 2: in each of the five settings the telescoping
    model's error is ≥ 10× below the linearisation's at the last step (measured here: 46–363×)."""
    from telecli.reproduce.runner import reproduce

    doc = reproduce("fig7", scale="small", seeds=2, jobs=2, out=tmp_path, progress=False)
    assert len(doc["claims"]) == 5 and all(c["holds"] for c in doc["claims"]), doc["claims"]
