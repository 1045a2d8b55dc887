"""Peak memory as the OS sees it (the child's peak RSS from wait4) of ``telecli telescope`` under a
``--max-memory`` budget smaller than the trajectory on disk, above the import baseline (a process that
imports what the command imports). Target: peak − baseline ≤ 1.25 × budget.

    python benchmarks/bench_memory.py [--budget 64M] [--steps 200] [--width 200] [--effective-params]

Records a digits MLP run (10 outputs, 1797 points) into a temporary directory first."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from telecli import config
from telecli.runtime import parse_memory
from telecli.train.loop import run_training

IMPORTS = "import torch, h5py, numpy, safetensors, telecli.cli, telecli.jobs.telescope, telecli.jobs.smoother"


def peak_rss(args: list[str]) -> int:
    """Peak resident set size in bytes of one child process running ``args``."""
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {err.strip().splitlines()[-1] if err.strip() else proc.returncode}")
    return usage.ru_maxrss * 1024  # kilobytes on Linux


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", default="64M")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--width", type=int, default=200)
    ap.add_argument("--optimizer", default="sgd")
    ap.add_argument("--effective-params", action="store_true")
    a = ap.parse_args()
    budget = parse_memory(a.budget, None)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        task = {"name": "digits", "classes": [], "one_hot": True}
        if a.effective_params:  # the smoother's state is n × n: a binary task keeps it small
            task = {"name": "digits"}
        cfg = config.from_dict({"name": "mem", "task": task, "model": {"name": "mlp", "width": a.width, "depth": 3},
                                "train": {"lr": 0.05, "batch_size": 100, "steps": a.steps,
                                          "optimizer": a.optimizer}})
        run_training(cfg, run, progress=False)
        on_disk = sum(p.stat().st_size for p in (run / "trajectory").glob("*"))
        base = peak_rss([sys.executable, "-c", IMPORTS])
        cmd = [sys.executable, "-m", "telecli", "telescope", str(run), "--out", str(Path(tmp) / "lens.h5"), "-q",
               "--max-memory", a.budget, "--device", "cpu"] + (["--effective-params"] if a.effective_params else [])
        peak = peak_rss(cmd)
    used = peak - base
    print(f"trajectory on disk {on_disk / 2**20:.0f} MiB, budget {budget / 2**20:.0f} MiB"
          f"{', --effective-params' if a.effective_params else ''}")
    print(f"  import baseline peak RSS {base / 2**20:.0f} MiB; telescope peak RSS {peak / 2**20:.0f} MiB")
    print(f"  above baseline: {used / 2**20:.0f} MiB = {used / budget:.2f} x budget   (target <= 1.25x)")


if __name__ == "__main__":
    main()
