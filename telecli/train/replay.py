"""Dense trajectories from sparse storage: the steps between two stored checkpoints are recomputed by
replaying training from the earlier one (same data order, schedule and optimiser state), so a run that
stores θ every K steps or on a log grid can still be telescoped step by step. On the device and torch
build that recorded it, the replay is bit-exact; every replayed segment is checked against the next
stored θ, and a deviation beyond rounding stops the analysis."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

from telecli import config as config_mod
from telecli.errors import TelecliError
from telecli.models import instantiate
from telecli.store.trajectory import BUFFER, OPT, THETA, Trajectory
from telecli.train.loop import BatchOrder, Setup, load_state, train_step
from telecli.train.optim import make_optimizer
from telecli.jobs.common import _frozen_as_buffers
from telecli.runtime import resolve_dtype
from telecli.train.recorder import snapshot, state_keys

PREFIXES = (THETA, BUFFER, OPT)


def _split(snap: dict[str, torch.Tensor], prefixes) -> dict[str, dict[str, torch.Tensor]]:
    return {p: {k[len(p):]: v.detach().cpu().clone() for k, v in snap.items() if k.startswith(p)} for p in prefixes}


class Replayer:
    """Re-runs the training steps of a ``telecli record`` run from any stored step."""

    def __init__(self, traj: Trajectory, device: torch.device):
        m = traj.manifest
        if not m.get("config"):
            raise TelecliError(f"{traj.run_dir} stores steps with gaps and was recorded by a user loop, which "
                               f"cannot be replayed; record every step (Recorder(every=1))")
        if state_keys(m["optimizer"]) and not m.get("optimizer_state"):
            raise TelecliError(f"{traj.run_dir} stores no optimiser state, so its gaps cannot be replayed")
        self.traj = traj
        self.cfg = config_mod.from_dict(m["config"])
        dtype = resolve_dtype(m["dtype"])
        data = traj.data()
        torch.manual_seed(0)
        model = instantiate(m["model"]["factory"], m["model"]["kwargs"])
        _frozen_as_buffers(model, traj)  # frozen parameters hold the run's values, not seed 0's
        model = model.to(device=device, dtype=dtype)
        model.train()
        opt = make_optimizer(self.cfg.train, model.parameters())
        as_t = lambda a: a.to(device=device, dtype=dtype)  # noqa: E731
        self.setup = Setup(model, opt, as_t(data["x_train"]), as_t(data["y_train"]), as_t(data["x_test"]),
                           as_t(data["y_test"]), m["model"]["factory"], m["model"]["kwargs"], {})
        self.order = BatchOrder(data["x_train"].shape[0], self.cfg.train.batch_size, self.cfg.seed)
        self.opt_info = m["optimizer"]
        self.with_opt = bool(m.get("optimizer_state"))
        self.max_deviation = 0.0
        self.threads = int(m.get("torch_threads") or 0)  # 0: not recorded
        self.device = torch.device(device)

    def segment(self, start: int, state: dict[str, dict[str, torch.Tensor]], stop: int, prefixes
                ) -> Iterator[tuple[int, dict[str, dict[str, torch.Tensor]]]]:
        """From the stored ``state`` at ``start``, yield the replayed states of steps start+1 .. stop
        (``stop`` itself is yielded too, so the caller can check it against the store)."""
        load_state(self.setup, self.opt_info, state[THETA], state[BUFFER], state.get(OPT, {}), start,
                   where=str(self.traj.run_dir))
        for t in range(start + 1, stop + 1):
            with self.recorded_threads():
                _, loss = train_step(self.setup, self.cfg, self.order, t)
            if not np.isfinite(loss):
                raise TelecliError(f"replaying {self.traj.run_dir}: non-finite loss at step {t}")
            yield t, _split(snapshot(self.setup.model, self.setup.optimizer, self.opt_info, t, self.with_opt),
                            prefixes)

    @contextmanager
    def recorded_threads(self):
        """torch's intra-op thread count of the recording while a step is replayed (the sums of a step
        are split by thread, so another count rounds differently, and a chaotic run amplifies it)."""
        before = torch.get_num_threads()
        if self.threads and self.threads != before and self.device.type == "cpu":
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)


def dense_states(traj: Trajectory, prefixes=(THETA, BUFFER), start: int | None = None,
                 device: torch.device | str = "cpu") -> Iterator[tuple[int, dict[str, dict[str, torch.Tensor]]]]:
    """(t, {prefix: {name: tensor}}) for every step t from ``start`` (default: the first) to the last."""
    steps = traj.steps
    start = int(steps[0]) if start is None else int(start)
    if traj.is_contiguous():
        yield from traj.iter_states(steps[steps >= start], prefix=tuple(prefixes))
        return
    replay = Replayer(traj, torch.device(device))
    anchor = int(steps[steps <= start][-1])  # the stored step to replay from
    prev = None
    for s, state in traj.iter_states(steps[steps >= anchor], prefix=PREFIXES):
        if prev is not None and s > prev[0] + 1:
            for t, rep in replay.segment(prev[0], prev[1], s, PREFIXES):
                if t == s:
                    _check(traj, s, rep[THETA], state[THETA], replay)
                elif t >= start:
                    yield t, {p: rep[p] for p in prefixes}
        if s >= start:
            yield s, {p: state[p] for p in prefixes}
        prev = (s, state)


def _check(traj, step, replayed, stored, replay) -> None:
    dev = max(float((replayed[n].to(stored[n].dtype) - stored[n]).abs().max()) for n in stored)
    scale = max(float(stored[n].abs().max()) for n in stored) or 1.0
    replay.max_deviation = max(replay.max_deviation, dev)
    if dev > 1e-6 * scale:
        threads = "" if replay.threads else " or with another thread count (OMP_NUM_THREADS; not kept by its telecli)"
        raise TelecliError(f"replaying {traj.run_dir} up to step {step} does not reproduce the stored θ "
                           f"(max deviation {dev:.2e}); it was recorded on another device or torch build{threads} — "
                           f"analyse it there, or record every step (store.every = 1)")
