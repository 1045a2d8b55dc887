"""The runtime: device, dtype and the one memory budget every job plans its chunks from.

* device: ``auto`` picks CUDA when torch sees one; ``cpu``, ``cuda``, ``cuda:N``;
* dtype: ``float64`` (the default of the small presets) or ``float32``;
* memory: ``--max-memory`` (e.g. ``512M``, ``4G``) or ``auto`` (half the free GPU memory, or a quarter of
  the machine's memory up to 8 GiB on the CPU); :func:`plan_memory` turns it into steps per block and
  points per chunk, :func:`with_oom_backoff` halves the chunk after a CUDA out-of-memory error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from telecli.errors import TelecliError

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TelecliError("--device cuda asked for, but torch sees no CUDA device (use --device cpu)")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise TelecliError(f"unknown device '{name}' (use auto, cpu or cuda)")
    return torch.device(name)


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise TelecliError(f"unknown dtype '{name}' (use float64 or float32)")
    return DTYPES[name]



def device_for(name: str | None) -> torch.device:
    return resolve_device(name or "auto")


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
    from telecli.options import parse_bytes

    return parse_bytes(spec, "--max-memory")


def activation_elements(model: nn.Module, x: torch.Tensor, params, buffers) -> int:
    """Elements of all leaf-module outputs for one example (a proxy for per-point activation memory)."""
    from telecli.lens.functional import leaf_output_elements

    with torch.no_grad():
        total, _ = leaf_output_elements(model, lambda: torch.func.functional_call(model, (params, buffers), (x[:1],)))
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
