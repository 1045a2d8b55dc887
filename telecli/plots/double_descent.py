"""Double descent in the effective parameters (paper Figs. 3, 9, 10): one results file per model size.

x: the hidden width read from each file's run configuration (``model.width``, or ``--x-key``), log
scale. Top: final train/test loss (``loss_actual`` at the last stored step; ½‖f − y‖² for MSE).
Bottom: final p^train and p^test. Files with the same width (several seeds) are averaged: mean ±
standard error (sample standard deviation / √n) as error bars. :func:`draw_columns` draws several such
columns side by side (``telecli reproduce fig9``: with and without label noise).
"""

from __future__ import annotations

import textwrap

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from telecli.errors import TelecliError
from telecli.lens import stats
from telecli.plots import style
from telecli.plots.complexity import EFFECTIVE_HINT

DEFAULT_KEY = "model.width"


def widths(files: list[h5py.File], names: list[str], key: str) -> np.ndarray:
    xs = []
    for f, name in zip(files, names):
        v = style.lookup(f, key)
        if v is None:
            where = "its run configuration (attr 'config')" if style.config(f) else "it (no 'config' attr)"
            raise TelecliError(f"{name}: '{key}' not found in {where}; pass --x-key with the setting "
                               f"that varies across the files, e.g. --x-key model.width")
        try:
            xs.append(float(v))
        except (TypeError, ValueError):
            raise TelecliError(f"{name}: '{key}' = {v!r} is not a number; pass --x-key naming a numeric "
                               f"setting, e.g. --x-key model.width") from None
    return np.asarray(xs)


def mean_se(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group ``y`` by equal ``x``: (unique x, mean, standard error; 0 where one value)."""
    ux = np.unique(x)
    groups = [stats.mean_se(y[x == v]) for v in ux]
    return ux, np.asarray([m for m, _ in groups]), np.asarray([se for _, se in groups])


def final(f: h5py.File, name: str) -> float:
    """The value at the last stored step that is finite."""
    v = style.read(f, name)
    ok = np.nonzero(np.isfinite(v))[0]
    return float(v[ok[-1]]) if ok.size else float("nan")


@dataclass
class Column:
    """One column of the figure: per-x mean ± s.e. over seeds of the four final values, keyed
    ``loss_actual/train`` … ``effective_parameters/test`` → (x, mean, se); ``threshold``: the interpolation
    threshold to mark (a vertical dashed line; None for none)."""

    title: str
    rows: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    seeds: int = 1
    threshold: float | None = None


def finals(files: list[h5py.File]) -> dict[str, np.ndarray]:
    """The final value of each file for the four curves the figure draws (``loss_actual/train`` …)."""
    return {f"{kind}/{s}": np.asarray([final(f, f"{s}/{kind}") for f in files])
            for kind in ("loss_actual", "effective_parameters") for s in ("train", "test")}


def draw_columns(columns: list[Column], out: Path, *, xlabel: str = "hidden width (number of neurons)",
                 loss_kind: str = "mse") -> None:
    """Top row: final train/test loss against x (log); bottom row: final p^train and p^test; one column per
    :class:`Column`, error bars ± s.e. over seeds (method.md §6, Figs. 3, 9, 10)."""
    with style.house_style():
        width, height = style.DOUBLE
        fig, axes = style.new_figure(2, len(columns), size=(width * (0.5 + 0.55 * len(columns)) if len(columns) > 1
                                                            else width, height), sharex="col", squeeze=False)
        for j, col in enumerate(columns):
            top, bottom = axes[0][j], axes[1][j]
            for ax, kind, labels in ((top, "loss_actual", ("train", "test")),
                                     (bottom, "effective_parameters", (r"$p^{\mathrm{train}}$", r"$p^{\mathrm{test}}$"))):
                for s, label, colour in zip(("train", "test"), labels, (style.TRAIN, style.TEST)):
                    ux, m, se = col.rows[f"{kind}/{s}"]
                    ax.errorbar(ux, m, yerr=se if col.seeds > 1 else None, color=colour, marker="o", label=label)
                if col.threshold is not None:
                    ax.axvline(col.threshold, color=style.GRAY, linestyle="--", linewidth=0.9,
                               label="interpolation threshold" if kind == "loss_actual" else None)
            bottom.set_xscale("log")
            bottom.set_xlabel(xlabel)
            title = col.title + (f"\n(mean ± s.e., {col.seeds} seeds)" if col.seeds > 1 else "")
            if title:
                top.set_title("\n".join(textwrap.fill(line, 52) for line in title.split("\n")), loc="left")
            if j == 0:
                top.set_ylabel(("final MSE  " + r"($\frac{1}{2}\|f - y\|^2$, mean)") if loss_kind == "mse"
                               else "final cross-entropy loss")
                bottom.set_ylabel(r"final effective parameters $p$")
            style.legend(top)
            style.legend(bottom)
        style.save(fig, out)


@style.requires("train/effective_parameters", "test/effective_parameters", hint=EFFECTIVE_HINT)
@style.requires("steps", "train/loss_actual", "test/loss_actual")
def draw(files: list[h5py.File], out: Path, *, names: list[str] | None = None, x_key: str | None = None,
         **_) -> None:
    names = names or [f.filename for f in files]
    key = x_key or DEFAULT_KEY
    x = widths(files, names, key)
    if np.any(x <= 0):
        raise TelecliError(f"'{key}' must be positive for the log axis, got {x[x <= 0][0]:g}")
    rows = {name: mean_se(x, v) for name, v in finals(files).items()}
    seeds = max(int(np.sum(x == v)) for v in np.unique(x))
    kind = files[0].attrs.get("loss", "mse")
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    title = "" if seeds <= 1 else ("" if key == DEFAULT_KEY else f"up to {seeds} files per value")
    draw_columns([Column(title, rows, seeds)], out, loss_kind=kind,
                 xlabel="hidden width (number of neurons)" if key == DEFAULT_KEY else key)
