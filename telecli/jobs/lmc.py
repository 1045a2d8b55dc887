"""``telecli lmc spawn`` / ``interpolate`` / ``gradients``: linear mode connectivity (method.md §5).

spawn        For every spawn step t' and pair j, two children (a, b) continue the parent run from θ_{t'}
             with its optimiser state, each with its own data order and augmentation randomness (seeds
             derived from (parent seed, t', j, side)), to the parent's last step. Layout::

                 SPAWN/spawn.json               index (atomic): parent, settings, every planned child
                 SPAWN/t{t'}/pair{j}/{a,b}/     ordinary run directories (telecli info / verify work)

             A child whose run.json says "complete" is skipped, any other is resumed, so rerunning the
             same command after a kill finishes the job. Children store θ every ``every`` steps (one
             shard per stored step, so a killed child resumes from its last one); once complete, a
             child's data.safetensors is replaced by a hard link to the parent's (same sha256).
interpolate  Loss and accuracy along θ_α = αθ_A + (1−α)θ_B, of the α-weighted mean of the children and
             of the output ensemble, for every pair; barriers per spawn step; gradient change by layer
             from the parent's trajectory → HDF5 (docs/lmc.md). Resumable (one checkpoint per t').
gradients    Only the gradient-change metric, for a run without children.

The maths lives in :mod:`telecli.lens.lmc`; this module reads and writes files.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from telecli import config as config_mod
from telecli.errors import TelecliError
from telecli.lens import lmc as lens
from telecli.jobs.common import rebuild_network, select_points
from telecli.options import parse_alpha, parse_points, parse_shard, parse_steps
from telecli.runtime import DTYPES, activation_elements, device_for, parse_memory, with_oom_backoff
from telecli.progress import Progress
from telecli.store.spawn import INDEX, INDEX_FORMAT, load_index, share_data, write_index
from telecli.store.results import ResultsWriter
from telecli.store.trajectory import MANIFEST, Trajectory, read_manifest

RESULTS_FORMAT = "telecli-lmc"
SIDES = ("a", "b")
BN_MODES = ("interpolate", "recompute")
REDUCTIONS = ("mean", "true")


def child_seed(parent_seed: int, t: int, pair: int, side: str) -> int:
    """Data-order seed of a child: a hash of (parent seed, t', pair, side), in [0, 2³¹)."""
    blob = json.dumps([int(parent_seed), int(t), int(pair), str(side)]).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "little") & 0x7FFFFFFF


def child_dir(t: int, pair: int, side: str) -> str:
    return f"t{t}/pair{pair}/{side}"


# --------------------------------------------------------------------------------------------- spawn

def default_spawn_dir(run: Path) -> Path:
    return run.parent / f"{run.name}-lmc"


def default_every(total: int) -> int:
    """About ten checkpoints per child (resume points); the interpolation reads only the last."""
    return max(1, -(-total // 10))


def _parent_config(run: Path) -> tuple[dict, config_mod.RunConfig]:
    manifest = read_manifest(run)
    if not manifest.get("config"):
        raise TelecliError(f"{run} was recorded by a user loop (Recorder); lmc spawn needs a 'telecli record' run")
    return manifest, config_mod.from_dict(manifest["config"])


def child_config(parent_cfg: dict, t: int, pair: int, side: str, every: int,
                 device: str | None = None) -> config_mod.RunConfig:
    """The parent's configuration with the child's seed, name and storage (training is unchanged)."""
    cfg = config_mod.from_dict(parent_cfg)
    cfg.seed = child_seed(cfg.seed, t, pair, side)
    cfg.name = f"{cfg.name}-lmc"
    cfg.store.every, cfg.store.log_points, cfg.store.steps = int(every), 0, []
    cfg.store.shard_mb = 0.0  # one stored step per shard: a killed child resumes from its last checkpoint
    if device is not None:
        cfg.device = device
    return cfg


def check_spawn_steps(run: Path, traj: Trajectory, cfg: config_mod.RunConfig, steps: list[int]) -> None:
    total = cfg.train.steps
    stored = set(int(s) for s in traj.steps)
    for t in steps:
        if t > total:
            raise TelecliError(f"spawn step {t} is beyond the last step {total} of {run}; pick steps ≤ {total}")
        if t not in stored:
            hint = (f"add it to store.steps in the preset (e.g. --set 'store.steps=[{t}]') and record again"
                    if t <= traj.last_step else f"the run stops at step {traj.last_step}: finish it with "
                    f"'telecli record … --resume'")
            raise TelecliError(f"spawn step {t} is not stored in {run} (stored: {traj.describe_steps()}); {hint}")
        if t > 0 and traj.manifest.get("optimizer_state") and not traj.optimizer_state(t):
            raise TelecliError(f"{run} has no optimiser state at step {t}; record it with store.optimizer_state = true")
    if traj.manifest["optimizer_state"] == [] and any(t > 0 for t in steps):
        from telecli.train.recorder import state_keys

        if state_keys(traj.manifest["optimizer"]):
            raise TelecliError(f"{run} stored no optimiser state; children could not continue its momentum "
                               f"(record with store.optimizer_state = true)")


def spawn(run: str | Path, at: str | list[int], *, pairs: int = 1, out: str | Path | None = None,
          every: int | None = None, device: str | None = None, shard: str | None = None,
          progress: bool = True) -> Path:
    """Spawn (or finish spawning) ``pairs`` pairs of children at every step of ``at``; returns SPAWN."""
    run = Path(run)
    manifest, cfg = _parent_config(run)
    traj = Trajectory(run)
    steps = parse_steps(at)
    if pairs < 1:
        raise TelecliError(f"--pairs must be ≥ 1, got {pairs}")
    if every is not None and every < 1:
        raise TelecliError(f"--every must be ≥ 1, got {every}")
    check_spawn_steps(run, traj, cfg, steps)
    shard_ix = parse_shard(shard)
    out = Path(out) if out is not None else default_spawn_dir(run)
    if out.resolve() == run.resolve() or run.resolve() in out.resolve().parents:
        raise TelecliError(f"--out {out} lies inside the parent run {run}; pick a directory outside it")
    if out.exists() and not out.is_dir():
        raise TelecliError(f"--out {out} exists and is not a directory")

    index = load_index(out)
    if index is not None:
        if index["parent_run_id"] != manifest["run_id"]:
            raise TelecliError(f"{out} holds children of another run ({index['parent_run_id']}); pick another --out")
        if every is not None and every != index["every"]:
            raise TelecliError(f"{out} was spawned with --every {index['every']}; rerun with the same value")
        every = int(index["every"])
    else:
        if out.exists() and any(out.iterdir()):
            raise TelecliError(f"{out} exists, is not empty and has no {INDEX}; pick another --out")
        every = every or default_every(cfg.train.steps)
        index = {"format": INDEX_FORMAT, "format_version": 1, "parent": os.path.relpath(run.resolve(), out.resolve()),
                 "parent_abs": str(run.resolve()), "parent_run_id": manifest["run_id"], "parent_seed": cfg.seed,
                 "last_step": cfg.train.steps, "every": every, "children": []}
    planned = [{"t": t, "pair": j, "side": s, "seed": child_seed(cfg.seed, t, j, s), "dir": child_dir(t, j, s)}
               for t in steps for j in range(pairs) for s in SIDES]
    known = {c["dir"] for c in index["children"]}
    new = [c for c in planned if c["dir"] not in known]
    if new:
        index["children"] = sorted(index["children"] + new, key=lambda c: (c["t"], c["pair"], c["side"]))
        write_index(out, index)

    mine = planned[shard_ix[0]::shard_ix[1]]
    parent_abs = str(run.resolve())
    for i, c in enumerate(mine, 1):
        d = out / c["dir"]
        ccfg = child_config(manifest["config"], c["t"], c["pair"], c["side"], every, device)
        state = child_status(d)
        if state == "complete":
            stored = read_manifest(d).get("config") or {}
            if {k: v for k, v in stored.items() if k != "device"} != {k: v for k, v in ccfg.to_dict().items()
                                                                      if k != "device"}:
                raise TelecliError(f"{d} was spawned with other settings; pick another --out")
        else:
            if progress:
                print(f"lmc spawn: child {i}/{len(mine)}  t'={c['t']} pair {c['pair']} {c['side']}  → {d}",
                      file=sys.stderr, flush=True)
            from telecli.train.loop import run_training

            d.parent.mkdir(parents=True, exist_ok=True)
            # resume=True also for a 'new' child: one killed before its manifest starts afresh
            run_training(ccfg, d, resume=True, progress=progress, parent={"run": parent_abs, "at": c["t"]})
        share_data(run, d)
    return out


def child_status(d: Path) -> str:
    """'new' (no manifest yet), or the status in the child's run.json ('running', 'complete', …)."""
    if not (d / MANIFEST).is_file():
        return "new"
    return str(read_manifest(d).get("status", "running"))


# --------------------------------------------------------------------------------------- the children

@dataclass
class Pair:
    t: int
    pair: int
    a: Path
    b: Path
    seeds: tuple[int, int]


@dataclass
class Source:
    """What interpolate reads: pairs grouped by spawn step, and the parent (for the gradients)."""

    label: str
    pairs: list[Pair]
    parent: Path | None
    spawn_dir: Path | None


def collect(sources: list[str | Path]) -> Source:
    """A spawn directory, or two run directories (one pair)."""
    paths = [Path(p) for p in sources]
    if len(paths) == 1 and (paths[0] / INDEX).is_file():
        out = paths[0]
        index = load_index(out)
        parent = None
        for cand in [out / index["parent"]] + ([Path(index["parent_abs"])] if index.get("parent_abs") else []):
            if (cand / MANIFEST).is_file():
                parent = cand
                break
        by: dict[tuple[int, int], dict[str, dict]] = {}
        for c in index["children"]:
            by.setdefault((c["t"], c["pair"]), {})[c["side"]] = c
        pairs = [Pair(t, j, out / sides["a"]["dir"], out / sides["b"]["dir"],
                      (sides["a"]["seed"], sides["b"]["seed"]))
                 for (t, j), sides in sorted(by.items()) if set(sides) == set(SIDES)]
        if not pairs:
            raise TelecliError(f"{out}/{INDEX} lists no pair of children; run 'telecli lmc spawn' first")
        return Source(str(out), pairs, parent, out)
    if len(paths) == 2:
        ma, mb = (read_manifest(p) for p in paths)
        pa, pb = ma.get("parent") or {}, mb.get("parent") or {}
        parent, t = None, -1
        if pa and pb and pa.get("at") == pb.get("at") and _same_path(pa.get("run"), pb.get("run")):
            t = int(pa["at"])
            if (Path(pa["run"]) / MANIFEST).is_file():
                parent = Path(pa["run"])
        seeds = tuple(int((m.get("config") or {}).get("seed", -1)) for m in (ma, mb))
        return Source(f"{paths[0]} vs {paths[1]}", [Pair(t, 0, paths[0], paths[1], seeds)], parent, None)
    if len(paths) == 1:
        if (paths[0] / MANIFEST).is_file():
            raise TelecliError(f"{paths[0]} is a run directory; give two runs (A B) or a spawn directory")
        raise TelecliError(f"{paths[0]} is not a spawn directory (no {INDEX}); create one with 'telecli lmc spawn'")
    raise TelecliError(f"give one spawn directory or two run directories, got {len(paths)} paths")


def _same_path(a, b) -> bool:
    try:
        return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def check_children(pairs: list[Pair]) -> list[Trajectory]:
    """Open every child (complete, same architecture, data and loss as the first); returns them in
    order a, b of each pair."""
    trajs: list[Trajectory] = []
    ref = None
    for p in pairs:
        for d in (p.a, p.b):
            if not (d / MANIFEST).is_file():
                raise TelecliError(f"child {d} has not been trained yet; run 'telecli lmc spawn' (same options) "
                                   f"to create it")
            tr = Trajectory(d, check_hashes=True)
            if not tr.complete:
                raise TelecliError(f"child {d} is not complete (status {tr.manifest.get('status')}); rerun "
                                   f"'telecli lmc spawn' with the same options to finish it")
            m = tr.manifest
            if ref is None:
                ref = (d, m)
            else:
                rd, rm = ref
                if m["parameters"] != rm["parameters"] or m["model"] != rm["model"]:
                    diff = _arch_diff(rm, m)
                    raise TelecliError(f"{rd} and {d} have different architectures ({diff}); interpolate children "
                                       f"of one network")
                if m["data"].get("sha256") != rm["data"].get("sha256"):
                    raise TelecliError(f"{rd} and {d} were trained on different data; interpolate children of one run")
                if m["loss"] != rm["loss"]:
                    raise TelecliError(f"{rd} and {d} use different losses ({rm['loss']} vs {m['loss']})")
            trajs.append(tr)
    return trajs


def _arch_diff(a: dict, b: dict) -> str:
    pa = {p["name"]: p["shape"] for p in a["parameters"]}
    pb = {p["name"]: p["shape"] for p in b["parameters"]}
    for name in list(pa) + list(pb):
        if pa.get(name) != pb.get(name):
            return f"parameter {name}: {pa.get(name)} vs {pb.get(name)}"
    return f"model {a['model'].get('kwargs')} vs {b['model'].get('kwargs')}"


# --------------------------------------------------------------------------------------- interpolate

def _to(d: dict[str, torch.Tensor], dev, dtype) -> dict[str, torch.Tensor]:
    return {k: (v.to(dev, dtype) if v.is_floating_point() else v.to(dev)) for k, v in d.items()}


def _state(tr: Trajectory, step: int, dev, dtype):
    return _to(tr.theta(step), dev, dtype), _to(tr.buffers(step), dev, dtype)


def default_results(src: Source) -> Path:
    if src.spawn_dir is not None:
        return src.spawn_dir / "lmc.h5"
    a, b = src.pairs[0].a, src.pairs[0].b
    return a.parent / f"lmc-{a.name}-vs-{b.name}.h5"


def default_delta(cfg: dict) -> int:
    """One epoch, n_train // batch size (390 for CIFAR-10 at batch 128, as in §5.2); 1 for full batch."""
    train = cfg.get("train", {})
    bs = int(train.get("batch_size", 0) or 0)
    n = int(cfg.get("_n_train", 0))
    return max(1, n // bs) if bs > 0 and n > bs else 1


class _Evaluator:
    """Outputs of stacks of networks on the evaluation points in chunks sized to a memory budget."""

    def __init__(self, model, x: torch.Tensor, theta, buffers, dev, max_memory, n_stack: int, batched: bool):
        self.model, self.x, self.batched, self.dev = model, x, batched, dev
        itemsize = x.element_size()
        act = activation_elements(model, x[:1], theta, buffers)
        budget = parse_memory(max_memory, dev)
        per_point = 4 * act * itemsize * (n_stack if batched else 1)
        self.chunk = int(max(1, min(x.shape[0], budget // max(1, per_point))))

    def __call__(self, params, buffers) -> torch.Tensor:
        def run():
            with torch.no_grad():
                return torch.cat([lens.weight_average_outputs(self.model, params, buffers, self.x[i : i + self.chunk],
                                                              batched=self.batched)
                                  for i in range(0, self.x.shape[0], self.chunk)], dim=1)

        return with_oom_backoff(run, self)


def interpolate_pair(model, theta_a, buf_a, theta_b, buf_b, alphas: torch.Tensor, evaluate, bn: str,
                     x_bn: torch.Tensor | None = None, bn_batch: int = 128) -> torch.Tensor:
    """f_{θ_α} for every α of ``alphas`` (A, n, k). With ``bn='recompute'`` the running statistics of
    every α strictly between 0 and 1 are re-estimated on ``x_bn``; α = 0 and 1 keep the children's own."""
    params = lens.interpolate(theta_a, theta_b, alphas)
    buffers = lens.interpolate(buf_a, buf_b, alphas)
    if bn == "recompute" and buffers:
        rows = []
        for i, a in enumerate(alphas.tolist()):
            b_i = {k: v[i] for k, v in buffers.items()}
            if 0.0 < a < 1.0:
                b_i = lens.recompute_batchnorm(model, {k: v[i] for k, v in params.items()}, b_i, x_bn, bn_batch)
            rows.append(b_i)
        buffers = {k: torch.stack([r[k] for r in rows]) for k in buffers}
    return evaluate(params, buffers)


def run_interpolate(sources: list[str | Path], out: str | Path | None = None, *, alpha: str = "0:1:30",
                    bn: str = "interpolate", points: str | int = "all", gradients: bool = True,
                    delta: int | None = None, grad_points: int = 256, reduction: str = "mean", seed: int = 0,
                    bn_points: str | int = "all", device: str | None = None, max_memory: str | None = None,
                    overwrite: bool = False, progress: bool = True, batched: bool = False) -> Path:
    """Interpolate every pair of a spawn directory (or two runs) and write the results file."""
    if bn not in BN_MODES:
        raise TelecliError(f"--bn must be one of {', '.join(BN_MODES)}, got '{bn}'")
    if reduction not in REDUCTIONS:
        raise TelecliError(f"--logits must be one of {', '.join(REDUCTIONS)}, got '{reduction}'")
    grid = parse_alpha(alpha)
    points, bn_points = parse_points(points, "--points"), parse_points(bn_points, "--bn-points")
    src = collect(sources)
    trajs = check_children(src.pairs)
    out = Path(out) if out else default_results(src)
    dev = device_for(device)
    ref = trajs[0]
    model = rebuild_network(ref, dev)
    dtype = next(model.parameters()).dtype
    kind = ref.manifest["loss"]
    data = ref.data()
    n_test = data["x_test"].shape[0] if "x_test" in data else 0
    if n_test == 0:
        raise TelecliError(f"{ref.run_dir} has no test set to interpolate on")
    idx = select_points(n_test, points, seed)
    x = data["x_test"][torch.as_tensor(idx)].to(dev, dtype)
    y = data["y_test"][torch.as_tensor(idx)].to(dev, dtype)

    cfg = ref.manifest.get("config") or {}
    bn_batch = int((cfg.get("train") or {}).get("batch_size") or 128) or 128
    x_bn = None
    if bn == "recompute":
        bn_idx = select_points(data["x_train"].shape[0], bn_points, seed)
        x_bn = data["x_train"][torch.as_tensor(bn_idx)].to(dev, dtype)

    steps = sorted({p.t for p in src.pairs})
    groups = {t: [(i, p) for i, p in enumerate(src.pairs) if p.t == t] for t in steps}  # i: index into pairs
    n_pairs = {t: len(g) for t, g in groups.items()}
    K = max(n_pairs.values())
    S, A = len(steps), len(grid)
    eval_alpha = np.unique(np.concatenate([grid, [0.0, 0.5, 1.0]]))
    grid_rows = np.searchsorted(eval_alpha, grid)
    alphas = torch.as_tensor(eval_alpha, dtype=dtype, device=dev)
    i0, i1 = (int(np.searchsorted(eval_alpha, v)) for v in (0.0, 1.0))

    # gradient change from the parent's trajectory
    grad = None
    if gradients and src.parent is not None and any(t >= 0 for t in steps):
        grad = _GradientPlan(src.parent, steps, delta, grad_points, seed, reduction, dev, dtype, max_memory)
    elif gradients and progress:
        print("lmc interpolate: no parent run found, gradient change skipped", file=sys.stderr, flush=True)

    seeds = np.full((S, K, 2), -1, dtype=np.int64)
    dirs = np.full((S, K, 2), "", dtype=object)
    for r, t in enumerate(steps):
        for j, (_, p) in enumerate(groups[t]):
            seeds[r, j] = p.seeds
            dirs[r, j] = (_rel(p.a, src.spawn_dir), _rel(p.b, src.spawn_dir))

    key = json.dumps({"children": [(t.manifest["run_id"], t.shards[-1].sha256) for t in trajs], "alpha": list(grid),
                      "bn": bn, "points": str(points), "seed": seed, "gradients": grad is not None,
                      "delta": grad.delta if grad else None, "grad_points": grad_points, "reduction": reduction,
                      "bn_points": str(bn_points)}, sort_keys=True)
    datasets: dict[str, tuple[tuple[int, ...], str]] = {f"curves/{c}": ((S, K, A), "f8") for c in CURVES}
    datasets.update({f"metrics/{m}": ((S, K), "f8") for m in METRICS})
    datasets.update({"children/loss": ((S, K, 2), "f8"), "children/acc": ((S, K, 2), "f8")})
    fixed = {"alpha": grid, "spawn_steps": np.asarray(steps, dtype=np.int64),
             "pairs": np.asarray([n_pairs[t] for t in steps], dtype=np.int64),
             "test/index": idx.astype(np.int64), "test/targets": y.double().cpu().numpy(),
             "children/seed": seeds, "children/dir": dirs.astype(h5py.string_dtype())}
    if grad is not None:
        datasets["gradients/change"] = ((S, len(grad.layers)), "f8")
        fixed.update(grad.fixed())
    family = cfg  # the run family's configuration: the parent's when known (children differ in seed/name/store)
    if src.parent is not None:
        family = read_manifest(src.parent).get("config") or cfg
    attrs = {"format": RESULTS_FORMAT, "source": src.label, "parent": str(src.parent) if src.parent else "",
             "parent_run_id": _parent_id(src.parent), "config": json.dumps(family), "loss": kind, "bn": bn,
             "alpha_spec": alpha, "points": str(points), "seed": seed, "device": str(dev), "dtype": str(dtype)[6:],
             "bn_note": ("running statistics interpolated like the parameters" if bn == "interpolate" else
                         f"running statistics re-estimated on {bn_points} training points (batches of {bn_batch}, "
                         f"cumulative average) for 0 < α < 1; α = 0, 1 keep the children's own"),
             "ensemble_note": "output ensemble αf_A + (1−α)f_B on pre-activation outputs (logits)"}
    if grad is not None:
        attrs.update(grad.attrs())
    writer = ResultsWriter(out, key, attrs, datasets, fixed, overwrite)
    try:
        theta0, buf0 = _state(trajs[0], trajs[0].last_step, dev, dtype)
        evaluate = _Evaluator(model, x, theta0, buf0, dev, max_memory, len(eval_alpha), batched)
        done = -1 if writer.resumed_from is None else writer.resumed_from
        name = src.spawn_dir.name if src.spawn_dir is not None else "pair"
        on_grid = torch.as_tensor(grid_rows, device=dev)
        with Progress(S - done - 1, f"lmc interpolate {name}", enabled=progress) as bar:
            for r, t in enumerate(steps):
                if r <= done:
                    continue
                for j, (i, p) in enumerate(groups[t]):
                    ta, tb = trajs[2 * i], trajs[2 * i + 1]
                    th_a, b_a = _state(ta, ta.last_step, dev, dtype)
                    th_b, b_b = _state(tb, tb.last_step, dev, dtype)
                    f_w = interpolate_pair(model, th_a, b_a, th_b, b_b, alphas, evaluate, bn, x_bn, bn_batch)
                    _non_finite(f_w, p)
                    c = lens.curves(f_w, f_w[i1], f_w[i0], alphas, y, kind)
                    for curve, v in c.as_dict().items():
                        writer[f"curves/{curve}"][r, j] = v[on_grid].double().cpu().numpy()
                    for metric, v in lens.barriers(c, alphas, over=on_grid).items():
                        writer[f"metrics/{metric}"][r, j] = v
                    writer["children/loss"][r, j] = [float(c.weight_loss[i1]), float(c.weight_loss[i0])]
                    writer["children/acc"][r, j] = [float(c.weight_acc[i1]), float(c.weight_acc[i0])]
                if grad is not None:
                    writer["gradients/change"][r] = grad.row(t)
                writer.checkpoint(r, {})
                bar.advance(1, t=t)
        return writer.finish(summarise)
    except BaseException:
        writer.close()
        raise


CURVES = ("weight_loss", "weight_acc", "mean_loss", "mean_acc", "ensemble_loss", "ensemble_acc", "prediction_gap")
METRICS = ("acc_barrier", "loss_barrier", "acc_gap_mid", "loss_gap_mid", "prediction_gap_max", "prediction_gap_mid")


def _rel(p: Path, base: Path | None) -> str:
    if base is None:
        return str(p)
    try:
        return p.relative_to(base).as_posix()
    except ValueError:
        return str(p)


def _parent_id(parent: Path | None) -> str:
    if parent is None:
        return ""
    try:
        return str(read_manifest(parent).get("run_id", ""))
    except TelecliError:
        return ""


def _non_finite(f: torch.Tensor, p: Pair) -> None:
    if not bool(torch.isfinite(f).all()):
        raise TelecliError(f"non-finite outputs on the segment between {p.a} and {p.b} (a child diverged?)")


def summarise(f: h5py.File) -> None:
    """/summary/{metric}_mean and _se (S,): mean and standard error over the pairs of each spawn step."""
    if "summary" in f:
        del f["summary"]
    from telecli.lens.stats import mean_se

    for name in METRICS:
        mean, se = mean_se(f[f"metrics/{name}"][...], axis=1, single=np.nan)
        f[f"summary/{name}_mean"] = mean
        f[f"summary/{name}_se"] = se


# ----------------------------------------------------------------------------------------- gradients

class _GradientPlan:
    """Δ^grad_L(t') of §5.2 from a run's trajectory: θ_{t'} and θ_{t'+Δ} on a seeded set of test points."""

    def __init__(self, run: Path, steps: list[int], delta: int | None, points: int, seed: int, reduction: str,
                 dev, dtype, max_memory, points_option: str = "--grad-points"):
        self.run = Path(run)
        self.traj = Trajectory(self.run)
        m = self.traj.manifest
        cfg = dict(m.get("config") or {})
        cfg["_n_train"] = m["data"]["n_train"]
        self.delta = int(delta) if delta is not None else default_delta(cfg)
        if self.delta < 1:
            raise TelecliError(f"--delta must be ≥ 1, got {self.delta}")
        if points < 1:
            raise TelecliError(f"{points_option} must be ≥ 1, got {points}")
        self.reduction, self.dev, self.dtype = reduction, dev, dtype
        self.model = rebuild_network(self.traj, dev, dtype)
        names = [p["name"] for p in m["parameters"]]
        self.layers = lens.layer_groups(self.model, names)
        stored = set(int(s) for s in self.traj.steps)
        last = self.traj.last_step
        self.steps = [t for t in steps if t >= 0]
        missing = [t for t in self.steps for s in (t, t + self.delta) if s <= last and s not in stored]
        if missing:
            want = sorted({s for t in self.steps for s in (t, t + self.delta) if s <= last})
            raise TelecliError(
                f"the gradient change needs θ at steps {missing[:6]} of {self.run} (t' and t'+Δ, Δ = {self.delta}), "
                f"which are not stored; record with --set 'store.steps={want}' or pass --no-gradients")
        self.beyond = [t for t in self.steps if t + self.delta > last]
        data = self.traj.data()
        n_test = data["x_test"].shape[0]
        self.index = select_points(n_test, points, seed)
        self.x = data["x_test"][torch.as_tensor(self.index)].to(dev, dtype)
        self.y = data["y_test"][torch.as_tensor(self.index)].to(dev, dtype)
        k = int(self.y.shape[1])
        n_params = sum(int(np.prod(p["shape"])) for p in m["parameters"])
        budget = parse_memory(max_memory, dev)
        per_point = 6 * k * n_params * torch.finfo(dtype).bits // 8
        self.chunk = int(max(1, min(len(self.index), budget // max(1, per_point))))

    def fixed(self) -> dict[str, np.ndarray]:
        return {"gradients/layers": np.array([layer.name for layer in self.layers], dtype=object).astype(h5py.string_dtype()),
                "gradients/kind": np.array([layer.kind for layer in self.layers], dtype=object).astype(h5py.string_dtype()),
                "gradients/size": np.array([layer.size for layer in self.layers], dtype=np.int64),
                "gradients/index": self.index.astype(np.int64)}

    def attrs(self) -> dict:
        return {"gradient_delta": self.delta, "gradient_reduction": self.reduction,
                "gradient_points": len(self.index), "gradient_run": str(self.run),
                "gradient_note": f"mean over {len(self.index)} seeded test points and each layer's parameters of "
                                 f"(∂f_{{t'+{self.delta}}} − ∂f_{{t'}})², pre-activation outputs, "
                                 + ("averaged over the outputs" if self.reduction == "mean" else
                                    "output of the true class")}

    def row(self, t: int) -> np.ndarray:
        if t < 0 or t in self.beyond:
            return np.full(len(self.layers), np.nan)
        th1, b1 = _state(self.traj, t, self.dev, self.dtype)
        th2, b2 = _state(self.traj, t + self.delta, self.dev, self.dtype)
        parts = with_oom_backoff(lambda: [
            lens.gradient_change(self.model, th1, b1, th2, b2, self.x[i : i + self.chunk], self.layers,
                                 self.reduction, self.y[i : i + self.chunk])
            for i in range(0, len(self.index), self.chunk)], self)
        return torch.cat(parts).mean(dim=0).double().cpu().numpy()


def run_gradients(run: str | Path, at: str | list[int], out: str | Path | None = None, *, delta: int | None = None,
                  points: int = 256, reduction: str = "mean", seed: int = 0, device: str | None = None,
                  max_memory: str | None = None, overwrite: bool = False, progress: bool = True) -> Path:
    """Only the gradient change by layer (§5.2) of one run at the steps ``at`` → HDF5 (docs/lmc.md)."""
    if reduction not in REDUCTIONS:
        raise TelecliError(f"--logits must be one of {', '.join(REDUCTIONS)}, got '{reduction}'")
    run = Path(run)
    steps = parse_steps(at)
    traj = Trajectory(run)
    last = traj.last_step
    bad = [t for t in steps if t > last]
    if bad:
        raise TelecliError(f"step {bad[0]} is beyond the last stored step {last} of {run}")
    dev = device_for(device)
    dtype = DTYPES.get(traj.manifest.get("dtype"), torch.float64)
    grad = _GradientPlan(run, steps, delta, points, seed, reduction, dev, dtype, max_memory, "--points")
    out = Path(out) if out else run / "lmc-gradients.h5"
    key = json.dumps({"run": traj.manifest.get("run_id"), "sha": traj.shards[-1].sha256, "steps": steps,
                      "delta": grad.delta, "points": points, "seed": seed, "reduction": reduction}, sort_keys=True)
    fixed = {"spawn_steps": np.asarray(steps, dtype=np.int64), **grad.fixed()}
    attrs = {"format": RESULTS_FORMAT, "source": str(run), "parent": str(run),
             "parent_run_id": traj.manifest.get("run_id", ""), "config": json.dumps(traj.manifest.get("config") or {}),
             "loss": traj.manifest["loss"], "seed": seed, "device": str(dev), "dtype": str(dtype)[6:], **grad.attrs()}
    writer = ResultsWriter(out, key, attrs, {"gradients/change": ((len(steps), len(grad.layers)), "f8")}, fixed,
                           overwrite)
    try:
        done = -1 if writer.resumed_from is None else writer.resumed_from
        with Progress(len(steps) - done - 1, f"lmc gradients {run.name}", enabled=progress) as bar:
            for r, t in enumerate(steps):
                if r <= done:
                    continue
                writer["gradients/change"][r] = grad.row(t)
                writer.checkpoint(r, {})
                bar.advance(1, t=t)
        return writer.finish()
    except BaseException:
        writer.close()
        raise
