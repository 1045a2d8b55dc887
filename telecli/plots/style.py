"""Shared look of every telecli figure: sans-serif, light grid, no top/right spines, 300 dpi PNG.

Figures are built with ``matplotlib.figure.Figure`` directly (never pyplot), so no GUI backend is
touched and nothing global changes: the style is applied through ``rc_context`` while drawing.

Helpers for figure modules: ``new_figure`` (a Figure with the house style and constrained layout),
``save`` (write it, the format given by the file extension), ``requires`` (declare the datasets a
figure reads), ``read``/``steps``/``config``/``lookup`` (read a results file), ``step_axis`` (log or
linear optimisation-step axis), ``palette``/``lighter`` (one colour family per overlaid file).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Callable, Iterator

import h5py
import numpy as np

DPI = 300
FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}

# Figure sizes in inches (a one-column figure of a two-column paper is ≈ 3.3 in; these read well at
# half a page width and scale down cleanly).
SINGLE = (4.5, 3.2)
DOUBLE = (4.5, 5.2)  # two stacked panels

# Colours of the paper's figures (method.md §6): telescoping red, linearised/actual gray, f^lin blue.
RED = "#C0392B"
GRAY = "#7F7F7F"
BLUE = "#2E6DB4"
TRAIN = "#2E6DB4"
TEST = "#C0392B"
# Okabe–Ito: distinguishable for colour-blind readers; one family per overlaid file.
OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]

RC: dict[str, Any] = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Helvetica", "Arial", "Liberation Sans"],
    "mathtext.fontset": "dejavusans",
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 7.5,
    "legend.frameon": True,
    "legend.framealpha": 0.85,
    "legend.edgecolor": "0.85",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.8,
    "axes.grid": True,
    "axes.grid.which": "major",
    "grid.color": "0.9",
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.4,
    "lines.markersize": 4,
    "errorbar.capsize": 2,
    "savefig.dpi": DPI,
    "figure.dpi": 100,
    "svg.fonttype": "path",
    "pdf.fonttype": 42,
}


@contextlib.contextmanager
def house_style() -> Iterator[None]:
    import matplotlib

    with matplotlib.rc_context(RC):
        yield


def new_figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = SINGLE, **kw):
    """(fig, axes) with constrained layout; ``axes`` is squeezed like ``plt.subplots``. Call inside
    ``house_style()`` so the rc settings apply to the axes created here."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(nrows, ncols, **kw)
    return fig, axes


def save(fig, out: Path) -> None:
    """Write ``fig`` to ``out`` in the format named by its extension (PNG at 300 dpi). No timestamps in
    PDF/SVG, so the same data give the same file."""
    fmt = FORMATS[Path(out).suffix.lower()]
    metadata = {"pdf": {"CreationDate": None, "Creator": "telecli"}, "svg": {"Date": None, "Creator": "telecli"},
                "png": {"Software": "telecli"}}[fmt]
    fig.savefig(out, format=fmt, dpi=DPI, metadata=metadata)


# ---------------------------------------------------------------------------------------- requirements

def aggregates_seeds(fn: Callable) -> Callable:
    """Mark a draw function that takes seed groups (telecli.plots.seeds): ``plot`` merges the files of
    runs that differ only in their seed into one, drawn as mean ± s.e."""
    fn.seeds = True
    return fn


def requires(*datasets: str, hint: str = "telecli telescope RUN") -> Callable:
    """Declare datasets a draw function reads ("{split}" is filled in from --split). ``plot`` checks them
    in every file before drawing and names the missing one and ``hint``, the command that writes it.
    Stackable: each use adds (dataset, hint) pairs to ``draw.requires`` (the lowest decorator's are
    checked first)."""

    def mark(fn: Callable) -> Callable:
        fn.requires = tuple(getattr(fn, "requires", ())) + tuple((d, hint) for d in datasets)
        return fn

    return mark


# --------------------------------------------------------------------------------------------- reading

def read(f: h5py.File, name: str) -> np.ndarray:
    return np.asarray(f[name][...], dtype=float)


def steps(f: h5py.File) -> np.ndarray:
    return np.asarray(f["steps"][...], dtype=float)


def _json_attr(f: h5py.File, name: str) -> Any:
    raw = f.attrs.get(name)
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode()
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def config(f: h5py.File) -> dict:
    """The run's configuration (root attr ``config``, a JSON string); {} when absent."""
    cfg = _json_attr(f, "config")
    return cfg if isinstance(cfg, dict) else {}


def lookup(f: h5py.File, key: str) -> Any:
    """``key`` as a dotted path into the run configuration (``model.width``), else a root attr; None if
    neither has it."""
    node: Any = config(f)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            node = None
            break
        node = node[part]
    if node is None and key in f.attrs:
        node = _json_attr(f, key)
    return node


def run_label(f: h5py.File) -> str | None:
    """A short description of the run from its configuration, e.g. 'SGD lr=0.05', 'SGD+σ lr=0.05',
    'SGD lr=0.01 mom=0.9', 'AdamW lr=0.0001 wd=0.1'; from the ``optimizer`` attr (no lr) when there is
    no configuration; None when neither is stored."""
    cfg = config(f)
    train = cfg.get("train") if isinstance(cfg.get("train"), dict) else None
    opt = train if train is not None else _json_attr(f, "optimizer")
    if not isinstance(opt, dict):
        return None
    name = str(opt.get("optimizer") or opt.get("name") or "")
    if not name:
        return None
    from telecli.optim import OPTIMIZERS

    text = OPTIMIZERS[name.lower()].label if name.lower() in OPTIMIZERS else name
    model = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
    if model.get("sigmoid"):
        text += "+σ"
    if train is not None and train.get("lr") is not None:
        text += f" lr={float(train['lr']):g}"
    if float(opt.get("momentum") or 0):
        text += f" mom={float(opt['momentum']):g}"
    if float(opt.get("weight_decay") or 0):
        text += f" wd={float(opt['weight_decay']):g}"
    if model.get("init_scale") not in (None, 1, 1.0):
        text += f" α={float(model['init_scale']):g}"
    return text


def flat_config(f: h5py.File) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = json.dumps(node) if isinstance(node, list) else node

    walk(config(f), "")
    return out


# ----------------------------------------------------------------------------------------------- axes

def wants_log_x(x: np.ndarray) -> bool:
    """Log step axis when the stored steps span more than two decades."""
    pos = x[x > 0]
    return pos.size > 1 and pos.max() / pos.min() > 100


def step_axis(ax, x: np.ndarray, log: bool | None = None) -> np.ndarray:
    """Set the optimisation-step x-axis; returns the mask of steps to draw (step 0 is skipped on a
    log axis)."""
    log = wants_log_x(x) if log is None else log
    ax.set_xlabel("optimisation step")
    if log:
        ax.set_xscale("log")
        return x > 0
    ax.margins(x=0.01)
    return np.ones_like(x, dtype=bool)


def positive(y: np.ndarray) -> np.ndarray:
    """``y`` with non-positive values as NaN (gaps on a log axis instead of warnings)."""
    y = np.array(y, dtype=float)
    y[~(y > 0)] = np.nan
    return y


def palette(n: int) -> list[str]:
    """One base colour per overlaid file."""
    if n <= len(OKABE_ITO):
        return OKABE_ITO[:n]
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    return [matplotlib.colors.to_hex(cmap(v)) for v in np.linspace(0.0, 0.9, n)]


def lighter(color: str, amount: float = 0.45) -> tuple[float, float, float]:
    """``color`` mixed with white (the second member of a colour family)."""
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(color)
    return (r + (1 - r) * amount, g + (1 - g) * amount, b + (1 - b) * amount)


def legend(ax, **kw) -> None:
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(**{"loc": "best", **kw})


def family_legend(ax, labels: list[str], colours: list[str], key: list[tuple[str, str]] | None = None,
                  extra: list | None = None, **kw) -> None:
    """Legend of an overlay: one entry per file (its colour) and, when ``key`` is given, one gray entry
    per line style ((label, linestyle) pairs: e.g. telescoping solid, linearised dashed); ``extra``
    handles (e.g. :func:`invalid_handle`) go last."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, label=lab) for lab, c in zip(labels, colours)]
    handles += [Line2D([], [], color="0.35", ls=ls, label=lab) for lab, ls in (key or [])]
    handles += list(extra or [])
    ax.legend(handles=handles, **{"loc": "best", "ncol": 1 if len(handles) <= 6 else 2, **kw})


# ------------------------------------------------------------------------------------------- validity

INVALID_LABEL = "p not valid here (validity flags)"


def invalid_steps(f: h5py.File) -> np.ndarray | None:
    """True at the output steps where the results file says p is not to be trusted (``/validity/{train,
    test}/ok`` false: the smoother departs from the network, a recorded step fails the recipe check, or
    the parameter-space check fails; docs/format.md §2); None for a file without validity flags."""
    members = getattr(f, "members", [f])  # a seed group: invalid where any seed is
    flags = [np.asarray(m[f"validity/{s}/ok"][...], dtype=bool) for m in members for s in ("train", "test")
             if f"validity/{s}/ok" in m]
    if not flags:
        return None
    return ~np.logical_and.reduce(flags)


def shade_steps(ax, x: np.ndarray, bad: np.ndarray, log: bool) -> bool:
    """Grey, hatched bands over the runs of steps where ``bad`` is True (each band reaches half-way to
    the neighbouring steps, geometrically on a log axis); returns whether anything was shaded."""
    if bad is None or not bad.any():
        return False
    mid = np.sqrt(x[1:] * x[:-1]) if log else (x[1:] + x[:-1]) / 2
    edges = np.concatenate([[x[0]], mid, [x[-1]]])
    start = None
    for i, b in enumerate(list(bad) + [False]):
        if b and start is None:
            start = i
        elif not b and start is not None:
            lo, hi = edges[start], edges[i]
            if log and lo <= 0:
                lo = x[x > 0].min() if (x > 0).any() else hi
            ax.axvspan(lo, hi, facecolor="0.9", edgecolor="0.7", hatch="///", lw=0, zorder=0)
            start = None
    return True


def invalid_handle():
    """The legend entry of :func:`shade_steps`'s bands."""
    from matplotlib.patches import Patch

    return Patch(facecolor="0.9", edgecolor="0.7", hatch="///", label=INVALID_LABEL)
