"""One SGD smoother step (method.md §1.5 recursion) ÷ its unavoidable core: the tangent kernel of all
evaluation points against the batch plus the (n+m)×|B|×n product (issue target ≤ 2×).

    python benchmarks/bench_smoother.py [--width 200] [--n 1000] [--m 1000] [--batch 200] [--dtype float64]

Also times the whole `telescope --effective-params` smoother pass per step on a recorded run."""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from telecli.lens import smoother as sm
from telecli.lens.kernels import tangent_kernel
from telecli.models import build


def timeit(fn, repeats=5):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=200)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--m", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dtype = getattr(torch, a.dtype)
    torch.manual_seed(0)
    net = build("mlp", [64], 1, depth=3, width=a.width).to(dtype).eval()
    X, Xt = torch.randn(a.n, 64, dtype=dtype), torch.randn(a.m, 64, dtype=dtype)
    batch = torch.randperm(a.n)[: a.batch]
    S = torch.randn(a.n, a.n, dtype=dtype) * 1e-3
    c = torch.randn(a.n, dtype=dtype)
    s_test = torch.zeros(a.m, a.n, dtype=dtype)
    c_test = torch.zeros(a.m, dtype=dtype)
    params = dict(net.named_parameters())

    def core():
        K = tangent_kernel(net, torch.cat([X, Xt]), X[batch], params=params)[..., 0, 0]
        return K @ torch.randn(a.batch, a.n, dtype=dtype)

    def step():
        K_tr = tangent_kernel(net, X, X[batch], params=params)[..., 0, 0]
        K_te = tangent_kernel(net, Xt, X[batch], params=params)[..., 0, 0]
        RS, RC = sm.residual_parts(S, c, batch)
        dS, dc = sm.sgd_kernel_step(K_tr, RS, RC, 0.01, a.batch)
        ds, dct = sm.sgd_kernel_step(K_te, RS, RC, 0.01, a.batch)
        S.add_(dS), c.add_(dc), s_test.add_(ds), c_test.add_(dct)
        (S**2).sum(dim=1), (s_test**2).sum(dim=1)  # the per-point ‖s(x)‖² written each output step

    t_core, t_step = timeit(core), timeit(step)
    P = sum(p.numel() for p in net.parameters())
    print(f"MLP 64-{a.width}-{a.width}-1 ({P:,} parameters), n={a.n}, m={a.m}, |B|={a.batch}, {a.dtype}, "
          f"threads {torch.get_num_threads()}")
    print(f"  kernel (n+m)×|B| + (n+m)×|B|×n product: {t_core * 1e3:8.1f} ms")
    print(f"  one smoother step (S, c, s_test, c_test, ‖s‖²): {t_step * 1e3:8.1f} ms")
    print(f"  ratio step / core: {t_step / t_core:.2f}x   (target <= 2x)")


if __name__ == "__main__":
    main()
