"""Shared plumbing of the analyses: rebuild a run's network offline, pick evaluation points, size chunks."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from telecli.errors import TelecliError
from telecli.lens.functional import check_evaluable
from telecli.models import instantiate
from telecli.store.trajectory import Trajectory
from telecli.train.loop import resolve_device

DTYPES = {"float64": torch.float64, "float32": torch.float32}


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
    check_evaluable(net)
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


def parse_shard(spec: str | None) -> tuple[int, int]:
    if not spec:
        return 0, 1
    m = re.fullmatch(r"(\d+)/(\d+)", spec.strip())
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise TelecliError(f"--shard expects i/N with 0 ≤ i < N, got '{spec}'")
    return int(m.group(1)), int(m.group(2))


def parse_memory(spec: str | None, device: torch.device) -> int:
    """'2G', '512M', 'auto' → bytes. auto: half the free GPU memory, or a quarter of the machine's
    memory on the CPU (at most 8 GiB)."""
    if spec in (None, "", "auto"):
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            return int(free * 0.5)
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            total = 8 << 30
        return int(min(8 << 30, total // 4))
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?", spec.strip(), re.I)
    if not m:
        raise TelecliError(f"--max-memory expects e.g. 512M or 4G, got '{spec}'")
    scale = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[m.group(2).upper()]
    return int(float(m.group(1)) * scale)


def activation_elements(model: nn.Module, x: torch.Tensor, params, buffers) -> int:
    """Elements of all leaf-module outputs for one example (a proxy for per-point activation memory)."""
    total = 0

    def hook(_m, _i, out):
        nonlocal total
        if torch.is_tensor(out):
            total += out[0].numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            torch.func.functional_call(model, (params, buffers), (x[:1],))
    finally:
        for h in handles:
            h.remove()
    return max(total, 1)


@dataclass
class Plan:
    block: int  # steps per block
    chunk: int  # points per chunk
    cache_jac0: bool


def plan_memory(budget: int, n_points: int, k: int, n_params: int, act: int, itemsize: int,
                block: int = 32, max_chunk: int = 1024) -> Plan:
    """Pick points per chunk so a block's working set fits ``budget`` bytes: stacked θ (3 copies of
    block+1 steps), J_0 for all points when it fits a quarter of the budget, and
    chunk × 6·block·act × itemsize of forward-mode activations."""
    theta_bytes = (block + 1) * n_params * itemsize * 3
    if theta_bytes > budget // 2:
        block = max(1, int(budget // 2 // (n_params * itemsize * 3)) - 1)
        theta_bytes = (block + 1) * n_params * itemsize * 3
    cache = n_points * k * n_params * itemsize <= budget // 4  # J_0 for every point, kept all run
    per_point = 6 * block * act * itemsize
    avail = budget - theta_bytes - (n_points * k * n_params * itemsize if cache else 0)
    chunk = min(max(1, int(avail // per_point)), n_points, max_chunk)
    return Plan(block=block, chunk=chunk, cache_jac0=cache)


def with_oom_backoff(fn, holder, on_shrink=None):
    """Run ``fn``; after a CUDA out-of-memory error halve ``holder.chunk`` (points per chunk), call
    ``on_shrink`` and try again, down to one point per chunk."""
    while True:
        try:
            return fn()
        except torch.cuda.OutOfMemoryError:
            if holder.chunk == 1:
                raise TelecliError("out of device memory even with one point per chunk; lower --max-memory "
                                   "or use --device cpu") from None
            holder.chunk = max(1, holder.chunk // 2)
            if on_shrink is not None:
                on_shrink()
            torch.cuda.empty_cache()


def device_for(name: str | None) -> torch.device:
    return resolve_device(name or "auto")


__all__ = ["rebuild_network", "select_points", "parse_shard", "parse_memory", "plan_memory", "Plan",
           "activation_elements", "device_for", "with_oom_backoff"]
