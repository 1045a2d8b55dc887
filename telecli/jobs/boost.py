"""``telecli boost``: gradient-boosted trees and a neural network through the same telescoping lens on one
tabular task (method.md §4, paper Sec. 4.2, Figs. 5 and 14). Layout of boost.h5: docs/boost.md.

1. Data: a CSV/Parquet file with a target column, ``diabetes`` (scikit-learn's bundled table) or
   ``openml:ID|NAME`` (telecli.data.tabular).
2. Irregularity protocol (§4.2, telecli.lens.irregular): PC1 distance to the median, the top ``top``
   fraction forms the irregular pool, the rest splits into train / regular-test, and test mixtures of
   size ``mixture_size`` hold a proportion p of irregular rows. Features and target are standardised
   with the training rows' mean and standard deviation, for both models.
3. Optional random search (§4.3): ``search`` draws from the paper's spaces, scored on a validation
   split of ``validation`` rows held out of train; the best draw is refitted on the full train split.
4. GBT (§4.1): ``GradientBoostingRegressor`` (squared loss, subsample 1) in smoother form
   (telecli.lens.boost): S, c, p per tree and the tree-kernel norms ‖k_t(x)‖₂ = 1/√n_leaf.
5. NN (§4.3): an MLP trained with plain SGD on squared loss and recorded with the Recorder into
   OUT/nn (an ordinary run directory: ``telecli telescope OUT/nn`` works on it); its test set is the
   union of all mixtures. Kernel-weight norms per SGD step (method.md Eq. 3):
       k_t(x) = [K^θ_t(x, x_i)]_{i∈[n]},  K^θ_t(x, x_i) = 1{i∈B_t}/|B_t| ∇f_{θ_{t−1}}(x)ᵀ∇f_{θ_{t−1}}(x_i),
   for every training and test point, from θ_{t−1} streamed out of the run. γ_t is left out: a
   constant γ cancels in the normalised ratio of §4.4 (for a schedule it would not; the paper does not
   say, method.md §4.4 [I]). ``kernel_every`` K uses the steps t = 1, 1+K, 1+2K, … (the paper: every t).
6. Metrics per proportion (§4.4): MSE of both models, relative MSE, the normalised maximum
   kernel-weight norm of each model; optionally the NN's telescoping error (``telescope``).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from telecli.config import BoostConfig, GBTSettings, NNSettings, validate_boost
from telecli.errors import NonFiniteError, TelecliError
from telecli.lens.boost import mse
from telecli.lens.irregular import irregular_split

SEARCH_DEPTHS = (None, 2, 3, 4, 5)  # GOV22 max_depth choices (method.md §4.3) …
SEARCH_DEPTH_P = (0.1, 0.1, 0.6, 0.1, 0.1)  # … and their probabilities


# ---------------------------------------------------------------------------------------------- data


@dataclass
class Split:
    """Row indices (into the data) and the standardised arrays both models use."""

    train: np.ndarray  # (n,) data rows of the training set
    test: np.ndarray  # (m,) data rows of the test set = union of all mixtures (sorted)
    mixtures: dict[float, np.ndarray]  # p → positions into ``test`` (irregular rows first)
    mixture_rows: dict[float, np.ndarray]  # p → data rows
    n_irregular: dict[float, int]
    info: dict[str, Any]  # irregular_split's output (pool, regular_test, scores, sizes)
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: float
    y_std: float


def make_split(X: np.ndarray, y: np.ndarray, cfg: BoostConfig) -> Split:
    props = cfg.proportions
    ts = int(cfg.test_size) if float(cfg.test_size) >= 1 else float(cfg.test_size)
    sp = irregular_split(X, y, top=cfg.top, test_size=ts, proportions=props, mixture_size=cfg.mixture_size,
                         seed=cfg.seed)
    train = np.asarray(sp["train"], dtype=np.int64)
    test = np.unique(np.concatenate([sp["mixtures"][p] for p in props])).astype(np.int64)
    positions = {p: np.searchsorted(test, sp["mixtures"][p]).astype(np.int64) for p in props}
    mu, sd = X[train].mean(axis=0), X[train].std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)  # a constant training column is only centred
    y_mu, y_sd = float(y[train].mean()), float(y[train].std()) or 1.0
    Xs, ys = (X - mu) / sd, (y - y_mu) / y_sd
    return Split(train=train, test=test, mixtures=positions,
                 mixture_rows={p: np.asarray(sp["mixtures"][p], dtype=np.int64) for p in props},
                 n_irregular={p: int(sp["n_irregular"][p]) for p in props}, info=sp,
                 x_train=Xs[train], y_train=ys[train], x_test=Xs[test], y_test=ys[test],
                 x_mean=mu, x_std=sd, y_mean=y_mu, y_std=y_sd)


# ----------------------------------------------------------------------------------------------- GBT


def fit_gbt(x, y, gbt: GBTSettings, seed: int):
    from sklearn.ensemble import GradientBoostingRegressor

    model = GradientBoostingRegressor(loss="squared_error", subsample=1.0, n_estimators=gbt.trees,
                                      max_depth=gbt.depth, learning_rate=gbt.lr, random_state=seed)
    return model.fit(x, y)


# ------------------------------------------------------------------------------------------------ NN


def train_nn(x_train, y_train, nn: NNSettings, seed: int, device, dtype: str, *, x_test=None, y_test=None,
             run_dir: Path | None = None, task_info: dict | None = None, run_id: str | None = None,
             overwrite: bool = False, resume: bool = False, progress: bool = False, label: str = "train NN"):
    """Train the MLP with plain SGD on ½(f − y)² (batch mean) through telecli.train.loop (batches from
    ``BatchOrder(seed)``, as ``telecli record``). With ``run_dir`` every step is recorded (θ_t, B_t, γ_t);
    returns the model in eval mode. A non-finite loss raises NonFiniteError (search draws catch it).
    ``resume``: a run already in ``run_dir`` (of the same job: the caller checks) is continued, or its
    θ_T loaded when it is complete; without a manifest the run starts afresh."""
    from telecli.store.trajectory import MANIFEST, Trajectory, read_manifest
    from telecli.train import loop

    cfg = nn.run_config(seed, dtype)
    x_train = np.asarray(x_train)
    y_col = lambda a: None if a is None else np.asarray(a).reshape(-1, 1)  # noqa: E731
    setup = loop.setup_arrays(cfg, device, x_train, y_col(y_train), None if x_test is None else np.asarray(x_test),
                              y_col(y_test), task_info or {}, (x_train.shape[1],), 1)
    order = loop.BatchOrder(setup.x_train.shape[0], cfg.train.batch_size, seed)
    rec, start = None, 0
    if run_dir is not None:
        manifest = read_manifest(run_dir) if resume and (Path(run_dir) / MANIFEST).is_file() else None
        if manifest is not None and run_id and manifest.get("run_id") != run_id:
            raise TelecliError(f"{run_dir} holds another run ({manifest.get('run_id')}); pass --overwrite to replace it")
        status = str((manifest or {}).get("status", ""))
        if status.startswith("stopped"):
            raise NonFiniteError(f"{run_dir} stopped on a non-finite loss ({status}); lower --nn-lr and pass "
                                 f"--overwrite")
        if status == "complete":
            traj = Trajectory(run_dir)
            loop.restore(setup, traj, traj.last_step, opt_step=0)
            return setup.model.eval()
        if manifest is None and resume:
            loop.clear_unstarted(Path(run_dir))  # killed before its manifest
        go_on = manifest is not None and bool(manifest["shards"])
        rec = loop.open_recorder(setup, cfg, run_dir, order, config={"_run_id": run_id} if run_id else None,
                                 overwrite=overwrite or (manifest is not None and not go_on), resume=go_on)
        if go_on:
            start = rec.step_count
            loop.restore(setup, Trajectory(run_dir), start, opt_step=start)
    loop.fit(setup, cfg, order, start=start, rec=rec, progress=progress, label=label)
    return setup.model.eval()


def predict_nn(model, x, device, dtype) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model(torch.as_tensor(np.asarray(x), dtype=dtype, device=device))
    return out.reshape(-1).double().cpu().numpy()


def nn_kernel_norms(run_dir: Path, groups: dict[str, np.ndarray], every: int, device, progress: bool,
                    memory: int | None = None):
    """Per-step maxima of ‖k_t(x)‖₂ (lens.boost.network_kernel_norms) over the training set and over
    each test group, streaming θ_{t−1} from the run at ``run_dir`` (method.md §4.4). Returns (steps t,
    {"train": (K,), group: (K,)}, mean over steps per point {"train": (n,), "test": (m,)})."""
    import torch

    from telecli.jobs.common import rebuild_network
    from telecli.lens.boost import network_kernel_norms
    from telecli.lens.kernels import choose_strategy
    from telecli.progress import Progress
    from telecli.store.trajectory import Trajectory

    traj = Trajectory(run_dir)
    model = rebuild_network(traj, device)
    dtype = next(model.parameters()).dtype
    data = traj.data()
    x_train, x_test = data["x_train"].to(device, dtype), data["x_test"].to(device, dtype)
    n, m = x_train.shape[0], x_test.shape[0]
    x_eval = torch.cat([x_train, x_test])
    meta = traj.meta()
    last = int(traj.last_step)
    steps = np.arange(1, last + 1, every, dtype=np.int64)
    stored = set(int(s) for s in traj.steps)
    missing = [int(t) - 1 for t in steps if int(t) - 1 not in stored]
    if missing:
        raise TelecliError(f"{run_dir} does not store θ at step {missing[0]}; kernel norms need θ_(t−1) of every "
                           "step used (record every step)")
    row_of = {int(s): r for r, s in enumerate(meta["step"])}
    maxima = {"train": np.empty(len(steps))}
    maxima.update({g: np.empty(len(steps)) for g in groups})
    total = torch.zeros(n + m, dtype=torch.float64, device=device)
    strategy = None
    with Progress(len(steps), "NN kernel norms", enabled=progress) as bar:
        for r, (step, theta) in enumerate(traj.iter_states(steps - 1)):
            theta = {k: v.to(device, dtype) for k, v in theta.items()}
            batch = traj.batch(meta, row_of[step + 1])
            if strategy is None:
                strategy = choose_strategy(model, x_eval[:8], x_train[:8], params=theta, memory=memory)
            norms = network_kernel_norms(model, theta, x_eval, x_train, batch, strategy=strategy, memory=memory)
            total += norms.double()
            nt = norms[:n]
            maxima["train"][r] = float(nt.max())
            tn = norms[n:].double().cpu().numpy()
            for g, pos in groups.items():
                maxima[g][r] = float(tn[pos].max())
            bar.advance(1)
    mean = (total / len(steps)).cpu().numpy()
    return steps, maxima, {"train": mean[:n], "test": mean[n:]}


# -------------------------------------------------------------------------------------------- search


def random_search(sp: Split, cfg: BoostConfig, device, dtype, progress: bool) -> dict[str, Any]:
    """``cfg.search`` random draws per model from the paper's spaces (method.md §4.3, from GOV22), each
    scored by its MSE on a validation split held out of the training rows; returns the draws, their
    scores and the best settings.

    GBT: learning_rate ~ LogNormal(log 0.01, log 10), n_estimators ~ round(LogUniform[10.5, 1000.5]),
    max_depth ∈ {None, 2, 3, 4, 5} with p = (.1, .1, .6, .1, .1). NN: learning_rate ~ LogUniform[1e-5,
    1e-2] (batch, layers, width fixed). The validation rows keep the full training split's
    standardisation [I]."""
    from telecli.progress import Progress

    n = len(sp.y_train)
    n_val = min(cfg.validation, n // 5)
    if n_val < 1:
        raise TelecliError(f"the training split has {n} rows: too few for a validation split; use --search 0")
    rng = np.random.default_rng([cfg.seed, 4_3])
    perm = rng.permutation(n)
    val, fit = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    K = cfg.search
    g_lr = np.exp(rng.normal(math.log(0.01), math.log(10.0), size=K))
    g_trees = np.rint(np.exp(rng.uniform(math.log(10.5), math.log(1000.5), size=K))).astype(np.int64)
    g_depth = [SEARCH_DEPTHS[i] for i in rng.choice(len(SEARCH_DEPTHS), size=K, p=SEARCH_DEPTH_P)]
    n_lr = np.exp(rng.uniform(math.log(1e-5), math.log(1e-2), size=K))
    g_mse, n_mse = np.full(K, np.inf), np.full(K, np.inf)
    xf, yf, xv, yv = sp.x_train[fit], sp.y_train[fit], sp.x_train[val], sp.y_train[val]
    with Progress(2 * K, "search", enabled=progress) as bar:
        for i in range(K):
            settings = GBTSettings(trees=int(g_trees[i]), depth=g_depth[i], lr=float(g_lr[i]))
            pred = fit_gbt(xf, yf, settings, cfg.seed).predict(xv)
            g_mse[i] = mse(pred, yv)
            bar.advance(1)
        for i in range(K):
            try:
                model = train_nn(xf, yf, dataclasses.replace(cfg.nn, lr=float(n_lr[i])), cfg.seed, device, cfg.dtype)
                n_mse[i] = mse(predict_nn(model, xv, device, dtype), yv)
            except NonFiniteError:
                pass  # diverged: score stays inf
            bar.advance(1)
    if not np.isfinite(g_mse).any() or not np.isfinite(n_mse).any():
        raise TelecliError("every search draw of one model diverged; check the data or use --search 0")
    gi, ni = int(np.nanargmin(g_mse)), int(np.nanargmin(n_mse))
    return {"n_validation": n_val, "validation_requested": cfg.validation, "gbt_learning_rate": g_lr,
            "gbt_n_estimators": g_trees, "gbt_max_depth": np.array([-1 if d is None else d for d in g_depth]),
            "gbt_val_mse": g_mse, "nn_learning_rate": n_lr, "nn_val_mse": n_mse, "best_gbt": gi, "best_nn": ni,
            "gbt": GBTSettings(trees=int(g_trees[gi]), depth=g_depth[gi], lr=float(g_lr[gi])),
            "nn_lr": float(n_lr[ni])}


# ---------------------------------------------------------------------------------------------- main


def _label(p: float) -> str:
    return f"p{p:g}"


JOB_FILE = "boost-job.json"  # OUT/boost-job.json: the configuration OUT/nn was started with (resumption)
_NOT_IN_JOB = ("device", "max_memory", "description")  # settings that do not change the results


def _job(cfg: BoostConfig) -> dict[str, Any]:
    return {k: v for k, v in cfg.to_dict().items() if k not in _NOT_IN_JOB}


def _stored_job(out: Path) -> dict[str, Any] | None:
    import json

    try:
        return json.loads((out / JOB_FILE).read_text())
    except (OSError, ValueError):
        return None


def _check_out(out: Path, h5_path: Path, nn_dir: Path, job: dict[str, Any], overwrite: bool) -> bool:
    """Whether OUT holds the work of this same job (to be continued). Another job's OUT (or an OUT/nn
    without OUT/boost-job.json) is refused without ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise TelecliError(f"--out {out} is a file; give a folder")
    if h5_path.exists() and not overwrite:
        raise TelecliError(f"{h5_path} already exists; pass --overwrite to replace it")
    started = (nn_dir.exists() and any(nn_dir.iterdir())) or (out / JOB_FILE).exists()
    if not started:
        return False
    stored = _stored_job(out)
    if stored is not None and stored.get("config") == job["config"] and (
            "data_sha256" not in job or stored.get("data_sha256") == job["data_sha256"]):
        return True
    if not overwrite:
        what = "another configuration" if stored is not None else "an unknown configuration"
        raise TelecliError(f"{out} holds a boost run of {what} ({nn_dir} exists); rerun with the same settings to "
                           f"continue it, or pass --overwrite to replace it")
    return False


def _reset_out(out: Path, h5_path: Path, nn_dir: Path) -> None:
    """--overwrite of another job's OUT: the job file first, then boost.h5, then OUT/nn."""
    import shutil

    from telecli.store.trajectory import MANIFEST
    from telecli.train.loop import clear_unstarted

    (out / JOB_FILE).unlink(missing_ok=True)
    h5_path.unlink(missing_ok=True)
    if (nn_dir / MANIFEST).is_file():
        shutil.rmtree(nn_dir)
    else:
        clear_unstarted(nn_dir)  # refuses a folder that is not telecli's


def run_boost(cfg: BoostConfig, out: str | Path, *, overwrite: bool = False, progress: bool = True) -> Path:
    """The whole comparison; writes OUT/boost.h5 and the run directory OUT/nn. Returns the h5 path.

    Rerunning the same command after a kill or Ctrl-C continues it: OUT/nn resumes (or is reused when
    complete), its telescope resumes from OUT/nn/lens.h5.partial, the GBT side is recomputed; the
    result equals an uninterrupted run."""
    cfg = validate_boost(cfg)
    out = Path(out)
    h5_path, nn_dir = out / "boost.h5", out / "nn"
    job = {"config": _job(cfg)}
    _check_out(out, h5_path, nn_dir, job, overwrite)  # fail fast, before the data is read
    props = cfg.proportions
    added_zero = 0.0 not in props
    if added_zero:  # the reference of the relative MSE (method.md §4.4)
        props = (0.0,) + tuple(props)
        cfg = dataclasses.replace(cfg, proportions=props)
        if progress:
            print("note: added p = 0 to the proportions (the relative MSE is normalised by p = 0)", file=sys.stderr)

    from telecli.data.tabular import load_table, table_name

    X, y, names, meta = load_table(cfg.data, cfg.target)
    sp = make_split(X, y, cfg)
    if sp.info["capped"] and progress:
        print(f"note: mixture size {cfg.mixture_size} capped to {sp.info['mixture_size']} (irregular pool "
              f"{len(sp.info['irregular'])}, regular-test {len(sp.info['regular_test'])})", file=sys.stderr)
    name = table_name(cfg.data, meta)
    import hashlib

    digest = hashlib.sha256()
    for a in (X, y):
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(a.tobytes())
    job["data_sha256"] = digest.hexdigest()
    # The inputs are good: from here on OUT belongs to this job, and rerunning the command (even without
    # --overwrite, as telecli's "continue with:" line prints it) continues it.
    if _check_out(out, h5_path, nn_dir, job, overwrite):
        h5_path.unlink(missing_ok=True)  # --overwrite of this job's own result: recomputed, OUT/nn reused
    else:
        from telecli.store.atomic import atomic_write_json, make_dirs

        _reset_out(out, h5_path, nn_dir)
        make_dirs(out)
        atomic_write_json(out / JOB_FILE, job)

    from telecli.lens.boost import boosting_smoother, normalised_max_kernel_norm, relative_mse, tree_kernel_norms
    from telecli.lens.smoother import effective_parameters
    from telecli.runtime import device_for  # these import torch: after the data checks
    from telecli.runtime import resolve_dtype

    device, dtype = device_for(cfg.device), resolve_dtype(cfg.dtype)

    search = None
    gbt_settings, nn_settings = cfg.gbt, cfg.nn
    if cfg.search:
        search = random_search(sp, cfg, device, dtype, progress)
        gbt_settings = search["gbt"]
        nn_settings = dataclasses.replace(cfg.nn, lr=search["nn_lr"])

    # -- GBT in smoother form (§4.1)
    gbr = fit_gbt(sp.x_train, sp.y_train, gbt_settings, cfg.seed)
    pred_gbt_tr, pred_gbt_te = gbr.predict(sp.x_train), gbr.predict(sp.x_test)
    gbt: dict[str, np.ndarray] = {}
    if cfg.smoother:
        sm = boosting_smoother(gbr, sp.x_train, sp.x_test, sp.y_train)
        s_tr, s_te = sm.predict(sp.y_train)
        dev = max(float(np.max(np.abs(s_tr - pred_gbt_tr))), float(np.max(np.abs(s_te - pred_gbt_te))))
        if not dev <= 1e-8 * max(1.0, float(np.max(np.abs(pred_gbt_te)))):
            raise TelecliError(f"the boosting smoother deviates from GradientBoostingRegressor.predict by {dev:.3g}")
        kn_tr, kn_te = sm.kernel_norm_train, sm.kernel_norm_test
        gbt.update(S_train=sm.S_train, S_test=sm.S_test, c_train=sm.c_train, c_test=sm.c_test,
                   p_train=sm.p_train, p_test=sm.p_test, trace_train=sm.trace_train, n_leaves=sm.n_leaves,
                   staged_train=sm.staged_train, staged_test=sm.staged_test,
                   p_mixture=np.array([effective_parameters(sm.S_test[pos], len(sp.y_train))
                                       for pos in sp.mixtures.values()]))
        pred_gbt_tr, pred_gbt_te = s_tr, s_te
        del sm
    else:
        dev = math.nan
        kn_tr = tree_kernel_norms(gbr, sp.x_train, sp.x_train)
        kn_te = tree_kernel_norms(gbr, sp.x_train, sp.x_test)
    gbt.update(kernel_norm_train=kn_tr, kernel_norm_test=kn_te, pred_train=pred_gbt_tr, pred_test=pred_gbt_te,
               kernel_norm_max_train=kn_tr.max(axis=1),
               kernel_norm_max_test=np.stack([kn_te[:, pos].max(axis=1) for pos in sp.mixtures.values()]))
    kn_gbt = np.array([normalised_max_kernel_norm(kn_te[:, pos], kn_tr) for pos in sp.mixtures.values()])

    # -- NN recorded on the same split (§4.3)
    task_info = {
        "name": "tabular-boost", "dataset": name, **meta, "feature_names": names, "standardize": True,
        "x_mean": sp.x_mean.tolist(), "x_std": sp.x_std.tolist(), "y_mean": sp.y_mean, "y_std": sp.y_std,
        "split": "irregularity protocol of method.md §4.2; rows and mixtures in ../boost.h5 /split",
        "test_set": "union of the test mixtures", "train_rows": sp.train.tolist(), "test_rows": sp.test.tolist(),
        "mixtures": {f"{p:g}": pos.tolist() for p, pos in sp.mixtures.items()},
    }
    run_id = f"boost-{name}-s{cfg.seed}"
    model = train_nn(sp.x_train, sp.y_train, nn_settings, cfg.seed, device, cfg.dtype, x_test=sp.x_test,
                     y_test=sp.y_test, run_dir=nn_dir, task_info=task_info, run_id=run_id, resume=True,
                     progress=progress, label="record NN")
    pred_nn_tr = predict_nn(model, sp.x_train, device, dtype)
    pred_nn_te = predict_nn(model, sp.x_test, device, dtype)
    groups = {_label(p): pos for p, pos in sp.mixtures.items()}
    from telecli.runtime import parse_memory

    k_steps, k_max, k_mean = nn_kernel_norms(nn_dir, groups, cfg.kernel_every, device, progress,
                                             parse_memory(cfg.max_memory, device))
    kn_nn = np.array([normalised_max_kernel_norm(k_max[_label(p)], k_max["train"]) for p in props])

    # -- optional: the NN's telescoping model (lens.h5 in the run directory)
    tel_err = None
    if cfg.telescope:
        tel_err = _telescoping_errors(nn_dir, sp, cfg, overwrite, progress)

    # -- metrics (§4.4)
    mse_nn = np.array([mse(pred_nn_te[pos], sp.y_test[pos]) for pos in sp.mixtures.values()])
    mse_gbt = np.array([mse(pred_gbt_te[pos], sp.y_test[pos]) for pos in sp.mixtures.values()])
    i0 = props.index(0.0)
    try:
        rel = np.asarray(relative_mse(mse_nn, mse_gbt, mse_nn[i0], mse_gbt[i0]), dtype=np.float64)
    except TelecliError as e:
        if progress:
            print(f"note: {e}; relative MSE stored as NaN", file=sys.stderr)
        rel = np.full(len(props), np.nan)

    # -- write
    P = len(props)
    size = int(sp.info["mixture_size"])
    tree: dict[str, Any] = {
        "metrics": {
            "proportions": np.asarray(props, dtype=np.float64),
            "n_irregular": np.array([sp.n_irregular[p] for p in props], dtype=np.int64),
            "mse_nn": mse_nn, "mse_gbt": mse_gbt, "relative_mse": rel,
            "kernel_norm_nn": kn_nn, "kernel_norm_gbt": kn_gbt,
            "mse_nn_train": np.array(mse(pred_nn_tr, sp.y_train)),
            "mse_gbt_train": np.array(mse(pred_gbt_tr, sp.y_train)),
        },
        "split": {
            "train": sp.train, "test": sp.test, "regular_test": np.asarray(sp.info["regular_test"], dtype=np.int64),
            "irregular": np.asarray(sp.info["irregular"], dtype=np.int64),
            "scores": np.asarray(sp.info["scores"], dtype=np.float64),
            "proportions": np.asarray(props, dtype=np.float64),
            "mixture_index": np.stack([sp.mixtures[p] for p in props]).reshape(P, size),
            "mixture_rows": np.stack([sp.mixture_rows[p] for p in props]).reshape(P, size),
        },
        "data": {"x_train": sp.x_train, "y_train": sp.y_train, "x_test": sp.x_test, "y_test": sp.y_test,
                 "x_mean": sp.x_mean, "x_std": sp.x_std, "y_mean": np.array(sp.y_mean),
                 "y_std": np.array(sp.y_std)},
        "gbt": gbt,
        "nn": {"pred_train": pred_nn_tr, "pred_test": pred_nn_te, "kernel_steps": k_steps,
               "kernel_norm_max_train": k_max["train"],
               "kernel_norm_max_test": np.stack([k_max[_label(p)] for p in props]),
               "kernel_norm_mean_train": k_mean["train"], "kernel_norm_mean_test": k_mean["test"],
               "loss": _run_losses(nn_dir)},
    }
    if tel_err is not None:
        tree["metrics"]["telescoping_error_nn"] = tel_err
    if search is not None:
        tree["search"] = {k: np.asarray(v) for k, v in search.items() if k not in ("gbt", "nn_lr")}
    attrs = {
        "format": "telecli-boost", "format_version": 1, "dataset": name, "source": meta.get("source", cfg.data),
        "target": meta.get("target", cfg.target), "feature_names": names, "n_rows": int(len(y)),
        "n_dropped_missing": int(meta.get("n_dropped_missing", 0)),
        "openml_id": meta.get("openml_id"), "openml_version": meta.get("openml_version"),
        "openml_name": meta.get("openml_name"), "config": cfg.to_dict(), "seed": cfg.seed,
        "mixture_size": size, "mixture_size_requested": cfg.mixture_size, "mixture_size_capped": bool(sp.info["capped"]),
        "added_zero_proportion": added_zero, "nn_run": "nn", "nn_run_id": run_id,
        "nn_lens": "nn/lens.h5" if cfg.telescope else None, "device": str(device), "dtype": cfg.dtype,
        "gbt_learning_rate": gbt_settings.lr, "gbt_n_estimators": gbt_settings.trees,
        "gbt_max_depth": -1 if gbt_settings.depth is None else gbt_settings.depth,
        "gbt_smoother_max_deviation": dev, "nn_learning_rate": nn_settings.lr, "nn_steps": nn_settings.steps,
        "nn_batch_size": nn_settings.batch_size, "nn_width": nn_settings.width, "nn_depth": nn_settings.depth,
        "kernel_every": cfg.kernel_every,
        "kernel_note": "NN: ‖k_t(x)‖₂ with K^θ_t(x,x_i) = 1{i∈B_t}/|B_t| ∇f_{θ_{t−1}}(x)ᵀ∇f_{θ_{t−1}}(x_i) "
                       "(method.md Eq. 3), γ_t excluded; GBT: 1/√n_leaf (§4.1)",
    }
    from telecli.store.results import write_results

    return write_results(h5_path, tree, attrs)


def _telescoping_errors(nn_dir: Path, sp: Split, cfg: BoostConfig, overwrite: bool, progress: bool) -> np.ndarray:
    """Mean |f_θT(x) − f̃_θT(x)| (Eq. 5) over each mixture at the last step, from OUT/nn/lens.h5."""
    import h5py

    from telecli.jobs.telescope import run_telescope

    lens = run_telescope(nn_dir, nn_dir / "lens.h5", device=cfg.device, max_memory=cfg.max_memory, overwrite=True,
                         progress=progress)
    with h5py.File(lens, "r") as f:
        idx = f["test/index"][...]
        act, tel = f["test/actual"][-1, :, 0], f["test/telescoped"][-1, :, 0]
    err = np.full(len(sp.y_test), np.nan)
    err[idx] = np.abs(act - tel)
    return np.array([float(np.mean(err[pos])) for pos in sp.mixtures.values()])


def _run_losses(run_dir: Path) -> np.ndarray:
    from telecli.store.trajectory import Trajectory

    return np.asarray(Trajectory(run_dir).meta()["loss"], dtype=np.float64)


# ----------------------------------------------------------------------------------------- reporting


def summary_rows(path: str | Path) -> list[dict[str, float]]:
    """One dict per proportion from a boost.h5 (the table ``telecli boost`` prints)."""
    from telecli.store.results import open_results

    with open_results(path) as f:
        m = f["metrics"]
        keys = ["proportions", "n_irregular", "mse_nn", "mse_gbt", "relative_mse", "kernel_norm_nn",
                "kernel_norm_gbt"] + (["telescoping_error_nn"] if "telescoping_error_nn" in m else [])
        cols = {k: m[k][...] for k in keys}
    return [{k: float(cols[k][i]) for k in keys} for i in range(len(cols["proportions"]))]


def print_summary(path: str | Path) -> None:
    """The table ``telecli boost`` prints (built in telecli.report, with the other commands' summaries)."""
    from telecli.report import print_boost_summary

    print_boost_summary(path)


__all__ = ["run_boost", "print_summary", "summary_rows", "nn_kernel_norms", "make_split", "train_nn",
           "random_search"]
