"""Named axes of the results files: every dataset's dimensions, units and one-line description.

One table per file kind (``telescope``: lens.h5; ``lmc``: lmc.h5 and lmc-gradients.h5; ``boost``:
boost.h5), the only place these conventions are written down in code; docs/format.md, docs/lmc.md and
docs/boost.md show the same dims (tests/test_results_labels.py checks the two agree).

:func:`label` writes them into an open file in the netCDF-4 style that h5netcdf (and so xarray) reads:
for every dimension D used in a group G, a one-dimensional coordinate dataset ``G/D`` made an HDF5
dimension scale named D (the step numbers, the point indices, the α grid, the layer names, …, or
0 … n−1 where an axis has no natural values), attached to the axes of G's datasets. Groups listed in a
kind's ``borrow`` (``{split}/components``, lmc's ``summary``: their members are listed by other code,
which must find only them) attach their parent's coordinates instead. :func:`label` first removes any labels already there, so it can be run again on a file whose
datasets were copied from another (``telecli merge``) or rewritten.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from typing import Callable

import h5py
import numpy as np

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Var:
    dims: tuple[str, ...]
    description: str
    units: str = "1"


@dataclass(frozen=True)
class Coord:
    """A coordinate: its values from the group that holds it and the axis length."""
    values: Callable[[h5py.Group, int], np.ndarray]
    description: str
    units: str = "1"


@dataclass(frozen=True)
class Kind:
    name: str
    variables: dict[str, Var]   # dataset path (fnmatch patterns allowed, e.g. test/components/*) → Var
    coords: dict[str, Coord]    # dimension name → its coordinate
    borrow: tuple[str, ...] = ()  # groups (patterns) that use their parent's coordinates, having none

    def var(self, path: str) -> Var | None:
        path = path.lstrip("/")
        if path in self.variables:
            return self.variables[path]
        for pattern, v in self.variables.items():
            if any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(path, pattern):
                return v
        return None


# ------------------------------------------------------------------------------------- coordinate values

def nearest(name: str, fallback: str | None = None) -> Callable[[h5py.Group, int], np.ndarray]:
    """The values of dataset ``name`` in the group or its nearest ancestor (else the absolute ``fallback``)."""
    def values(group: h5py.Group, n: int) -> np.ndarray:
        g = group
        while True:
            if name in g and isinstance(g[name], h5py.Dataset) and g[name].shape == (n,):
                return g[name][...]
            if g.name == "/":
                break
            g = g.parent
        if fallback is not None and fallback in group.file and group.file[fallback].shape == (n,):
            return group.file[fallback][...]
        return np.arange(n, dtype=np.int64)
    return values


def arange(start: int = 0) -> Callable[[h5py.Group, int], np.ndarray]:
    return lambda group, n: np.arange(start, start + n, dtype=np.int64)


def _after_first_step(group: h5py.Group, n: int) -> np.ndarray:
    steps = group.file["steps"]
    return np.arange(int(steps[0]) + 1, int(steps[0]) + 1 + n, dtype=np.int64)


def _sides(group: h5py.Group, n: int) -> np.ndarray:
    return np.array(["a", "b"][:n], dtype=object).astype(h5py.string_dtype())


def _features(group: h5py.Group, n: int) -> np.ndarray:
    try:
        names = json.loads(group.file.attrs.get("feature_names", "[]"))
    except (TypeError, ValueError):
        names = []
    if len(names) != n:
        names = [f"x{i}" for i in range(n)]
    return np.array([str(v) for v in names], dtype=object).astype(h5py.string_dtype())


# ------------------------------------------------------------------------------------------ telescope

_PRED = ("step", "point", "output")


def _per_split(s: str) -> dict[str, Var]:
    return {
        f"{s}/index": Var(("point",), f"indices of the evaluation points in the run's {s} split"),
        f"{s}/targets": Var(("point", "output"), "targets of the evaluation points"),
        f"{s}/actual": Var(_PRED, "the network f_θt(x) (eval mode)"),
        f"{s}/telescoped": Var(_PRED, "the telescoping model f̃_θt(x) = f_θ0(x) + Σ_{s≤t} ∇f_θs−1(x)ᵀΔθ_s (Eq. 5 (i))"),
        f"{s}/linearized": Var(_PRED, "the linearisation at initialisation f_θ0(x) + ∇f_θ0(x)ᵀ(θ_t − θ_0) (§1.3)"),
        f"{s}/approx_error_telescoped": Var(("step",), "mean over points and outputs of abs(actual − telescoped) (§2)"),
        f"{s}/approx_error_linearized": Var(("step",), "mean over points and outputs of abs(actual − linearized)"),
        **{f"{s}/loss_{k}": Var(("step",), f"mean loss of the run's kind of the {k} predictions over the points")
           for k in ("actual", "telescoped", "linearized", "smoother")},
        **{f"{s}/error_{k}": Var(("step",), f"misclassification rate of the {k} predictions (NaN for regression)")
           for k in ("actual", "telescoped", "linearized", "smoother")},
        f"{s}/smoother": Var(_PRED, "smoother predictions s_t(x)·vec(y) + c_t(x) (§1.5–1.6)"),
        f"{s}/smoother_sq_norm": Var(("step", "point"), "squared Frobenius norm of each point's smoother block s_t(x)"),
        f"{s}/effective_parameters": Var(("step",), "effective parameters p = (n/N) Σ_j ‖s_t(x_j)‖²_F / k (§3.1)"),
        f"{s}/smoother_gap": Var(("step",), "mean abs(smoother − actual): the consistency check of §1.5"),
        f"{s}/kernel_norm": Var(("step", "point"), "‖k_t(x)‖₂, k_t(x) = K_t(x, B_t)/∣B_t∣ (Eq. 3); NaN at the first step"),
        f"{s}/kernel_norm_max": Var(("step",), "maximum of kernel_norm over the split's points"),
        f"{s}/kernel_norm_max_every_step": Var(("every_step",), "maximum kernel norm over the points for every step 1..T (parameter-space smoother: written steps only, NaN between)"),
        f"{s}/components/*": Var(_PRED, "the update Δf̃_t(x) of this origin (they sum to telescoped_t − telescoped_{t−1})"),
        f"{s}/probe_effective_parameters": Var(("step", "probe"), "p seen by probe r: (n/N) Σ_j ‖s_t(x_j) z_r‖² / k"),
        f"{s}/effective_parameters_se": Var(("step",), "standard error of the sketched effective parameters"),
    }


TELESCOPE = Kind(
    "telescope",
    {
        "steps": Var(("step",), "the output steps"),
        **{k: v for s in SPLITS for k, v in _per_split(s).items()},
        "train/smoother_trace": Var(("step",), "trace of S_t over all training points"),
        "parameter_gap": Var(("step",), "max abs(Θ^S_t·vec(y) + Θ^C_t − θ_t): the parameter-space check of §1.6"),
        "parameter_gap_relative": Var(("step",), "parameter_gap / max abs(θ_t − θ_first)"),
        "recipe_error": Var(("step",), "largest recipe error of the steps since the previous written step"),
        "validity/recipe": Var(("step",), "every step up to t is the step the smoother models"),
        "validity/parameters": Var(("step",), "parameter_gap_relative ≤ attr parameter_tolerance"),
        **{f"validity/{s}/smoother": Var(("step",), "smoother_gap ≤ smoother_tolerance × std of the targets")
           for s in SPLITS},
        **{f"validity/{s}/telescoping": Var(("step",), "approx_error_telescoped ≤ telescoping_tolerance × std of "
                                                         "the targets: f̃ follows the network") for s in SPLITS},
        **{f"validity/{s}/ok": Var(("step",), "recipe, parameters, smoother and telescoping checks all hold: p is "
                                              "trustworthy") for s in SPLITS},
    },
    {
        "step": Coord(nearest("steps"), "training step t"),
        "point": Coord(nearest("index"), "index of the evaluation point in the run's split"),
        "output": Coord(arange(), "output (component of f)"),
        "probe": Coord(arange(), "sketch probe r"),
        "every_step": Coord(_after_first_step, "every training step after the first"),
    },
    borrow=("*/components",),
)

# ------------------------------------------------------------------------------------------------ lmc

_PAIR = ("spawn_step", "pair")

LMC = Kind(
    "lmc",
    {
        "alpha": Var(("alpha",), "the α grid (θ_α = αθ_A + (1−α)θ_B)"),
        "spawn_steps": Var(("spawn_step",), "spawn step t′ (−1 for two runs without a common parent)"),
        "pairs": Var(("spawn_step",), "pairs at each spawn step"),
        "test/index": Var(("point",), "indices of the evaluation points in the run's test split"),
        "test/targets": Var(("point", "output"), "targets of the evaluation points"),
        "children/seed": Var(_PAIR + ("side",), "seeds of children a and b (−1 where missing)"),
        "children/dir": Var(_PAIR + ("side",), "child directories, relative to the spawn directory"),
        "children/loss": Var(_PAIR + ("side",), "test loss of children a and b"),
        "children/acc": Var(_PAIR + ("side",), "test accuracy of children a and b"),
        "curves/weight_loss": Var(_PAIR + ("alpha",), "loss of the weight average f_θα"),
        "curves/weight_acc": Var(_PAIR + ("alpha",), "accuracy of the weight average f_θα"),
        "curves/mean_loss": Var(_PAIR + ("alpha",), "α-weighted mean of the children's losses"),
        "curves/mean_acc": Var(_PAIR + ("alpha",), "α-weighted mean of the children's accuracies"),
        "curves/ensemble_loss": Var(_PAIR + ("alpha",), "loss of the output ensemble αf_A + (1−α)f_B"),
        "curves/ensemble_acc": Var(_PAIR + ("alpha",), "accuracy of the output ensemble αf_A + (1−α)f_B"),
        "curves/prediction_gap": Var(_PAIR + ("alpha",), "root mean square of f_θα(x) − f̄^α(x) (Eq. 10)"),
        "metrics/acc_barrier": Var(_PAIR, "max over α of αAcc_A + (1−α)Acc_B − Acc(θ_α)"),
        "metrics/acc_gap_mid": Var(_PAIR, "mean accuracy of the children − accuracy of their average (α = 0.5)"),
        "metrics/loss_barrier": Var(_PAIR, "max over α of ℓ(θ_α) − (αℓ_A + (1−α)ℓ_B)"),
        "metrics/loss_gap_mid": Var(_PAIR, "ℓ(θ_α) − (αℓ_A + (1−α)ℓ_B) at α = 0.5"),
        "metrics/prediction_gap_max": Var(_PAIR, "Eq. 10's prediction gap, max over α"),
        "metrics/prediction_gap_mid": Var(_PAIR, "Eq. 10's prediction gap at α = 0.5"),
        "summary/*_mean": Var(("spawn_step",), "mean over the pairs of each spawn step"),
        "summary/*_se": Var(("spawn_step",), "standard error over the pairs of each spawn step (NaN for one pair)"),
        "gradients/change": Var(("spawn_step", "layer"), "gradient change Δ^grad_L(t′) by layer (§5.2)"),
        "gradients/layers": Var(("layer",), "layer names (module paths)"),
        "gradients/kind": Var(("layer",), "layer kinds (conv, batchnorm, linear, …)"),
        "gradients/size": Var(("layer",), "parameters per layer"),
        "gradients/index": Var(("point",), "test points of the gradient metric"),
    },
    {
        "alpha": Coord(nearest("alpha", "/alpha"), "interpolation weight α of child A"),
        "spawn_step": Coord(nearest("spawn_steps", "/spawn_steps"), "spawn step t′"),
        "pair": Coord(arange(), "pair j at the spawn step"),
        "side": Coord(_sides, "child a or b"),
        "point": Coord(nearest("index"), "index of the evaluation point in the run's test split"),
        "output": Coord(arange(), "output (component of f)"),
        "layer": Coord(nearest("layers"), "layer (module path)"),
    },
    borrow=("summary",),
)

# ---------------------------------------------------------------------------------------------- boost

BOOST = Kind(
    "boost",
    {
        "metrics/proportions": Var(("proportion",), "p of each mixture (0 included)"),
        "metrics/n_irregular": Var(("proportion",), "irregular rows in each mixture"),
        "metrics/mse_nn": Var(("proportion",), "MSE of the final NN on each mixture (standardised target)"),
        "metrics/mse_gbt": Var(("proportion",), "MSE of the final GBT on each mixture (standardised target)"),
        "metrics/relative_mse": Var(("proportion",), "(mse_nn − mse_gbt)/(mse_nn[p=0] − mse_gbt[p=0])"),
        "metrics/kernel_norm_nn": Var(("proportion",), "normalised maximum kernel-weight norm of the NN (§4.4)"),
        "metrics/kernel_norm_gbt": Var(("proportion",), "normalised maximum kernel-weight norm of the GBT (§4.4)"),
        "metrics/telescoping_error_nn": Var(("proportion",), "mean abs(f − f̃) (Eq. 5) of the NN at its last step"),
        "metrics/mse_nn_train": Var((), "training MSE of the NN"),
        "metrics/mse_gbt_train": Var((), "training MSE of the GBT"),
        "split/train": Var(("train_point",), "data rows of the training set"),
        "split/test": Var(("test_point",), "data rows of the test set (sorted union of the mixtures)"),
        "split/regular_test": Var(("regular_test_point",), "data rows of regular-test"),
        "split/irregular": Var(("irregular_point",), "data rows of the irregular pool"),
        "split/scores": Var(("row",), "irregularity score of every row: abs(PC1 projection − median)"),
        "split/proportions": Var(("proportion",), "p of each mixture"),
        "split/mixture_index": Var(("proportion", "mixture_point"), "positions in the test set of each mixture"),
        "split/mixture_rows": Var(("proportion", "mixture_point"), "data rows of each mixture"),
        "data/x_train": Var(("train_point", "feature"), "standardised training features"),
        "data/y_train": Var(("train_point",), "standardised training target"),
        "data/x_test": Var(("test_point", "feature"), "standardised test features"),
        "data/y_test": Var(("test_point",), "standardised test target"),
        "data/x_mean": Var(("feature",), "feature means of the standardisation", "feature units"),
        "data/x_std": Var(("feature",), "feature standard deviations of the standardisation", "feature units"),
        "data/y_mean": Var((), "target mean of the standardisation", "target units"),
        "data/y_std": Var((), "target standard deviation of the standardisation", "target units"),
        "gbt/pred_train": Var(("train_point",), "final GBT predictions on train"),
        "gbt/pred_test": Var(("test_point",), "final GBT predictions on test"),
        "gbt/S_train": Var(("train_point", "train_target"), "smoother rows s_T(x) on train (§4.1)"),
        "gbt/S_test": Var(("test_point", "train_target"), "smoother rows s_T(x) on test (§4.1)"),
        "gbt/c_train": Var(("train_point",), "intercepts c_T(x) on train"),
        "gbt/c_test": Var(("test_point",), "intercepts c_T(x) on test"),
        "gbt/p_train": Var(("stage",), "p^train = Σ_i ‖s_t(x_i)‖² after t trees (§3.1)"),
        "gbt/p_test": Var(("stage",), "p^test = (n/m) Σ_j ‖s_t(x_j)‖² after t trees (§3.1)"),
        "gbt/trace_train": Var(("stage",), "trace S_t after t trees"),
        "gbt/p_mixture": Var(("proportion",), "p^test of the final smoother on each mixture"),
        "gbt/staged_train": Var(("stage", "train_point"), "s_t·y + c_t after t trees on train"),
        "gbt/staged_test": Var(("stage", "test_point"), "s_t·y + c_t after t trees on test"),
        "gbt/n_leaves": Var(("tree",), "leaves per tree"),
        "gbt/kernel_norm_train": Var(("tree", "train_point"), "‖k_t(x)‖₂ = 1/√n_leaf_t(x) per tree, train points"),
        "gbt/kernel_norm_test": Var(("tree", "test_point"), "‖k_t(x)‖₂ = 1/√n_leaf_t(x) per tree, test points"),
        "gbt/kernel_norm_max_train": Var(("tree",), "max over train of the tree-kernel norm per tree"),
        "gbt/kernel_norm_max_test": Var(("proportion", "tree"), "max over each mixture of the tree-kernel norm per tree"),
        "nn/pred_train": Var(("train_point",), "final NN predictions on train"),
        "nn/pred_test": Var(("test_point",), "final NN predictions on test"),
        "nn/loss": Var(("step",), "training loss ½(f − y)² (batch mean) at each SGD step"),
        "nn/kernel_steps": Var(("kernel_step",), "SGD steps t whose kernel rows k_t were computed"),
        "nn/kernel_norm_max_train": Var(("kernel_step",), "max over train of ‖k_t(x_i)‖₂ per step"),
        "nn/kernel_norm_max_test": Var(("proportion", "kernel_step"), "max over each mixture of ‖k_t(x)‖₂ per step"),
        "nn/kernel_norm_mean_train": Var(("train_point",), "mean over steps of ‖k_t(x)‖₂ per train point"),
        "nn/kernel_norm_mean_test": Var(("test_point",), "mean over steps of ‖k_t(x)‖₂ per test point"),
        "search/best_gbt": Var((), "index of the chosen GBT draw"),
        "search/best_nn": Var((), "index of the chosen NN draw"),
        "search/n_validation": Var((), "rows of the validation split"),
        "search/validation_requested": Var((), "the validation share asked for"),
        "search/*": Var(("draw",), "per random-search draw (gbt_max_depth −1 = None)"),
    },
    {
        "proportion": Coord(nearest("proportions", "/metrics/proportions"), "proportion p of irregular rows"),
        "train_point": Coord(arange(), "position in the training set"),
        "test_point": Coord(arange(), "position in the test set (union of the mixtures)"),
        "train_target": Coord(arange(), "training target y_i the smoother weights"),
        "regular_test_point": Coord(arange(), "position in regular-test"),
        "irregular_point": Coord(arange(), "position in the irregular pool"),
        "row": Coord(arange(), "data row (file order, after dropping missing values)"),
        "mixture_point": Coord(arange(), "position in the mixture (irregular rows first)"),
        "feature": Coord(_features, "feature name"),
        "stage": Coord(arange(), "number of trees t"),
        "tree": Coord(arange(1), "tree t"),
        "step": Coord(arange(1), "SGD step t of the NN"),
        "kernel_step": Coord(nearest("kernel_steps"), "SGD step t of the kernel rows"),
        "draw": Coord(arange(), "random-search draw"),
    },
)

KINDS = {k.name: k for k in (TELESCOPE, LMC, BOOST)}
FORMATS = {"telecli-lmc": "lmc", "telecli-boost": "boost"}  # root attribute `format`; none: telescope
_SCALE_ATTRS = ("DIMENSION_LIST", "REFERENCE_LIST", "_Netcdf4Dimid", "_Netcdf4Coordinates")


def kind_of(f: h5py.File) -> Kind:
    fmt = f.attrs.get("format", "")
    fmt = fmt.decode() if isinstance(fmt, bytes) else str(fmt)
    return KINDS[FORMATS.get(fmt, "telescope")]


def _datasets(f: h5py.File) -> list[str]:
    out: list[str] = []
    f.visititems(lambda name, obj: out.append(name) if isinstance(obj, h5py.Dataset) else None)
    return out


def _is_scale(ds: h5py.Dataset) -> bool:
    cls = ds.attrs.get("CLASS")
    return (cls.decode() if isinstance(cls, bytes) else cls) == "DIMENSION_SCALE"


def unlabel(f: h5py.File, kind: Kind | None = None) -> None:
    """Remove dimension scales (and the coordinate datasets :func:`label` made): references copied from
    another file point nowhere."""
    kind = kind or kind_of(f)
    for name in _datasets(f):
        ds = f[name]
        scale = _is_scale(ds)
        if scale and name.rsplit("/", 1)[-1] in kind.coords and name not in kind.variables:
            del f[name]
            continue
        for a in _SCALE_ATTRS + (("CLASS", "NAME") if scale else ()):
            if a in ds.attrs:
                del ds.attrs[a]


def label(f: h5py.File, kind: Kind | str | None = None) -> list[str]:
    """Name the axes of every dataset of ``f`` (open for writing); returns the datasets left unlabelled
    (not in the kind's table, or of another rank), which tests require to be none."""
    kind = KINDS[kind] if isinstance(kind, str) else (kind or kind_of(f))
    unlabel(f, kind)
    missing = []
    coords: dict[tuple[str, str], h5py.Dataset] = {}
    for name in _datasets(f):
        var = kind.var(name)
        ds = f[name]
        if var is None or len(var.dims) != ds.ndim:
            missing.append(name)
            continue
        ds.attrs["units"] = var.units
        ds.attrs["description"] = var.description
        group = ds.parent
        while group.name != "/" and any(fnmatch.fnmatchcase(group.name.lstrip("/"), p) for p in kind.borrow):
            group = group.parent  # a group whose members other code lists: the parent's coordinates
        for axis, dim in enumerate(var.dims):
            key = (group.name, dim)
            if key not in coords:
                coords[key] = _coordinate(kind, group, dim, ds.shape[axis])
            scale = coords[key]
            if scale.name == ds.name:
                continue  # a coordinate variable (lmc's /alpha): the scale itself
            if scale.shape != (ds.shape[axis],):
                missing.append(name)
                continue
            ds.dims[axis].attach_scale(scale)
    return missing


def _coordinate(kind: Kind, group: h5py.Group, dim: str, n: int) -> h5py.Dataset:
    if dim in group and isinstance(group[dim], h5py.Dataset) and group[dim].name.lstrip("/") in kind.variables:
        ds = group[dim]  # a dataset that is its own coordinate
    else:
        c = kind.coords[dim]
        ds = group.create_dataset(dim, data=np.asarray(c.values(group, n)))
        ds.attrs["units"] = c.units
        ds.attrs["description"] = c.description
    ds.make_scale(dim)
    return ds


def coordinate_names(kind: Kind | str) -> set[str]:
    kind = KINDS[kind] if isinstance(kind, str) else kind
    return set(kind.coords)
