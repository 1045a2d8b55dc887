"""Effective parameters over training (paper Figs. 4 and 11–13: grokking, standard initialisation).

Top: train and test error per step: the misclassification rate when the targets are 0/1 classes,
otherwise the loss (½‖f − y‖² averaged over points for MSE). Bottom: the effective parameters p^train
and p^test (method.md Eq. 8) per step. Log step axis. Several files overlay: one colour family per
file, test solid, train dashed and lighter. Steps where the file's validity flags say p is not to be
trusted (the smoother departs from the network, or the run is not what the analysis models) are
hatched grey on both panels, with a legend entry.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from telecli.plots import style

EFFECTIVE_HINT = "telecli telescope RUN --effective-params"


def error_curves(f: h5py.File) -> tuple[dict[str, np.ndarray], str]:
    """Train/test curves for the top panel and their y label: error rate for classes, else the loss."""
    err = {s: style.read(f, f"{s}/error_actual") for s in ("train", "test")}
    if all(np.isfinite(v).any() for v in err.values()):
        return err, "misclassification error"
    loss = {s: style.read(f, f"{s}/loss_actual") for s in ("train", "test")}
    kind = f.attrs.get("loss", "mse")
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    return loss, ("MSE  " + r"($\frac{1}{2}\|f - y\|^2$, mean)" if kind == "mse" else "cross-entropy loss")


@style.requires("train/effective_parameters", "test/effective_parameters", hint=EFFECTIVE_HINT)
@style.requires("steps", "train/error_actual", "test/error_actual", "train/loss_actual", "test/loss_actual")
def draw(files: list[h5py.File], out: Path, *, labels: list[str], **_) -> None:
    single = len(files) == 1
    colours = style.palette(len(files))
    with style.house_style():
        fig, (top, bottom) = style.new_figure(2, 1, size=style.DOUBLE, sharex=True)
        ylabels = set()
        shaded = False
        for f, label, colour in zip(files, labels, colours):
            x = style.steps(f)
            keep = style.step_axis(bottom, x, log=True)
            bad = style.invalid_steps(f)
            if bad is not None:
                for ax in (top, bottom):
                    shaded |= style.shade_steps(ax, x[keep], bad[keep], log=True)
            curves, ylabel = error_curves(f)
            ylabels.add(ylabel)
            p = {s: style.read(f, f"{s}/effective_parameters") for s in ("train", "test")}
            if single:
                c_train, c_test, ls_train = style.TRAIN, style.TEST, "-"
            else:
                c_train, c_test, ls_train = style.lighter(colour), colour, "--"
            top.plot(x[keep], curves["train"][keep], color=c_train, ls=ls_train, label="train")
            top.plot(x[keep], curves["test"][keep], color=c_test, label="test")
            bottom.plot(x[keep], p["train"][keep], color=c_train, ls=ls_train, label=r"$p^{\mathrm{train}}$")
            bottom.plot(x[keep], p["test"][keep], color=c_test, label=r"$p^{\mathrm{test}}$")
        top.set_xscale("log")
        top.set_ylabel(ylabels.pop() if len(ylabels) == 1 else "error (rate or loss)")
        bottom.set_ylabel(r"effective parameters $p$")
        extra = [style.invalid_handle()] if shaded else []
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
