"""Approximation quality (paper Figs. 2 and 7): how far the telescoping model f̃_t and the
linearisation at initialisation f^lin_t are from the actual network, per optimisation step.

y: mean absolute error (1/m) Σ_x |f_t(x) − f̂_t(x)| over the split's points and outputs (method.md §2),
log scale. One file: telescoping red, linearised gray. Several files (e.g. a learning-rate sweep): one
colour family per file, telescoping solid, linearised dashed and lighter. Runs that differ only in
their seed are one line: the mean over seeds with a ± s.e. band (telecli.plots.seeds).
"""

from __future__ import annotations

from pathlib import Path

import h5py

from telecli.plots import style
from telecli.plots.seeds import band, curve


@style.aggregates_seeds
@style.requires("steps", "{split}/approx_error_telescoped", "{split}/approx_error_linearized")
def draw(files: list[h5py.File], out: Path, *, labels: list[str], split: str = "test", **_) -> None:
    with style.house_style():
        fig, ax = style.new_figure(size=style.SINGLE)
        xs = [style.steps(f) for f in files]
        log_x = any(style.wants_log_x(x) for x in xs)
        single = len(files) == 1
        colours = style.palette(len(files))
        for f, x, label, colour in zip(files, xs, labels, colours):
            keep = style.step_axis(ax, x, log=log_x)
            tel, tel_se = curve(f, lambda g: style.positive(style.read(g, f"{split}/approx_error_telescoped")))
            lin, lin_se = curve(f, lambda g: style.positive(style.read(g, f"{split}/approx_error_linearized")))
            cut = (lambda a: None if a is None else a[keep])  # noqa: E731
            if single:
                band(ax, x[keep], tel[keep], cut(tel_se), style.RED, label=r"telescoping $\tilde f_t$")
                band(ax, x[keep], lin[keep], cut(lin_se), style.GRAY, label=r"linearised $f^{\mathrm{lin}}_t$")
                ax.set_title(label, loc="left")
            else:
                band(ax, x[keep], tel[keep], cut(tel_se), colour)
                band(ax, x[keep], lin[keep], cut(lin_se), style.lighter(colour), ls="--")
        ax.set_yscale("log")
        ax.set_ylabel(f"approximation error ({split})\n" + r"mean $|f_t(x) - \hat f_t(x)|$")
        if single:
            style.legend(ax)
        else:
            style.family_legend(ax, labels, colours, [(r"telescoping $\tilde f_t$", "-"),
                                                      (r"linearised $f^{\mathrm{lin}}_t$", "--")])
        style.save(fig, out)
