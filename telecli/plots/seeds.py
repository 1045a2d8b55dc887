"""Seeds aggregated: results files of runs that differ only in their training seed are drawn as one
setting, a mean line with a shaded ± standard-error band (sample s.d. / √n, lens.stats.mean_se).

A :class:`SeedGroup` stands in for an h5py.File in the figure modules: ``name in group``, ``group[name]``
and ``group.attrs`` read its first member (steps, targets, attributes), and :func:`curve` reduces each
member to a per-step curve first and then averages the curves, so a nonlinear reduction (|component|,
a log) is taken per seed, as it should be.

>>> mean, se = curve(SeedGroup([{"y": [1.0, 2.0]}, {"y": [3.0, 2.0]}]), lambda f: np.asarray(f["y"]))
>>> mean.tolist(), se.tolist()
([2.0, 2.0], [1.0, 0.0])
"""

from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np

from telecli.lens.stats import mean_se

SEED_KEYS = ("seed",)  # configuration entries that make runs of one setting differ


class SeedGroup:
    """Results files of one setting (their configurations agree except for the seed)."""

    def __init__(self, members: list[Any]):
        self.members = list(members)

    @property
    def n(self) -> int:
        return len(self.members)

    @property
    def attrs(self):
        return getattr(self.members[0], "attrs", {})

    def __contains__(self, name: str) -> bool:
        return all(name in m for m in self.members)

    def __getitem__(self, name: str):
        return self.members[0][name]


def curve(f, fn: Callable[[Any], np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """(mean, standard error) over the seeds of the per-step curve ``fn(member)``; (curve, None) for a
    single file."""
    if not isinstance(f, SeedGroup):
        return fn(f), None
    if f.n == 1:
        return fn(f.members[0]), None
    rows = np.stack([np.asarray(fn(m), dtype=float) for m in f.members])
    return mean_se(rows, axis=0)


def band(ax, x: np.ndarray, mean: np.ndarray, se: np.ndarray | None, colour, **line) -> None:
    """The mean line, and where ``se`` is given its ± s.e. band in a lighter shade of the same colour."""
    ax.plot(x, mean, color=colour, **line)
    if se is not None:
        ax.fill_between(x, mean - se, mean + se, color=colour, alpha=0.2, lw=0)


def setting_key(f) -> str | None:
    """The configuration without its seeds (canonical JSON), or None without a configuration."""
    raw = f.attrs.get("config") if hasattr(f, "attrs") else None
    if isinstance(raw, bytes):
        raw = raw.decode()
    try:
        cfg = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return None
    if not isinstance(cfg, dict):
        return None
    cfg = {k: v for k, v in cfg.items() if k not in SEED_KEYS + ("name", "device")}
    return json.dumps(cfg, sort_keys=True)


def group_seeds(files: list, labels: list[str]) -> tuple[list, list[str]]:
    """Files of one setting (same configuration but the seed, same output steps) merged into one
    :class:`SeedGroup` each, in the order their first member comes; labels gain "(n seeds)"."""
    groups: dict[Any, list[int]] = {}
    for i, f in enumerate(files):
        key = setting_key(f)
        if key is not None and "steps" in f:
            key = (key, tuple(np.asarray(f["steps"][...]).tolist()))
        groups.setdefault(key if key is not None else ("file", i), []).append(i)
    out, names = [], []
    pooled = any(len(m) > 1 for m in groups.values())
    for members in groups.values():
        out.append(SeedGroup([files[i] for i in members]))
        label = _common(labels, members) if pooled else labels[members[0]]
        names.append(label if len(members) == 1 else f"{label} ({len(members)} seeds)")
    return out, names


def _common(labels: list[str], members: list[int]) -> str:
    """The members' label with the seed entry taken out (auto labels name differing entries)."""
    first = labels[members[0]]
    parts = [p for p in first.split(", ") if not p.startswith("seed=")]
    return ", ".join(parts) if parts else first


__all__ = ["SeedGroup", "curve", "band", "group_seeds", "setting_key"]
