"""Recorder: writes the trajectory store from any PyTorch training loop (the API of design.md).

    from telecli import Recorder
    with Recorder("runs/mine", model, optimizer, train=(X, y), test=(Xt, yt),
                  model_factory="mypkg.nets:make_net", model_kwargs={"width": 200}, loss="mse") as rec:
        for t in range(T):
            idx = ...; optimizer.zero_grad(); loss(model(X[idx]), y[idx]).backward(); optimizer.step()
            rec.step(idx)          # after optimizer.step(), before a scheduler changes the lr

``rec.step`` stores θ_t, B_t, γ_t (read from the optimiser's param group when optimizer.step() ran, so a
scheduler may step before or after rec.step) and the optimiser state (momentum buffers, Adam moments)
that the smoother of method.md §1.6 needs. Hooks (telecli.train.watch) observe what the loop really did
— one optimizer.step() per rec.step, the hyper-parameters of that step, clipping, the loss scale, the
inputs the model saw, layers in train mode — and the per-step records keep it, so that ``telecli
verify`` can check every step against the step the analysis models. ``telecli record`` drives its own
loop through this same class.
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from telecli.errors import TelecliError
from telecli.optim import describe as describe_optimizer
from telecli.optim import get as get_optimizer
from telecli.store.atomic import atomic_write_json, make_dirs
from telecli.train.watch import LoopWatch
from telecli.store.trajectory import (
    BUFFER,
    DATA,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    OPT,
    SHARD_DIR,
    THETA,
    TrajectoryWriter,
    read_manifest,
    steps_per_shard,
    stored_steps,
    write_data,
)

FROZEN = "frozen."  # data.safetensors prefix of frozen parameters

def state_keys(opt_info: dict[str, Any]) -> tuple[str, ...]:
    """The per-parameter optimiser state the smoother and resumption need (none for plain SGD)."""
    return get_optimizer(opt_info["name"]).state_keys(opt_info)


def snapshot(model: nn.Module, optimizer: torch.optim.Optimizer, opt_info: dict[str, Any], step: int,
             with_optimizer: bool = True) -> dict[str, torch.Tensor]:
    """θ_t, buffers and optimiser state under their store names (theta.*, buffer.*, opt.*)."""
    return Snapshot(model, opt_info, with_optimizer)(optimizer, step)


class Snapshot:
    """:func:`snapshot` with the names worked out once (the Recorder takes one at every stored step)."""

    def __init__(self, model: nn.Module, opt_info: dict[str, Any], with_optimizer: bool = True):
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.model = model  # buffers are looked up at every call: a module may assign a new tensor to one
        self.fixed = [(THETA + n, p) for n, p in params]
        keys = state_keys(opt_info) if with_optimizer else ()
        self.state = [(p, key, f"{OPT}{n}.{key}") for n, p in params for key in keys]
        self.with_optimizer = with_optimizer

    def __call__(self, optimizer: torch.optim.Optimizer, step: int) -> dict[str, torch.Tensor]:
        snap = {name: t.detach() for name, t in self.fixed}
        snap.update({BUFFER + n: b.detach() for n, b in self.model.named_buffers()})
        if self.with_optimizer:
            for p, key, name in self.state:
                v = optimizer.state.get(p, {}).get(key)
                snap[name] = torch.zeros_like(p) if v is None else v.detach()
            snap[OPT + "step"] = torch.tensor(float(step), dtype=torch.float64)
        return snap


def versions() -> dict[str, str]:
    import safetensors

    from telecli import __version__

    return {
        "telecli": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
    }


def _check_arguments(train, test, model_factory, every, log_points, shard_mb, total_steps, extra_steps,
                     start_step):
    """The Recorder's arguments, checked as the configuration schema checks a preset's (one-line
    TelecliError naming the argument) before anything is written."""
    from telecli.config import check_value

    every = check_value(every, int, "Recorder every", low=1)
    log_points = check_value(log_points, int, "Recorder log_points", low=0)
    shard_mb = check_value(shard_mb, float, "Recorder shard_mb", low=0)  # 0: one stored step per shard
    check_value(start_step, int, "Recorder start_step", low=0)
    if total_steps is not None:
        total_steps = check_value(total_steps, int, "Recorder total_steps", low=1)
    extra_steps = [check_value(s, int, "each of Recorder extra_steps", low=0) for s in extra_steps]
    for name, pair in (("train", train), ("test", test)):
        if pair is None and name == "test":
            continue
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2
                and all(isinstance(t, torch.Tensor) for t in pair)):
            raise TelecliError(f"Recorder {name}= must be a pair of tensors (X, y)")
        x, y = pair
        if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0] or (name == "train" and x.shape[0] == 0):
            raise TelecliError(f"Recorder {name}=(X, y) must have the same number of rows (≥ 1), got "
                               f"{list(x.shape)} and {list(y.shape)}")
        for what, t in (("X", x), ("y", y)):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise TelecliError(f"Recorder {name}= {what} has non-finite values")
    if model_factory is not None and (not isinstance(model_factory, str) or model_factory.count(":") != 1):
        raise TelecliError(f"model_factory must look like 'package.module:function', got {model_factory!r}")
    return every, log_points, shard_mb, total_steps, extra_steps


def _as_2d(y: torch.Tensor) -> torch.Tensor:
    return y[:, None] if y.dim() == 1 else y


class Recorder:
    """Context manager that records a training trajectory; see the module docstring."""

    def __init__(
        self,
        run_dir: str | Path,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train: tuple[torch.Tensor, torch.Tensor],
        test: tuple[torch.Tensor, torch.Tensor] | None = None,
        *,
        model_factory: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        loss: str = "mse",
        every: int = 1,
        log_points: int = 0,
        extra_steps: list[int] | tuple = (),
        total_steps: int | None = None,
        shard_mb: float = 16.0,
        optimizer_state: bool = True,
        full_batch: bool = False,
        overwrite: bool = False,
        resume: bool = False,
        config: dict[str, Any] | None = None,
        task_info: dict[str, Any] | None = None,
        parent: dict[str, Any] | None = None,
        start_step: int = 0,
    ):
        self.run_dir = Path(run_dir)
        if loss not in ("mse", "ce"):
            raise TelecliError(f"unknown loss '{loss}' (use 'mse' or 'ce')")
        every, log_points, shard_mb, total_steps, extra_steps = _check_arguments(
            train, test, model_factory, every, log_points, shard_mb, total_steps, extra_steps, start_step)
        self.model = model
        self.optimizer = optimizer
        self.opt_info = describe_optimizer(optimizer)
        self.params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.buffers = list(model.named_buffers())
        self.store_opt = optimizer_state
        self.step_count = 0
        self._closed = False
        self.loss = loss
        self._x, self._y = train[0], _as_2d(train[1])
        self.watch = LoopWatch(model, optimizer, [p for _, p in self.params])
        self._snap = Snapshot(model, self.opt_info, optimizer_state)
        self._hyper = get_optimizer(self.opt_info["name"]).hyper
        self._train_mode_seen = 0  # entries of watch.train_mode already in the manifest
        if (log_points or every > 1) and not total_steps:
            raise TelecliError("strided or log-spaced storage needs total_steps")
        self._schedule = None if not (log_points or every > 1) else set(
            stored_steps(total_steps, every, log_points, extra_steps))
        self._every = every
        self._total = total_steps
        if resume:
            manifest = read_manifest(self.run_dir)
            if manifest.get("status") == "complete":
                raise TelecliError(f"run {self.run_dir} is already complete; nothing to resume")
            self.writer = TrajectoryWriter(self.run_dir, manifest)
            if not manifest["shards"]:
                raise TelecliError(f"run {self.run_dir} has no stored shard yet; record it again with --overwrite")
            _remove_stale_tmp(self.run_dir)  # half-written files of the killed run: rewritten below
            _remove_stale_tmp(self.run_dir / SHARD_DIR)
            self.step_count = manifest["shards"][-1]["last_step"]
            return
        self._prepare_dir(overwrite)
        x, y = train
        data = {"x_train": x, "y_train": _as_2d(y)}
        # Frozen parameters (requires_grad=False) are part of f but not of θ: kept once, so the analyses
        # evaluate the network that was trained whatever the factory's initialisation does.
        data.update({FROZEN + n: p.detach() for n, p in model.named_parameters() if not p.requires_grad})
        if test is not None:
            data.update(x_test=test[0], y_test=_as_2d(test[1]))
        bytes_per_step = sum(p.numel() * p.element_size() for _, p in self.params)
        bytes_per_step += sum(b.numel() * b.element_size() for _, b in self.buffers)
        if optimizer_state:
            bytes_per_step *= 1 + len(state_keys(self.opt_info))
        per_shard = steps_per_shard(bytes_per_step, shard_mb)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "run_id": (config or {}).get("_run_id") or _random_id(),
            "config": {k: v for k, v in (config or {}).items() if not k.startswith("_")} or None,
            "model": {"factory": model_factory, "kwargs": model_kwargs or {}},
            "loss": loss,
            "optimizer": self.opt_info,
            "dtype": str(self.params[0][1].dtype).replace("torch.", ""),
            "parameters": [{"name": n, "shape": list(p.shape), "dtype": str(p.dtype)[6:]} for n, p in self.params],
            "buffers": [{"name": n, "shape": list(b.shape), "dtype": str(b.dtype)[6:]} for n, b in self.buffers],
            "optimizer_state": list(state_keys(self.opt_info)) if optimizer_state else [],
            "train_mode_layers": [],  # layers whose train-mode forward depends on the batch, seen in train mode
            "data": {
                "file": "data.safetensors",
                "sha256": None,  # set once data.safetensors is written
                "n_train": int(x.shape[0]),
                "n_test": int(test[0].shape[0]) if test is not None else 0,
                "input_shape": list(x.shape[1:]),
                "output_dim": int(_as_2d(y).shape[1]),
                "task": task_info or {},
            },
            "storage": {"every": every, "log_points": log_points, "extra_steps": sorted(extra_steps),
                        "total_steps": total_steps},
            "full_batch": bool(full_batch),
            "steps_per_shard": per_shard,
            "parent": parent,
            "first_step": start_step,
            "shards": [],
            "last_step": start_step,
            "status": "running",
            "versions": versions(),
            "torch_threads": torch.get_num_threads(),  # replays of the gaps use the same (rounding differs)
        }
        self.writer = TrajectoryWriter(self.run_dir, manifest)
        # The manifest comes first: a run killed from here on is a telecli run directory that
        # --resume (no shard yet → start again) or --overwrite accepts.
        self.writer.write_manifest()
        manifest["data"]["sha256"] = write_data(self.run_dir, data)
        self.writer.write_manifest()
        self._write_provenance()
        self.step_count = start_step
        self.writer.add_state(start_step, self._snapshot())

    # -- setup --------------------------------------------------------------------------------------------
    def _prepare_dir(self, overwrite: bool) -> None:
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise TelecliError(f"{self.run_dir} is a file, not a run directory; choose another --out")
        if self.run_dir.is_dir():
            _remove_stale_tmp(self.run_dir)  # left by a run killed while writing its first files
        if self.run_dir.exists() and any(self.run_dir.iterdir()):
            if not overwrite:
                raise TelecliError(
                    f"{self.run_dir} already exists and is not empty; pass --overwrite to replace it "
                    f"(or --resume to continue it)"
                )
            manifest = self.run_dir / MANIFEST
            if not manifest.is_file():
                raise TelecliError(f"refusing to overwrite {self.run_dir}: it is not a telecli run directory")
            # The manifest goes last, so a removal that is killed half-way can be overwritten again.
            for child in self.run_dir.iterdir():
                if child != manifest:
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
            manifest.unlink()
        make_dirs(self.run_dir)

    def _write_provenance(self) -> None:
        atomic_write_json(
            self.run_dir / "provenance.json",
            {
                "command": sys.argv,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "device": str(self.params[0][1].device),
            },
        )

    # -- recording ----------------------------------------------------------------------------------------
    def _snapshot(self) -> dict[str, torch.Tensor]:
        return self._snap(self.optimizer, self.step_count)

    def is_stored(self, step: int) -> bool:
        if self._schedule is not None:
            return step in self._schedule
        return step % self._every == 0

    def step(self, batch=None, loss: float | None = None, records: dict[str, float] | None = None) -> None:
        """Record the step just taken: B_t (integer indices into the training set, or a boolean mask of
        length n; None = full batch), the training loss (optional) and, at stored steps, θ_t with
        buffers and optimiser state. Call it once after every optimizer.step(); indices may repeat
        (a batch drawn with replacement counts an example once per draw). ``records``: further per-step
        scalars of the loop's own (stored as ``meta.NAME``, NaN at the steps that give none; e.g. the
        stopping rule's per-epoch training loss and accuracy, telecli.train.stopping)."""
        t = self.step_count + 1
        n = self.writer.manifest["data"]["n_train"]
        idx = _batch_indices(batch, n, t)
        if batch is not None and self.writer.full_batch and not torch.equal(torch.sort(idx).values, torch.arange(n)):
            raise TelecliError(f"rec.step() for step {t}: the run was declared full-batch but got a batch of "
                               f"{len(idx)} of the {n} training points (drop full_batch=True)")
        if batch is None:
            xb, yb = self._x, self._y
        else:
            on_x = idx if self._x.device.type == "cpu" else idx.to(self._x.device)
            on_y = idx if self._y.device.type == "cpu" else idx.to(self._y.device)
            xb, yb = self._x.index_select(0, on_x), self._y.index_select(0, on_y)
        seen = self.watch.take(xb, yb, self.loss)
        if seen["opt_steps"] != 1:
            what = ("optimizer.step() has not run since the previous rec.step() (rec.step called twice?)"
                    if seen["opt_steps"] == 0 else
                    f"optimizer.step() ran {seen['opt_steps']} times since the previous rec.step() (rec.step "
                    f"skipped?)")
            raise TelecliError(f"rec.step() for step {t}: {what}; call rec.step(idx) exactly once after every "
                               f"optimizer.step()")
        if seen["batch_seen"] is not None and seen["batch_seen"] != len(idx):
            raise TelecliError(f"rec.step() for step {t} got {len(idx)} indices but the model's forward saw a batch "
                               f"of {seen['batch_seen']} inputs; pass the indices of the examples the batch was "
                               f"made of")
        self._note_train_mode()
        self.step_count = t
        group = seen["group"] or self.optimizer.param_groups[0]
        lr = float(group["lr"])
        extra = {k: seen[k] for k in ("clip", "clip_spread", "input_deviation", "loss_scale", "loss_residual")}
        extra.update(self._hyper(group))
        for key, value in (records or {}).items():
            if key in extra or key in ("step", "lr", "loss", "batch"):
                raise TelecliError(f"rec.step() for step {t}: record '{key}' clashes with a per-step record telecli keeps")
            extra[key] = float(value)
        stored_batch = None if (batch is None and self.writer.full_batch) else idx
        self.writer.add_meta(t, lr, math.nan if loss is None else float(loss), stored_batch, extra)
        if self.is_stored(t) or (self._total is not None and t == self._total):
            self.writer.add_state(t, self._snapshot())

    def _note_train_mode(self) -> None:
        if len(self.watch.train_mode) == self._train_mode_seen:
            return  # nothing new (entries are only ever added)
        self._train_mode_seen = len(self.watch.train_mode)
        known = {d["name"] for d in self.writer.manifest.setdefault("train_mode_layers", [])}
        for name, kind in self.watch.train_mode.items():
            if name not in known:
                self.writer.manifest["train_mode_layers"].append({"name": name, "type": kind})

    def close(self, status: str = "complete", stopped_early: dict[str, Any] | None = None) -> None:
        """Close the record with ``status``. ``stopped_early`` ({"step", "reason", …}): the loop ended the
        run before its planned ``total_steps`` by a stopping rule; the run is complete at that step (θ of
        the step is stored) and the manifest's ``stopped_early`` says where and why (docs/format.md)."""
        if self._closed:
            return
        if stopped_early is not None:
            if status != "complete" or int(stopped_early.get("step", -1)) != self.step_count:
                raise TelecliError(f"stopped_early must name the last recorded step ({self.step_count}) of a "
                                   f"complete run, got {stopped_early!r}")
            self.writer.manifest["stopped_early"] = {**stopped_early, "planned_steps": self._total}
        self._closed = True
        self.watch.close()
        if self.writer.manifest["last_step"] != self.step_count and status == "complete":
            self.writer.add_state(self.step_count, self._snapshot())  # always end on a stored step
        self.writer.close(status)

    def interrupt(self, status: str = "interrupted") -> None:
        """Stop on Ctrl-C as a kill would: the shard being written is finished, the steps buffered since
        are dropped (resuming recomputes them, so the shards are those of an uninterrupted run, byte for
        byte) and the manifest records ``status`` with ``last_step`` at the last written shard."""
        if self._closed:
            return
        self._closed = True
        self.watch.close()
        w = self.writer
        try:
            w._wait()
        except Exception:  # a failed shard write: the manifest on disk lists the shards before it
            return
        shards = w.manifest["shards"]
        if not shards:
            return  # nothing stored yet: --resume starts again from scratch
        w.manifest["last_step"] = shards[-1]["last_step"]
        w.manifest["status"] = status
        w.write_manifest()

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close("complete")
        else:
            self.writer.flush()
            self.close("interrupted" if exc_type is KeyboardInterrupt else f"failed: {exc_type.__name__}")


def _batch_indices(batch, n: int, step: int) -> torch.Tensor:
    """B_t as int64 indices in [0, n): from None (full batch), integer indices or a boolean mask."""
    if batch is None:
        return torch.arange(n)
    where = f"rec.step() for step {step}"
    if isinstance(batch, np.ndarray) and batch.dtype.kind in "iu" and batch.size:  # the common case, checked in numpy
        lo, hi = int(batch.min()), int(batch.max())
        if lo < 0 or hi >= n:
            raise TelecliError(f"{where}: batch index {lo if lo < 0 else hi} is outside the training set (0..{n - 1})")
        return torch.from_numpy(batch.reshape(-1).astype(np.int64, copy=False))
    b = torch.as_tensor(batch)
    if b.dtype == torch.bool:
        if b.numel() != n:
            raise TelecliError(f"{where}: a boolean mask must have one entry per training point ({n}), got {b.numel()}")
        b = b.reshape(-1).nonzero().reshape(-1)
    elif b.is_floating_point() or b.is_complex():
        raise TelecliError(f"{where}: the batch must be integer indices into the training set, got {b.dtype}")
    b = b.reshape(-1).to(torch.int64)
    if b.numel() == 0:
        raise TelecliError(f"{where}: the batch is empty")
    lo, hi = int(b.min()), int(b.max())
    if lo < 0 or hi >= n:
        raise TelecliError(f"{where}: batch index {lo if lo < 0 else hi} is outside the training set (0..{n - 1})")
    return b


def _random_id() -> str:
    return os.urandom(6).hex()


def _remove_stale_tmp(folder: Path) -> None:
    """Delete the temporary files of interrupted atomic writes (store.atomic names them
    ``.<name>.<random>.tmp``) for the run's own files only."""
    if not folder.is_dir():
        return
    for tmp in folder.glob(".*.tmp"):
        name = tmp.name[1:].rsplit(".", 2)[0]
        if name in (MANIFEST, DATA, "provenance.json") or (name.startswith("shard-") and name.endswith(".safetensors")):
            tmp.unlink(missing_ok=True)

