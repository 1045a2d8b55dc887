"""Figs. 3, 9 and 10: double descent in the test error and the effective parameters (method.md §3.2, §6).
One cell per hidden width and seed (a 1-hidden-layer ReLU MLP, squared loss on 0/1 labels); each column of
a figure: top, the final train/test MSE against the width (log x); bottom, the final p^train and p^test;
mean ± s.e. over seeds (telecli.plots.double_descent.draw_columns).

* Fig. 3: CIFAR-10 cat vs dog, 8×8 grayscale (paper scale: sample_runs/paper/double-descent-cifar.toml).
* Fig. 9: MNIST 3 vs 5, with 20 % label noise (left) and without (right; ``task.label_noise=0``).
* Fig. 10: MNIST-1D 0 vs 1 with 15 % label noise.

Paper scale: the paper's grids (the 22 widths 1 … 5000 for Figs. 3 and 9, the 14 MNIST-1D widths 1 … 400),
4 seeds, the paper's stopping rule (``train.stop = "paper"``, telecli/train/stopping.py) for Figs. 3 and 9,
exact p. Small scale (aimed at ~10 min per figure on 2 free cores with 2 seeds; the presets' comments say
why each size was chosen; the digits preset, γ = 0.005 with the paper's stopping rule, keeps p valid past
the threshold, while the widths still fitting the noisy labels at the end, 10–50, stay flagged in
claims.json's ``validity``): the embedded scikit-learn digits (8×8, d = 64; no download) stand in for CIFAR-10 and
MNIST — Fig. 3's small variant is digits 3 vs 5 with 20 % label noise standing in for the hard cat/dog
pair (clean digits are nearly separable: no peak to show), which makes it the same data as Fig. 9's left
column —; MNIST-1D is generated (n = 200). Widths go past the interpolation threshold (SMALL_WIDTHS_MNIST1D
up to 400, ×20 the threshold; SMALL_WIDTHS only to 200, ×2 the digits threshold, as a telescope step's cost
grows with the width); p is sketched with PROBES Rademacher probes (``telescope
--effective-params --probes R``: unbiased, its s.e. inside the seeds' spread; method.md §10.1), since the
exact smoother costs n columns.

The claims of method.md §6, on the means over seeds of the final values (s.e. over seeds; the sketch's
noise is part of the seeds' spread):
- p_train increases monotonically with width: no drop between consecutive widths larger than TOLERANCE_SE
  standard errors of the difference;
- p_test decreases once the width passes the interpolation threshold: from the threshold width on, no rise
  larger than TOLERANCE_SE s.e. between consecutive widths, and p_test at the largest width below its value
  at the threshold by more than TOLERANCE_SE s.e.;
- double descent in the test MSE: the test MSE peaks within a factor PEAK_WINDOW of the threshold width,
  above its minimum over the smaller widths (a rise) and above its value at the largest width (the second
  descent), each by more than TOLERANCE_SE s.e.;
- Fig. 9: with noise there is double descent, without noise there is none (the same test, negated).
The interpolation threshold is read from the data: the smallest width at which every seed reaches 100 %
training accuracy (labels thresholded at 0.5) at the end of training; none reached → the claims that need
it do not hold (the numbers say so).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from telecli.reproduce.cells import Cell
from telecli.reproduce.reading import by

PAPER_WIDTHS = (1, 2, 5, 7, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 70, 85, 100, 200, 500, 1000, 2000, 5000)
PAPER_WIDTHS_MNIST1D = (1, 2, 3, 5, 10, 20, 30, 40, 50, 70, 100, 200, 300, 400)
SMALL_WIDTHS = (1, 2, 5, 10, 20, 50, 100, 200)  # digits (n = 255): threshold 100 at the small preset's length (50 fits in 1 of 2 seeds)
SMALL_WIDTHS_MNIST1D = (1, 2, 3, 5, 10, 20, 40, 70, 100, 200, 400)  # n = 200: threshold ≈ 20
PAPER_SEEDS = 4
PROBES = 8  # small scale: Hutchinson probes of the sketched p
TOLERANCE_SE = 2.0  # differences within this many standard errors count as noise
PEAK_WINDOW = 4.0  # "near the threshold": the peak width within ×/÷ this factor of the threshold width

FIGS = {  # figure → (preset, columns: (label, overrides)); the small presets are sample_runs/NAME.toml
    "fig3": ("double-descent-cifar", (("CIFAR-10 cat vs dog", ()),)),
    "fig9": ("double-descent-mnist", (("20 % label noise", ()), ("no label noise", ("task.label_noise=0",)))),
    "fig10": ("double-descent-mnist1d", (("MNIST-1D 0 vs 1, 15 % label noise", ()),)),
}
SMALL_PRESET = {"fig3": "double-descent-mnist"}  # small Fig. 3 = Fig. 9's noisy column: its cells are shared
SMALL_TITLES = {"fig3": "digits 3 vs 5, 20 % label noise (stand-in for CIFAR-10 cat vs dog)",
                "fig9": None, "fig10": None}


def _widths(figure: str, scale: str) -> tuple[int, ...]:
    if figure == "fig10":
        return PAPER_WIDTHS_MNIST1D if scale == "paper" else SMALL_WIDTHS_MNIST1D
    return PAPER_WIDTHS if scale == "paper" else SMALL_WIDTHS


def grid_of(figure: str):
    preset, columns = FIGS[figure]

    def grid(scale: str, seeds: int) -> list[Cell]:
        name = SMALL_PRESET.get(figure, preset) if scale == "small" else f"paper/{preset}"
        options = ("--effective-params",) + (("--probes", str(PROBES)) if scale == "small" else ())
        title = SMALL_TITLES[figure] if scale == "small" else None
        return [Cell(name, (*over, f"model.width={w}"), s, options,
                     tags={"column": title or label, "width": w})
                for label, over in columns for w in _widths(figure, scale)
                for s in range(seeds or (PAPER_SEEDS if scale == "paper" else 2))]

    return grid


FINALS = ("train/loss_actual", "test/loss_actual", "train/error_actual", "train/effective_parameters",
          "test/effective_parameters")


def table(cells: list[Cell], out: Path) -> dict[str, dict]:
    """Per column: ``width`` (sorted), and for each of FINALS the final value per width and seed
    (widths × seeds; NaN where a width has fewer seeds), with ``mean`` and ``se`` over seeds."""
    from telecli.plots.double_descent import final
    from telecli.store.results import open_results

    result = {}
    for (column,), members in by(cells, "column").items():
        per_width = by(members, "width")
        widths = sorted(w for (w,) in per_width)
        seeds = max(len(v) for v in per_width.values())
        values = {name: np.full((len(widths), seeds), np.nan) for name in FINALS}
        for i, w in enumerate(widths):
            for j, c in enumerate(per_width[(w,)]):
                with open_results(c.results(out)) as f:
                    for name in FINALS:
                        values[name][i, j] = final(f, name)
        col = {"width": np.asarray(widths, dtype=float), "seeds": seeds}
        for name, v in values.items():
            count = np.sum(np.isfinite(v), axis=1)
            mean = np.nanmean(v, axis=1)
            sd = np.nanstd(v, axis=1, ddof=1) if seeds > 1 else np.zeros(len(widths))
            col[name] = {"values": v, "mean": mean, "se": np.where(count > 1, sd / np.sqrt(np.maximum(count, 1)), 0.0)}
        result[column] = col
    return result


def threshold(col: dict) -> float | None:
    """The interpolation threshold: the smallest width at which every seed ends at 100 % training accuracy."""
    err = col["train/error_actual"]["values"]
    fitted = np.all(err == 0.0, axis=1)
    return float(col["width"][np.argmax(fitted)]) if fitted.any() else None


def _gap(col: dict, name: str, i: int, j: int) -> tuple[float, float]:
    """(value at j − value at i, the s.e. of that difference)."""
    d = col[name]
    return float(d["mean"][j] - d["mean"][i]), float(np.hypot(d["se"][i], d["se"][j]))


def p_train_monotone(col: dict, label: str) -> dict:
    drops = [_gap(col, "train/effective_parameters", i, i + 1) for i in range(len(col["width"]) - 1)]
    worst = min(range(len(drops)), key=lambda i: drops[i][0]) if drops else None  # the largest fall (< 0: none)
    holds = all(d + TOLERANCE_SE * se >= 0 for d, se in drops)
    return {"claim": f"{label}: p_train increases monotonically with width (drops within {TOLERANCE_SE:g} s.e. allowed)",
            "numbers": {"widths": col["width"].tolist(), "p_train": col["train/effective_parameters"]["mean"].tolist(),
                        "p_train_se": col["train/effective_parameters"]["se"].tolist(),
                        "largest_drop": None if worst is None else -drops[worst][0],
                        "largest_drop_at_width": None if worst is None else float(col["width"][worst + 1])},
            "holds": bool(holds)}


def p_test_decreasing(col: dict, label: str) -> dict:
    w_star = threshold(col)
    numbers = {"threshold_width": w_star, "widths": col["width"].tolist(),
               "p_test": col["test/effective_parameters"]["mean"].tolist(),
               "p_test_se": col["test/effective_parameters"]["se"].tolist()}
    holds = False
    if w_star is not None:
        i0 = int(np.argmax(col["width"] == w_star))
        last = len(col["width"]) - 1
        rises = [_gap(col, "test/effective_parameters", i, i + 1) for i in range(i0, last)]
        total, total_se = _gap(col, "test/effective_parameters", i0, last)
        numbers.update(largest_rise_past_threshold=max((r for r, _ in rises), default=None),
                       change_threshold_to_largest=total, change_se=total_se)
        holds = bool(rises) and all(r <= TOLERANCE_SE * se for r, se in rises) and total < -TOLERANCE_SE * total_se
    return {"claim": f"{label}: p_test decreases once the width passes the interpolation threshold (smallest width "
                     f"with 100 % training accuracy in every seed)", "numbers": numbers, "holds": holds}


def double_descent(col: dict) -> tuple[bool, dict]:
    """Whether the test MSE rises to a peak near the threshold and falls after it (see the module docstring)."""
    w_star = threshold(col)
    test = col["test/loss_actual"]
    peak = int(np.argmax(test["mean"]))
    numbers = {"threshold_width": w_star, "widths": col["width"].tolist(), "test_mse": test["mean"].tolist(),
               "test_mse_se": test["se"].tolist(), "train_mse": col["train/loss_actual"]["mean"].tolist(),
               "peak_width": float(col["width"][peak])}
    if w_star is None or peak == 0 or peak == len(test["mean"]) - 1:
        return False, numbers
    below = int(np.argmin(test["mean"][:peak]))
    rise, rise_se = _gap(col, "test/loss_actual", below, peak)
    fall, fall_se = _gap(col, "test/loss_actual", len(test["mean"]) - 1, peak)
    near = w_star / PEAK_WINDOW <= col["width"][peak] <= w_star * PEAK_WINDOW
    numbers.update(rise_to_peak=rise, rise_se=rise_se, fall_after_peak=fall, fall_se=fall_se, peak_near_threshold=bool(near))
    return bool(near and rise > TOLERANCE_SE * rise_se and fall > TOLERANCE_SE * fall_se), numbers


def claims_of(figure: str):
    def claims(cells: list[Cell], out: Path) -> list[dict]:
        cols = table(cells, out)
        result = []
        for label, col in cols.items():
            shows, numbers = double_descent(col)
            clean = figure == "fig9" and "no label noise" in label
            result.append({"claim": f"{label}: " + ("no double descent in the test MSE" if clean else
                                                    f"double descent: the test MSE peaks near the interpolation "
                                                    f"threshold (within ×{PEAK_WINDOW:g}) and falls past it"),
                           "numbers": numbers, "holds": (not shows) if clean else shows})
            result.append(p_train_monotone(col, label))
            result.append(p_test_decreasing(col, label))
        return result

    return claims


def draw_of(figure: str):
    def draw(cells: list[Cell], out: Path, path: Path) -> None:
        from telecli.plots.double_descent import Column, draw_columns

        columns = []
        for label, col in table(cells, out).items():
            rows = {f"{kind}/{s}": (col["width"], col[f"{s}/{kind}"]["mean"], col[f"{s}/{kind}"]["se"])
                    for kind in ("loss_actual", "effective_parameters") for s in ("train", "test")}
            columns.append(Column(label, rows, col["seeds"], threshold(col)))
        draw_columns(columns, path)

    return draw


def _figures():
    from telecli.reproduce import Figure

    titles = {"fig3": "Double descent on CIFAR-10 cat vs dog: MSE and effective parameters by hidden width",
              "fig9": "Double descent on MNIST 3 vs 5 with and without 20 % label noise",
              "fig10": "Double descent on MNIST-1D 0 vs 1 with 15 % label noise"}
    return tuple(Figure(name, titles[name], grid_of(name), draw_of(name), claims_of(name)) for name in FIGS)


FIGURES = _figures()
