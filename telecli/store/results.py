"""Results files (HDF5) of ``telescope``: layout in docs/format.md. This module does no maths.

A file is written as ``NAME.partial`` and renamed to ``NAME`` only when complete, so a killed job never
leaves a file that looks finished; the partial file records the last completed step and the running
state, and a restarted job with the same options continues from there.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np

from telecli import __version__
from telecli.errors import TelecliError
from telecli.store.atomic import make_dirs
from telecli.store.labels import label  # named axes of every dataset (docs/format.md "dims")

SPLITS = ("train", "test")


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def check_writable(path: Path, overwrite: bool) -> None:
    """Refuse to replace a file without ``overwrite``, or a folder ever; create the file's folder."""
    if path.is_dir():
        raise TelecliError(f"{path} is a folder; give a file name for the results (e.g. {path / 'lens.h5'})")
    if path.exists() and not overwrite:
        raise TelecliError(f"{path} already exists; pass --overwrite to replace it")
    make_dirs(path.parent)


def provenance(extra: dict[str, Any]) -> dict[str, Any]:
    attrs = {"telecli_version": __version__, "command": " ".join(sys.argv),
             "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    attrs.update(extra)
    return attrs


class ResultsWriter:
    """Create (or reopen, to resume) ``path.partial`` with fixed-shape datasets filled with NaN.

    ``datasets`` maps name → (shape, dtype); ``key`` identifies the job (run id and options): a partial
    file with another key is started afresh.
    """

    def __init__(self, path: str | Path, key: str, attrs: dict[str, Any],
                 datasets: dict[str, tuple[tuple[int, ...], Any]], fixed: dict[str, np.ndarray], overwrite: bool):
        self.path = Path(path)
        check_writable(self.path, overwrite)
        self.partial = partial_path(self.path)
        self.resumed_from: int | None = None
        if self.partial.exists():
            try:
                f = h5py.File(self.partial, "r+")
                if f.attrs.get("job_key") == key and "completed_step" in f.attrs:
                    self.f = f
                    self.resumed_from = int(f.attrs["completed_step"])
                    return
                f.close()
            except OSError:  # a partial file damaged by the kill: start again
                pass
            self.partial.unlink()
        self.f = h5py.File(self.partial, "w")
        self.f.attrs["job_key"] = key
        for k, v in provenance(attrs).items():
            self.f.attrs[k] = _attr(v)
        for name, (shape, dtype) in datasets.items():
            chunks = (1,) + tuple(shape[1:]) if len(shape) > 1 and shape[0] > 1 and all(shape) else None
            self.f.create_dataset(name, shape=shape, dtype=dtype, fillvalue=np.nan, chunks=chunks)
        for name, arr in fixed.items():
            self.f.create_dataset(name, data=arr)
        self.f.flush()

    def __getitem__(self, name: str) -> h5py.Dataset:
        return self.f[name]

    def checkpoint(self, step: int, state: dict[str, np.ndarray]) -> None:
        """Record that every row up to ``step`` is written, with the running state to resume from."""
        for name, arr in state.items():
            if name in self.f:
                self.f[name][...] = arr
            else:
                self.f.create_dataset(name, data=arr)
        self.f.flush()
        self.f.attrs["completed_step"] = step
        self.f.flush()

    def state(self, name: str) -> np.ndarray:
        return self.f[name][...]

    def finish(self, summarise: Callable[[h5py.File], None] | None = None) -> Path:
        if summarise is not None:
            summarise(self.f)
        for name in [n for n in self.f if n.startswith("_")]:
            del self.f[name]
        label(self.f)
        self.f.attrs["complete"] = True
        self.f.close()
        os.replace(self.partial, self.path)
        return self.path

    def close(self) -> None:
        try:
            self.f.close()
        except Exception:
            pass


def _attr(v: Any) -> Any:
    if isinstance(v, (dict, list, tuple)) or v is None:
        return json.dumps(v)
    return v


def open_results(path: str | Path) -> h5py.File:
    path = Path(path)
    if not path.is_file():
        if partial_path(path).is_file():
            raise TelecliError(f"{path} is not finished (only {partial_path(path).name} exists); rerun the "
                               f"command to resume it")
        raise TelecliError(f"results file not found: {path}")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise TelecliError(f"{path} is not a readable HDF5 file ({e})") from None


def write_results(path: Path, tree: dict[str, Any], attrs: dict[str, Any]) -> Path:
    """Write ``tree`` (nested dicts of arrays) to ``path`` atomically: a temporary file in the same folder,
    renamed when complete."""
    make_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            for k, v in provenance(attrs).items():
                f.attrs[k] = json.dumps(v) if isinstance(v, (dict, list, tuple)) or v is None else v
            _write_tree(f, tree)
            label(f)
            f.attrs["complete"] = True
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _write_tree(group, tree: dict[str, Any]) -> None:
    for k, v in tree.items():
        if isinstance(v, dict):
            _write_tree(group.create_group(k), v)
        elif v is not None:
            arr = np.asarray(v)
            group.create_dataset(k, data=arr)
