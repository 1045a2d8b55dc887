"""Recording overhead and read throughput of the trajectory store (ratios measured side by side, one process).

    .venv/bin/python benchmarks/bench_record.py [--repeats 5] [--steps 300] [--threads 1] [--profile]

1. Overhead = wall time of ``run_training`` storing θ_t (with the per-step records) at *every* step
   ÷ wall time of the same training loop without a store. Both sides time the same work: ``build`` (data,
   θ_0, optimiser) and T calls of the same ``train_step`` — the baseline is ``run_training``'s loop with
   the Recorder calls taken out. Two float64 MLPs on digits (3 vs 5, batch 100, plain SGD):
   (a) the digits preset (telecli/presets/digits-sgd.toml: depth 3, width 200, 53k parameters) and
   (b) depth 3, width 400 (187k parameters). Median of ``--repeats`` alternating runs. Target ≤ 1.3×.
   Beside it the copy floor: the same loop plus only a copy of θ_t into shard-sized blocks per step (what
   storing every step costs the training thread at least, before any observation, hashing or writing).
2. Read throughput: θ_t of the recorded run streamed with ``Trajectory.iter_states()`` (MB of θ per second)
   beside a plain ``open().read()`` of the same shard files (MB per second), as a ratio (page cache warm).

Also printed: the I/O floor — sha256 and fsync'd-write throughput of this machine, and the time they
need for the stored bytes (the writer thread overlaps it with training, the last shard excepted).
``--profile`` prints where the recording time goes (cProfile of one recorded run, by own time).
Prints numbers only; no pass/fail. Everything is written under a temporary directory, removed at the end.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from telecli import config as config_mod
from telecli.store.trajectory import Trajectory
from telecli.train.loop import BatchOrder, build, run_training, train_step

PRESET = Path(__file__).resolve().parent.parent / "telecli" / "presets" / "digits-sgd.toml"


def plain_training(cfg) -> None:
    """``run_training``'s loop (loop.py: the same ``train_step`` per step) without the Recorder: the baseline."""
    setup = build(cfg, torch.device("cpu"))
    order = BatchOrder(setup.x_train.shape[0], cfg.train.batch_size, cfg.seed)
    setup.model.train()
    for t in range(1, cfg.train.steps + 1):
        _, value = train_step(setup, cfg, order, t)
        if not np.isfinite(value):
            raise RuntimeError("non-finite loss")


def copy_floor_training(cfg) -> None:
    """The baseline plus the one thing storing every step cannot avoid on the training thread: a copy of θ_t
    into shard-sized blocks (two, alternating, as the writer's), with nothing hashed, written or checked."""
    setup = build(cfg, torch.device("cpu"))
    order = BatchOrder(setup.x_train.shape[0], cfg.train.batch_size, cfg.seed)
    params = [p for p in setup.model.parameters() if p.requires_grad]
    sizes = [p.numel() for p in params]
    rows = max(1, (int(cfg.store.shard_mb * 2**20)) // (sum(sizes) * params[0].element_size()))
    blocks = [torch.empty(rows, sum(sizes), dtype=params[0].dtype) for _ in range(2)]
    setup.model.train()
    for t in range(1, cfg.train.steps + 1):
        train_step(setup, cfg, order, t)
        row = blocks[(t // rows) % 2][t % rows]
        torch._foreach_copy_(list(row.split(sizes)), [p.detach().reshape(-1) for p in params])


def timed(fn, *args, **kwargs) -> float:
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t0


def overhead(cfg, run_dir: Path, repeats: int) -> dict:
    def record() -> float:  # into a fresh directory: removing the previous run is not part of recording
        shutil.rmtree(run_dir, ignore_errors=True)
        return timed(run_training, cfg, run_dir, progress=False)

    record()  # warm-up: imports, allocator, page cache
    plain_training(cfg)
    copy_floor_training(cfg)
    plain, stored, floor = [], [], []
    for _ in range(repeats):
        plain.append(timed(plain_training, cfg))
        stored.append(record())
        floor.append(timed(copy_floor_training, cfg))
    traj = Trajectory(run_dir)
    n_params = sum(int(np.prod(p["shape"])) for p in traj.manifest["parameters"])
    return {
        "params": n_params,
        "steps": cfg.train.steps,
        "stored_mb": sum(s.bytes for s in traj.shards) / 2**20,
        "shards": len(traj.shards),
        "plain": statistics.median(plain),
        "stored": statistics.median(stored),
        "copy_floor": statistics.median(floor),
    }


def read_throughput(run_dir: Path, repeats: int) -> dict:
    traj = Trajectory(run_dir)
    files = [run_dir / s.file for s in traj.shards]

    def raw() -> int:
        n = 0
        for f in files:
            with open(f, "rb") as fh:
                n += len(fh.read())
        return n

    # A consumer loads θ_t into its network: copy every tensor into a preallocated parameter (safetensors
    # slices are mmap-backed, so the bytes are only read when touched).
    params = {k: torch.empty_like(v) for k, v in traj.theta(int(traj.steps[0])).items()}

    def stream() -> int:
        n = 0
        for _, theta in Trajectory(run_dir).iter_states():
            for k, v in theta.items():
                params[k].copy_(v)
                n += v.numel() * v.element_size()
        return n

    raw()
    stream()  # page cache warm for both
    t_raw, t_stream = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        n_raw = raw()
        t_raw.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        n_theta = stream()
        t_stream.append(time.perf_counter() - t0)
    raw_mbs = n_raw / 2**20 / statistics.median(t_raw)
    theta_mbs = n_theta / 2**20 / statistics.median(t_stream)
    return {"raw_mb": n_raw / 2**20, "theta_mb": n_theta / 2**20, "raw_mbs": raw_mbs, "theta_mbs": theta_mbs}


def io_floor(folder: Path, mib: int = 64) -> dict:
    """Throughput of what every stored byte must go through on the writer thread: sha256 (the manifest's
    hash) and an fsync'd write (atomic shard), measured on a buffer of ``mib`` MiB."""
    buf = memoryview(np.random.default_rng(0).random(mib * 2**17)).cast("B")
    sha, write = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        hashlib.sha256(buf).hexdigest()
        sha.append(time.perf_counter() - t0)
        path = folder / "io-floor.bin"
        t0 = time.perf_counter()
        with open(path, "wb", buffering=0) as f:
            f.write(buf)
            os.fsync(f.fileno())
        write.append(time.perf_counter() - t0)
        path.unlink()
    return {"sha_mbs": mib / min(sha), "write_mbs": mib / min(write)}


def profile(cfg, run_dir: Path, top: int = 18) -> str:
    shutil.rmtree(run_dir, ignore_errors=True)
    prof = cProfile.Profile()
    prof.enable()
    run_training(cfg, run_dir, progress=False)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=300, help="training steps (the preset's 300 by default)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of one recorded run per model")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(f"telecli record benchmark: torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"float64, {args.steps} steps, median of {args.repeats}", flush=True)
    models = {"(a) digits preset, width 200": [], "(b) width 400 (~200k params)": ["model.width=400"]}
    tmp = Path(tempfile.mkdtemp(prefix="telecli-bench-"))
    try:
        for label, extra in models.items():
            cfg = config_mod.load(PRESET, [*extra, f"train.steps={args.steps}"])
            run_dir = tmp / "run"
            r = overhead(cfg, run_dir, args.repeats)
            extra_s = r["stored"] - r["plain"]
            print(f"\n{label}: {r['params']:,} parameters, {r['steps']} steps, every step stored: "
                  f"{r['stored_mb']:.1f} MiB in {r['shards']} shard(s)")
            print(f"  training without store   {r['plain']:.3f} s")
            print(f"  training with store      {r['stored']:.3f} s   (+{extra_s:.3f} s, "
                  f"{r['stored_mb'] / max(extra_s, 1e-9):.0f} MiB/s of storing)")
            print(f"  recording overhead       {r['stored'] / r['plain']:.2f}x   (target <= 1.3x)")
            print(f"  copy floor               {r['copy_floor'] / r['plain']:.2f}x   (training + a plain copy of θ_t per "
                  f"step into shard-sized blocks; nothing observed, hashed or written)")
            f = io_floor(tmp)
            floor = r["stored_mb"] / f["sha_mbs"] + r["stored_mb"] / f["write_mbs"]
            print(f"  I/O floor                sha256 {f['sha_mbs']:.0f} MiB/s, fsync'd write {f['write_mbs']:.0f} MiB/s: "
                  f"{floor:.3f} s of writer-thread time = {floor / r['plain']:.2f}x the training")
            t = read_throughput(run_dir, args.repeats)
            print(f"  read θ_t (iter_states)   {t['theta_mbs']:.0f} MiB/s  ({t['theta_mb']:.1f} MiB of θ)")
            print(f"  raw read (open().read()) {t['raw_mbs']:.0f} MiB/s  ({t['raw_mb']:.1f} MiB of shard files)")
            print(f"  read ratio θ / raw       {t['theta_mbs'] / t['raw_mbs']:.2f}")
            if args.profile:
                print(profile(cfg, run_dir))
            sys.stdout.flush()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
