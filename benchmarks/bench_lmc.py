"""Interpolating one pair of children at 30 α ÷ 30 plain test-set evaluations (issue target ≤ 1.2×).

    python benchmarks/bench_lmc.py [--device cpu|cuda] [--repeats 11] [--vmap] [--resnet-points N]

"Interpolate" is the work ``telecli lmc interpolate`` does for a pair: build θ_α and the BatchNorm
buffers for all α at once (30 grid values + α = 0.5), one forward pass of the test set per α, then the
curves (weight average, α-weighted mean, ensemble; losses, accuracies, prediction gap) and barriers.
"Plain" is one eval-mode ``model(x)`` over the same test points in the same chunks. Both are timed in
one process, interleaved, ``--repeats`` times; the ratio interpolate ÷ (30 × plain) is printed for the
medians and for the minima (the less noisy figure on a shared machine).

Networks: the small preset's CNN (digits test set, 539 points, float64) and ResNet-20 (random
CIFAR-shaped 3×32×32 inputs, float32; ``--resnet-points``, default 10,000 on CUDA, 500 on CPU). Children
are the network at initialisation and a perturbed copy (timing does not depend on training). ``--vmap``
also times the batched variant (one vmap over the α stack; slower on CPU, see docs/lmc.md).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from telecli.lens import lmc as lens
from telecli.models.cnn import CNN
from telecli.models.resnet20 import ResNet20
from telecli.jobs.lmc import _Evaluator, interpolate_pair


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def case(name, model, x, y, dev, repeats, vmap):
    model = model.to(dev).eval()
    x, y = x.to(dev), y.to(dev)
    dtype = x.dtype
    theta_a = {k: v.detach().clone() for k, v in model.named_parameters()}
    gen = torch.Generator(device="cpu").manual_seed(1)
    theta_b = {k: v + 0.05 * v.std().nan_to_num(0.0) * torch.randn(v.shape, generator=gen, dtype=v.dtype).to(dev)
               for k, v in theta_a.items()}
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    buffers_b = {k: (v * 1.1 if v.is_floating_point() else v) for k, v in buffers.items()}
    grid = np.linspace(0, 1, 30)
    eval_alpha = np.unique(np.concatenate([grid, [0.0, 0.5, 1.0]]))
    alphas = torch.as_tensor(eval_alpha, dtype=dtype, device=dev)
    rows = torch.as_tensor(np.searchsorted(eval_alpha, grid), device=dev)
    modes = [False, True] if vmap else [False]
    evals = {b: _Evaluator(model, x, theta_a, buffers, dev, None, len(eval_alpha), b) for b in modes}
    chunk = evals[False].chunk

    def plain():
        with torch.no_grad():
            for i in range(0, x.shape[0], chunk):
                model(x[i : i + chunk])
        _sync(dev)

    def interp(batched):
        f_w = interpolate_pair(model, theta_a, buffers, theta_b, buffers_b, alphas, evals[batched], "interpolate")
        c = lens.curves(f_w, f_w[-1], f_w[0], alphas, y, "ce")
        {k: v[rows].cpu() for k, v in c.as_dict().items()}, lens.barriers(c, alphas, over=rows)
        _sync(dev)

    fns = {"plain": plain, **{("vmap" if b else "loop"): (lambda b=b: interp(b)) for b in modes}}
    for fn in fns.values():
        fn()  # warm-up
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    print(f"{name}: {x.shape[0]} test points, {dtype}, {dev}, chunk {chunk}; median (min) of {repeats}")
    print(f"  plain test-set evaluation          {med['plain'] * 1e3:9.1f} ms ({best['plain'] * 1e3:.1f})")
    for k in fns:
        if k != "plain":
            print(f"  interpolate pair, 30 α (+0.5), {k} {med[k] * 1e3:9.1f} ms ({best[k] * 1e3:.1f})   ratio to 30 "
                  f"plain: {med[k] / (30 * med['plain']):.2f} ({best[k] / (30 * best['plain']):.2f})")
    return med


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--vmap", action="store_true", help="also time the vmap-batched variant")
    ap.add_argument("--resnet-points", type=int, default=None)
    a = ap.parse_args()
    dev = torch.device(a.device)
    torch.manual_seed(0)
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.images[:539] / 16.0, dtype=torch.float64)[:, None]
    y = torch.nn.functional.one_hot(torch.as_tensor(d.target[:539]), 10).double()
    cnn = CNN([1, 8, 8], 10, channels=8).double()
    case("cnn (lmc-small)", cnn, x, y, dev, a.repeats, a.vmap)
    n = a.resnet_points or (10_000 if dev.type == "cuda" else 500)
    xr = torch.rand(n, 3, 32, 32)
    yr = torch.nn.functional.one_hot(torch.randint(0, 10, (n,)), 10).float()
    case("resnet20 (lmc-resnet20)", ResNet20([3, 32, 32], 10), xr, yr, dev, max(1, a.repeats // 4), a.vmap)


if __name__ == "__main__":
    main()
