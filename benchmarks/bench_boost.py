"""Benchmark: the boosting smoother (telecli.lens.boost, method.md §4.1) vs dense per-tree kernels.

Ours: one pass over the rows of S per tree (leaf sums + row gather), O((n+m)·n) per tree.
Baseline ("dense"): the U-turn paper's way, a dense n×n (and m×n) tree-kernel matrix per tree and the
matrix recursion S_t = S_{t−1} + γ K_t (I − S_{t−1}), here with BLAS matrix products, O((n+m)·n²) per tree.

At the large size the dense baseline runs only on a prefix of the trees and its time is
extrapolated linearly per tree (every tree costs the same there); the output says so. At the small
size both run in full and their results are compared.

    .venv/bin/python benchmarks/bench_boost.py                      # n=5000, m=1000, 1000 trees
    .venv/bin/python benchmarks/bench_boost.py --n 2000 --trees 200  # quicker
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import time
import tracemalloc

import numpy as np
from sklearn.datasets import make_regression
from sklearn.ensemble import GradientBoostingRegressor

from telecli.lens.boost import boosting_smoother


def fit(n, m, trees, depth, lr, seed=0):
    X, y = make_regression(n_samples=n + m, n_features=8, n_informative=6, noise=10.0, random_state=seed)
    gbr = GradientBoostingRegressor(n_estimators=trees, max_depth=depth, learning_rate=lr, random_state=seed)
    t0 = time.perf_counter()
    gbr.fit(X[:n], y[:n])
    return gbr, X[:n], y[:n], X[n:], time.perf_counter() - t0


def dense_smoother(gbr, Xtr, Xte, n_trees):
    """Baseline: dense per-tree kernels K_t (n×n), K_t^test (m×n) and the matrix recursion."""
    n, m = len(Xtr), len(Xte)
    g = gbr.learning_rate
    S, St = np.zeros((n, n)), np.zeros((m, n))
    h0 = float(gbr.init_.constant_.ravel()[0])
    c, ct = np.full(n, h0), np.full(m, h0)
    X32, Xt32 = Xtr.astype(np.float32), Xte.astype(np.float32)
    for est in gbr.estimators_[:n_trees, 0]:
        lt, lx = est.apply(X32), est.apply(Xt32)
        K = (lt[:, None] == lt[None, :]).astype(np.float64)
        K /= K.sum(axis=1, keepdims=True)
        Kt = (lx[:, None] == lt[None, :]).astype(np.float64)
        Kt /= Kt.sum(axis=1, keepdims=True)
        St += g * (Kt - Kt @ S)  # uses S_{t−1}
        ct -= g * (Kt @ c)
        S += g * (K - K @ S)
        c -= g * (K @ c)
    return S, St, c, ct


def measure(fn):
    """(result, seconds, peak traced bytes) of fn()."""
    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, dt, peak


def mib(b):
    return f"{b / 2**20:,.0f} MiB"


def blas_threads():
    try:
        from threadpoolctl import threadpool_info

        return ", ".join(f"{d['internal_api']}:{d['num_threads']}" for d in threadpool_info()) or "n/a"
    except Exception:  # pragma: no cover - informational only
        return "n/a"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--m", type=int, default=1000)
    ap.add_argument("--trees", type=int, default=1000)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--dense-prefix", type=int, default=10, help="trees the dense baseline runs at the large size")
    ap.add_argument("--small-n", type=int, default=1000)
    ap.add_argument("--small-trees", type=int, default=100)
    a = ap.parse_args()
    print(f"python {platform.python_version()}, numpy {np.__version__}, cpus {os.cpu_count()}, BLAS {blas_threads()}")

    # ---- small size: both in full, same results
    n, m = a.small_n, a.m
    gbr, Xtr, ytr, Xte, tfit = fit(n, m, a.small_trees, a.depth, a.lr)
    print(f"\n[small] n={n} m={m} trees={a.small_trees} depth={a.depth} lr={a.lr} (sklearn fit {tfit:.2f} s)")
    sm, t_ours, pk_ours = measure(lambda: boosting_smoother(gbr, Xtr, Xte, ytr))
    (S, St, c, ct), t_dense, pk_dense = measure(lambda: dense_smoother(gbr, Xtr, Xte, a.small_trees))
    err = max(np.abs(sm.S_train - S).max(), np.abs(sm.S_test - St).max())
    perr = max(np.abs(sm.predict(ytr)[0] - gbr.predict(Xtr)).max(), np.abs(sm.predict(ytr)[1] - gbr.predict(Xte)).max())
    print(f"  ours : {t_ours:8.2f} s  ({1e3 * t_ours / a.small_trees:7.2f} ms/tree)  peak {mib(pk_ours)}")
    print(f"  dense: {t_dense:8.2f} s  ({1e3 * t_dense / a.small_trees:7.2f} ms/tree)  peak {mib(pk_dense)}")
    print(f"  speed-up {t_dense / t_ours:.1f}x, memory ratio dense/ours {pk_dense / pk_ours:.2f}")
    print(f"  max |S_ours − S_dense| = {err:.1e}; max |S·y + c − gbr.predict| = {perr:.1e}")
    del sm, S, St

    # ---- large size: ours in full; dense on a prefix, extrapolated per tree
    n, m, T, P = a.n, a.m, a.trees, min(a.dense_prefix, a.trees)
    gbr, Xtr, ytr, Xte, tfit = fit(n, m, T, a.depth, a.lr)
    print(f"\n[large] n={n} m={m} trees={T} depth={a.depth} lr={a.lr} (sklearn fit {tfit:.2f} s)")
    sm, t_ours, pk_ours = measure(lambda: boosting_smoother(gbr, Xtr, Xte, ytr))
    perr = max(np.abs(sm.predict(ytr)[0] - gbr.predict(Xtr)).max(), np.abs(sm.predict(ytr)[1] - gbr.predict(Xte)).max())
    print(
        f"  ours, all {T} trees: {t_ours:8.2f} s  ({1e3 * t_ours / T:7.2f} ms/tree)  peak {mib(pk_ours)}"
        f"  (S_train+S_test alone {mib(8 * (n + m) * n)}); max |S·y + c − gbr.predict| = {perr:.1e}"
    )
    print(f"  p_train={sm.p_train[-1]:.1f}  p_test={sm.p_test[-1]:.1f}  trace={sm.trace_train[-1]:.1f}")
    del sm
    gbr_p = GradientBoostingRegressor(n_estimators=P, max_depth=a.depth, learning_rate=a.lr, random_state=0)
    gbr_p.fit(Xtr, ytr)  # same data and seed: its trees are the first P trees of the full model
    _, t_ours_p, _ = measure(lambda: boosting_smoother(gbr_p, Xtr, Xte))
    _, t_dense_p, pk_dense = measure(lambda: dense_smoother(gbr, Xtr, Xte, P))
    per_tree = t_dense_p / P
    print(f"  ours, first {P} trees: {t_ours_p:8.2f} s  ({1e3 * t_ours_p / P:7.2f} ms/tree)")
    print(f"  dense, first {P} trees: {t_dense_p:8.2f} s  ({1e3 * per_tree:7.2f} ms/tree)  peak {mib(pk_dense)}")
    print(f"  dense, all {T} trees: {per_tree * T:8.1f} s  EXTRAPOLATED ({P} measured trees × {T / P:g})")
    print(f"  speed-up on the same {P} trees: {t_dense_p / t_ours_p:.1f}x")
    print(f"  speed-up at {T} trees (extrapolated dense / measured ours): {per_tree * T / t_ours:.1f}x")
    print(f"  memory ratio dense/ours: {pk_dense / pk_ours:.2f}")
    print(f"  process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
