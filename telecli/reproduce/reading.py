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


CHECKS = ("telescoping", "smoother", "ok")  # the per-split flags of /validity (docs/format.md §2)


def validity(cells: list[Cell], out: Path) -> dict:
    """Where the cells' results files flag their steps (/validity/{split}/{check} false): per setting (the
    cells' tags; seeds together), check and split, the fraction of flagged (seed, step) pairs and the first
    flagged step over the seeds (None when none is); and ``flagged_fraction``, the share of (cell, split,
    step) where ``ok`` is false (``telescoping`` for a file without p). For claims.json."""
    from telecli.store.results import SPLITS, open_results

    counts: dict = {}
    thresholds: dict = {}
    flagged = total = 0
    for c in cells:
        key = ", ".join(f"{k}={v}" for k, v in c.tags.items()) or c.name
        with open_results(c.results(out)) as f:
            if "steps" not in f:  # not a telescope results file (boost.h5, lmc.h5): no per-step validity
                continue
            steps = np.asarray(f["steps"][...])
            thresholds = {k: float(f.attrs[k]) for k in ("telescoping_tolerance", "smoother_tolerance")
                          if k in f.attrs} or thresholds
            for s in SPLITS:
                for check in CHECKS:
                    if f"validity/{s}/{check}" not in f:
                        continue
                    bad = ~np.asarray(f[f"validity/{s}/{check}"][...], dtype=bool)
                    n, first, seen = counts.setdefault(key, {}).setdefault(s, {}).get(check, (0, None, 0))
                    here = float(steps[np.argmax(bad)]) if bad.any() else None
                    first = here if first is None else (first if here is None else min(first, here))
                    counts[key][s][check] = (n + int(bad.sum()), first, seen + len(bad))
                main = next((f"validity/{s}/{k}" for k in ("ok", "telescoping") if f"validity/{s}/{k}" in f), None)
                if main is not None:
                    flagged += int((~np.asarray(f[main][...], dtype=bool)).sum())
                    total += len(steps)
    settings = {key: {s: {check: {"fraction": n / seen if seen else None, "first_step": first}
                          for check, (n, first, seen) in checks.items()} for s, checks in splits.items()}
                for key, splits in counts.items()}
    return {"thresholds_of_target_spread": thresholds, "flagged_fraction": flagged / total if total else None,
            "settings": settings}


__all__ = ["by", "stack", "seed_groups", "validity"]
