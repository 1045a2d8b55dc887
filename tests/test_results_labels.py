"""Results files people can open: every dataset has named axes (HDF5 dimension scales, netCDF-4 style),
coordinates, units and a description; xarray + h5netcdf read each group with them; the dims agree with
docs/format.md, docs/lmc.md and docs/boost.md; telecli.open_results gives labelled arrays."""

from __future__ import annotations

import fnmatch
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

import telecli
from helpers import cli, write_cfg
from telecli import config
from telecli.errors import TelecliError
from telecli.store import labels

xr = pytest.importorskip("xarray")
pytest.importorskip("h5netcdf")
pd = pytest.importorskip("pandas")

DOCS = Path(__file__).resolve().parent.parent / "docs"
BOOST = {"data": "diabetes", "nn.steps": 20, "nn.lr": 0.01, "kernel_every": 5, "gbt.trees": 5, "gbt.depth": 2,
         "gbt.lr": 0.1, "seed": 0, "device": "cpu", "search": 2, "mixture_size": 20}


def ok(*args) -> str:
    code, out, err = cli(*args)
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One of each results file from the tiny run of tests/helpers.py (and boost on diabetes), ≈ 10 s."""
    from telecli.jobs import boost as pb

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("labels")
    run = root / "run"
    ok("record", write_cfg(root), "--out", run, "--quiet")
    f = SimpleNamespace(run=run)
    f.lens = root / "lens.h5"
    ok("telescope", run, "--effective-params", "--out", f.lens, "--quiet")
    f.probes = root / "probes.h5"
    ok("telescope", run, "--effective-params", "--probes", "4", "--out", f.probes, "--quiet")
    for i in range(2):
        ok("telescope", run, "--shard", f"{i}/2", "--out", root / f"p{i}.h5", "--every", "5", "--quiet")
        ok("telescope", run, "--effective-params", "--shard", f"{i}/2", "--out", root / f"c{i}.h5", "--quiet")
    f.merged, f.merged_columns = root / "merged.h5", root / "merged-columns.h5"
    ok("merge", root / "p0.h5", root / "p1.h5", "--out", f.merged)
    ok("merge", root / "c0.h5", root / "c1.h5", "--out", f.merged_columns)
    ok("lmc", "spawn", run, "--at", "0,10", "--pairs", "2", "--out", root / "spawn", "--quiet")
    ok("lmc", "interpolate", root / "spawn", "--alpha", "0:1:5", "--delta", "5", "--quiet")
    f.lmc = root / "spawn" / "lmc.h5"
    ok("lmc", "gradients", run, "--at", "0,10", "--delta", "5", "--points", "5", "--quiet")
    f.gradients = run / "lmc-gradients.h5"
    f.boost = pb.run_boost(config.load_boost(None, BOOST), root / "boost", progress=False)
    torch.set_num_threads(n)
    return f


KINDS = {"lens": "telescope", "probes": "telescope", "merged": "telescope", "merged_columns": "telescope",
         "lmc": "lmc", "gradients": "lmc", "boost": "boost"}


def groups(path: Path) -> list[str]:
    out = ["/"]
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.append(n) if isinstance(o, h5py.Group) else None)
    return out


def dataset_paths(path: Path) -> list[str]:
    out = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.append(n) if isinstance(o, h5py.Dataset) else None)
    return out


def is_coordinate(f: h5py.File, name: str, kind: labels.Kind) -> bool:
    return labels._is_scale(f[name]) and name.rsplit("/", 1)[-1] in kind.coords and name not in kind.variables


def open_group(path: Path, group: str):
    return xr.open_dataset(path, group=group, engine="h5netcdf", phony_dims="sort")


@pytest.mark.parametrize("which", sorted(KINDS))
def test_every_group_opens_with_named_dims_units_and_descriptions(files, which):
    path = getattr(files, which)
    with h5py.File(path, "r+") as f:  # labelling it again finds nothing unlabelled
        assert labels.label(f) == []
    for g in groups(path):
        ds = open_group(path, g)
        assert not [d for d in ds.dims if str(d).startswith("phony_dim")], (which, g, dict(ds.sizes))
        for name, v in ds.variables.items():
            assert v.attrs.get("units") and v.attrs.get("description"), (which, g, name)


def test_telescope_groups_have_step_point_output(files):
    with h5py.File(files.lens, "r") as f:
        steps, index = f["steps"][...], f["test/index"][...]
    test = open_group(files.lens, "test")
    assert test["actual"].dims == ("step", "point", "output")
    assert test["smoother_sq_norm"].dims == ("step", "point")
    assert test["effective_parameters"].dims == ("step",)
    assert np.array_equal(test["step"].values, steps) and np.array_equal(test["point"].values, index)
    assert np.array_equal(test["index"].values, index)  # the dataset itself is unchanged
    assert test["kernel_norm_max_every_step"].dims == ("every_step",)
    assert test["every_step"].values.tolist() == list(range(int(steps[0]) + 1, int(steps[-1]) + 1))
    root = open_group(files.lens, "/")
    assert root["steps"].dims == ("step",) and np.array_equal(root["step"].values, steps)
    assert open_group(files.lens, "train/components")["gradient"].dims == ("step", "point", "output")
    assert open_group(files.lens, "validity/test")["ok"].dims == ("step",)
    probes = open_group(files.probes, "train")
    assert probes["probe_effective_parameters"].dims == ("step", "probe") and probes.sizes["probe"] == 4
    merged = open_group(files.merged, "test")
    assert merged["actual"].dims == ("step", "point", "output") and merged.sizes["step"] == 5
    assert np.array_equal(merged["point"].values, index)
    cols = open_group(files.merged_columns, "train")
    np.testing.assert_allclose(cols["effective_parameters"].values,  # column shards: equal to rounding
                               open_group(files.lens, "train")["effective_parameters"].values, rtol=0, atol=1e-12)


def test_lmc_and_boost_groups(files):
    with h5py.File(files.lmc, "r") as f:
        alpha, t, layers = f["alpha"][...], f["spawn_steps"][...], f["gradients/layers"].asstr()[...]
    curves = open_group(files.lmc, "curves")
    assert curves["weight_acc"].dims == ("spawn_step", "pair", "alpha")
    assert np.array_equal(curves["alpha"].values, alpha) and np.array_equal(curves["spawn_step"].values, t)
    children = open_group(files.lmc, "children")
    assert children["dir"].dims == ("spawn_step", "pair", "side") and children["side"].values.tolist() == ["a", "b"]
    grads = open_group(files.lmc, "gradients")
    assert grads["change"].dims == ("spawn_step", "layer") and grads["layer"].values.tolist() == list(layers)
    assert open_group(files.lmc, "summary")["acc_barrier_mean"].dims == ("spawn_step",)
    assert open_group(files.gradients, "gradients")["index"].dims == ("point",)
    with h5py.File(files.boost, "r") as f:
        props = f["metrics/proportions"][...]
    data = open_group(files.boost, "data")
    assert data["x_train"].dims == ("train_point", "feature") and data["y_mean"].dims == ()
    assert data["feature"].values.tolist()[:3] == ["age", "sex", "bmi"]
    gbt = open_group(files.boost, "gbt")
    assert gbt["S_train"].dims == ("train_point", "train_target") and gbt["staged_test"].dims == ("stage", "test_point")
    assert gbt["tree"].values[0] == 1 and gbt["stage"].values[0] == 0
    assert np.array_equal(open_group(files.boost, "metrics")["proportion"].values, props)
    assert open_group(files.boost, "nn")["kernel_norm_max_test"].dims == ("proportion", "kernel_step")
    assert open_group(files.boost, "search")["gbt_val_mse"].dims == ("draw",)


# ---------------------------------------------------------------------------------------- the docs agree

DOC_OF = {"telescope": "format.md", "lmc": "lmc.md", "boost": "boost.md"}


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def _expand(name: str) -> list[str]:
    name = name.replace("{split}", "{train,test}").replace("{metric}", "*")
    m = re.search(r"\{([^}]*)\}", name)
    if not m:
        return [name]
    return [x for alt in m.group(1).split(",") for x in _expand(name[: m.start()] + alt + name[m.end():])]


def documented(doc: str) -> tuple[dict[str, tuple[str, ...]], set[str]]:
    """name pattern → dims from the doc's dataset tables (those with a dims column), and its coordinates."""
    dims: dict[str, tuple[str, ...]] = {}
    coords: set[str] = set()
    header = None
    for line in (DOCS / doc).read_text().splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = _cells(line)
        if header is None:
            header = cells
            continue
        if set("".join(cells)) <= set("-: "):
            continue
        if header[0] == "coordinate":
            coords.update(x for c in re.findall(r"`([^`]+)`", cells[0]) for x in [c])
        elif header[0] == "dataset" and "dims" in header:
            names, group = [], ""
            for tok in re.findall(r"`([^`]+)`", cells[0]):
                tok = tok.lstrip("/")
                if "/" not in tok and group:
                    tok = f"{group}/{tok}"
                group = tok.rsplit("/", 1)[0] if "/" in tok else ""
                names.append(tok)
            tuples = [tuple(d.strip() for d in t.split(",") if d.strip())
                      for t in re.findall(r"\(([^)]*)\)", cells[header.index("dims")])]
            assert len(tuples) in (1, len(names)), line
            for i, n in enumerate(names):
                for name in _expand(n):
                    dims[name] = tuples[0] if len(tuples) == 1 else tuples[i]
    return dims, coords


def _lookup(table: dict[str, tuple[str, ...]], name: str):
    if name in table:
        return table[name]
    return next((d for p, d in table.items() if "*" in p and fnmatch.fnmatchcase(name, p)), None)


@pytest.mark.parametrize("which", sorted(KINDS))
def test_every_dataset_is_documented_with_its_dims(files, which):
    kind = labels.KINDS[KINDS[which]]
    table, coords = documented(DOC_OF[kind.name])
    path = getattr(files, which)
    with h5py.File(path, "r") as f:
        for name in dataset_paths(path):
            if is_coordinate(f, name, kind):
                assert name.rsplit("/", 1)[-1] in coords, f"coordinate {name} of {path.name} not in {DOC_OF[kind.name]}"
                continue
            want = _lookup(table, name)
            assert want is not None, f"{name} of {path.name} is not documented in docs/{DOC_OF[kind.name]}"
            got = tuple(f[name].dims[i][0].name.rsplit("/", 1)[-1] for i in range(f[name].ndim)) \
                if not labels._is_scale(f[name]) else (name.rsplit("/", 1)[-1],)
            assert got == want, (name, got, want)


# ------------------------------------------------------------------------------------- telecli.open_results

def test_open_results_gives_labelled_arrays(files):
    with telecli.open_results(files.lens) as r:
        p = r["test/effective_parameters"]
        with h5py.File(files.lens, "r") as f:
            steps, raw = f["steps"][...], f["test/effective_parameters"][...]
        assert p.dims == ("step",) and np.array_equal(p.coords["step"], steps) and np.array_equal(p.values, raw)
        assert p.units == "1" and "effective parameters" in p.description
        frame = p.to_frame()
        assert list(frame.columns) == ["step", "effective_parameters"] and len(frame) == len(steps)
        a = r["test/actual"]
        tidy = a.to_frame()
        assert list(tidy.columns) == ["step", "point", "output", "actual"] and len(tidy) == a.values.size
        row = tidy.iloc[a.shape[1] * a.shape[2] + 1]  # step row 1, point 1, output 0 (k = 1)
        assert row["step"] == steps[1] and row["point"] == a.coords["point"][1] and row["actual"] == a.values[1, 1, 0]
        da = a.to_xarray()
        assert da.dims == ("step", "point", "output") and da.attrs["units"] == "1"
        assert da.equals(r.to_xarray("test")["actual"].load())
        names = r.names()
        assert "steps" in names and "test/actual" in names and "test/step" not in names and "step" not in names
        assert r.attrs["effective_params"] is True and isinstance(r.attrs["optimizer"], dict)
        with pytest.raises(KeyError, match="not a dataset"):
            r["test/nothing"]
    with telecli.open_results(files.lmc) as r:  # /summary uses the root's coordinates
        s = r["summary/acc_barrier_mean"]
        assert s.dims == ("spawn_step",) and s.coords["spawn_step"].tolist() == [0, 10]
        assert r["gradients/layers"].values.dtype == object


def test_open_results_labels_a_file_written_before_the_labels(files, tmp_path):
    old = tmp_path / "old.h5"
    shutil.copy(files.lens, old)
    with h5py.File(old, "r+") as f:
        labels.unlabel(f)
        assert "test/step" not in f and "DIMENSION_LIST" not in f["test/actual"].attrs
    with telecli.open_results(old) as r, telecli.open_results(files.lens) as new:
        for name in ("test/actual", "train/smoother_sq_norm", "steps"):
            a, b = r[name], new[name]
            assert a.dims == b.dims and all(np.array_equal(a.coords[d], b.coords[d]) for d in a.dims), name


def test_missing_pandas_is_one_line_naming_the_extra(files, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas → ImportError
    with telecli.open_results(files.lens) as r:
        with pytest.raises(TelecliError, match=re.escape("pip install telecli[results]")):
            r["steps"].to_frame()
