"""Effective parameters over training (paper Figs. 4 and 11–13: grokking, standard initialisation).

Top: train and test error per step: the misclassification rate when the targets are 0/1 classes,
otherwise the loss (½‖f − y‖² averaged over points for MSE). Bottom: the effective parameters p^train
and p^test (method.md Eq. 8) per step. Log step axis. Several files overlay: one colour family per
file, test solid, train dashed and lighter. Steps where the file's validity flags say p is not to be
trusted (``validity/{split}/ok`` false: the smoother or the telescoping model departs from the network
by more than a tenth of the targets' spread, or the run is not what the analysis models; docs/format.md
§2) are hatched grey on both panels, with a legend entry. Runs that differ only in their seed are one line:
the mean over seeds with a ± s.e. band. Where p exceeds DIVERGED × n (a smoother whose recursion diverged at
flagged steps) the p axis is symlog up to DIVERGED × n, with a note of the largest p, so the valid steps stay
readable.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from telecli.plots import style
from telecli.plots.seeds import band, curve

EFFECTIVE_HINT = "telecli telescope RUN --effective-params"
FLAGGED_LABEL = "flagged: a validity check fails (smoother, f̃, parameters)"
DIVERGED = 10  # p above this many n_train: a smoother that diverged; p is then drawn on a symlog axis


def flagged_handle():
    """The legend entry of the hatched steps (style.shade_steps), naming what the flags check."""
    handle = style.invalid_handle()
    handle.set_label(FLAGGED_LABEL)
    return handle


def error_curves(f: h5py.File) -> tuple[dict[str, np.ndarray], str]:
    """Train/test curves for the top panel and their y label: error rate for classes, else the loss."""
    err = {s: style.read(f, f"{s}/error_actual") for s in ("train", "test")}
    if all(np.isfinite(v).any() for v in err.values()):
        return err, "misclassification error"
    loss = {s: style.read(f, f"{s}/loss_actual") for s in ("train", "test")}
    kind = f.attrs.get("loss", "mse")
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    return loss, ("MSE  " + r"($\frac{1}{2}\|f - y\|^2$, mean)" if kind == "mse" else "cross-entropy loss")


def draw_column(top, bottom, files: list, colours: list[tuple], splits: tuple[str, ...] = ("train", "test"),
                names: list[str] | None = None) -> tuple[set[str], bool]:
    """One column of the figure: per file (or seed group: mean ± s.e.) train (``colours``' first of the
    pair, dashed when ``dashed``) and test error on ``top``, p^train and p^test on ``bottom`` (only the
    ``splits`` asked for; ``names`` prefix each file's labels); steps whose validity flags are false
    hatched. Returns (the y labels used, whether anything was hatched)."""
    ylabels, shaded, p_max, n_max = set(), False, 0.0, 0
    for i, (f, (c_train, c_test, ls_train)) in enumerate(zip(files, colours)):
        x = style.steps(f)
        keep = style.step_axis(bottom, x, log=True)
        bad = style.invalid_steps(f)
        if bad is not None:
            for ax in (top, bottom):
                shaded |= style.shade_steps(ax, x[keep], bad[keep], log=True)
        ylabels.add(error_curves(getattr(f, "members", [f])[0])[1])
        err = {s: curve(f, lambda g, s=s: error_curves(g)[0][s]) for s in splits}
        p = {s: curve(f, lambda g, s=s: style.read(g, f"{s}/effective_parameters")) for s in splits}
        cut = (lambda a: None if a is None else a[keep])  # noqa: E731
        pre = f"{names[i]}: " if names else ""
        for s in splits:
            colour, ls = (c_train, ls_train) if s == "train" else (c_test, "-")
            band(top, x[keep], err[s][0][keep], cut(err[s][1]), colour, ls=ls, label=pre + s)
            band(bottom, x[keep], p[s][0][keep], cut(p[s][1]), colour, ls=ls,
                 label=pre + rf"$p^{{\mathrm{{{s}}}}}$")
            finite = p[s][0][keep][np.isfinite(p[s][0][keep])]
            p_max = max(p_max, float(finite.max()) if finite.size else 0.0)
        n_max = max(n_max, int(getattr(f, "members", [f])[0].attrs.get("n_train", 0)))
    if n_max and p_max > DIVERGED * n_max:  # a smoother that diverged (flagged steps): keep the rest readable
        bottom.set_yscale("symlog", linthresh=1.0)
        bottom.set_ylim(0.0, DIVERGED * n_max)
        bottom.text(0.98, 0.98, f"p leaves the axis ({DIVERGED} n): the smoother diverged, max {p_max:.2g}",
                    transform=bottom.transAxes, ha="right", va="top", fontsize="small", color=style.GRAY,
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85})
    top.set_xscale("log")
    return ylabels, shaded


@style.aggregates_seeds
@style.requires("train/effective_parameters", "test/effective_parameters", hint=EFFECTIVE_HINT)
@style.requires("steps", "train/error_actual", "test/error_actual", "train/loss_actual", "test/loss_actual")
def draw(files: list[h5py.File], out: Path, *, labels: list[str], **_) -> None:
    single = len(files) == 1
    colours = style.palette(len(files))
    pairs = [(style.TRAIN, style.TEST, "-")] if single else [(style.lighter(c), c, "--") for c in colours]
    with style.house_style():
        fig, (top, bottom) = style.new_figure(2, 1, size=style.DOUBLE, sharex=True)
        ylabels, shaded = draw_column(top, bottom, files, pairs)
        top.set_ylabel(ylabels.pop() if len(ylabels) == 1 else "error (rate or loss)")
        bottom.set_ylabel(r"effective parameters $p$")
        extra = [flagged_handle()] if shaded else []
        if single:
            top.set_title(labels[0], loc="left")
            style.legend(top)
            handles, _ = bottom.get_legend_handles_labels()
            bottom.legend(handles=handles + extra, loc="best")
        else:
            style.family_legend(top, labels, colours, [("test", "-"), ("train", "--")])
            style.family_legend(bottom, [], [], [(r"$p^{\mathrm{test}}$", "-"), (r"$p^{\mathrm{train}}$", "--")],
                                extra=extra)
        style.save(fig, out)


def draw_panels(panels: list[tuple], out: Path) -> None:
    """The paper's layout of Figs. 4 and 11–13: one column per setting, error on top and p below; used by
    ``telecli reproduce``. A panel is (title, seed group), drawn as mean ± s.e. of train and test, or
    (title, [(name, seed group), …], splits): several settings overlaid in one column, one colour each,
    only ``splits`` drawn (Fig. 4's third column: test only, with and without sigmoid)."""
    n = len(panels)
    with style.house_style():
        fig, axes = style.new_figure(2, n, size=(2.6 * n + 0.6, 4.8), sharex="col", squeeze=False)
        shaded, per_column = False, []
        for j, panel in enumerate(panels):
            title, groups = panel[0], panel[1]
            if isinstance(groups, list):
                colours = style.palette(len(groups))
                pairs = [(style.lighter(c), c, "--") for c in colours]
                used, hatched = draw_column(axes[0, j], axes[1, j], [g for _, g in groups], pairs, tuple(panel[2]),
                                            [name for name, _ in groups])
                axes[0, j].legend(loc="best", fontsize="small")
            else:
                used, hatched = draw_column(axes[0, j], axes[1, j], [groups], [(style.TRAIN, style.TEST, "-")])
            per_column.append(used.pop() if len(used) == 1 else "error (rate or loss)")
            shaded |= hatched
            axes[0, j].set_title(title, loc="left")
        for j, label in enumerate(per_column if len(set(per_column)) > 1 else per_column[:1]):
            axes[0, j].set_ylabel(label)  # one label, or one per column where they differ (Fig. 4)
        axes[1, 0].set_ylabel(r"effective parameters $p$")
        if not isinstance(panels[0][1], list):
            style.legend(axes[0, 0])
        handles, _ = axes[1, 0].get_legend_handles_labels()
        axes[1, 0].legend(handles=handles + ([flagged_handle()] if shaded else []), loc="best")
        style.save(fig, out)
