"""Command-line option values → typed values, one parser per kind of option (shared by cli.py and by the
jobs, which also accept these strings from Python). Configuration fields are parsed in telecli.config;
``--max-memory auto`` in telecli.runtime (it depends on the device).

>>> parse_steps("0,25, 4"), parse_shard("1/4"), parse_points("all", "--points")
([0, 4, 25], (1, 4), 'all')
>>> parse_alpha("0:1:5").tolist(), parse_bytes("1.5G", "--max-memory")
([0.0, 0.25, 0.5, 0.75, 1.0], 1610612736)
"""

from __future__ import annotations

import math
import re

import numpy as np

from telecli.errors import TelecliError


def parse_steps(spec: str | list[int] | tuple[int, ...]) -> list[int]:
    """'0,4,25' (or a list) → sorted unique steps."""
    if isinstance(spec, str):
        parts = [p for p in re.split(r"[,\s]+", spec.strip()) if p]
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise TelecliError(f"--at expects comma-separated steps like 0,4,25, got '{spec}'") from None
    else:
        values = [int(v) for v in spec]
    if not values:
        raise TelecliError("--at needs at least one spawn step")
    bad = [v for v in values if v < 0]
    if bad:
        raise TelecliError(f"spawn steps must be ≥ 0, got {bad[0]}")
    return sorted(set(values))


def parse_alpha(spec: str) -> np.ndarray:
    """'min:max:n' → n evenly spaced values on [min, max] (a bare 'n' means 0:1:n)."""
    parts = str(spec).strip().split(":")
    try:
        if len(parts) == 1:
            lo, hi, n = 0.0, 1.0, int(parts[0])
        elif len(parts) == 3:
            lo, hi, n = float(parts[0]), float(parts[1]), int(parts[2])
        else:
            raise ValueError
    except ValueError:
        raise TelecliError(f"--alpha expects min:max:n (e.g. 0:1:30) or n, got '{spec}'") from None
    if n < 2 or not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        raise TelecliError(f"--alpha needs n ≥ 2 and min < max, got '{spec}'")
    return np.linspace(lo, hi, n)


def parse_points(spec: str | int | None, option: str) -> str | int:
    """'all' or a positive count."""
    if spec in (None, "all"):
        return "all"
    try:
        n = int(spec)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise TelecliError(f"{option} expects a positive number or 'all', got '{spec}'")
    return n


def parse_count(value, option: str, low: int = 1) -> int:
    """An integer option that must be ≥ ``low`` (a step stride, a seed, a count of pairs or points).

    >>> parse_count(3, "--every")
    3
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise TelecliError(f"{option} must be an integer ≥ {low}, got {value!r}")
    return value


def parse_shard(spec: str | None) -> tuple[int, int]:
    if not spec:
        return 0, 1
    m = re.fullmatch(r"(\d+)/(\d+)", spec.strip())
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise TelecliError(f"--shard expects i/N with 0 ≤ i < N, got '{spec}'")
    return int(m.group(1)), int(m.group(2))


def parse_bytes(spec: str, option: str) -> int:
    """'512M', '4G', '1.5GiB', '1000000' → bytes (binary units)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?", str(spec).strip(), re.I)
    if not m or float(m.group(1)) <= 0:
        raise TelecliError(f"{option} expects e.g. 512M or 4G, got '{spec}'")
    scale = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[m.group(2).upper()]
    return int(float(m.group(1)) * scale)
