"""Tabular regression from a CSV or Parquet file, scikit-learn's bundled diabetes data, or a generated
heavy-tailed table (method.md §4).

``task.root`` is the file (``.csv``, ``.tsv``, ``.parquet`` or ``.pq``) and ``task.target`` the name of
the target column; every other column is a feature and must be numeric (encode categorical columns
first). ``task.root = "diabetes"`` (or ``""``) uses ``sklearn.datasets.load_diabetes(scaled=False)``:
442 real patients, 10 features, target column ``"target"``; nothing is downloaded.
``task.root = "heavy-tailed"`` (or ``"heavy-tailed:rows=R,features=D,informative=K,seed=S"``) is the
generated table of :func:`heavy_tailed`: log-normal features and a target of thresholds and interactions,
a case where gradient-boosted trees beat a network (Grinsztajn et al. 2022); target column ``"target"``.

Missing values (empty cells, NA, NaN, null, None, ?, n/a, ±inf) are not imputed: rows with any
missing value (features or target) are **dropped**, counted in ``info["n_dropped_missing"]`` and named
in a note on stderr. Without ``task.target`` a column named ``target`` is the target. The rest is split into
train/test by ``test_fraction`` (seeded by ``task.seed``), then subset to ``n_train``/``n_test``. With
``standardize`` the features *and* the target are standardised with the training split's mean and
standard deviation (``info["x_mean"]``, ``x_std``, ``y_mean``, ``y_std``; a prediction maps back as
``f · y_std + y_mean``). The paper's "standard" preprocessing (log transforms of skewed features)
is unspecified (method.md §4.2, §8.7); apply such transforms to the file beforehand.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from telecli.config import TaskConfig
from telecli.data import Task
from telecli.data.labels import split
from telecli.errors import TelecliError

BUILTIN = ("", "diabetes")
HEAVY_TAILED = "heavy-tailed"
HEAVY_TAILED_DEFAULTS = {"rows": 3000, "features": 8, "informative": 4, "seed": 0}
MISSING = {"", "na", "nan", "null", "none", "?", "n/a", "#n/a"}


def read_table(path: str, target: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Numeric features X (n, d) and target y (n,), float64, rows with missing values dropped.

    ``path`` is a .csv/.tsv/.parquet/.pq file, or "diabetes" ("" too) for scikit-learn's bundled set.
    Raises :class:`TelecliError` for a missing file or target column, or a non-numeric column.
    """
    x, y, names, _ = _read(path, target)
    return x, y, names


def load_table(spec: str, target: str) -> tuple[np.ndarray, np.ndarray, list[str], dict]:
    """X (N, d), y (N,), feature names and provenance (source, target, OpenML id/version if any) of a
    CSV/Parquet file, "diabetes" or "openml:ID|NAME" (``telecli boost DATA``)."""
    if spec.lower().startswith("openml:"):
        return fetch_openml_table(spec, target)
    x, y, names, meta = _read(spec, target)
    meta = dict(meta)
    if spec in BUILTIN:
        meta["source"] = "sklearn.datasets.load_diabetes (bundled with scikit-learn)"
    return x, y, names, meta


def heavy_tailed(rows: int = 3000, features: int = 8, informative: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """The generated heavy-tailed regression table: column name → values (``x0`` … and ``target``).

    A case where gradient-boosted trees beat a network at p = 0 for the reasons Grinsztajn et al. (2022)
    give (method.md §4): an irregular (piecewise-constant) target, uninformative features, and a target
    that is not rotation invariant. Each row i has a common factor u_i ~ N(0, 1) and each feature
    j < ``features`` a Gaussian g_ij = ρ u_i + √(1 − ρ²) z_ij (ρ = 0.6, z_ij ~ N(0, 1)) shown through
    a **log-normal** marginal, x_ij = exp(g_ij) (median 1, heavy right tail; the common factor makes
    PC1 of the standardised features, the irregularity axis of §4.2, pick out the tail rows). The
    target uses only the first ``informative`` features, through thresholds c_j ~ U[−0.5, 1] and
    weights w_j = ±U[1, 2] and v_j ~ U[0.5, 1.5] drawn from the same seed:

        y_i = Σ_{j<K} w_j 1{g_ij > c_j} + Σ_{j<K} v_j 1{g_ij > c_j} 1{g_i,(j+1 mod K) ≤ c_(j+1 mod K)} + ε_i,

    ε_i ~ N(0, 0.25²). The target is bounded and flat far out in the tail, where a ReLU network
    extrapolates linearly and the trees stay constant. Seeded: the same arguments give the same table.

    >>> t = heavy_tailed(rows=12, seed=1)
    >>> sorted(t)[:2], len(t["target"]), bool((t["x0"] > 0).all())
    (['target', 'x0'], 12, True)
    """
    if not (rows >= 10 and 1 <= informative <= features):
        raise TelecliError(f"heavy-tailed: need rows ≥ 10 and 1 ≤ informative ≤ features, got rows={rows}, "
                           f"features={features}, informative={informative}")
    rng = np.random.default_rng(seed)
    rho = 0.6
    u = rng.standard_normal((rows, 1))
    g = rho * u + np.sqrt(1 - rho**2) * rng.standard_normal((rows, features))
    c = rng.uniform(-0.5, 1.0, informative)
    w = rng.choice([-1.0, 1.0], informative) * rng.uniform(1.0, 2.0, informative)
    v = rng.uniform(0.5, 1.5, informative)
    above = g[:, :informative] > c
    y = above @ w + (above & ~np.roll(above, -1, axis=1)) @ v + 0.25 * rng.standard_normal(rows)
    cols = {f"x{j}": np.exp(g[:, j]) for j in range(features)}
    cols["target"] = y
    return cols


def heavy_tailed_settings(spec: str) -> dict[str, int] | None:
    """``"heavy-tailed[:k=v,…]"`` → its settings (defaults filled in); None for another spec."""
    head, _, rest = spec.partition(":")
    if head.strip().lower() != HEAVY_TAILED:
        return None
    out = dict(HEAVY_TAILED_DEFAULTS)
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key.strip() not in out or not value.strip().lstrip("-").isdigit():
            raise TelecliError(f"'{spec}': expected heavy-tailed:k=v,… with integer values and k in "
                               f"{', '.join(HEAVY_TAILED_DEFAULTS)}")
        out[key.strip()] = int(value)
    return out


def table_name(spec: str, meta: dict) -> str:
    """A short name of the data set for run ids and titles."""
    if meta.get("openml_name"):
        return str(meta["openml_name"])
    if spec.lower().startswith("openml:"):
        return spec.split(":", 1)[1]
    if spec in BUILTIN:
        return "diabetes"
    ht = heavy_tailed_settings(spec)
    if ht is not None:  # the non-default settings name the table: one column of the figure each
        short = {"rows": "n", "features": "d", "informative": "k", "seed": "s"}
        return "-".join([HEAVY_TAILED] + [f"{short[k]}{v}" for k, v in ht.items() if v != HEAVY_TAILED_DEFAULTS[k]])
    return Path(spec).stem


def _read(path: str, target: str):
    columns, source = _columns(path)
    if target == "" and "target" in columns:  # the built-in table's, or a column of that name
        target = "target"
    if target not in columns:
        what = "tabular needs task.target = the name of the target column" if not target \
            else f"tabular: target column '{target}' not found in {source}"
        raise TelecliError(f"{what} (available: {', '.join(columns)})")
    names = [c for c in columns if c != target]
    if not names:
        raise TelecliError(f"tabular: {source} has no feature columns besides the target '{target}'")
    y = _numeric(columns[target], target, source, "the target must be numeric")
    x = np.stack([_numeric(columns[c], c, source, "encode it as numbers first") for c in names], axis=1)
    keep = np.isfinite(x).all(axis=1) & np.isfinite(y)
    if not keep.any():
        raise TelecliError(f"tabular: every row of {source} has a missing value; fill or drop them first")
    meta = {"source": source, "target": target, "n_rows_read": int(len(y)), "n_dropped_missing": int((~keep).sum())}
    _note_dropped(source, target, keep, y)
    return x[keep], y[keep], names, meta


def _note_dropped(source: str, target: str, keep: np.ndarray, y: np.ndarray) -> None:
    """Rows with a missing value are dropped, never silently: one note on stderr says how many."""
    if not keep.all():
        import sys

        print(f"note: {source}: dropped {int((~keep).sum())} of {len(keep)} rows with a missing value "
              f"({int((~np.isfinite(y)).sum())} of them in the target '{target}')", file=sys.stderr)


def _columns(path: str) -> tuple[dict, str]:
    """Column name → raw values (list of str or numpy array), in file order."""
    if path in BUILTIN:
        from sklearn.datasets import load_diabetes

        d = load_diabetes(scaled=False)
        cols = {name: d.data[:, j].astype(np.float64) for j, name in enumerate(d.feature_names)}
        cols["target"] = d.target.astype(np.float64)
        return cols, "sklearn.datasets.load_diabetes"
    ht = heavy_tailed_settings(path)
    if ht is not None:
        return heavy_tailed(**ht), "telecli.data.tabular.heavy_tailed(" + ", ".join(f"{k}={v}" for k, v in ht.items()) + ")"
    p = Path(path).expanduser()
    if not p.is_file():
        raise TelecliError(
            f"tabular needs task.root = a .csv/.tsv/.parquet file, 'diabetes' or 'heavy-tailed' (built-in); "
            f"{path} is not a file"
        )
    suffix = p.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return _parquet(p), str(p)
    if suffix not in (".csv", ".tsv"):
        raise TelecliError(f"tabular: {p} has suffix '{p.suffix}'; expected .csv, .tsv, .parquet or .pq")
    with open(p, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f, delimiter="\t" if suffix == ".tsv" else ","))
    while rows and not any(cell.strip() for cell in rows[-1]):
        rows.pop()  # trailing blank lines
    if len(rows) < 2:
        raise TelecliError(f"tabular: {p} needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) != len(header):
        raise TelecliError(f"tabular: {p} has repeated column names in its header: {header}")
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise TelecliError(f"tabular: {p} line {i} has {len(row)} fields, the header has {len(header)}")
    return {h: [row[j] for row in rows[1:]] for j, h in enumerate(header)}, str(p)


def _parquet(p: Path) -> dict:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise TelecliError("tabular: reading Parquet needs pyarrow (pip install pyarrow), or convert to CSV") from None
    try:
        table = pq.read_table(p)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise TelecliError(f"tabular: cannot read {p} as Parquet: {str(e).splitlines()[0]}") from None
    cols = {}
    for name, col in zip(table.column_names, table.columns):
        t = col.type
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t):
            cols[name] = np.array(col.cast(pa.float64()).to_pylist(), dtype=np.float64)  # null → NaN
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            cols[name] = ["" if v is None else v for v in col.to_pylist()]
        else:
            cols[name] = [f"<{t}>"] * len(col)  # dates, lists, …: reported as non-numeric
    return cols


def _numeric(values, name: str, source: str, fix: str) -> np.ndarray:
    """Column → float64 with NaN for missing; TelecliError naming the column if a value is not a number."""
    if isinstance(values, np.ndarray):
        out = values.astype(np.float64)
    else:
        try:
            out = np.asarray(values, dtype=np.float64)
        except ValueError:
            out = np.empty(len(values))
            for i, v in enumerate(values):
                s = v.strip()
                if s.lower() in MISSING:
                    out[i] = np.nan
                    continue
                try:
                    out[i] = float(s)
                except ValueError:
                    raise TelecliError(
                        f"tabular: column '{name}' of {source} is not numeric (data row {i + 1}: {s[:40]!r}); {fix}"
                    ) from None
    out[~np.isfinite(out)] = np.nan
    return out


def _subset(idx: np.ndarray, want: int, what: str, rng: np.random.Generator) -> np.ndarray:
    if not want:
        return idx
    if want > len(idx):
        raise TelecliError(f"tabular: {what}={want} but the split has only {len(idx)} rows "
                           "(change task.test_fraction or the subset size)")
    return np.sort(rng.choice(idx, size=want, replace=False))


def load(cfg: TaskConfig) -> Task:
    """The table as a regression :class:`~telecli.data.Task` with y of shape (n, 1)."""
    x, y, names, meta = _read(cfg.root, cfg.target)
    if not 0.0 < cfg.test_fraction < 1.0:
        raise TelecliError(f"tabular: test_fraction must lie strictly between 0 and 1, got {cfg.test_fraction}")
    n = len(y)
    n_test = int(round(cfg.test_fraction * n))
    if not 0 < n_test < n:
        raise TelecliError(f"tabular: {n} rows cannot be split with test_fraction={cfg.test_fraction}")
    rng = np.random.default_rng(cfg.seed)
    tr, te = split(n, n_test, rng)
    tr, te = _subset(tr, cfg.n_train, "n_train", rng), _subset(te, cfg.n_test, "n_test", rng)
    x_tr, x_te, y_tr, y_te = x[tr], x[te], y[tr], y[te]
    info = {**meta, "feature_names": names, "n_rows": int(n), "test_fraction": cfg.test_fraction,
            "standardize": bool(cfg.standardize)}
    if cfg.standardize:
        mu, sd = x_tr.mean(axis=0), x_tr.std(axis=0)
        constant = sd == 0
        sd[constant] = 1.0  # a constant training column is only centred
        y_mu, y_sd = float(y_tr.mean()), float(y_tr.std()) or 1.0
        x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd
        y_tr, y_te = (y_tr - y_mu) / y_sd, (y_te - y_mu) / y_sd
        info.update(x_mean=mu.tolist(), x_std=sd.tolist(), y_mean=y_mu, y_std=y_sd,
                    constant_features=[c for c, k in zip(names, constant) if k])
    return Task(
        x_train=np.ascontiguousarray(x_tr, dtype=np.float64),
        y_train=np.ascontiguousarray(y_tr[:, None], dtype=np.float64),
        x_test=np.ascontiguousarray(x_te, dtype=np.float64),
        y_test=np.ascontiguousarray(y_te[:, None], dtype=np.float64),
        info=info,
    )


# OpenML data sets of the paper's tabular case study (method.md §4.2). The ids come from a third-party
# listing of the Grinsztajn et al. 2022 benchmark (method.md S8, unverified): the fetched data set's
# name, id and version are recorded so a mismatch is visible.
OPENML_ALIASES = {"houses": 44138, "superconduct": 44148, "california": 44025, "house_sales": 44144}


def fetch_openml_table(spec: str, target: str = "") -> tuple[np.ndarray, np.ndarray, list[str], dict]:
    """``openml:ID`` or ``openml:NAME`` (a key of ``OPENML_ALIASES``) via ``sklearn.datasets.fetch_openml``.

    Needs network access the first time (scikit-learn caches the download under ~/scikit_learn_data).
    ``target`` "" uses the data set's default target attribute. Returns X, y, feature names and a meta
    dict with ``openml_id``, ``openml_version``, ``openml_name``. Rows with missing values are dropped;
    non-numeric (categorical) features raise :class:`TelecliError`.
    """
    key = spec.split(":", 1)[1].strip() if spec.lower().startswith("openml:") else spec.strip()
    if key.isdigit():
        data_id = int(key)
    elif key.lower() in OPENML_ALIASES:
        data_id = OPENML_ALIASES[key.lower()]
    else:
        raise TelecliError(f"'{spec}': use openml:ID (a number) or openml:NAME with NAME in "
                           f"{', '.join(OPENML_ALIASES)}")
    from sklearn.datasets import fetch_openml

    import warnings

    try:
        with warnings.catch_warnings():  # the library's own warnings precede its error when offline
            warnings.simplefilter("ignore")
            bunch = fetch_openml(data_id=data_id, as_frame=True, parser="auto")
    except Exception as e:  # no network (URLError, OSError), unknown id (OpenMLError), …
        first = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise TelecliError(f"cannot fetch OpenML data set {data_id} ({type(e).__name__}: {first}); when offline, "
                           "download its CSV (https://www.openml.org/d/%d) and pass the file path" % data_id) from None
    frame = bunch.frame
    default = bunch.details.get("default_target_attribute") or ""
    target = target or default.split(",")[0]
    if not target or target not in frame.columns:
        raise TelecliError(f"tabular: target column '{target}' not found in OpenML data set {data_id} "
                           f"(available: {', '.join(map(str, frame.columns))})")
    names = [str(c) for c in frame.columns if c != target]
    source = f"openml:{data_id}"
    cols = {}
    for c in list(names) + [target]:
        col = frame[c]
        if col.dtype.kind in "biuf":
            cols[c] = col.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            raise TelecliError(f"tabular: column '{c}' of {source} is not numeric (dtype {col.dtype}); "
                               "encode it as numbers first (export a CSV)")
    x = np.stack([cols[c] for c in names], axis=1)
    y = cols[target]
    keep = np.isfinite(x).all(axis=1) & np.isfinite(y)
    if not keep.any():
        raise TelecliError(f"tabular: every row of {source} has a missing value")
    meta = {"source": source, "target": target, "n_rows_read": int(len(y)), "n_dropped_missing": int((~keep).sum()),
            "openml_id": int(bunch.details.get("id", data_id)), "openml_version": str(bunch.details.get("version", "")),
            "openml_name": str(bunch.details.get("name", ""))}
    _note_dropped(source, target, keep, y)
    return x[keep], y[keep], names, meta
