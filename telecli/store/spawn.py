"""The spawn directory of ``telecli lmc spawn`` (docs/lmc.md): its index and the children's shared data.

    SPAWN/spawn.json        index (atomic): format, parent, settings, every planned child
    SPAWN/t<T>-p<K>-<a|b>/  one ordinary run directory per child

This module does no maths.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from telecli.errors import TelecliError
from telecli.store.atomic import atomic_write_json
from telecli.store.trajectory import DATA, read_manifest

INDEX = "spawn.json"
INDEX_FORMAT = "telecli-lmc-spawn"


def load_index(out: Path) -> dict | None:
    path = out / INDEX
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TelecliError(f"{path} is not valid JSON ({e}); remove the spawn directory or pick another --out") from None
    if index.get("format") != INDEX_FORMAT:
        raise TelecliError(f"{path} is not a telecli spawn index")
    return index


def write_index(out: Path, index: dict) -> None:
    atomic_write_json(Path(out) / INDEX, index)


def share_data(parent: Path, child: Path) -> None:
    """Replace a complete child's data.safetensors by a hard link to the parent's when both have the
    same sha256 (the children of a CIFAR-10 run would otherwise hold a copy each); left as it is where
    links are not possible (another file system)."""
    try:
        pm, cm = read_manifest(parent), read_manifest(child)
        src, dst = parent / DATA, child / DATA
        sha = pm["data"].get("sha256")
        if cm.get("status") != "complete" or not sha or sha != cm["data"].get("sha256") or not src.is_file():
            return
        if dst.is_file() and os.path.samefile(src, dst):
            return
    except (OSError, TelecliError):
        return
    tmp = child / f".{DATA}.link.tmp"
    try:
        tmp.unlink(missing_ok=True)
        os.link(src, tmp)
        os.replace(tmp, dst)
    except OSError:
        tmp.unlink(missing_ok=True)
