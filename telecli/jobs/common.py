"""Shared plumbing of the analyses: rebuild a run's network offline, pick evaluation points, shards.
Device, dtype and the memory budget are telecli.runtime's."""

from __future__ import annotations


import numpy as np
import torch
from torch import nn

from telecli.errors import TelecliError
from telecli.lens.functional import check_per_example
from telecli.models import instantiate
from telecli.store.trajectory import Trajectory
from telecli.runtime import DTYPES



def rebuild_network(traj: Trajectory, device: torch.device, dtype: torch.dtype | None = None) -> nn.Module:
    """Instantiate the run's factory and check that its parameters match the manifest's names and shapes."""
    m = traj.manifest["model"]
    if not m.get("factory"):
        raise TelecliError(f"{traj.run_dir} records no model factory; pass model_factory= to the Recorder")
    torch.manual_seed(0)
    net = instantiate(m["factory"], m.get("kwargs", {}))
    got = {n: list(p.shape) for n, p in net.named_parameters() if p.requires_grad}
    want = {p["name"]: p["shape"] for p in traj.manifest["parameters"]}
    if got != want:
        diff = _first_diff(got, want)
        raise TelecliError(f"model factory {m['factory']} builds a network that does not match the run "
                           f"({diff}); use the factory the run was recorded with")
    dtype = dtype or DTYPES.get(traj.manifest.get("dtype", "float64"), torch.float64)
    _frozen_as_buffers(net, traj)
    net = net.to(device=device, dtype=dtype).eval()
    check_per_example(net)
    return net


def _frozen_as_buffers(net: nn.Module, traj: Trajectory) -> None:
    """Frozen parameters become buffers (θ is the trainable parameters only), holding the values the
    Recorder kept in data.safetensors (``frozen.<name>``) where it kept them."""
    from telecli.train.recorder import FROZEN

    frozen = [n for n, p in net.named_parameters() if not p.requires_grad]
    if not frozen:
        return
    kept = {k[len(FROZEN):]: v for k, v in traj.data().items() if k.startswith(FROZEN)}
    for name in frozen:
        owner_name, _, leaf = name.rpartition(".")
        owner = net.get_submodule(owner_name) if owner_name else net
        value = getattr(owner, leaf).detach().clone()
        if name in kept:
            if kept[name].shape != value.shape:
                raise TelecliError(f"frozen parameter {name} of the factory has shape {list(value.shape)}, the run "
                                   f"kept {list(kept[name].shape)}; use the factory the run was recorded with")
            value = kept[name].clone()
        delattr(owner, leaf)
        owner.register_buffer(leaf, value)


def _first_diff(got: dict, want: dict) -> str:
    for name in list(want) + list(got):
        if got.get(name) != want.get(name):
            return f"parameter {name}: run has {want.get(name)}, factory gives {got.get(name)}"
    return "parameter order differs"


def select_points(n: int, points: str | int, seed: int) -> np.ndarray:
    """All indices, or a seeded subset of ``points`` of them (sorted)."""
    if points in ("all", None, 0):
        return np.arange(n)
    k = int(points)
    if k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


__all__ = ["rebuild_network", "select_points"]
