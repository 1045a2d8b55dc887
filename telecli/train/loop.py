"""``telecli record`` / ``telecli branch``: train a preset and record its trajectory through the Recorder.

A run is a function of its configuration: θ_0 from ``seed``, the data order from ``seed`` and the epoch
(a fresh permutation per epoch), augmentation from ``seed`` and the step. That makes ``--resume``
exact: a killed run restarts from its last stored state and writes byte-identical files on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from telecli import config as config_mod
from telecli.config import RunConfig
from telecli.data import build_task
from telecli.errors import NonFiniteError, TelecliError
from telecli.models import instantiate, model_spec
from telecli.progress import Progress
from telecli.runtime import resolve_device, resolve_dtype
from telecli.store.trajectory import MANIFEST, Trajectory, read_manifest
from telecli.train.augment import crop_flip
from telecli.train.optim import learning_rate, loss_fn, make_optimizer
from telecli.optim import get as get_optimizer
from telecli.train.recorder import FROZEN, Recorder, state_keys
from telecli.train.stopping import ACCURACY, META_ACCURACY, META_LOSS, PaperStop, measure
from telecli.train.stopping import replay as replay_rule

class BatchOrder:
    """B_t for step t ≥ 1: epoch e = (t−1) // batches_per_epoch reads a permutation seeded by (seed, e);
    the last batch of an epoch may be smaller. Full batch when ``batch_size`` is 0 or ≥ n."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.seed = n, seed
        self.full = batch_size <= 0 or batch_size >= n
        self.bs = n if self.full else batch_size
        self.per_epoch = -(-n // self.bs)
        self._epoch, self._perm = -1, None

    def __call__(self, t: int) -> np.ndarray | None:
        if self.full:
            return None
        epoch, pos = divmod(t - 1, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._perm[pos * self.bs : (pos + 1) * self.bs]


@dataclass
class Setup:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    factory: str
    kwargs: dict
    task_info: dict


def build(cfg: RunConfig, device: torch.device) -> Setup:
    """Data, network (θ_0 from ``cfg.seed``) and optimiser for a configuration."""
    task = build_task(cfg.task)
    return setup_arrays(cfg, device, task.x_train, task.y_train, task.x_test, task.y_test, task.info,
                        task.input_shape, task.output_dim)


def setup_arrays(cfg: RunConfig, device: torch.device, x_train, y_train, x_test, y_test, task_info: dict,
                 input_shape, output_dim: int) -> Setup:
    """Network (θ_0 from ``cfg.seed``) and optimiser of ``cfg`` on data a job prepared itself (boost's
    split); ``x_test``/``y_test`` may be None when nothing is recorded."""
    dtype = resolve_dtype(cfg.dtype)
    factory, kwargs = model_spec(cfg.model, input_shape, output_dim)
    torch.manual_seed(cfg.seed)
    model = instantiate(factory, kwargs).to(device=device, dtype=dtype)
    optimizer = make_optimizer(cfg.train, model.parameters())
    as_t = lambda a: None if a is None else torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
    return Setup(model, optimizer, as_t(x_train), as_t(y_train), as_t(x_test), as_t(y_test), factory, kwargs,
                 task_info)


def restore(setup: Setup, traj: Trajectory, step: int, opt_step: int) -> None:
    """Load θ, buffers and optimiser state stored at ``step`` into the model and optimiser."""
    opt = traj.optimizer_state(step) if opt_step and state_keys(traj.manifest["optimizer"]) else {}
    load_state(setup, traj.manifest["optimizer"], traj.theta(step), traj.buffers(step), opt, opt_step,
               where=str(traj.run_dir))
    frozen = {k[len(FROZEN):]: v for k, v in traj.data().items() if k.startswith(FROZEN)}
    with torch.no_grad():  # frozen parameters (kept once by the Recorder): the run's values, whatever the seed
        for name, p in setup.model.named_parameters():
            if not p.requires_grad and name in frozen:
                p.copy_(frozen[name])


def load_state(setup: Setup, opt_info: dict, theta: dict, buffers: dict, opt: dict, opt_step: int,
               where: str = "the run") -> None:
    """Put θ, buffers and the optimiser state (store names without prefix) into model and optimiser."""
    named = {n: p for n, p in setup.model.named_parameters() if p.requires_grad}  # θ; frozen ones are not stored per step
    with torch.no_grad():
        for name, p in named.items():
            p.copy_(theta[name])
        for name, b in setup.model.named_buffers():
            if name in buffers:
                b.copy_(buffers[name])
    if opt_step and state_keys(opt_info) and not opt:
        raise TelecliError(f"{where} stored no optimiser state; it cannot be resumed, branched or replayed")
    get_optimizer(opt_info["name"]).restore(setup.optimizer, named, opt, opt_info, opt_step)


def train_step(setup: Setup, cfg: RunConfig, order: BatchOrder, t: int) -> tuple[np.ndarray | None, float]:
    """One optimiser step t ≥ 1 (batch B_t, γ_t, augmentation seeded by (seed, t)); returns (B_t, loss).
    A non-finite loss is returned without stepping. Replaying a run calls this same function."""
    device = setup.x_train.device
    idx = order(t)
    sel = None if idx is None else torch.as_tensor(idx, device=device)
    xb = setup.x_train if sel is None else setup.x_train[sel]
    yb = setup.y_train if sel is None else setup.y_train[sel]
    if cfg.train.augment and xb.dim() == 4:
        xb = crop_flip(xb.cpu(), torch.Generator().manual_seed(cfg.seed * 1_000_003 + t)).to(device)
    for g in setup.optimizer.param_groups:
        g["lr"] = learning_rate(cfg.train, t)
    setup.optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(cfg.train.loss, setup.model(xb), yb)
    value = float(loss.detach())
    if np.isfinite(value):
        loss.backward()
        setup.optimizer.step()
    return idx, value


def open_recorder(setup: Setup, cfg: RunConfig, run_dir: str | Path, order: BatchOrder, *, config: dict,
                  overwrite: bool = False, resume: bool = False, parent: dict | None = None,
                  start_step: int = 0) -> Recorder:
    """The Recorder of a job's training run: what is stored follows ``cfg.store``; ``config`` is the
    manifest's record of the configuration (the full one for ``record``, an id for boost's NN)."""
    s = cfg.store
    return Recorder(
        run_dir, setup.model, setup.optimizer, (setup.x_train, setup.y_train), (setup.x_test, setup.y_test),
        model_factory=setup.factory, model_kwargs=setup.kwargs, loss=cfg.train.loss, every=s.every,
        log_points=s.log_points, extra_steps=s.steps, total_steps=cfg.train.steps, shard_mb=s.shard_mb,
        optimizer_state=s.optimizer_state, full_batch=order.full, overwrite=overwrite, resume=resume,
        config=config, task_info=setup.task_info, parent=parent, start_step=start_step,
    )


def clear_unstarted(run_dir: Path) -> None:
    """Make ``run_dir`` (no run.json) ready for a fresh start: remove what a run killed before its
    manifest can have left (temporary files of telecli's atomic writes, provenance.json, data.safetensors,
    an empty trajectory/ folder); refuse a folder holding anything else."""
    from telecli.store.trajectory import DATA, SHARD_DIR
    from telecli.train.recorder import _remove_stale_tmp

    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise TelecliError(f"{run_dir} is a file, not a run directory; choose another --out")
    _remove_stale_tmp(run_dir)
    _remove_stale_tmp(run_dir / SHARD_DIR)
    left = list(run_dir.iterdir())
    ours = lambda p: p.name in ("provenance.json", DATA) or (  # noqa: E731
        p.name == SHARD_DIR and p.is_dir() and not any(p.iterdir()))
    foreign = sorted(p.name for p in left if not ours(p))
    if foreign:
        raise TelecliError(f"cannot resume {run_dir}: it has no {MANIFEST} and holds files telecli did not write "
                           f"({', '.join(foreign[:3])}); pick another --out")
    for p in left:
        p.rmdir() if p.is_dir() else p.unlink()


def stopping_rule(cfg: RunConfig) -> PaperStop | None:
    """The rule of ``train.stop`` (telecli.train.stopping), or None for a fixed number of steps."""
    if cfg.train.stop == "paper":
        return PaperStop(cfg.train.stop_patience_epochs, cfg.train.stop_tolerance)
    return None


def fit(setup: Setup, cfg: RunConfig, order: BatchOrder, *, start: int = 0, rec: Recorder | None = None,
        progress: bool = True, label: str = "train", rule: PaperStop | None = None) -> None:
    """Steps start+1 … ``cfg.train.steps`` of :func:`train_step`, each recorded when ``rec`` is given
    (closed "complete" at the end). With a stopping ``rule`` (method.md §3.2; its state already fed the
    epochs up to ``start``), the whole training set is measured at each epoch's last step and the run
    ends there once the rule says so: complete at that step, the manifest's ``stopped_early`` naming
    the step, the epoch and the reason. A non-finite loss closes the record as stopped and raises
    NonFiniteError (the steps before it are kept). Ctrl-C (KeyboardInterrupt) leaves the record as a kill
    would, with status "interrupted" (:meth:`Recorder.interrupt`): resuming it gives the files of an
    uninterrupted run."""
    try:
        _fit(setup, cfg, order, start, rec, progress, label, rule)
    except KeyboardInterrupt:
        if rec is not None:
            rec.interrupt()
        raise


def _fit(setup: Setup, cfg: RunConfig, order: BatchOrder, start: int, rec: Recorder | None, progress: bool,
         label: str, rule: PaperStop | None = None) -> None:
    setup.model.train()
    T = cfg.train.steps
    stop = None
    with Progress(T - start, label, enabled=progress) as bar:
        for t in range(start + 1, T + 1):
            idx, value = train_step(setup, cfg, order, t)
            if not np.isfinite(value):
                if rec is None:
                    raise NonFiniteError(f"non-finite training loss at step {t} (lr {cfg.train.lr:g}); lower it")
                rec.close(f"stopped: non-finite loss at step {t}")
                raise NonFiniteError(
                    f"non-finite training loss at step {t}; steps 0..{rec.writer.manifest['last_step']} are kept "
                    f"in {rec.run_dir} (lower train.lr or use float64)"
                )
            records = None
            if rule is not None and t % order.per_epoch == 0:
                epoch_loss, epoch_acc = measure(setup.model, setup.x_train, setup.y_train, cfg.train.loss)
                records = {META_LOSS: epoch_loss, META_ACCURACY: epoch_acc}
                why = rule.update(t // order.per_epoch, epoch_loss, epoch_acc)
                if why is not None:
                    stop = _stopped(cfg, t, t // order.per_epoch, why, epoch_loss, epoch_acc)
            if rec is not None:
                rec.step(idx, loss=value, records=records)
            bar.advance(1, loss=value)
            if stop is not None:
                break
    if rec is not None:
        rec.close("complete", stopped_early=stop)


def _stopped(cfg: RunConfig, step: int, epoch: int, why: str, epoch_loss: float, epoch_acc: float) -> dict:
    """The manifest's ``stopped_early`` entry of a run the rule ended at ``step``."""
    tr = cfg.train
    reason = (why if why == ACCURACY else
              f"train loss not improved by more than {tr.stop_tolerance:g} for {tr.stop_patience_epochs} epochs")
    return {"step": step, "epoch": epoch, "rule": tr.stop, "reason": reason, "train_loss": epoch_loss,
            "train_accuracy": None if np.isnan(epoch_acc) else epoch_acc}  # None: regression targets


def _same_config(stored: dict, want: dict) -> bool:
    """Whether a run's recorded configuration is ``want`` (the device aside); settings added to telecli
    since the run was recorded are read with their defaults, as every reader does."""
    def drop(d: dict) -> dict:
        return {k: v for k, v in d.items() if k != "device" and not k.startswith("_")}

    try:
        stored = config_mod.from_dict(drop(stored)).to_dict()
    except (TelecliError, TypeError, ValueError):
        pass  # not readable as a configuration: compared as it is, and so refused
    return drop(stored) == drop(want)


def run_training(cfg: RunConfig, run_dir: str | Path, *, overwrite: bool = False, resume: bool = False,
                 progress: bool = True, parent: dict | None = None) -> Path:
    """Train ``cfg`` and record it into ``run_dir``; returns the run directory.

    ``parent`` = {"run": dir, "at": step} starts from θ_step and the optimiser state of another run
    (``telecli branch``): same schedule, another data order (``cfg.seed``).
    """
    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)
    if resume and not (run_dir / MANIFEST).is_file():
        # killed before its manifest was written (data loading, model building), or never started: start it
        clear_unstarted(run_dir)
        resume = False
    if resume:
        manifest = read_manifest(run_dir)
        if not _same_config(manifest.get("config") or {}, cfg.to_dict()):
            raise TelecliError(f"{run_dir} was recorded with another configuration; resume with the same one")
        if manifest.get("status") == "complete":
            print(f"{run_dir} is already complete")
            return run_dir
        if str(manifest.get("status", "")).startswith("stopped"):
            raise TelecliError(f"{run_dir} stopped on a non-finite loss; change the configuration and re-record")
        parent = manifest.get("parent")
        if not manifest["shards"]:  # killed before its first shard: start again from scratch
            resume, overwrite = False, True
    setup = build(cfg, device)
    start = 0
    if parent is not None:
        ptraj = Trajectory(parent["run"])
        start = int(parent["at"])
        restore(setup, ptraj, start, opt_step=start)
    T = cfg.train.steps
    if start > T:
        raise TelecliError(f"branch step {start} is beyond the run's last step {T}")
    order = BatchOrder(setup.x_train.shape[0], cfg.train.batch_size, cfg.seed)
    record = cfg.to_dict()
    record["_run_id"] = f"{cfg.name}-{cfg.digest()}-s{cfg.seed}" + (f"-b{start}" if parent else "")
    rec = open_recorder(setup, cfg, run_dir, order, config=record, overwrite=overwrite, resume=resume,
                        parent=None if parent is None else {"run": str(parent["run"]), "at": start},
                        start_step=start)
    rule = stopping_rule(cfg)
    if resume:
        last = rec.step_count
        restore(setup, Trajectory(run_dir), last, opt_step=last)
        start = last
    if rule is not None and start > 0:
        # the rule's state at `start`, from the epochs recorded so far (this run's, or the parent's)
        source = Trajectory(run_dir if resume else parent["run"]).meta()
        try:
            why = replay_rule(rule, source, order.per_epoch, start)
        except ValueError as e:
            raise TelecliError(f"train.stop = \"paper\" cannot continue from step {start}: {e}") from None
        if why is not None and resume:  # killed between the rule's decision and the final manifest
            loss_, acc = (float(source[k][source["step"] == start][0]) for k in (META_LOSS, META_ACCURACY))
            rec.close("complete", stopped_early=_stopped(cfg, start, start // order.per_epoch, why, loss_, acc))
            return run_dir
        if why is not None:
            raise TelecliError(f"the parent's stopping rule ended it at or before step {start}; branch from an "
                               f"earlier step or with train.stop = \"none\"")
    fit(setup, cfg, order, start=start, rec=rec, progress=progress, label=f"record {run_dir.name}", rule=rule)
    return run_dir


def record(config_path: str | Path, run_dir: str | Path, overrides: list[str] | None = None, *,
           steps: int | None = None, seed: int | None = None, device: str | None = None,
           overwrite: bool = False, resume: bool = False, progress: bool = True) -> Path:
    """Load a TOML preset (with ``--set`` overrides) and record it."""
    extra = list(overrides or [])
    if steps is not None:
        extra.append(f"train.steps={steps}")
    if seed is not None:
        extra.append(f"seed={seed}")
    if device is not None:
        extra.append(f'device="{device}"')
    cfg = config_mod.load(config_path, extra)
    return run_training(cfg, run_dir, overwrite=overwrite, resume=resume, progress=progress)


def branch(parent_dir: str | Path, at: int, seed: int, out: str | Path, *, overwrite: bool = False,
           resume: bool = False, device: str | None = None, progress: bool = True) -> Path:
    """A child of ``parent_dir`` that continues from step ``at`` with the data order of ``seed``."""
    manifest = read_manifest(parent_dir)
    if not manifest.get("config"):
        raise TelecliError(f"{parent_dir} was recorded by a user loop (Recorder); branch needs a 'telecli record' run")
    cfg = config_mod.from_dict(manifest["config"])
    traj = Trajectory(parent_dir)
    if at not in set(traj.steps.tolist()):
        raise TelecliError(f"step {at} is not stored in {parent_dir} ({traj.describe_steps()}); pick a stored step")
    if at > 0 and not traj.optimizer_state(at) and traj.manifest["optimizer_state"]:
        raise TelecliError(f"{parent_dir} has no optimiser state at step {at}")
    cfg.seed = seed
    if device is not None:
        cfg.device = device
    cfg.name = f"{cfg.name}-branch"
    return run_training(cfg, out, overwrite=overwrite, resume=resume, progress=progress,
                        parent={"run": str(parent_dir), "at": at})


__all__ = ["run_training", "record", "branch", "BatchOrder", "build", "setup_arrays", "open_recorder", "fit",
           "restore"]
