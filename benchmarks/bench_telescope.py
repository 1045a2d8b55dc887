"""Telescope wall time ÷ plain forward passes of the same checkpoints over the same points (issue target
≤ 3× on CPU; a Jacobian-vector product costs about two forward passes).

    python benchmarks/bench_telescope.py [--width 200] [--steps 200] [--device cpu]

Records a digits MLP run into a temporary directory, then times in one process: (a) streaming every
checkpoint and one forward pass over all train+test points, (b) `telescope` end to end (reading,
JVPs, linearisation, HDF5 writing). Prints both and the ratio."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from telecli import config
from telecli.jobs.common import rebuild_network
from telecli.jobs.telescope import run_telescope
from telecli.store.trajectory import BUFFER, THETA, Trajectory
from telecli.train.loop import run_training


def forward_baseline(run: Path, device: torch.device) -> float:
    traj = Trajectory(run)
    model = rebuild_network(traj, device)
    dtype = next(model.parameters()).dtype
    data = traj.data()
    x = torch.cat([data["x_train"], data["x_test"]]).to(device, dtype)
    t0 = time.perf_counter()
    with torch.no_grad():
        for _, st in traj.iter_states(prefix=(THETA, BUFFER)):
            params = {k: v.to(device, dtype) for k, v in st[THETA].items()}
            torch.func.functional_call(model, (params, {k: v.to(device) for k, v in st[BUFFER].items()}), (x,))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=200)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--task", default="digits10", choices=["digits10", "poly"],
                    help="digits10: 10 outputs, 1797 points; poly: 1 output, 1050 points (d=100)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        task = {"name": "digits", "classes": [], "one_hot": True} if a.task == "digits10" else {"name": "poly"}
        cfg = config.from_dict({"name": "bench", "dtype": a.dtype, "task": task,
                                "model": {"name": "mlp", "width": a.width, "depth": 3},
                                "train": {"lr": 0.05 if a.task == "digits10" else 0.01, "batch_size": 100,
                                          "steps": a.steps}})
        run_training(cfg, run, progress=False)
        traj = Trajectory(run)
        n_points = traj.manifest["data"]["n_train"] + traj.manifest["data"]["n_test"]
        n_params = sum(p.numel() for p in traj.theta(0).values())
        dev = torch.device(a.device)
        forward_baseline(run, dev)  # warm the page cache and the kernels
        base = min(forward_baseline(run, dev) for _ in range(2))
        times = []
        for i in range(2):
            t0 = time.perf_counter()
            run_telescope(run, Path(tmp) / f"lens{i}.h5", device=a.device, progress=False)
            times.append(time.perf_counter() - t0)
        tele = min(times)
    print(f"{a.task} MLP width {a.width}: {n_params:,} parameters, {a.steps} steps, {n_points} points, "
          f"{a.dtype}, {a.device}, torch threads {torch.get_num_threads()}")
    print(f"  forward passes of every checkpoint: {base:.3f} s")
    print(f"  telecli telescope end to end:       {tele:.3f} s  ({a.steps * n_points / tele:,.0f} point-steps/s)")
    print(f"  ratio telescope / forward:           {tele / base:.2f}x   (target <= 3x)")


if __name__ == "__main__":
    main()
