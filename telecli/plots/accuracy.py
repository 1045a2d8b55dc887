"""Test accuracy of the approximations (paper Fig. 8): accuracy 1 − (misclassification rate) per step.

Top: telescoping f̃_t (red) against the actual network (gray). Bottom: linearisation f^lin_t (blue)
against the actual network (gray). Several files: one column per file (the paper's five settings),
titled with the file's label.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from telecli.errors import TelecliError
from telecli.plots import style


@style.requires("steps", "{split}/error_actual", "{split}/error_telescoped", "{split}/error_linearized")
def draw(files: list[h5py.File], out: Path, *, labels: list[str], split: str = "test",
         names: list[str] | None = None, **_) -> None:
    names = names or labels
    acc = []
    for f, name in zip(files, names):
        rows = {k: 1.0 - style.read(f, f"{split}/error_{k}") for k in ("actual", "telescoped", "linearized")}
        if np.isnan(rows["actual"]).all():
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
            top.plot(x[keep], rows["actual"][keep], color=style.GRAY, lw=2.2, alpha=0.7, label="actual network")
            top.plot(x[keep], rows["telescoped"][keep], color=style.RED, label=r"telescoping $\tilde f_t$")
            bottom.plot(x[keep], rows["actual"][keep], color=style.GRAY, lw=2.2, alpha=0.7, label="actual network")
            bottom.plot(x[keep], rows["linearized"][keep], color=style.BLUE,
                        label=r"linearised $f^{\mathrm{lin}}_t$")
            top.set_title(label, loc="left")
            if j == 0:
                top.set_ylabel(f"{split} accuracy")
                bottom.set_ylabel(f"{split} accuracy")
                style.legend(top, loc="lower right")
                style.legend(bottom, loc="lower right")
        style.save(fig, out)
