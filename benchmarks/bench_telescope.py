"""Telescope wall time ÷ plain forward passes of the same checkpoints over the same points, and ÷ a plain
``torch.func.jvp`` loop (one JVP at θ_{t−1} along Δθ_t per step over all points: the telescoped increment
alone, Eq. 5 (i)).

    python benchmarks/bench_telescope.py [--width 200] [--steps 200] [--every K] [--device cpu]

Records a digits MLP run into a temporary directory, then times in one process, interleaved: (a)
streaming every checkpoint and one forward pass over all train+test points, (b) the plain JVP loop over
the same checkpoints, (c) ``telescope`` end to end (reading, JVPs, the linearisation at the written
steps, HDF5 writing). With every step written (the default) the telescope also evaluates f_lin at every
step, a second tangent pass at θ₀; ``--every K`` writes every K-th step."""

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


def _setup(run: Path, device: torch.device):
    traj = Trajectory(run)
    model = rebuild_network(traj, device)
    dtype = next(model.parameters()).dtype
    data = traj.data()
    return traj, model, dtype, torch.cat([data["x_train"], data["x_test"]]).to(device, dtype)


def _done(device: torch.device, t0: float) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def forward_baseline(run: Path, device: torch.device) -> float:
    traj, model, dtype, x = _setup(run, device)
    t0 = time.perf_counter()
    with torch.no_grad():
        for _, st in traj.iter_states(prefix=(THETA, BUFFER)):
            params = {k: v.to(device, dtype) for k, v in st[THETA].items()}
            torch.func.functional_call(model, (params, {k: v.to(device) for k, v in st[BUFFER].items()}), (x,))
    return _done(device, t0)


def jvp_baseline(run: Path, device: torch.device) -> float:
    traj, model, dtype, x = _setup(run, device)
    t0 = time.perf_counter()
    prev = None
    for _, st in traj.iter_states(prefix=(THETA, BUFFER)):
        params = {k: v.to(device, dtype) for k, v in st[THETA].items()}
        bufs = {k: v.to(device) for k, v in st[BUFFER].items()}
        if prev is not None:
            delta = {k: params[k] - prev[k] for k in params}
            torch.func.jvp(lambda q: torch.func.functional_call(model, (q, bufs), (x,)), (prev,), (delta,))
        prev = params
    return _done(device, t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=200)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--every", type=int, default=None, help="write every K-th step (default: every step)")
    ap.add_argument("--repeats", type=int, default=2)
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
        forward_baseline(run, dev), jvp_baseline(run, dev)  # warm the page cache and the kernels
        base, jvps, times = [], [], []
        for i in range(a.repeats):
            base.append(forward_baseline(run, dev))
            jvps.append(jvp_baseline(run, dev))
            t0 = time.perf_counter()
            run_telescope(run, Path(tmp) / f"lens{i}.h5", device=a.device, every=a.every, progress=False)
            times.append(time.perf_counter() - t0)
        base, jvp_loop, tele = min(base), min(jvps), min(times)
    written = "every step" if a.every is None else f"every {a.every}th step"
    print(f"{a.task} MLP width {a.width}: {n_params:,} parameters, {a.steps} steps, {n_points} points, "
          f"{a.dtype}, {a.device}, torch threads {torch.get_num_threads()}, written: {written}")
    print(f"  forward passes of every checkpoint: {base:.3f} s")
    print(f"  plain torch.func.jvp loop:          {jvp_loop:.3f} s  ({jvp_loop / base:.2f}x forward)")
    print(f"  telecli telescope end to end:       {tele:.3f} s  ({a.steps * n_points / tele:,.0f} point-steps/s)")
    print(f"  ratio telescope / forward:          {tele / base:.2f}x   (target <= 3.5x)")
    print(f"  ratio telescope / jvp loop:         {tele / jvp_loop:.2f}x   (target <= 1.15x)")


if __name__ == "__main__":
    main()
