"""Orchestration of ``telecli reproduce``: expand a figure's grid, run the cells not yet done (J at a
time, each in its own processes), or write a Slurm array script that does; then draw and test claims.
No maths here: the cells run telecli record / telescope, the figures and claims read their files.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

import numpy as np

from telecli.errors import TelecliError
from telecli.options import parse_count
from telecli.reproduce import SCALES, Figure, get
from telecli.reproduce.cells import Cell
from telecli.reproduce.reading import validity
from telecli.store.atomic import atomic_write_json, make_dirs


def expand(fig: Figure, scale: str, seeds: int, sets: list[str]) -> list[Cell]:
    """The figure's cells at ``scale`` with ``seeds`` seeds; ``sets`` (k=v) are added to every cell."""
    if scale not in SCALES:
        raise TelecliError(f"--scale must be one of {', '.join(SCALES)}, got '{scale}'")
    for item in sets:
        if "=" not in item:
            raise TelecliError(f"--set expects key=value, got '{item}'")
    return [replace(c, overrides=(*c.overrides, *sets)) for c in fig.grid(scale, seeds)]


def run_cells(cells: list[Cell], out: Path, jobs: int, progress: bool = True) -> None:
    """Run every cell whose results file is missing, ``jobs`` at a time (each with cores/jobs threads)."""
    todo = [c for c in cells if not c.done(out)]
    if progress:
        print(f"reproduce: {len(cells) - len(todo)} of {len(cells)} cells done, running {len(todo)} "
              f"({jobs} at a time)", file=sys.stderr, flush=True)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    t0 = time.monotonic()
    failures = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(c.run, out, threads): c for c in todo}
        for i, fut in enumerate(as_completed(futures), 1):
            cell = futures[fut]
            try:
                fut.result()
            except TelecliError as e:
                failures.append(str(e))
            if progress:
                print(f"reproduce: {i}/{len(todo)} {cell.name} ({time.monotonic() - t0:.0f} s)", file=sys.stderr,
                      flush=True)
    if failures:
        raise TelecliError(f"{len(failures)} cell(s) failed; first: {failures[0]}")


def emit_slurm(name: str, cells: list[Cell], out: Path, argv: list[str]) -> tuple[Path, Path]:
    """DIR/FIGURE.slurm.sh (an array job, one task per cell) and DIR/FIGURE.draw.sh (the figure and the
    claims once all tasks are done); the scheduler is the distributed engine."""
    base = [a for a in argv if a not in ("--emit", "slurm")]
    cmd = " ".join(shlex.quote(a) for a in ["telecli", *base])
    array = out / f"{name}.slurm.sh"
    draw = out / f"{name}.draw.sh"
    array.write_text("#!/bin/bash\n"
                     f"#SBATCH --job-name=telecli-{name} --array=0-{len(cells) - 1}\n"
                     "#SBATCH --gres=gpu:1 --cpus-per-task=4 --time=24:00:00\n"
                     f"# one task per cell of {name} ({len(cells)} cells); each skips itself when done\n"
                     f"{cmd} --cell \"$SLURM_ARRAY_TASK_ID\"\n")
    draw.write_text("#!/bin/bash\n#SBATCH --job-name=telecli-" + name + "-draw --time=01:00:00\n"
                    f"# after the array: sbatch --dependency=afterok:ARRAY_JOB_ID {draw.name}\n"
                    f"{cmd} --draw-only\n")
    return array, draw


def reproduce(figure: str, *, scale: str = "small", seeds: int | None = None, jobs: int = 1,
              out: str | Path | None = None, sets: list[str] | None = None, emit: str | None = None,
              cell: int | None = None, draw_only: bool = False, progress: bool = True,
              argv: list[str] | None = None) -> dict:
    """Reproduce one figure (see the package docstring); returns the claims document."""
    fig = get(figure)
    if scale not in SCALES:
        raise TelecliError(f"--scale must be one of {', '.join(SCALES)}, got '{scale}'")
    if seeds is None:
        seeds = fig.default_seeds if scale == "small" else 0  # 0: the paper's count
    else:
        seeds = parse_count(seeds, "--seeds")
    jobs = parse_count(jobs, "--jobs")
    out = make_dirs(Path(out) if out is not None else Path("reproduce") / f"{figure}-{scale}")
    cells = expand(fig, scale, seeds, list(sets or []))
    if emit is not None:
        if emit != "slurm":
            raise TelecliError(f"--emit must be slurm, got '{emit}'")
        array, draw = emit_slurm(figure, cells, out, argv or sys.argv[1:])
        return {"figure": figure, "emitted": [str(array), str(draw)], "cells": len(cells)}
    if cell is not None:
        if not 0 <= cell < len(cells):
            raise TelecliError(f"--cell must be in 0..{len(cells) - 1} for {figure} at this scale, got {cell}")
        cells[cell].run(out)
        return {"figure": figure, "cell": cells[cell].name, "done": True}
    if not draw_only:
        run_cells(cells, out, jobs, progress)
    missing = [c.name for c in cells if not c.done(out)]
    if missing:
        raise TelecliError(f"{len(missing)} of {len(cells)} cells of {figure} are not done ({missing[0]}, …); "
                           f"run them first (telecli reproduce {figure} without --draw-only)")
    path = out / f"{figure}.png"
    fig.draw(cells, out, path)
    claims = fig.claims(cells, out)
    doc = {"figure": figure, "title": fig.title, "scale": scale, "seeds": seeds, "cells": len(cells),
           "figure_file": str(path), "claims": claims, "holding": sum(bool(c["holds"]) for c in claims),
           "validity": validity(cells, out)}
    _record_claims(out / "claims.json", figure, doc)
    return doc


def _record_claims(path: Path, figure: str, doc: dict) -> None:
    """DIR/claims.json maps each figure drawn from DIR's cells to its claims (Figs. 7 and 8 share cells)."""
    import json

    try:
        claims = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        claims = {}
    claims = claims if isinstance(claims, dict) and "figure" not in claims else {}
    claims[figure] = _finite(doc)
    atomic_write_json(path, claims)


def _finite(obj):
    """JSON values: a non-finite number (a loss that never fell: its step is ∞) becomes null."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


__all__ = ["reproduce", "expand", "run_cells", "emit_slurm"]
