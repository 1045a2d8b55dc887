"""One SGD smoother step (method.md §1.5 recursion) ÷ its unavoidable core: the tangent kernel of all
evaluation points against the batch plus the (n+m)×|B|×n product (target ≤ 1.1×).

    python benchmarks/bench_smoother.py [--width 200] [--n 1000] [--m 1000] [--batch 200] [--dtype float64]

Then the parameter-space step of AdamW (method.md §1.6: pseudo-gradient J_Bᵀ R^S, direction, the S and
evaluation-row updates J U^S, Θ_t) on given Jacobians, ÷ the same three products as plain matmuls of
the same shapes: the products' share of the machine's GEMM rate is at least the inverse of that ratio
(target ≥ 60 %, i.e. ratio ≤ 1.67)."""

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

    def step():  # as jobs/smoother.py: one kernel call for every point against B_t, updates in place
        K = tangent_kernel(net, torch.cat([X, Xt]), X[batch], params=params)[..., 0, 0]
        RS, RC = sm.residual_parts(S, c, batch)
        sm.sgd_kernel_step(S, c, K[: a.n], RS, RC, 0.01, a.batch)
        sm.sgd_kernel_step(s_test, c_test, K[a.n :], RS, RC, 0.01, a.batch)

    t_core, t_step = timeit(core), timeit(step)
    P = sum(p.numel() for p in net.parameters())
    print(f"MLP 64-{a.width}-{a.width}-1 ({P:,} parameters), n={a.n}, m={a.m}, |B|={a.batch}, {a.dtype}, "
          f"threads {torch.get_num_threads()}")
    print(f"  kernel (n+m)×|B| + (n+m)×|B|×n product: {t_core * 1e3:8.1f} ms")
    print(f"  one smoother step (S, c, s_test, c_test):  {t_step * 1e3:8.1f} ms")
    print(f"  ratio step / core: {t_step / t_core:.2f}x   (target <= 1.1x)")
    parameter_space(a, dtype)


def parameter_space(a, dtype) -> None:
    from telecli.optim import get

    torch.manual_seed(0)
    net = build("mlp", [64], 1, depth=3, width=a.width).to(dtype)
    P, n, m, B = sum(p.numel() for p in net.parameters()), a.n, a.m, a.batch
    J, Je = torch.randn(n, P, dtype=dtype), torch.randn(m, P, dtype=dtype)
    batch = torch.randperm(n)[:B]
    S, c = torch.zeros(n, n, dtype=dtype), torch.zeros(n, dtype=dtype)
    s_test, c_test = torch.zeros(m, n, dtype=dtype), torch.zeros(m, dtype=dtype)
    ps = sm.ParameterState(torch.zeros(P, dtype=dtype), n, None, need_momentum=True)
    rule = get("adamw")
    h = {"weight_decay": 0.1, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8}
    state_t = {"exp_avg_sq": torch.rand(P, dtype=dtype)}
    G = torch.empty(P, n, dtype=dtype)

    def step():
        RS, RC = sm.residual_parts(S, c, batch)
        J_B = J[batch]
        G_S, G_C = sm.pseudo_gradient(J_B, RS, RC, 1.0, B, out=G)
        U_S, U_C = rule.direction(ps, G_S, G_C, h, 5, state_t)
        sm.parameter_space_step(S, c, J, U_S, U_C, 1e-3)
        sm.parameter_space_step(s_test, c_test, Je, U_S, U_C, 1e-3)
        sm.advance_parameters(ps, U_S, U_C, 1e-3)

    U, R = torch.randn(P, n, dtype=dtype), torch.randn(B, n, dtype=dtype)

    def products():
        torch.mm(J[batch].T, R), torch.mm(J, U), torch.mm(Je, U)

    t_step, t_prod = timeit(step, 3), timeit(products, 3)
    flops = 2.0 * P * n * (B + n + m)
    print(f"AdamW parameter-space step, P={P:,}, n={n}, m={m}, |B|={B}, {a.dtype}")
    print(f"  plain matmuls J_Bᵀ R, J U, J_eval U: {t_prod * 1e3:8.1f} ms ({flops / t_prod / 1e9:6.1f} GFLOP/s)")
    print(f"  one smoother step:                   {t_step * 1e3:8.1f} ms ({flops / t_step / 1e9:6.1f} GFLOP/s)")
    print(f"  ratio step / products: {t_step / t_prod:.2f}x   (products at >= {t_prod / t_step:.0%} of the GEMM rate; "
          f"target >= 60%)")


if __name__ == "__main__":
    main()
