"""Speed of the tangent-kernel strategies of telecli.lens.kernels, measured side by side in one process.

Cases (method.md §7: kernels against the batch for every evaluation point):
  mlp  784-512-512-1 MLP (MNIST shape), 1000 × 128 points, float32 and float64
  cnn  telecli's cnn on 3×32×32 inputs, channels=16, 256 × 64 points, float32

For each case every strategy runs once on a small slice (warm-up), then ``--repeats`` times on the full
problem; the median time is reported with its ratio to "structured", and the kernels are compared.
With ``--nt PYTHON`` (the python printed by ../shared/bench/neural_tangents_env.sh) the MLP shape is
also timed with neural-tangents' three implementations, in a subprocess, and printed beside ours
(JAX picks its own thread count; ``--threads`` sets torch's only). On a machine shared with other
jobs, ``--threads 1`` gives the steadiest ratios. ntk-vp needs n2·k JVPs through all n1 points and
takes minutes on the cnn case: ``--strategies structured,jacobian`` leaves it out.

    .venv/bin/python benchmarks/bench_kernels.py                 # both cases
    .venv/bin/python benchmarks/bench_kernels.py --cases mlp --nt "$(../shared/bench/neural_tangents_env.sh)"
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from pathlib import Path

import torch

from telecli.lens.kernels import tangent_kernel
from telecli.models import build

NT_SCRIPT = Path(__file__).resolve().parents[1] / ".." / "shared" / "bench" / "nt_kernel.py"
MLP_WIDTHS = (784, 512, 512, 1)
NT_NAMES = {"JACOBIAN_CONTRACTION": "jacobian", "NTK_VECTOR_PRODUCTS": "ntk-vp", "STRUCTURED_DERIVATIVES": "structured"}


def mlp_case(dtype: torch.dtype, n1: int, n2: int):
    d, *hidden, k = MLP_WIDTHS
    net = build("mlp", [d], k, depth=len(hidden) + 1, width=hidden[0]).to(dtype).eval()
    label = f"mlp {'-'.join(map(str, MLP_WIDTHS))}, {n1} × {n2} points, {str(dtype).removeprefix('torch.')}"
    return label, net, torch.randn(n1, d, dtype=dtype), torch.randn(n2, d, dtype=dtype)


def cnn_case(dtype: torch.dtype, n1: int, n2: int, outputs: int):
    net = build("cnn", [3, 32, 32], outputs, channels=16).to(dtype).eval()
    label = f"cnn 3×32×32 channels=16 k={outputs}, {n1} × {n2} points, {str(dtype).removeprefix('torch.')}"
    return label, net, torch.randn(n1, 3, 32, 32, dtype=dtype), torch.randn(n2, 3, 32, 32, dtype=dtype)


def median_seconds(fn, repeats: int) -> tuple[float, torch.Tensor]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def run_case(label: str, net, x1, x2, strategies: list[str], repeats: int) -> dict[str, float]:
    p = sum(q.numel() for q in net.parameters())
    print(f"\n{label}  (P = {p:,})")
    seconds, kernels = {}, {}
    for strategy in strategies:
        tangent_kernel(net, x1[:16], x2[:8], strategy=strategy)  # warm-up: lazy initialisation
        seconds[strategy], kernels[strategy] = median_seconds(
            lambda: tangent_kernel(net, x1, x2, strategy=strategy), repeats
        )
    base = kernels[strategies[0]]
    scale = float(base.abs().max())
    for strategy in strategies:
        ratio = seconds[strategy] / seconds["structured"] if "structured" in seconds else float("nan")
        diff = float((kernels[strategy] - base).abs().max()) / scale
        print(f"  {strategy:<11} {seconds[strategy]:9.3f} s   {ratio:7.1f}× structured   max|ΔK|/max|K| = {diff:.1e}")
    return seconds


def run_neural_tangents(python: str, n1: int, n2: int, x64: bool, ours: dict[str, float]) -> None:
    cmd = [python, str(NT_SCRIPT), "--widths", ",".join(map(str, MLP_WIDTHS)), "--n1", str(n1), "--n2", str(n2)]
    result = subprocess.run(cmd + (["--x64"] if x64 else []), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(f"  neural-tangents failed (exit {result.returncode}): {result.stderr.strip().splitlines()[-1:]}")
        return
    print(f"  neural-tangents (JAX, jit, {'float64' if x64 else 'float32'}), same MLP shape:")
    for line in result.stdout.strip().splitlines():
        name, sec, *_ = line.split()
        ours_name = NT_NAMES.get(name, name)
        beside = f"   telecli {ours_name}: {ours[ours_name]:.3f} s" if ours_name in ours else ""
        print(f"    {name:<24} {float(sec):9.3f} s{beside}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="mlp,cnn", help="comma-separated: mlp, cnn")
    ap.add_argument("--strategies", default="structured,jacobian,ntk-vp")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--cnn-outputs", type=int, default=10)
    ap.add_argument("--nt", metavar="PYTHON", help="python of a neural-tangents virtualenv (MLP case only)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    strategies = a.strategies.split(",")
    cases = a.cases.split(",")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {a.repeats} after a warm-up")
    if "mlp" in cases:
        for dtype in (torch.float32, torch.float64):
            ours = run_case(*mlp_case(dtype, 1000, 128), strategies, a.repeats)
            if a.nt:
                run_neural_tangents(a.nt, 1000, 128, dtype == torch.float64, ours)
    if "cnn" in cases:
        run_case(*cnn_case(torch.float32, 256, 64, a.cnn_outputs), strategies, a.repeats)


if __name__ == "__main__":
    main()
