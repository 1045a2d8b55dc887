"""Approximation quality (paper Figs. 2 and 7): how far the telescoping model f̃_t and the
linearisation at initialisation f^lin_t are from the actual network, per optimisation step.

y: mean absolute error (1/m) Σ_x |f_t(x) − f̂_t(x)| over the split's points and outputs (method.md §2),
log scale. One file: telescoping red, linearised gray. Several files (e.g. a learning-rate sweep): one
colour family per file, telescoping solid, linearised dashed and lighter. :func:`draw_panels` is the
paper's layout (one panel per setting) that ``telecli reproduce`` draws. Runs that differ only in
their seed are one line: the mean over seeds with a ± s.e. band (telecli.plots.seeds).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from telecli.plots import style
from telecli.plots.seeds import band, curve


def shades(colour: str, n: int) -> list:
    """``n`` shades of one colour, dark to light (learning rates of one setting)."""
    return [style.lighter(colour, a) for a in np.linspace(0.0, 0.6, n)] if n > 1 else [colour]


def draw_axis(ax, files: list, labels: list[str], split: str, log_x: bool, colours: list[tuple]) -> None:
    """One axis of the figure: per file (or seed group: mean ± s.e.) the telescoping error, solid, and
    the linearisation's, dashed; ``colours`` holds a (telescoping, linearised) pair per file."""
    for f, label, (c_tel, c_lin) in zip(files, labels, colours):
        x = style.steps(f)
        keep = style.step_axis(ax, x, log=log_x)
        cut = (lambda a: None if a is None else a[keep])  # noqa: E731
        tel, tel_se = curve(f, lambda g: style.positive(style.read(g, f"{split}/approx_error_telescoped")))
        lin, lin_se = curve(f, lambda g: style.positive(style.read(g, f"{split}/approx_error_linearized")))
        band(ax, x[keep], tel[keep], cut(tel_se), c_tel, label=label)
        band(ax, x[keep], lin[keep], cut(lin_se), c_lin, ls="--")
    ax.set_yscale("log")


YLABEL = "approximation error ({split})\n" + r"mean $|f_t(x) - \hat f_t(x)|$"
KEY = [(r"telescoping $\tilde f_t$", "-"), (r"linearised $f^{\mathrm{lin}}_t$", "--")]


@style.aggregates_seeds
@style.requires("steps", "{split}/approx_error_telescoped", "{split}/approx_error_linearized")
def draw(files: list[h5py.File], out: Path, *, labels: list[str], split: str = "test", **_) -> None:
    with style.house_style():
        fig, ax = style.new_figure(size=style.SINGLE)
        log_x = any(style.wants_log_x(style.steps(f)) for f in files)
        if len(files) == 1:
            draw_axis(ax, files, [r"telescoping $\tilde f_t$"], split, log_x, [(style.RED, style.GRAY)])
            ax.plot([], [], color=style.GRAY, label=r"linearised $f^{\mathrm{lin}}_t$")
            ax.set_title(labels[0], loc="left")
            style.legend(ax)
        else:
            colours = style.palette(len(files))
            draw_axis(ax, files, labels, split, log_x, [(c, style.lighter(c)) for c in colours])
            style.family_legend(ax, labels, colours, KEY)
        ax.set_ylabel(YLABEL.format(split=split))
        style.save(fig, out)


def draw_panels(panels: list[tuple[str, list, list[str]]], out: Path, split: str = "test") -> None:
    """The paper's layout of Figs. 2 and 7: one panel per setting (title), its files or seed groups in
    shades of red (telescoping, solid) and gray (linearised, dashed), e.g. one shade per learning rate."""
    n = len(panels)
    log_x = any(style.wants_log_x(style.steps(f)) for _, fs, _ in panels for f in fs)
    with style.house_style():
        fig, axes = style.new_figure(1, n, size=(2.5 * n + 0.6, 3.0), sharey=True, squeeze=False)
        for j, (title, files, labels) in enumerate(panels):
            ax = axes[0, j]
            colours = list(zip(shades(style.RED, len(files)), shades(style.GRAY, len(files))))
            draw_axis(ax, files, labels, split, log_x, colours)
            ax.set_title(title, loc="left")
            if len(files) > 1:
                style.legend(ax, fontsize=6.5)
        axes[0, 0].set_ylabel(YLABEL.format(split=split))
        from matplotlib.lines import Line2D

        fig.legend(handles=[Line2D([], [], color="0.35", ls=ls, label=lab) for lab, ls in KEY],
                   loc="outside lower center", ncol=len(KEY))
        style.save(fig, out)
