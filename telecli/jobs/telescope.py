"""``telecli telescope``: stream a trajectory through the telescoping model into a results file.

Outer loop over blocks of consecutive steps (each checkpoint read once), inner loop over chunks of
evaluation points sized to a memory budget. Per output step and split: the actual network, the
telescoping model (Eq. 5 (i)), the linearisation at initialisation (§1.3), and — once the file is
complete — approximation errors (§2), losses and error rates of all three.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import h5py
import numpy as np
import torch

from telecli.errors import TelecliError
from telecli.lens import metrics
from telecli.lens import telescope as lens
from telecli.lens.functional import flatten, jacobian
from telecli.jobs.recipe import check_recipe, train_mode_problems
from telecli.jobs.common import rebuild_network, select_points
from telecli.options import parse_count, parse_points, parse_shard
from telecli.runtime import DTYPES, activation_elements, device_for, parse_memory, plan_memory, with_oom_backoff
from telecli.progress import Progress
from telecli.store.labels import label
from telecli.store.results import SPLITS, ResultsWriter, open_results, partial_path
from telecli.store.trajectory import BUFFER, THETA, Trajectory
from telecli.train.replay import Replayer, dense_states

KINDS = ("actual", "telescoped", "linearized")
# The smoother counts as tracking the network while smoother_gap ≤ SMOOTHER_TOLERANCE × std(targets).
SMOOTHER_TOLERANCE = 0.1
# The telescoping model counts as following the network while approx_error_telescoped (the mean of
# |f − f̃| over the split, §2) ≤ TELESCOPING_TOLERANCE × std(targets); beyond it the first-order sum of
# Eq. 5 (i) has drifted, and so have the residuals y − f̃ the smoother is built from (Eq. 7).
TELESCOPING_TOLERANCE = 0.1
SMOOTHER_DATASETS = ("smoother", "smoother_sq_norm", "kernel_norm")


def output_steps(traj: Trajectory, every: int | None) -> np.ndarray:
    """The steps written to the results file: the stored steps by default, or every K-th step (and the
    last) — steps not stored are replayed (telecli.train.replay); all steps contribute to the sum."""
    steps = traj.steps
    if every is None:
        return steps.astype(np.int64)
    if every < 1:
        raise TelecliError(f"--every must be ≥ 1, got {every}")
    first, last = int(steps[0]), int(steps[-1])
    keep = list(range(first, last + 1, every))
    if keep[-1] != last:
        keep.append(last)
    return np.asarray(keep, dtype=np.int64)


def default_output(run: Path, shard: tuple[int, int]) -> Path:
    i, n = shard
    return run / ("lens.h5" if n == 1 else f"lens.shard-{i}-of-{n}.h5")


def _stack(states: list[dict], prefix: str, device, dtype) -> dict[str, torch.Tensor]:
    names = states[0][prefix].keys()
    out = {}
    for name in names:
        t = torch.stack([s[prefix][name] for s in states]).to(device)
        out[name] = t.to(dtype) if t.is_floating_point() else t
    return out


def run_telescope(run: str | Path, out: str | Path | None = None, *, points: str | int = "all", every: int | None = None,
                  device: str | None = None, max_memory: str | None = None, shard: str | None = None,
                  seed: int = 0, overwrite: bool = False, progress: bool = True,
                  effective_params: bool = False, approximate: bool = False, probes: int | None = None,
                  dtype: str | None = None) -> Path:
    """Compute the telescoping model of a recorded run; returns the results file path.

    A run whose network ran batch-dependent layers in train mode is refused (the function evaluated
    would not be the one trained), and with ``effective_params`` every step is first checked against
    the step the smoother models (telecli.jobs.recipe): a mismatch is refused. ``approximate``
    computes either anyway and records the caveat in the file (docs/effective-parameters.md).

    With ``effective_params``, ``shard`` i/N splits the smoother's training-target columns instead of the
    points (every shard evaluates every point; their squared row norms add up, method.md §10.1), and
    ``probes`` R carries R Rademacher probe columns (seeded by ``seed``) instead of all n: p and the
    per-point ‖s(x)‖² become Hutchinson estimates, with the standard error of p stored beside it.
    ``dtype`` computes in another precision than the run's (float32: half the memory, twice the GEMM
    rate; docs/effective-parameters.md reports its error)."""
    run = Path(run)
    points = parse_points(points, "--points")
    every = None if every is None else parse_count(every, "--every")
    seed = parse_count(seed, "--seed", 0)
    if dtype is not None and dtype not in DTYPES:
        raise TelecliError(f"--dtype must be one of {', '.join(DTYPES)}, got '{dtype}'")
    traj = Trajectory(run, check_hashes=True)
    if not traj.is_contiguous():
        Replayer(traj, torch.device("cpu"))  # fails early, with the reason, when gaps cannot be replayed
    shard_ix = parse_shard(shard)
    if probes is not None and not effective_params:
        raise TelecliError("--probes sketches the effective parameters; add --effective-params")
    if probes is not None and not (isinstance(probes, int) and probes >= max(2, shard_ix[1])):
        raise TelecliError(f"--probes must be an integer ≥ 2 (and ≥ the number of shards, {shard_ix[1]}), got {probes!r}")
    columns = "exact"
    if effective_params and probes:
        columns = ("sketch", int(probes), int(seed), *shard_ix)
    elif effective_params and shard_ix[1] > 1:
        columns = ("shard", *shard_ix)
    out = Path(out) if out else default_output(run, shard_ix)
    if out.exists():
        from telecli.store.results import check_writable

        check_writable(out, overwrite)  # refuse before the recipe check's work
    dev = device_for(device)
    dtype_name = dtype
    model = rebuild_network(traj, dev, DTYPES[dtype] if dtype else None)
    dtype = next(model.parameters()).dtype
    caveats = train_mode_problems(traj, model)
    if caveats and not approximate:
        raise TelecliError(f"{caveats[0]}; pass --approximate to telescope it anyway (evaluated in eval mode, "
                           f"flagged in the results file)")
    report = None
    if effective_params and traj.manifest["loss"] == "mse":
        # the recipe is the recording's: checked in the run's own precision whatever --dtype computes in
        recorded = model if dtype_name is None else rebuild_network(traj, dev)
        report = check_recipe(traj, recorded, dev, progress)
        if not report.ok and not approximate:
            raise TelecliError(f"{run}: {report.lines()[-1]}; the effective parameters would be wrong — pass "
                               f"--approximate to compute them anyway (flagged in the results file)")
        caveats = caveats + [line for line in report.lines() if line not in caveats]
    data = traj.data()
    splits = [s for s in SPLITS if f"x_{s}" in data and data[f"x_{s}"].shape[0] > 0]
    chosen = {s: select_points(data[f"x_{s}"].shape[0], points, seed) for s in splits}
    k = int(traj.manifest["data"]["output_dim"])
    plan = _plan(traj, model, data[f"x_{splits[0]}"][:1].to(dev, dtype), max(map(len, chosen.values())), k,
                 dev, dtype, max_memory)
    point_shard = (0, 1) if effective_params else shard_ix  # with the smoother, shards split its columns
    idx = {s: _shard_positions(chosen[s], plan.chunk, point_shard) for s in splits}
    X = {s: data[f"x_{s}"][torch.as_tensor(idx[s])].to(dev, dtype) for s in splits}
    Y = {s: data[f"y_{s}"][torch.as_tensor(idx[s])].to(dtype) for s in splits}
    steps = traj.steps
    first, last = int(steps[0]), int(steps[-1])
    out_steps = output_steps(traj, every)
    row_of = {int(t): r for r, t in enumerate(out_steps)}
    S = len(out_steps)

    key = json.dumps({"run": traj.manifest.get("run_id"), "last": last, "points": str(points), "every": every,
                      "seed": seed, "shard": list(shard_ix), "sha": traj.shards[-1].sha256,
                      "effective_params": effective_params, "probes": probes, "dtype": str(dtype)},
                     sort_keys=True)
    datasets = {f"{s}/{kind}": ((S, len(idx[s]), k), "f8") for s in splits for kind in KINDS}
    if effective_params:
        from telecli.jobs.smoother import datasets as smoother_datasets

        from telecli.jobs.smoother import effective_optimizer

        from telecli.lens.smoother import Columns

        mine = len(Columns.probe_share(probes, shard_ix)) if probes else 0
        datasets.update(smoother_datasets(splits, {s: len(idx[s]) for s in splits}, S, k,
                                          effective_optimizer(traj.manifest["optimizer"], traj.meta()), mine))
        datasets["recipe_error"] = ((S,), "f8")
    fixed = {"steps": out_steps}
    for s in splits:
        fixed[f"{s}/index"] = idx[s].astype(np.int64)
        fixed[f"{s}/targets"] = Y[s].double().numpy()
    attrs = {"run": str(run), "run_id": traj.manifest.get("run_id"), "points": str(points), "every": every,
             "seed": seed, "shard": f"{shard_ix[0]}/{shard_ix[1]}", "loss": traj.manifest["loss"],
             "shard_axis": "columns" if effective_params else "points", "probes": probes or 0,
             "optimizer": traj.manifest["optimizer"], "device": str(dev), "dtype": str(dtype)[6:],
             "buffers_note": "BatchNorm layers evaluated with the recorded running statistics (eval mode)",
             "config": traj.manifest.get("config"), "n_train": int(traj.manifest["data"]["n_train"]),
             "effective_params": effective_params, "approximate": bool(caveats), "caveats": caveats,
             "recipe_check": report.summary() if report is not None else
             "not run: the telescoped predictions use the recorded Δθ_t (telecli verify RUN checks the recipe)",
             "recorded_observations": observations(traj)}
    writer = ResultsWriter(out, key, attrs, datasets, fixed, overwrite)
    try:
        _compute(traj, model, writer, X, splits, first, last, row_of, dev, dtype, plan, progress)
        if effective_params:
            from telecli.jobs.smoother import run_smoother

            run_smoother(traj, model, writer, X, idx, row_of, dev, dtype, parse_memory(max_memory, dev), progress,
                         columns=columns)
            if report is not None:
                writer["recipe_error"][...] = recipe_by_row(report, out_steps)
        path = writer.finish(lambda f: summarise(f, traj.manifest["loss"]))
    except BaseException:
        writer.close()
        raise
    if effective_params:
        warn_if_unreliable(path)
    return path


def observations(traj: Trajectory) -> dict:
    """What the Recorder saw the loop do that the analysis models through per-step records (clipping,
    a loss scale, hyper-parameters that changed) or flags (inputs ≠ X[idx], another loss)."""
    from telecli.lens.recipe import CLIP_TOLERANCE, INPUT_TOLERANCE, LOSS_TOLERANCE

    meta = traj.meta()
    out = {}
    for key, tol in (("input_deviation", INPUT_TOLERANCE), ("loss_residual", LOSS_TOLERANCE),
                     ("clip_spread", CLIP_TOLERANCE)):
        if key in meta:
            out[f"steps_{key}_above_tolerance"] = int(np.sum(meta[key] > tol))
    if "clip" in meta:
        out["steps_clipped"] = int(np.sum(meta["clip"] < 1 - 1e-12))
    if "loss_scale" in meta and np.isfinite(meta["loss_scale"]).any():
        out["loss_scale_range"] = [float(np.nanmin(meta["loss_scale"])), float(np.nanmax(meta["loss_scale"]))]
    return out


def recipe_by_row(report, out_steps: np.ndarray) -> np.ndarray:
    """Per written step: the largest recipe error of the steps since the previous written step."""
    err = np.full(len(out_steps), np.nan)
    for r in range(1, len(out_steps)):
        sel = (report.steps > out_steps[r - 1]) & (report.steps <= out_steps[r])
        vals = report.error[sel]
        if np.isfinite(vals).any():
            err[r] = np.nanmax(vals)
    return err


def warn_if_unreliable(path: Path) -> None:
    """Say on stderr where the validity flags (written by :func:`validity`) fail, with the measured cause."""
    with h5py.File(path, "r") as f:
        caveats = json.loads(f.attrs.get("caveats", "[]"))
        if caveats:
            print(f"telecli: warning: computed with --approximate: {caveats[0]}", file=sys.stderr)
        for s in SPLITS:
            if f"validity/{s}/smoother" not in f:
                continue
            ok = f[f"validity/{s}/smoother"][...]
            if ok.all():
                continue
            gap = f[f"{s}/smoother_gap"][...]
            scale = float(f.attrs["smoother_scale_" + s])
            i, first = int(np.nanargmax(gap)), int(np.argmin(ok))
            tele = f[f"{s}/approx_error_telescoped"][first]
            if caveats:
                cause = "the recorded steps are not the modelled ones (above)"
            elif tele > SMOOTHER_TOLERANCE * scale:
                cause = (f"the first-order telescoping error itself is {tele:.3g} there (large steps: is the "
                         f"learning rate near the edge of stability?)")
            else:
                cause = (f"the telescoping error is small there ({tele:.3g}), so the residuals taken from f̃ "
                         f"(Eq. 7) have drifted from the network's")
            if gap[i] > 100 * scale:
                cause += "; from there the smoother's recursion diverges (its residuals feed back on themselves)"
            print(f"telecli: warning: on {s} points the smoother departs from the network by {gap[i]:.3g} "
                  f"({gap[i] / scale:.3g} × the targets' spread) at step {int(f['steps'][i])}; the effective "
                  f"parameters are unreliable from step {int(f['steps'][first])}: {cause}", file=sys.stderr)
            return
        for s in SPLITS:
            if f"validity/{s}/telescoping" in f and not f[f"validity/{s}/telescoping"][...].all():
                ok = f[f"validity/{s}/telescoping"][...]
                err = f[f"{s}/approx_error_telescoped"][...]
                print(f"telecli: warning: on {s} points the telescoping model departs from the network by up to "
                      f"{np.nanmax(err):.3g} (above {TELESCOPING_TOLERANCE:g} × the targets' spread "
                      f"{float(f.attrs['target_spread_' + s]):.3g}) from step {int(f['steps'][int(np.argmin(ok))])}; "
                      f"the effective parameters there are flagged (validity/{s}/ok)", file=sys.stderr)
                return


def _state0(traj, first, dev, dtype):
    theta0 = {n: v.to(dev, dtype) for n, v in traj.theta(first).items()}
    buffers0 = {n: (v.to(dev, dtype) if v.is_floating_point() else v.to(dev)) for n, v in traj.buffers(first).items()}
    return theta0, buffers0


def _plan(traj, model, x1, n_points, k, dev, dtype, max_memory):
    """Steps per block and points per chunk, from the job's total point count (not the shard's), so
    every shard, rank and resumed job evaluates the same chunks: results then agree bit for bit."""
    theta0, buffers0 = _state0(traj, int(traj.steps[0]), dev, dtype)
    n_params = sum(v.numel() for v in theta0.values())
    act = activation_elements(model, x1, theta0, buffers0)
    itemsize = torch.finfo(dtype).bits // 8
    return plan_memory(parse_memory(max_memory, dev), n_points, k, n_params, act, itemsize)


def _shard_positions(chosen: np.ndarray, chunk: int, shard: tuple[int, int]) -> np.ndarray:
    """The shard's points: whole chunks of the job's chunk grid, split as evenly as possible."""
    n_chunks = -(-len(chosen) // chunk)
    mine = np.array_split(np.arange(n_chunks), shard[1])[shard[0]]
    if len(mine) == 0:
        return chosen[:0]
    return chosen[mine[0] * chunk : min(len(chosen), (mine[-1] + 1) * chunk)]


def _compute(traj, model, writer, X, splits, first, last, row_of, dev, dtype, plan, progress):
    theta0, buffers0 = _state0(traj, first, dev, dtype)
    theta0_flat = flatten(theta0)
    k = writer[f"{splits[0]}/actual"].shape[2]

    def chunks(s):
        n = X[s].shape[0]
        return [slice(a, min(a + plan.chunk, n)) for a in range(0, n, plan.chunk)]

    with torch.no_grad():
        f0 = {s: torch.cat([lens.actual(model, {n: v[None] for n, v in theta0.items()},
                                        {n: v[None] for n, v in buffers0.items()}, X[s][c])[0] for c in chunks(s)]
                           or [torch.zeros(0, k, dtype=dtype, device=dev)]) for s in splits}

    jac_cache: dict[tuple[str, int], torch.Tensor] = {}

    def lin_block(s, ci, c, theta_out):
        """f^lin at the output steps: one GEMM with a cached J_0 when it fits the budget, else JVPs."""
        if plan.cache_jac0:
            if (s, ci) not in jac_cache:
                jac_cache[(s, ci)] = jacobian(model, theta0, buffers0, X[s][c])
            return lens.linearized(f0[s][c], jac_cache[(s, ci)], theta_out, theta0_flat)
        return lens.linearized_jvp(model, theta0, buffers0, f0[s][c], X[s][c], theta_out)

    start = first
    f_tilde = {s: f0[s].clone() for s in splits}
    if writer.resumed_from is not None:
        start = writer.resumed_from
        f_tilde = {s: torch.as_tensor(writer.state(f"_state/{s}/telescoped")).to(dev, dtype) for s in splits}
    elif first in row_of:
        for s in splits:
            for kind in ("actual", "telescoped", "linearized"):
                writer[f"{s}/{kind}"][row_of[first]] = f0[s].double().cpu().numpy()

    def process(states: list[dict], steps_blk: list[int]) -> None:
        thetas = _stack(states, THETA, dev, dtype)
        finite = {n: torch.isfinite(v.reshape(v.shape[0], -1)).all(dim=1) for n, v in thetas.items()}
        ok = torch.stack(list(finite.values())).all(dim=0)
        if not bool(ok.all()):
            pos = int((~ok).nonzero()[0])
            name = next(n for n, f in finite.items() if not bool(f[pos]))
            raise TelecliError(f"parameter {name} is non-finite at step {steps_blk[pos]} of {traj.run_dir}; "
                               f"record the run again with a smaller learning rate")
        bufs = _stack(states, BUFFER, dev, dtype) if states[0][BUFFER] else {}
        out_pos = [i for i, t in enumerate(steps_blk[1:]) if t in row_of]  # positions s: step t0+1+s
        r0 = row_of[steps_blk[1 + out_pos[0]]] if out_pos else 0
        for s in splits:
            rows = {kind: np.empty((len(out_pos), X[s].shape[0], k)) for kind in KINDS}
            for ci, c in enumerate(chunks(s)):
                x = X[s][c]
                actual_prev, ft = lens.telescope_block(model, thetas, bufs, x, f_tilde[s][c])
                f_tilde[s][c] = ft[-1]
                if not out_pos:
                    continue
                sel = torch.as_tensor(out_pos, device=dev)
                theta_out = {n: v[1:][sel] for n, v in thetas.items()}
                lin = lin_block(s, ci, c, theta_out)
                act = torch.empty_like(lin)
                S = len(steps_blk) - 1
                inner = [i for i, p in enumerate(out_pos) if p < S - 1]
                if inner:
                    act[inner] = actual_prev[[out_pos[i] + 1 for i in inner]]
                if out_pos[-1] == S - 1:
                    with torch.no_grad():
                        act[-1] = lens.actual(model, {n: v[-1:] for n, v in thetas.items()},
                                              {n: v[-1:] for n, v in bufs.items()}, x)[0]
                rows["telescoped"][:, c] = ft[sel].detach().double().cpu().numpy()
                rows["linearized"][:, c] = lin.detach().double().cpu().numpy()
                rows["actual"][:, c] = act.detach().double().cpu().numpy()
            if out_pos:
                for kind in KINDS:
                    writer[f"{s}/{kind}"][r0 : r0 + len(out_pos)] = rows[kind]
        writer.checkpoint(steps_blk[-1], {f"_state/{s}/telescoped": f_tilde[s].double().cpu().numpy()
                                          for s in splits})

    with Progress(last - start, f"telescope {traj.run_dir.name}", enabled=progress) as bar:
        block: list[dict] = []
        blk_steps: list[int] = []
        for step, st in dense_states(traj, (THETA, BUFFER), start, dev):
            block.append(st)
            blk_steps.append(step)
            if len(block) == plan.block + 1 or step == last:
                if len(block) > 1:
                    with_oom_backoff(lambda: process(block, blk_steps), plan, on_shrink=lambda: _drop_jac0(plan, jac_cache))
                    bar.advance(len(block) - 1)
                block, blk_steps = block[-1:], blk_steps[-1:]


def _drop_jac0(plan, cache) -> None:
    """Under memory pressure stop caching J_0 (the linearisation falls back to JVPs)."""
    plan.cache_jac0 = False
    cache.clear()


def summarise(f: h5py.File, loss_kind: str) -> None:
    """Per-step metrics from the stored predictions: approximation errors (§2), losses, error rates."""
    for s in SPLITS:
        if f"{s}/actual" not in f:
            continue
        y = torch.as_tensor(f[f"{s}/targets"][...])
        pred = {kind: torch.as_tensor(f[f"{s}/{kind}"][...]) for kind in KINDS}
        g = f[s]
        for name in [n for n in g if n.startswith(("loss_", "error_", "approx_error_")) or n in (
                "effective_parameters", "effective_parameters_se", "smoother_gap", "kernel_norm_max")]:
            del g[name]
        for kind in ("telescoped", "linearized"):
            g[f"approx_error_{kind}"] = metrics.approximation_error(pred["actual"], pred[kind]).numpy()
        for kind in KINDS:
            g[f"loss_{kind}"] = metrics.loss(pred[kind], y, loss_kind).numpy()
            g[f"error_{kind}"] = metrics.error_rate(pred[kind], y, loss_kind).numpy()
        if "smoother_sq_norm" in g:
            from telecli.lens.smoother import effective_parameters_k

            n, k = int(f.attrs["n_train"]), y.shape[1]
            sq = g["smoother_sq_norm"][...]
            g["effective_parameters"] = np.array([effective_parameters_k(row, n, k) if row.size else np.nan
                                                  for row in sq])
            if "probe_effective_parameters" in g:  # a sketch: p is the mean over probes, s.e. from their spread
                from telecli.lens.stats import mean_se

                per_probe = g["probe_effective_parameters"][...]
                g["effective_parameters_se"] = mean_se(per_probe, axis=1, single=np.nan)[1]
            smooth = torch.as_tensor(g["smoother"][...])
            g["smoother_gap"] = metrics.approximation_error(pred["actual"], smooth).numpy()
            g["loss_smoother"] = metrics.loss(smooth, y, loss_kind).numpy()
            g["error_smoother"] = metrics.error_rate(smooth, y, loss_kind).numpy()
            if "kernel_norm" in g:
                g["kernel_norm_max"] = np.array([np.nanmax(r) if np.isfinite(r).any() else np.nan
                                                 for r in g["kernel_norm"][...]])
    validity(f)


def validity(f: h5py.File) -> None:
    """Per written step, whether the telescoping model and the effective parameters mean what they say
    (docs/effective-parameters.md "When p means what it says"):

    * ``validity/{split}/telescoping``: f̃ tracks f_θ (approx_error_telescoped ≤ TELESCOPING_TOLERANCE ×
      std(y)); written for every results file;

    with ``--effective-params``:

    * ``validity/recipe``: every step so far is the step the smoother models (recipe_error ≤ tolerance);
    * ``validity/parameters``: Θ^S y + Θ^C tracks θ_t (parameter_gap_relative ≤ PARAMETER_TOLERANCE);
    * ``validity/{split}/smoother``: s(x)·y + c(x) tracks f_θ(x) (smoother_gap ≤ SMOOTHER_TOLERANCE × std(y));
    * ``validity/{split}/ok``: all four. Thresholds and the targets' spread are attributes of the file.

    A non-finite error fails its check."""
    from telecli.lens.recipe import RECIPE_TOLERANCE
    from telecli.jobs.smoother import PARAMETER_TOLERANCE

    if "validity" in f:
        del f["validity"]
    f.attrs["telescoping_tolerance"] = TELESCOPING_TOLERANCE
    tele, spread = {}, {s: target_spread(f[f"{s}/targets"][...]) for s in SPLITS if f"{s}/targets" in f}
    for s in SPLITS:
        if f"{s}/approx_error_telescoped" not in f:
            continue
        f.attrs["target_spread_" + s] = spread[s]
        tele[s] = within(f[f"{s}/approx_error_telescoped"][...], TELESCOPING_TOLERANCE * spread[s])
        f[f"validity/{s}/telescoping"] = tele[s]
    if not ("train/smoother_gap" in f or "test/smoother_gap" in f):
        return
    dtype = DTYPES.get(str(f.attrs.get("dtype")), torch.float64)
    rtol = RECIPE_TOLERANCE[dtype]
    S = len(f["steps"])
    if "recipe_error" in f:
        err = np.nan_to_num(f["recipe_error"][...], nan=0.0)
        recipe = np.logical_and.accumulate(err <= rtol)
    else:
        recipe = np.ones(S, dtype=bool)
    rel = f["parameter_gap_relative"][...] if "parameter_gap_relative" in f else np.zeros(S)
    params = np.nan_to_num(rel, nan=0.0) <= PARAMETER_TOLERANCE
    f["validity/recipe"] = recipe
    f["validity/parameters"] = params
    f.attrs["recipe_tolerance"] = rtol
    f.attrs["parameter_tolerance"] = PARAMETER_TOLERANCE
    f.attrs["smoother_tolerance"] = SMOOTHER_TOLERANCE
    for s in SPLITS:
        if f"{s}/smoother_gap" not in f:
            continue
        scale = spread[s]
        f.attrs["smoother_scale_" + s] = scale
        smooth = np.nan_to_num(f[f"{s}/smoother_gap"][...], nan=0.0) <= SMOOTHER_TOLERANCE * scale
        f[f"validity/{s}/smoother"] = smooth
        f[f"validity/{s}/ok"] = recipe & params & smooth & tele.get(s, True)


def target_spread(y: np.ndarray) -> float:
    """The targets' spread the validity thresholds are relative to: their standard deviation over points
    and outputs (1 when they are constant)."""
    return float(np.std(y)) or 1.0


def within(err: np.ndarray, bound: float) -> np.ndarray:
    """err ≤ bound per step; a non-finite error is not within.

    >>> within(np.array([0.0, 0.2, np.nan]), 0.1).tolist()
    [True, False, False]
    """
    err = np.asarray(err, dtype=float)
    return np.isfinite(err) & (err <= bound)


# Column shards (--effective-params --shard i/N, method.md §10.1): these add up; the rest is the same in each.
COLUMN_SUMS = ("train/smoother_sq_norm", "test/smoother_sq_norm", "train/smoother_trace")
COLUMN_PROBES = ("train/probe_effective_parameters", "test/probe_effective_parameters")


def _merge_columns(parts, files, tmp: Path, ref: h5py.File) -> None:
    """Column shards: every shard evaluated every point, so the predictions, kernel norms and checks of
    any one are the job's; squared row norms and trace partial sums add up, sketch probes concatenate."""
    for p, f in zip(parts, files):
        for s in SPLITS:
            if f"{s}/index" in ref and not np.array_equal(f[f"{s}/index"][...], ref[f"{s}/index"][...]):
                raise TelecliError(f"{p} evaluated other {s} points than {parts[0]}; shards must come from one job")
    with h5py.File(tmp, "w") as g:
        for k_, v in ref.attrs.items():
            g.attrs[k_] = v
        g.attrs["shard"] = "merged"
        g.attrs["merged_from"] = json.dumps([str(p) for p in parts])
        for name in ref:
            ref.copy(name, g)
        for name in COLUMN_SUMS:
            if name in g:
                g[name][...] = np.sum([f[name][...] for f in files], axis=0)
        for name in COLUMN_PROBES:
            if name in g:
                del g[name]
                g[name] = np.concatenate([f[name][...] for f in files], axis=1)
        summarise(g, str(ref.attrs["loss"]))
        label(g)  # the copied labels pointed into the shard files


def merge(parts: list[str | Path], out: str | Path, overwrite: bool = False) -> Path:
    """Join shard files of one ``telescope`` job into one file: points split with --shard are ordered by
    index; with --effective-params the shards split the smoother's columns, whose partial sums add up."""
    from telecli.store.results import check_writable

    out = Path(out)
    check_writable(out, overwrite)
    files = [open_results(p) for p in parts]
    try:
        ref = files[0]
        for p, f in zip(parts, files):
            shard = str(f.attrs.get("shard", ""))
            if "/" not in shard or shard.endswith("/1"):
                raise TelecliError(f"{p} is not a shard of a telecli telescope job (shard '{shard}'); merge joins "
                                   f"files written with --shard i/N")
            for attr in ("run_id", "every", "points", "seed", "probes", "shard_axis"):
                if f.attrs.get(attr) != ref.attrs.get(attr):
                    raise TelecliError(f"{p} differs from {parts[0]} in '{attr}'; shards must come from one job")
            if not np.array_equal(f["steps"][...], ref["steps"][...]):
                raise TelecliError(f"{p} has other steps than {parts[0]}")
        shards = sorted({f.attrs.get("shard") for f in files})
        n_total = int(str(ref.attrs.get("shard", "0/1")).split("/")[1])
        if len(shards) != n_total or len(files) != n_total:
            raise TelecliError(f"expected {n_total} distinct shards, got {len(shards)} ({', '.join(map(str, shards))})")
        tmp = partial_path(out)
        if ref.attrs.get("shard_axis") == "columns":
            _merge_columns(parts, files, tmp, ref)
            os.replace(tmp, out)
            return out
        with h5py.File(tmp, "w") as g:
            for k_, v in ref.attrs.items():
                g.attrs[k_] = v
            g.attrs["shard"] = "merged"
            g.attrs["merged_from"] = json.dumps([str(p) for p in parts])
            g["steps"] = ref["steps"][...]
            for s in SPLITS:
                if f"{s}/index" not in ref:
                    continue
                index = np.concatenate([f[f"{s}/index"][...] for f in files])
                order = np.argsort(index, kind="stable")
                g[f"{s}/index"] = index[order]
                g[f"{s}/targets"] = np.concatenate([f[f"{s}/targets"][...] for f in files])[order]
                for kind in KINDS + SMOOTHER_DATASETS:
                    if f"{s}/{kind}" in ref:
                        g[f"{s}/{kind}"] = np.concatenate([f[f"{s}/{kind}"][...] for f in files], axis=1)[:, order]
                if f"{s}/kernel_norm_max_every_step" in ref:
                    stack = np.stack([f[f"{s}/kernel_norm_max_every_step"][...] for f in files])
                    g[f"{s}/kernel_norm_max_every_step"] = np.array(
                        [np.nanmax(c) if np.isfinite(c).any() else np.nan for c in stack.T])
            for name in ("train/smoother_trace", "parameter_gap", "parameter_gap_relative", "recipe_error"):
                if name in ref:  # computed from every training row: the same in every shard
                    g[name] = ref[name][...]
            summarise(g, str(ref.attrs["loss"]))
            label(g)
        os.replace(tmp, out)
        return out
    finally:
        for f in files:
            f.close()
