"""``telecli reproduce FIGURE``: a figure of the paper from one command — its grid of settings × seeds
(method.md §2–5), each cell recorded and analysed once (telecli.reproduce.cells), the figure drawn in
the paper's layout and each of the paper's claims for it (method.md §6) tested on the numbers, into
DIR/FIGURE.png and DIR/claims.json (figure → its claims: the claim, the numbers, true or false).

A figure is a :class:`Figure`: how to expand its grid at a scale, how to draw it, which claims to test.
The registry is one dict and a get, as open_lth's.

>>> {"fig2", "fig4", "fig7", "fig8", "fig11", "fig12", "fig13"} <= set(FIGURES), get("fig7").title
(True, 'Approximation quality in all five settings (SGD, AdamW, momentum, weight decay, sigmoid)')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from telecli.errors import TelecliError
from telecli.reproduce.cells import Cell

SCALES = ("small", "paper")


@dataclass(frozen=True)
class Figure:
    name: str
    title: str
    grid: Callable[[str, int], list[Cell]]  # (scale, seeds) → the cells
    draw: Callable[[list[Cell], Path, Path], None]  # (cells, results DIR, figure file)
    claims: Callable[[list[Cell], Path], list[dict]]  # (cells, DIR) → [{claim, numbers, holds}]
    default_seeds: int = 2  # at small scale (the paper's count at paper scale is in the grid)


FAMILIES = ("approximation", "double_descent", "grokking", "tabular", "modes")  # one module per family


def _figures() -> dict[str, Figure]:
    import importlib

    figures = [f for m in FAMILIES for f in importlib.import_module(f"telecli.reproduce.{m}").FIGURES]
    return {f.name: f for f in figures}


FIGURES = _figures()


def get(name: str) -> Figure:
    try:
        return FIGURES[name]
    except KeyError:
        raise TelecliError(f"unknown figure '{name}' (known: {', '.join(sorted(FIGURES))}, all)") from None


__all__ = ["Figure", "FIGURES", "SCALES", "get"]
