#!/usr/bin/env bash
# The engine's benchmarks on one CUDA GPU, in about five minutes: telescope ÷ forward passes and ÷ a
# plain torch.func.jvp loop, and effective parameters at the paper's grokking shapes (exact and
# sketched; steps/s and the projected time of the 100k-step analysis), in float64 and float32.
#   bash benchmarks/gpu.sh            (from the repository root, after `make install`)
set -euo pipefail
PY=${PY:-.venv/bin/python}
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0), 'torch', torch.__version__)"
for dtype in float64 float32; do
  timeout 150 "$PY" benchmarks/bench_telescope.py --device cuda --dtype "$dtype" --steps 200 --every 10
  timeout 150 "$PY" benchmarks/bench_grokking.py --device cuda --dtype "$dtype" --steps 50 --probes 64
done
