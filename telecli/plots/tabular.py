"""Neural network vs gradient-boosted trees on tabular data (paper Figs. 5 and 14; method.md §4.4).

Input: boost.h5 files of ``telecli boost``. One column per data set (root attr ``dataset``; Fig. 5 is
houses, Fig. 14 superconduct, california, house_sales side by side). x: the proportion p of irregular
examples in the test mixture. Top: relative MSE (MSE^p_NN − MSE^p_GBT)/(MSE^0_NN − MSE^0_GBT), 1 at
p = 0. Bottom: the normalised maximum kernel-weight norm of the NN (tangent kernel) and of the GBT
(tree kernel), with a dashed line at 1 (= the largest weight seen on a training point). Several files
of one data set (seeds) are averaged: mean ± standard error (sample s.d. / √n) as error bars.

Where the relative MSE means nothing — the network beats the trees at p = 0, or they tie within 1 %
(lens.boost.relative_mse_meaningful) — the top panel shows the difference MSE^p_NN − MSE^p_GBT instead
and says why in the panel.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from telecli.errors import TelecliError
from telecli.lens.boost import DENOMINATOR_FLOOR, relative_mse_meaningful
from telecli.lens.stats import mean_se
from telecli.plots import style

HINT = "telecli boost DATA --target COL --out DIR"
NN_COLOUR = style.RED
GBT_COLOUR = style.BLUE


def _dataset(f: h5py.File, name: str) -> str:
    v = f.attrs.get("dataset")
    if isinstance(v, bytes):
        v = v.decode()
    return str(v) if v else Path(name).parent.name or Path(name).stem


def _mean_se(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return mean_se(rows, axis=0)


def collect(files: list[h5py.File], names: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """Data set → proportions and mean ± s.e. of each metric over its files (seeds), in file order."""
    groups: dict[str, list[tuple[h5py.File, str]]] = {}
    for f, name in zip(files, names):
        groups.setdefault(_dataset(f, name), []).append((f, name))
    out = {}
    for ds, members in groups.items():
        p0 = style.read(members[0][0], "metrics/proportions")
        series: dict[str, list[np.ndarray]] = {"relative_mse": [], "kernel_norm_nn": [], "kernel_norm_gbt": []}
        for f, name in members:
            p = style.read(f, "metrics/proportions")
            if p.shape != p0.shape or not np.allclose(p, p0):
                raise TelecliError(f"{name}: proportions {p.tolist()} differ from {members[0][1]}'s {p0.tolist()} "
                                   f"(same data set '{ds}'); rerun telecli boost with the same --proportions")
            for k in series:
                series[k].append(style.read(f, f"metrics/{k}"))
        diffs, meaningful = [], []
        for f, _ in members:
            if "metrics/mse_nn" in f and "metrics/mse_gbt" in f:
                nn, gbt = style.read(f, "metrics/mse_nn"), style.read(f, "metrics/mse_gbt")
                diffs.append(nn - gbt)
                i0 = int(np.argmin(np.abs(p0)))
                meaningful.append(relative_mse_meaningful(nn[i0], gbt[i0]))
        entry = {"p": p0, "n": np.array(len(members)), "meaningful": np.array(all(meaningful))}
        for k, rows in series.items():
            entry[k], entry[k + "_se"] = _mean_se(rows)
        if diffs:
            entry["mse_diff"], entry["mse_diff_se"] = _mean_se(diffs)
        out[ds] = entry
    return out


@style.requires("metrics/proportions", "metrics/relative_mse", "metrics/kernel_norm_nn", "metrics/kernel_norm_gbt",
                hint=HINT)
def draw(files: list[h5py.File], out: Path, *, names: list[str] | None = None, **_) -> None:
    names = names or [f"file {i + 1}" for i in range(len(files))]
    data = collect(files, names)
    cols = len(data)
    with style.house_style():
        fig, axes = style.new_figure(2, cols, size=(max(style.DOUBLE[0], 2.9 * cols), 5.0), squeeze=False, sharex=True)
        for j, (ds, e) in enumerate(data.items()):
            top, bottom = axes[0, j], axes[1, j]
            p = e["p"]
            seeds = int(e["n"])
            if bool(e["meaningful"]):
                top.errorbar(p, e["relative_mse"], yerr=e["relative_mse_se"] if seeds > 1 else None, color="0.2",
                             marker="o", label="NN vs GBT")
                top.axhline(1.0, color=style.GRAY, lw=0.8, ls=":")
                top.set_ylabel("relative MSE" if j == 0 else "")
            else:  # the ratio's denominator is ≤ 0 or within 1 %: draw the difference and say so
                top.errorbar(p, e["mse_diff"], yerr=e["mse_diff_se"] if seeds > 1 else None, color="0.2",
                             marker="o", label="NN − GBT")
                top.axhline(0.0, color=style.GRAY, lw=0.8, ls=":")
                d0 = float(e["mse_diff"][int(np.argmin(np.abs(p)))])
                why = "NN better" if d0 <= 0 else f"within {DENOMINATOR_FLOOR:.0%}"
                top.text(0.02, 0.97, f"relative MSE undefined at p = 0\n(MSE$_{{NN}}$ − MSE$_{{GBT}}$ = {d0:.3g}: "
                         f"{why});\ndifference shown", transform=top.transAxes, va="top", fontsize=7, color="0.25")
                top.set_ylabel(r"MSE$_{\mathrm{NN}}$ − MSE$_{\mathrm{GBT}}$")
            top.set_title(ds + (f"{chr(10) if len(ds) > 18 else '  '}({seeds} seeds)" if seeds > 1 else ""),
                          loc="left", fontsize=None if len(ds) <= 30 else 7)
            bottom.errorbar(p, e["kernel_norm_nn"], yerr=e["kernel_norm_nn_se"] if seeds > 1 else None,
                            color=NN_COLOUR, marker="o", label="NN (tangent kernel)")
            bottom.errorbar(p, e["kernel_norm_gbt"], yerr=e["kernel_norm_gbt_se"] if seeds > 1 else None,
                            color=GBT_COLOUR, marker="s", label="GBT (tree kernel)")
            bottom.axhline(1.0, color=style.GRAY, lw=0.8, ls="--")
            bottom.set_xlabel("proportion p of irregular test examples")
            if j == 0:
                bottom.set_ylabel("normalised max kernel norm")
                style.legend(bottom)
        style.save(fig, out)
