"""Reading a figure's cells: group them by their tags, stack their datasets over seeds, open them as
seed groups for the figure modules (telecli.plots.seeds). Each results file is opened once per call.

>>> from telecli.reproduce.cells import Cell
>>> cells = [Cell("approx-sgd", (), s, tags={"setting": "SGD"}) for s in range(2)]
>>> [(k, len(v)) for k, v in by(cells, "setting").items()]
[(('SGD',), 2)]
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import numpy as np

from telecli.reproduce.cells import Cell


def by(cells: list[Cell], *keys: str) -> dict[tuple, list[Cell]]:
    """Cells grouped by the values of their ``keys`` tags, in the order the groups first appear."""
    groups: dict[tuple, list[Cell]] = {}
    for c in cells:
        groups.setdefault(tuple(c.tags[k] for k in keys), []).append(c)
    return groups


def stack(cells: list[Cell], out: Path, *names: str) -> dict[str, np.ndarray]:
    """Each dataset of ``names`` from every cell's results file, stacked over the cells: (seeds, …);
    and ``attrs``: the first file's root attributes."""
    from telecli.store.results import open_results

    rows: dict[str, list[np.ndarray]] = {n: [] for n in names}
    attrs: dict = {}
    for i, c in enumerate(cells):
        with open_results(c.results(out)) as f:
            if i == 0:
                attrs = dict(f.attrs)
            for n in names:
                rows[n].append(np.asarray(f[n][...], dtype=float))
    return {**{n: np.stack(v) for n, v in rows.items()}, "attrs": attrs}


@contextlib.contextmanager
def seed_groups(groups: dict, out: Path) -> Iterator[dict]:
    """{key: SeedGroup of the key's cells' results files}, closed on exit."""
    from telecli.plots.seeds import SeedGroup
    from telecli.store.results import open_results

    opened = {}
    try:
        for key, members in groups.items():
            opened[key] = SeedGroup([])
            for c in members:
                opened[key].members.append(open_results(c.results(out)))
        yield opened
    finally:
        for g in opened.values():
            for f in g.members:
                f.close()


__all__ = ["by", "stack", "seed_groups"]
