"""Scale-out of ``telecli telescope``: under torchrun the ranks split the evaluation points through
torch.distributed (gloo on CPU, nccl on GPU); each rank writes a shard and rank 0 merges them into one
file, so the result equals a single-process run exactly."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from telecli.errors import TelecliError
from telecli.jobs.telescope import default_output, merge, run_telescope


def world() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def telescope_any(run, out, *, device=None, shard=None, overwrite=False, **kw) -> Path | None:
    rank, size, local = world()
    if size == 1:
        return run_telescope(run, out, device=device, shard=shard, overwrite=overwrite, **kw)
    if shard:
        raise TelecliError("--shard and torchrun both split the points; use one of them")
    import torch.distributed as dist

    use_cuda = device in (None, "auto", "cuda") and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    dist.init_process_group("nccl" if use_cuda else "gloo")
    try:
        final = Path(out) if out else default_output(Path(run), (0, 1))
        if final.exists() and not overwrite:
            raise TelecliError(f"{final} already exists; pass --overwrite to replace it")
        part = final.with_name(f"{final.name}.rank{rank}-of-{size}")
        run_telescope(run, part, device=device, shard=f"{rank}/{size}", overwrite=True,
                      progress=kw.pop("progress", True) and rank == 0, **kw)
        dist.barrier()
        if rank == 0:
            parts = [final.with_name(f"{final.name}.rank{r}-of-{size}") for r in range(size)]
            merge(parts, final, overwrite=overwrite)
            for p in parts:
                p.unlink()
        dist.barrier()
        return final if rank == 0 else None
    finally:
        dist.destroy_process_group()
