"""Read a results file (lens.h5, lmc.h5, lmc-gradients.h5, boost.h5) as labelled arrays.

Every dataset comes back with its named axes, their coordinates (the step numbers, point indices, α
grid, layer names, …), ``units`` and a one-line ``description`` (docs/format.md), and turns into a tidy
pandas DataFrame or an xarray DataArray (``pip install telecli[results]``). Files written before the
axes were stored in them are labelled from the same tables (telecli/store/labels.py).

>>> import tempfile, numpy as np
>>> from pathlib import Path
>>> from telecli.store.results import write_results
>>> path = write_results(Path(tempfile.mkdtemp()) / "lens.h5", {"steps": np.array([0, 5, 10]),
...     "test": {"index": np.array([4, 7]), "effective_parameters": np.array([2.0, 5.5, 6.0])}}, {})
>>> r = open_results(path)
>>> p = r["test/effective_parameters"]
>>> p.dims, p.coords["step"].tolist(), p.units
(('step',), [0, 5, 10], '1')
>>> p.to_frame()
   step  effective_parameters
0     0                   2.0
1     5                   5.5
2    10                   6.0
>>> r.names()
['steps', 'test/effective_parameters', 'test/index']
>>> r.close()
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from telecli.errors import TelecliError
from telecli.store import labels as _labels

INSTALL = "pip install telecli[results]"


def _need(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise TelecliError(f"this needs {module}, which is not installed; run `{INSTALL}`") from None


@dataclass
class LabelledArray:
    """One dataset: ``values`` with named ``dims``, a ``coords`` array per dim, ``units``, ``description``."""
    name: str
    values: np.ndarray
    dims: tuple[str, ...]
    coords: dict[str, np.ndarray] = field(default_factory=dict)
    units: str = "1"
    description: str = ""

    @property
    def shape(self) -> tuple[int, ...]:
        return self.values.shape

    def __array__(self, dtype=None, copy=None):
        return self.values if dtype is None else self.values.astype(dtype)

    def __repr__(self) -> str:
        axes = ", ".join(f"{d}: {n}" for d, n in zip(self.dims, self.values.shape))
        return f"<LabelledArray {self.name} ({axes}) {self.values.dtype}, units {self.units!r}: {self.description}>"

    def to_frame(self):
        """A tidy pandas DataFrame: one row per element, a column per dim (its coordinate), and the values
        in a column named after the dataset (its last path component)."""
        pd = _need("pandas")
        column = self.name.rsplit("/", 1)[-1]
        if not self.dims:
            return pd.DataFrame({column: [self.values[()]]})
        grids = np.meshgrid(*[self.coords[d] for d in self.dims], indexing="ij")
        data = {d: g.reshape(-1) for d, g in zip(self.dims, grids)}
        data[column] = self.values.reshape(-1)
        frame = pd.DataFrame(data)
        frame.attrs.update(units=self.units, description=self.description, name=self.name)
        return frame

    def to_xarray(self):
        """An xarray DataArray with the dims, coordinates and the attributes units and description."""
        xr = _need("xarray")
        return xr.DataArray(self.values, dims=self.dims, coords={d: self.coords[d] for d in self.dims},
                            name=self.name.rsplit("/", 1)[-1],
                            attrs={"units": self.units, "description": self.description})


class Results:
    """An open results file: ``r[name]`` → :class:`LabelledArray`, ``r.names()``, ``r.attrs``."""

    def __init__(self, path: str | Path):
        from telecli.store.results import open_results as _open

        self.path = Path(path)
        self._f = _open(self.path)
        self._kind = _labels.kind_of(self._f)
        self.attrs: dict[str, Any] = {k: _attr(v) for k, v in self._f.attrs.items()}

    def names(self) -> list[str]:
        """Every dataset, by path (the coordinates of the axes are not listed: they come with each array)."""
        out: list[str] = []

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and not _is_coordinate(obj, self._kind):
                out.append(name)

        self._f.visititems(visit)
        return sorted(out)

    def __contains__(self, name: str) -> bool:
        return name.strip("/") in self.names()

    def __iter__(self):
        return iter(self.names())

    def __getitem__(self, name: str) -> LabelledArray:
        name = name.strip("/")
        obj = self._f.get(name)
        if not isinstance(obj, h5py.Dataset):
            raise KeyError(f"{name} is not a dataset of {self.path}; its datasets: {', '.join(self.names())}")
        dims, coords = _axes(obj, self._kind)
        var = self._kind.var(name)
        return LabelledArray(name, _read(obj), dims, coords,
                             units=str(_attr(obj.attrs.get("units", var.units if var else "1"))),
                             description=str(_attr(obj.attrs.get("description", var.description if var else ""))))

    def to_xarray(self, group: str = "/"):
        """One group as an xarray Dataset (h5netcdf engine)."""
        xr = _need("xarray")
        _need("h5netcdf")
        return xr.open_dataset(self.path, group=group, engine="h5netcdf")

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "Results":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<telecli results {self.path} ({self._kind.name}): {len(self.names())} datasets>"


def open_results(path: str | Path) -> Results:
    """Open a results file of ``telecli telescope``, ``lmc`` or ``boost`` for reading labelled arrays."""
    return Results(path)


def _attr(v: Any) -> Any:
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, str) and v[:1] in "{[" or v == "null":
        try:
            return json.loads(v)
        except ValueError:
            return v
    if isinstance(v, np.generic):
        return v.item()
    return v


def _read(ds: h5py.Dataset) -> np.ndarray:
    if h5py.check_string_dtype(ds.dtype) is not None:
        return np.asarray(ds.asstr()[...], dtype=object)
    return ds[...]


def _is_coordinate(ds: h5py.Dataset, kind) -> bool:
    name = ds.name.lstrip("/")
    return (_labels._is_scale(ds) and name.rsplit("/", 1)[-1] in kind.coords and name not in kind.variables)


def _axes(ds: h5py.Dataset, kind) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    """The dims and coordinates stored with the dataset; for a file without them, from the kind's table."""
    if _labels._is_scale(ds):
        dim = ds.name.rsplit("/", 1)[-1]
        return (dim,), {dim: _read(ds)}
    if ds.ndim and all(len(ds.dims[i]) for i in range(ds.ndim)):
        dims = tuple(ds.dims[i][0].name.rsplit("/", 1)[-1] for i in range(ds.ndim))
        return dims, {d: _read(ds.dims[i][0]) for i, d in enumerate(dims)}
    var = kind.var(ds.name)
    if var is not None and len(var.dims) == ds.ndim:
        dims = var.dims
    else:
        dims = tuple(f"dim_{i}" for i in range(ds.ndim))
    coords = {}
    for i, d in enumerate(dims):
        c = kind.coords.get(d)
        coords[d] = np.asarray(c.values(ds.parent, ds.shape[i])) if c else np.arange(ds.shape[i])
        if h5py.check_string_dtype(coords[d].dtype) is not None or coords[d].dtype == object:
            coords[d] = np.array([v.decode() if isinstance(v, bytes) else v for v in coords[d]], dtype=object)
    return dims, coords


__all__ = ["LabelledArray", "Results", "open_results"]
