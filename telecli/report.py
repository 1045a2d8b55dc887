"""Human-readable summaries (``telecli info``)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from telecli.store.trajectory import Trajectory


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def print_info(run: str | Path) -> None:
    traj = Trajectory(run)
    m = traj.manifest
    d = m["data"]
    n_params = sum(_prod(p["shape"]) for p in m["parameters"])
    table = Table(title=f"telecli run {run}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    task = d.get("task", {})
    table.add_row("run id", str(m.get("run_id")))
    table.add_row("status", str(m.get("status")))
    table.add_row("task", f"{task.get('name', '?')}  train {d['n_train']} × {d['input_shape']}  test {d['n_test']}  "
                          f"outputs {d['output_dim']}")
    kw = m["model"]["kwargs"]
    table.add_row("model", f"{m['model']['factory']}  {kw.get('name', '')}  {n_params:,} parameters ({m['dtype']})")
    table.add_row("loss", m["loss"])
    table.add_row("optimizer", ", ".join(f"{k}={v}" for k, v in m["optimizer"].items()))
    if m.get("config"):
        tr = m["config"]["train"]
        table.add_row("schedule", f"lr {tr['lr']} {tr['schedule']}  batch {tr['batch_size'] or 'full'}  "
                                  f"steps {tr['steps']}")
    table.add_row("stored steps", traj.describe_steps() + ("  (contiguous)" if traj.is_contiguous() else ""))
    total = sum(s.bytes for s in traj.shards)
    table.add_row("shards", f"{len(traj.shards)} × ≤{m['steps_per_shard']} steps, {_size(total)}")
    if m.get("parent"):
        table.add_row("parent", f"{m['parent']['run']} at step {m['parent']['at']}")
    meta = traj.meta()
    if len(meta["loss"]):
        table.add_row("training loss", f"first {meta['loss'][0]:.4g}  last {meta['loss'][-1]:.4g}")
    table.add_row("versions", ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()))
    Console().print(table)


def _prod(shape) -> int:
    out = 1
    for s in shape:
        out *= s
    return out
