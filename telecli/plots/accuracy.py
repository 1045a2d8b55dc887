"""Test accuracy of the approximations (paper Fig. 8): accuracy 1 − (misclassification rate) per step.

Top: telescoping f̃_t (red) against the actual network (gray). Bottom: linearisation f^lin_t (blue)
against the actual network (gray). Several files: one column per file (the paper's five settings),
titled with the file's label. Runs that differ only in their seed are one column: mean over seeds
with a ± s.e. band.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from telecli.errors import TelecliError
from telecli.plots import style
from telecli.plots.seeds import band, curve


@style.aggregates_seeds
@style.requires("steps", "{split}/error_actual", "{split}/error_telescoped", "{split}/error_linearized")
def draw(files: list[h5py.File], out: Path, *, labels: list[str], split: str = "test",
         names: list[str] | None = None, **_) -> None:
    names = names or labels
    acc = []
    for f, name in zip(files, names):
        rows = {k: curve(f, lambda g, k=k: 1.0 - style.read(g, f"{split}/error_{k}"))
                for k in ("actual", "telescoped", "linearized")}
        if np.isnan(rows["actual"][0]).all():
            raise TelecliError(f"{name}: the targets are not 0/1 classes, so accuracy is undefined; "
                               f"use --figure approximation or --figure complexity")
        acc.append(rows)
    n = len(files)
    size = style.DOUBLE if n == 1 else (2.6 * n + 0.4, 4.6)
    with style.house_style():
        fig, axes = style.new_figure(2, n, size=size, sharex="col", sharey="row", squeeze=False)
        for j, (f, rows, label) in enumerate(zip(files, acc, labels)):
            x = style.steps(f)
            top, bottom = axes[0, j], axes[1, j]
            keep = style.step_axis(bottom, x)
            if bottom.get_xscale() == "log":
                top.set_xscale("log")
            def line(ax, kind, colour, **kw):
                mean, se = rows[kind]
                band(ax, x[keep], mean[keep], None if se is None else se[keep], colour, **kw)

            line(top, "actual", style.GRAY, lw=2.2, alpha=0.7, label="actual network")
            line(top, "telescoped", style.RED, label=r"telescoping $\tilde f_t$")
            line(bottom, "actual", style.GRAY, lw=2.2, alpha=0.7, label="actual network")
            line(bottom, "linearized", style.BLUE, label=r"linearised $f^{\mathrm{lin}}_t$")
            top.set_title(label, loc="left")
            if j == 0:
                top.set_ylabel(f"{split} accuracy")
                bottom.set_ylabel(f"{split} accuracy")
                style.legend(top, loc="lower right")
                style.legend(bottom, loc="lower right")
        style.save(fig, out)
