"""Figures of the paper (method.md §6) from results files: ``telecli plot FILE... --figure NAME``.

The registry
------------
``FIGURES`` maps a figure name to a one-line description (``telecli plot --help`` lists them); the
figure is drawn by ``draw`` of the module of that name (``-`` read as ``_``), one module per figure
family, imported only when drawn::

    def draw(files: list[h5py.File], out: Path, **opts) -> None

``draw`` builds the figure (``style.new_figure`` inside ``style.house_style()``) and writes it to
``out`` with ``style.save`` (the format is given by the extension). ``opts`` always holds
``labels`` (one legend label per file), ``names`` (the files' paths, for error messages), ``split``
("train" | "test") and ``x_key`` (or None); a draw function takes what it needs and ignores the rest
with ``**_``.

Declare the datasets a figure reads with ``@style.requires("steps", "{split}/x", hint="telecli
CMD RUN")``: ``plot`` checks them in every file before drawing and fails with one line naming the
file, the missing dataset and the command that writes it.

To add a figure: write ``telecli/plots/NAME.py`` with such a ``draw`` and add one line to FIGURES (and
a case to tests/test_plots.py, which renders every figure of the registry).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Callable, Sequence

from telecli.errors import TelecliError
from telecli.store.atomic import make_dirs

FIGURES: dict[str, str] = {
    "approximation": "Figs. 2, 7: |f − f̃| and |f − f^lin| per step",
    "accuracy": "Fig. 8: accuracy of f̃ and f^lin against the network",
    "complexity": "Figs. 4, 11–13: error and p^train / p^test per step",
    "double-descent": "Figs. 3, 9, 10: final loss and p against width",
    "components": "update components of Δf̃_t per step",
    "tabular": "Figs. 5, 14: NN vs GBT, relative MSE and kernel-norm ratio against p",
    "lmc": "Fig. 6: accuracy barrier and gradient change by layer against the spawn step",
}


def draw_function(figure: str) -> Callable[..., None]:
    """The ``draw`` of a registered figure (its module is imported here, not before)."""
    if figure not in FIGURES:
        raise TelecliError(f"unknown figure '{figure}'; available: {', '.join(FIGURES)}")
    return importlib.import_module(f"telecli.plots.{figure.replace('-', '_')}").draw

SPLITS = ("train", "test")


def default_out(first: Path, figure: str) -> Path:
    """``<first file stem>-<figure>.png`` next to the first file."""
    return first.with_name(f"{first.stem}-{figure}.png")


def plot(paths: Sequence[str | Path], figure: str, out: str | Path | None = None,
         labels: Sequence[str] | None = None, split: str = "test", x_key: str | None = None) -> Path:
    """Draw ``figure`` from the results files ``paths`` into ``out`` (PNG 300 dpi, PDF or SVG by
    extension); returns the path written. The file appears complete or not at all (temporary file in
    the same directory, then renamed)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise TelecliError("give at least one results file")
    from telecli.plots import style

    draw = draw_function(figure)
    if split not in SPLITS:
        raise TelecliError(f"--split must be train or test, got '{split}'")
    out = Path(out) if out is not None else default_out(paths[0], figure)
    if out.suffix.lower() not in style.FORMATS:
        raise TelecliError(f"cannot tell the format of {out}: use an extension among "
                           f"{', '.join(style.FORMATS)}")
    if labels and len(labels) != len(paths):
        raise TelecliError(f"{len(labels)} --label given for {len(paths)} files; give one per file, in order")

    from telecli.store.results import open_results

    files = []
    try:
        for p in paths:
            files.append(open_results(p))
        for p, f in zip(paths, files):
            for pattern, hint in getattr(draw, "requires", ()):
                name = pattern.format(split=split)
                if name not in f:
                    raise TelecliError(f"{p} has no dataset '{name}', which --figure {figure} needs; "
                                       f"write it with: {hint}")
        names = [str(p) for p in paths]
        resolved = list(labels) if labels else auto_labels(files, paths)
        drawn = files
        if getattr(draw, "seeds", False):  # runs that differ only in the seed: one mean ± s.e. curve
            from telecli.plots.seeds import group_seeds

            drawn, resolved = group_seeds(files, resolved)
            names = [str(paths[files.index(g.members[0])]) for g in drawn]
        make_dirs(out.parent)
        tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp{out.suffix}")  # same directory: atomic rename
        try:
            draw(drawn, tmp, labels=resolved, names=names, split=split, x_key=x_key)
            os.replace(tmp, out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return out
    finally:
        for f in files:
            f.close()


def auto_labels(files, paths: list[Path]) -> list[str]:
    """A label per file: the run configuration ('SGD lr=0.05'); where that does not tell the files
    apart, the configuration entries that differ ('width=100, seed=1'); else the file's name."""
    from telecli.plots import style

    labels = [style.run_label(f) for f in files]
    if len(files) == 1:
        return [labels[0] or file_name(paths[0], paths)]
    if all(labels) and len(set(labels)) == len(labels):
        return labels  # type: ignore[return-value]
    flat = [style.flat_config(f) for f in files]
    if all(flat):
        keys = [k for k in flat[0] if not k.startswith(("store.", "device"))
                and len({repr(c.get(k)) for c in flat}) > 1]
        if keys:
            keys = keys[:3]
            cand = [", ".join(f"{k.split('.')[-1]}={_fmt(c.get(k))}" for k in keys) for c in flat]
            if len(set(cand)) == len(cand):
                return cand
    return [file_name(p, paths) for p in paths]


def file_name(p: Path, paths: list[Path]) -> str:
    """The file's stem, or parent/stem when stems repeat (RUN/lens.h5 of several runs)."""
    stems = [q.stem for q in paths]
    if stems.count(p.stem) > 1:
        return f"{p.parent.name}/{p.stem}"
    return p.stem


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


__all__ = ["FIGURES", "draw_function", "plot", "default_out"]
