"""Effective parameters at the paper's grokking shapes (method.md §3.4: an MLP of P ≈ 53k parameters,
AdamW, 1000 training and 1000 test points): steps per second of the whole ``telescope --effective-params``
pass, exact and sketched, and the projected time of the 100k-step analysis.

    python benchmarks/bench_grokking.py [--device cuda] [--dtype float64] [--steps 30] [--probes 64]

Records a run of ``--steps`` AdamW steps (λ = 0.1, β = (0.9, 0.99), batch 200) on Gaussian inputs with
a teacher network's targets through the Recorder, then times the telecli pass on it (recipe check,
telescope, smoother, HDF5 writing) once exact and once with ``--probes``, after a warm-up pass."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from telecli.jobs.telescope import run_telescope
from telecli.models import build
from telecli.train.recorder import Recorder

FACTORY = "telecli.models:build"


def record(run: Path, steps: int, dtype: torch.dtype, device: torch.device, n: int, width: int) -> int:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * n, 64, generator=g, dtype=dtype)
    teacher = build("mlp", [64], 1, depth=2, width=32).to(dtype)
    with torch.no_grad():
        y = teacher(x) + 0.1 * torch.randn(2 * n, 1, generator=g, dtype=dtype)
    x, y = x.to(device), y.to(device)
    kwargs = {"name": "mlp", "input_shape": [64], "output_dim": 1, "depth": 3, "width": width}
    torch.manual_seed(0)
    model = build("mlp", [64], 1, depth=3, width=width).to(device, dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, betas=(0.9, 0.99))
    rec = Recorder(run, model, opt, (x[:n], y[:n]), (x[n:], y[n:]), model_factory=FACTORY, model_kwargs=kwargs,
                   total_steps=steps)
    order = torch.Generator().manual_seed(1)
    for _ in range(steps):
        idx = torch.randperm(n, generator=order)[:200]
        opt.zero_grad()
        loss = 0.5 * ((model(x[:n][idx.to(device)]) - y[:n][idx.to(device)]) ** 2).mean()
        loss.backward()
        opt.step()
        rec.step(idx, loss=float(loss.detach()))
    rec.close()
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--steps", type=int, default=None, help="default 30 on CUDA, 3 on the CPU")
    ap.add_argument("--probes", type=int, default=64)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--width", type=int, default=200)
    ap.add_argument("--max-memory", default=None)
    a = ap.parse_args()
    dev, dtype = torch.device(a.device), getattr(torch, a.dtype)
    a.steps = a.steps or (30 if dev.type == "cuda" else 3)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        P = record(run, a.steps, dtype, dev, a.n, a.width)
        print(f"grokking shapes: MLP 64-{a.width}-{a.width}-1 ({P:,} parameters), n = m = {a.n}, AdamW, "
              f"{a.steps} steps, {a.dtype}, {dev}" + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else
                                                         f", {torch.get_num_threads()} threads"))
        rates = {}
        for label, probes in (("exact", None), (f"probes {a.probes}", a.probes)):
            kw = dict(effective_params=True, probes=probes, device=a.device, max_memory=a.max_memory,
                      overwrite=True, progress=False)
            run_telescope(run, Path(tmp) / "warm.h5", **kw)  # warm-up: kernels, caches, allocator
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            run_telescope(run, Path(tmp) / "lens.h5", **kw)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            rates[label] = a.steps / dt
            print(f"  {label:>10}: {dt:7.2f} s for {a.steps} steps = {a.steps / dt:7.2f} steps/s; "
                  f"100k steps ≈ {100_000 / (a.steps / dt) / 60:7.1f} min")
        print(f"  sketch speed-up: {rates[f'probes {a.probes}'] / rates['exact']:.2f}x   "
              f"(goal: the 100k-step analysis in ≤ 30 min on one H100/H200)")


if __name__ == "__main__":
    main()
