"""Figs. 11 and 13. Fig. 11: grokking on polynomial regression for ε ∈ {0.05, 0.2, 0.5} (method.md §3.3; Kumar et al.
2024's task and network, full-batch GD): train/test MSE (top) and p^train, p^test (bottom) by step, one
column per ε. Small scale: sample_runs/poly-grokking.toml (d = 50, 275 + 250 points), 3000 steps, and
9000 for ε = 0.05, whose test loss needs them to come down; paper scale: sample_runs/paper/.

The claims of method.md §6 for Fig. 11, on the mean curves over seeds:
- larger ε: the gap p^train − p^test opens earlier (its first step above GAP_FRACTION · n; null in
  claims.json when it never does within the run) and the test loss lags the training loss less (the
  first step where each falls below a quarter of its start; their ratio, the lag on the log step axis);
- ε = 0.05: the test loss rises before it falls, and p^test starts above p^train and ends below it.

Fig. 13: MNIST 3 vs 5 with standard initialisation (α = 1), without and with an output sigmoid (method.md
§3.5; small scale: the digits presets mnist-standard-init*.toml, AdamW 1e-3 with warmup, 500 steps):
misclassification error and p by step, one column per setting. Claims: train and test error fall together
(no delay: the test error halves by a step at most LAG× the training error's), and p^test at the end is
lower with the sigmoid than without.

Fig. 4 (method.md §6): three columns, error on top and p below, log step axis. (1) polynomial
regression, ε = 0.2: fig11's cells for ε = 0.2 (the same preset and overrides, so the same cells);
(2) MNIST 3 vs 5 with α = 6 (mnist-grokking.toml); (3) MNIST with standard initialisation, without and
with the sigmoid, test only: fig13's cells. Claims: in (1) and (2) the gap p^train − p^test opens
inside the late-generalisation window (no earlier than the training fit / WINDOW, no later than WINDOW ×
the test fit, with the test fit at least LAG× later than the training fit); standard initialisation
generalises in far fewer steps than α = 6 (the test error halves ≥ FAR× sooner) and ends with far lower
p^test (≤ 1/FAR_P of α = 6's), lowest with the sigmoid.

Fig. 12: MNIST 3 vs 5 for α ∈ {5, 6, 7}, one column each (α = 6 is Fig. 4's cell). Claims: larger α,
more extreme grokking (the ratio of the steps at which the test and the training error halve grows with
α) and a later p-gap (its first step above GAP_FRACTION · n grows with α).

"Fit" steps: for classification the first step where the misclassification error is at most half its
start (as Fig. 13), for regression where the loss is below a quarter of its start (as Fig. 11).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from telecli.reproduce.cells import Cell
from telecli.reproduce.reading import by, seed_groups, stack

EPSILONS = (0.05, 0.2, 0.5)
LONG = {0.05: 9000}  # small scale: steps where the preset's 3000 are too few for the claim to show
GAP_FRACTION = 0.05  # the p-gap "opens" when p^train − p^test exceeds this share of n
PAPER_SEEDS = 4
LAG = 2.0  # "train ≈ test": the test error halves by at most this multiple of the step the train error does
STANDARD = (("no sigmoid", "mnist-standard-init"), ("sigmoid", "mnist-standard-init-sigmoid"))
ALPHAS = (5.0, 6.0, 7.0)  # Fig. 12; α = 6 is the preset's own value (no override: Fig. 4's cell)
WINDOW = 2.0  # the p-gap "coincides" with late generalisation: inside [train fit / WINDOW, WINDOW × test fit]
FAR = 10.0  # "far fewer steps": the test error halves at least FAR× sooner
FAR_P = 2.0  # "far lower p": p^test at the end at most 1/FAR_P of α = 6's


def grid(scale: str, seeds: int) -> list[Cell]:
    preset = "poly-grokking" if scale == "small" else "paper/poly-grokking"
    cells = []
    for eps in EPSILONS:
        over = (f"model.epsilon={eps:g}",) + ((f"train.steps={LONG[eps]}",) if scale == "small" and eps in LONG else ())
        for s in range(seeds or (PAPER_SEEDS if scale == "paper" else 2)):
            cells.append(Cell(preset, over, s, ("--effective-params",), tags={"epsilon": eps}))
    return cells


CURVES = ("train/loss_actual", "test/loss_actual", "train/effective_parameters", "test/effective_parameters")


def _curves(cells: list[Cell], out: Path) -> dict[str, np.ndarray]:
    """Mean over seeds of the curves the claims read, and the steps and n."""
    d = stack(cells, out, *CURVES, "steps")
    curves = {k.replace("/", "_"): d[k].mean(axis=0) for k in CURVES}
    curves.update(steps=d["steps"][0], n=int(d["attrs"]["n_train"]))
    return curves


def _first(steps: np.ndarray, mask: np.ndarray) -> float:
    return float(steps[np.argmax(mask)]) if mask.any() else float("inf")


def _timings(c: dict) -> dict[str, float]:
    steps = c["steps"]
    train, test = c["train_loss_actual"], c["test_loss_actual"]
    gap = c["train_effective_parameters"] - c["test_effective_parameters"]
    t_train = _first(steps, train < train[0] / 4)
    t_test = _first(steps, test < test[0] / 4)
    return {"train_fit_step": t_train, "test_fit_step": t_test, "delay_ratio": t_test / t_train,
            "gap_open_step": _first(steps, gap > GAP_FRACTION * c["n"]), "final_gap": float(gap[-1])}


def claims(cells: list[Cell], out: Path) -> list[dict]:
    curves = {eps: _curves(members, out) for (eps,), members in sorted(by(cells, "epsilon").items())}
    times = {eps: _timings(c) for eps, c in curves.items()}
    eps = sorted(times)
    result = []
    opens = [times[e]["gap_open_step"] for e in eps]
    result.append({"claim": "larger ε: the gap p_train − p_test opens earlier",
                   "numbers": {f"ε={e:g}": t for e, t in zip(eps, opens)},
                   "holds": bool(np.all(np.diff(opens) <= 0) and opens[0] > opens[-1])})
    delays = [times[e]["delay_ratio"] for e in eps]
    result.append({"claim": "larger ε: less delay between the training and the test loss falling (ratio of the "
                            "steps where each is below a quarter of its start)",
                   "numbers": {**{f"ε={e:g}": d for e, d in zip(eps, delays)},
                               **{f"ε={e:g} steps (train, test)": [times[e]["train_fit_step"], times[e]["test_fit_step"]]
                                  for e in eps}},
                   "holds": bool(np.all(np.diff(delays) <= 0) and delays[0] > delays[-1])})
    small = curves[eps[0]]
    test = small["test_loss_actual"]
    peak = int(np.argmax(test[1:])) + 1
    result.append({"claim": f"ε={eps[0]:g}: the test loss rises before it falls",
                   "numbers": {"first": float(test[1]), "peak": float(test[peak]), "peak_step": float(small["steps"][peak]),
                               "final": float(test[-1])},
                   "holds": bool(test[peak] > 1.05 * test[1] and test[-1] < 0.5 * test[peak])})
    p_train, p_test = small["train_effective_parameters"], small["test_effective_parameters"]
    early = small["steps"] <= times[eps[0]]["train_fit_step"]
    result.append({"claim": f"ε={eps[0]:g}: p_test is above p_train first, then below",
                   "numbers": {"largest_early_excess": float(np.max((p_test - p_train)[early & (small["steps"] > 0)],
                                                                    initial=-np.inf)),
                               "final_p_train": float(p_train[-1]), "final_p_test": float(p_test[-1])},
                   "holds": bool(np.any((p_test > p_train)[early & (small["steps"] > 0)]) and p_test[-1] < p_train[-1])})
    return result


def draw(cells: list[Cell], out: Path, path: Path) -> None:
    from telecli.plots.complexity import draw_panels

    with seed_groups(dict(sorted(by(cells, "epsilon").items())), out) as groups:
        draw_panels([(f"ε = {e:g}  ({g.n} seeds)", g) for (e,), g in groups.items()], path)


def standard_grid(scale: str, seeds: int) -> list[Cell]:
    return [Cell(preset if scale == "small" else f"paper/{preset}", (), s, ("--effective-params",),
                 tags={"setting": label})
            for label, preset in STANDARD for s in range(seeds or (PAPER_SEEDS if scale == "paper" else 2))]


def standard_claims(cells: list[Cell], out: Path) -> list[dict]:
    result, final_p = [], {}
    for (label,), members in by(cells, "setting").items():
        names = ("train/error_actual", "test/error_actual", "test/effective_parameters")
        d = stack(members, out, *names, "steps")
        steps = d["steps"][0]
        train, test, p_test = (d[k].mean(axis=0) for k in names)
        t_train, t_test = _first(steps, train <= train[0] / 2), _first(steps, test <= test[0] / 2)
        final_p[label] = float(p_test[-1])
        result.append({"claim": f"{label}: train and test error fall together (the test error halves by at most "
                                f"{LAG:g}× the step the training error does)",
                       "numbers": {"train_halved_step": t_train, "test_halved_step": t_test,
                                   "final_train_error": float(train[-1]), "final_test_error": float(test[-1])},
                       "holds": bool(np.isfinite(t_train) and t_test <= LAG * t_train)})
    result.append({"claim": "p_test at the end is lower with the sigmoid than without", "numbers": final_p,
                   "holds": bool(final_p["sigmoid"] < final_p["no sigmoid"])})
    return result


def standard_draw(cells: list[Cell], out: Path, path: Path) -> None:
    from telecli.plots.complexity import draw_panels

    with seed_groups(by(cells, "setting"), out) as groups:
        draw_panels([(f"α = 1, {k}  ({g.n} seeds)", g) for (k,), g in groups.items()], path)


def _mnist_cells(scale: str, seeds: int, alphas=(6.0,)) -> list[Cell]:
    preset = "mnist-grokking" if scale == "small" else "paper/mnist-grokking"
    return [Cell(preset, () if a == 6.0 else (f"model.init_scale={a:g}",), s, ("--effective-params",),
                 tags={"setting": f"α = {a:g}", "alpha": a})
            for a in alphas for s in range(seeds or (PAPER_SEEDS if scale == "paper" else 2))]


def fig4_grid(scale: str, seeds: int) -> list[Cell]:
    """fig11's ε = 0.2 cells, the α = 6 MNIST cells, fig13's cells; each tagged with its column."""
    from dataclasses import replace

    poly = [replace(c, tags={"column": "poly", "setting": "ε = 0.2"}) for c in grid(scale, seeds)
            if c.tags["epsilon"] == 0.2]
    mnist = [replace(c, tags={"column": "mnist", "setting": c.tags["setting"]}) for c in _mnist_cells(scale, seeds)]
    std = [replace(c, tags={"column": "standard", "setting": c.tags["setting"]}) for c in standard_grid(scale, seeds)]
    return poly + mnist + std


def fit_steps(steps: np.ndarray, train: np.ndarray, test: np.ndarray, classes: bool) -> tuple[float, float]:
    """The steps at which the training and the test curve are "fitted": the error at most half its start
    (classification), the loss below a quarter of its start (regression); ∞ when never.

    >>> fit_steps(np.arange(4), np.array([.5, .2, .1, 0]), np.array([.5, .4, .3, .2]), True)
    (1.0, 3.0)
    """
    if classes:
        return _first(steps, train <= train[0] / 2), _first(steps, test <= test[0] / 2)
    return _first(steps, train < train[0] / 4), _first(steps, test < test[0] / 4)


def _setting_curves(cells: list[Cell], out: Path) -> dict:
    """Mean over seeds of error (or loss) and p for one setting, its fit steps and p-gap opening."""
    names = ("train/error_actual", "test/error_actual", "train/loss_actual", "test/loss_actual",
             "train/effective_parameters", "test/effective_parameters")
    d = stack(cells, out, *names, "steps")
    m = {k: d[k].mean(axis=0) for k in names}
    steps, n = d["steps"][0], int(d["attrs"]["n_train"])
    classes = bool(np.isfinite(m["train/error_actual"]).all())
    kind = "error" if classes else "loss"
    train, test = m[f"train/{kind}_actual"], m[f"test/{kind}_actual"]
    t_train, t_test = fit_steps(steps, train, test, classes)
    gap = m["train/effective_parameters"] - m["test/effective_parameters"]
    return {"steps": steps, "n": n, "train": train, "test": test, "kind": kind, "train_fit_step": t_train,
            "test_fit_step": t_test, "gap_open_step": _first(steps, gap > GAP_FRACTION * n),
            "final_gap": float(gap[-1]), "final_p_test": float(m["test/effective_parameters"][-1]),
            "final_p_train": float(m["train/effective_parameters"][-1]), "final_test": float(test[-1])}


def _coincides(label: str, c: dict) -> dict:
    t_train, t_test, t_gap = c["train_fit_step"], c["test_fit_step"], c["gap_open_step"]
    late = bool(np.isfinite(t_train) and t_test >= LAG * t_train)
    inside = bool(t_train / WINDOW <= t_gap <= WINDOW * t_test)
    return {"claim": f"{label}: the gap p_train − p_test opens (> {GAP_FRACTION:g}·n) with the late generalisation "
                     f"(inside [train fit / {WINDOW:g}, {WINDOW:g} × test fit], the test fit ≥ {LAG:g}× later)",
            "numbers": {f"train_fit_step ({c['kind']})": t_train, f"test_fit_step ({c['kind']})": t_test,
                        "gap_open_step": t_gap, "final_gap": c["final_gap"], "n": c["n"]},
            "holds": late and inside}


def fig4_claims(cells: list[Cell], out: Path) -> list[dict]:
    curves = {key: _setting_curves(members, out) for key, members in by(cells, "column", "setting").items()}
    poly = next(v for (col, _), v in curves.items() if col == "poly")
    mnist = next(v for (col, _), v in curves.items() if col == "mnist")
    std = {label: v for (col, label), v in curves.items() if col == "standard"}
    result = [_coincides("polynomial, ε = 0.2", poly), _coincides("MNIST, α = 6", mnist)]
    sooner = {k: mnist["test_fit_step"] / v["test_fit_step"] for k, v in std.items()}
    result.append({"claim": f"standard initialisation generalises in far fewer steps than α = 6 (the test error "
                            f"halves ≥ {FAR:g}× sooner)",
                   "numbers": {"α = 6 test_halved_step": mnist["test_fit_step"],
                               **{f"α = 1, {k} test_halved_step": v["test_fit_step"] for k, v in std.items()},
                               **{f"ratio ({k})": r for k, r in sooner.items()}},
                   "holds": bool(all(r >= FAR for r in sooner.values()))})
    lower = {k: v["final_p_test"] for k, v in std.items()}
    result.append({"claim": f"standard initialisation ends with far lower p_test than α = 6 (≤ 1/{FAR_P:g} of it)",
                   "numbers": {"α = 6": mnist["final_p_test"], **{f"α = 1, {k}": p for k, p in lower.items()}},
                   "holds": bool(all(p * FAR_P <= mnist["final_p_test"] for p in lower.values()))})
    result.append({"claim": "p_test at the end is lowest with the sigmoid", "numbers": {**lower, "α = 6": mnist["final_p_test"]},
                   "holds": bool(lower["sigmoid"] < min(lower["no sigmoid"], mnist["final_p_test"]))})
    return result


def fig4_draw(cells: list[Cell], out: Path, path: Path) -> None:
    from telecli.plots.complexity import draw_panels

    groups = by(cells, "column", "setting")
    with seed_groups(groups, out) as g:
        n = next(iter(g.values())).n
        panels = [(f"polynomial, ε = 0.2  ({n} seeds)", g[("poly", "ε = 0.2")]),
                  (f"MNIST, α = 6  ({n} seeds)", g[("mnist", "α = 6")]),
                  (f"MNIST, α = 1, test  ({n} seeds)",
                   [(label, grp) for (col, label), grp in g.items() if col == "standard"], ("test",))]
        draw_panels(panels, path)


def fig12_grid(scale: str, seeds: int) -> list[Cell]:
    return _mnist_cells(scale, seeds, ALPHAS)


def fig12_claims(cells: list[Cell], out: Path) -> list[dict]:
    curves = {a: _setting_curves(members, out) for (a,), members in sorted(by(cells, "alpha").items())}
    alphas = sorted(curves)
    ratios = [curves[a]["test_fit_step"] / curves[a]["train_fit_step"] for a in alphas]
    opens = [curves[a]["gap_open_step"] for a in alphas]
    increasing = (lambda v: bool(all(a < b for a, b in zip(v, v[1:]))))  # noqa: E731
    return [{"claim": "larger α: more extreme grokking (the test error halves later relative to the training error: "
                      "the ratio of the two halving steps grows with α)",
             "numbers": {**{f"α={a:g}": r for a, r in zip(alphas, ratios)},
                         **{f"α={a:g} steps (train, test)": [curves[a]["train_fit_step"], curves[a]["test_fit_step"]]
                            for a in alphas},
                         **{f"α={a:g} final test error": curves[a]["final_test"] for a in alphas}},
             "holds": increasing(ratios)},
            {"claim": f"larger α: the gap p_train − p_test opens later (first step above {GAP_FRACTION:g}·n)",
             "numbers": {**{f"α={a:g}": t for a, t in zip(alphas, opens)},
                         **{f"α={a:g} final gap": curves[a]["final_gap"] for a in alphas}},
             "holds": increasing(opens)}]


def fig12_draw(cells: list[Cell], out: Path, path: Path) -> None:
    from telecli.plots.complexity import draw_panels

    with seed_groups(dict(sorted(by(cells, "alpha").items())), out) as groups:
        draw_panels([(f"α = {a:g}  ({g.n} seeds)", g) for (a,), g in groups.items()], path)


def _figures():
    from telecli.reproduce import Figure

    return (Figure("fig11", "Polynomial grokking for ε ∈ {0.05, 0.2, 0.5}: MSE and effective parameters by step",
                   grid, draw, claims),
            Figure("fig13", "MNIST with standard initialisation, without and with sigmoid: error and p by step",
                   standard_grid, standard_draw, standard_claims),
            Figure("fig4", "Grokking (polynomial ε = 0.2, MNIST α = 6) and MNIST with standard initialisation "
                           "(with and without sigmoid): error and p by step", fig4_grid, fig4_draw, fig4_claims),
            Figure("fig12", "MNIST grokking for α ∈ {5, 6, 7}: error and p by step", fig12_grid, fig12_draw,
                   fig12_claims))


FIGURES = _figures()
