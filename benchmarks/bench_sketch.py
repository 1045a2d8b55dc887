"""Sketched effective parameters (method.md §10.1, ``telecli telescope --effective-params --probes R``)
against the exact smoother on the CPU variants of two presets: speed-up of the whole pass and the error
of p against exact, in units of the stored standard error; and the exact smoother in float32
(``--dtype float32``) against float64: speed-up and the relative error of p.

    python benchmarks/bench_sketch.py [--steps 300] [--probes 16,64] [--threads 0] [--presets NAME,...]

Records each preset (shortened to --steps) into a temporary directory, then times in one process, for
every R, the exact run and the sketch interleaved (exact, sketch, exact, sketch: the median of two each),
the work of the CLI command (recipe check, telescope, smoother, HDF5 writing)."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from telecli import config
from telecli.jobs.telescope import run_telescope
from telecli.train.loop import run_training

PRESETS = (  # the CPU variants of method.md §3.2 (double descent, momentum) and §3.4 (grokking, AdamW)
    "double-descent-mnist1d",
    "mnist-grokking",
)


def timed(fn) -> tuple[float, Path]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--probes", default="16,64")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--presets", default=",".join(PRESETS))
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    root = Path(__file__).resolve().parents[1] / "sample_runs"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in a.presets.split(","):
            cfg = config.load(root / f"{name}.toml", [f"train.steps={a.steps}", "store.every=1"])
            run = run_training(cfg, tmp / name, progress=False)
            n = cfg.task.n_train or "all"
            print(f"{name}: {cfg.train.optimizer} (momentum {cfg.train.momentum}), {a.steps} steps, n_train {n}, "
                  f"threads {torch.get_num_threads()}")

            def job(out: str, R: int | None):
                return lambda: run_telescope(run, tmp / out, effective_params=True, probes=R, overwrite=True,
                                             progress=False)

            t64, path64 = timed(job("exact.h5", None))
            t32, path32 = timed(lambda: run_telescope(run, tmp / "f32.h5", effective_params=True, dtype="float32",
                                                      overwrite=True, progress=False))
            with h5py.File(path64) as f64, h5py.File(path32) as f32:
                err = {s: float(np.nanmax(np.abs(f32[f"{s}/effective_parameters"][1:] - f64[f"{s}/effective_parameters"][1:])
                                          / np.abs(f64[f"{s}/effective_parameters"][1:]))) for s in ("train", "test")}
            print(f"  float32 exact: {t32:6.1f} s vs float64 {t64:6.1f} s ({t64 / t32:4.2f}x); largest relative error "
                  f"of p over the steps: train {err['train']:.1e}, test {err['test']:.1e}")
            for R in [int(r) for r in a.probes.split(",")]:
                te, ts = [], []
                for _ in range(2):
                    t, exact_path = timed(job("exact.h5", None))
                    te.append(t)
                    t, sketch_path = timed(job("sketch.h5", R))
                    ts.append(t)
                with h5py.File(exact_path) as fe, h5py.File(sketch_path) as fs:
                    nk = int(fe.attrs["n_train"])
                    line = []
                    for split in ("train", "test"):
                        p = float(fe[f"{split}/effective_parameters"][-1])
                        est = float(fs[f"{split}/effective_parameters"][-1])
                        se = float(fs[f"{split}/effective_parameters_se"][-1])
                        line.append(f"p_{split} {p:7.2f} ≈ {est:7.2f} ± {se:5.2f} (error {abs(est - p) / p:5.1%}, "
                                    f"{abs(est - p) / se:4.1f} s.e.)")
                    pred = float(abs(fe["test/smoother"][...] - fs["test/smoother"][...]).max())
                e, s = statistics.median(te), statistics.median(ts)
                print(f"  R = {R:4d} of n = {nk}: exact {e:6.1f} s, sketch {s:6.1f} s, speed-up {e / s:5.2f}x; "
                      + "; ".join(line) + f"; smoother predictions differ by {pred:.1e}")


if __name__ == "__main__":
    main()
