"""A network that starts from another run's stored parameters (fine-tuning; method.md §5.2's
SVHN-pretrained variant of the LMC experiment)."""

from __future__ import annotations

from pathlib import Path

import torch

from telecli.errors import TelecliError
from telecli.store.trajectory import Trajectory


def pretrained(run: str, step: int = -1, **_ignored) -> torch.nn.Module:
    """Model factory for fine-tuning (the SVHN-pretrained variant of §5.2): the network of ``run`` with
    θ and buffers of its stored ``step`` (−1: the last). Use in a preset as
    ``[model] name = "factory"``, ``factory = "telecli.models.pretrained:pretrained"``,
    ``kwargs = {run = "runs/svhn-pretrain"}``. The path is read relative to the working directory
    whenever the network is rebuilt (recording, and every analysis of the fine-tuned run)."""
    from telecli.jobs.common import rebuild_network  # the run's own factory, checked against its manifest

    src = Path(run).expanduser()
    traj = Trajectory(src)
    if not traj.complete and step == -1:
        raise TelecliError(f"pretrained run {src} is not complete (status {traj.manifest.get('status')}); "
                           f"finish it with 'telecli record … --resume'")
    at = traj.last_step if step == -1 else int(step)
    with torch.random.fork_rng(devices=[]):  # rebuilding reseeds; keep the caller's random state
        net = rebuild_network(traj, torch.device("cpu"))
    theta, buffers = traj.theta(at), traj.buffers(at)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(theta[name])
        for name, b in net.named_buffers():
            if name in buffers:
                b.copy_(buffers[name])
    return net.train()
