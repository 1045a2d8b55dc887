"""The command-line shell: each subcommand parses its options and calls the library, nothing more.

Expected errors (TelecliError) print one line and exit with code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from telecli.errors import TelecliError

app = typer.Typer(
    name="telecli",
    help="What a network learned at each step: record training trajectories and read them through the "
    "telescoping model (Jeffares, Curth & van der Schaar, NeurIPS 2024).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

DEVICE_HELP = "auto | cpu | cuda (auto picks cuda when torch sees one)."


def _quiet_option():
    return typer.Option(False, "--quiet", "-q", help="No progress output.")


@app.command(epilog="Example: telecli record sample_runs/digits-sgd.toml --out runs/digits --set train.lr=0.05")
def record(
    config: Path = typer.Argument(..., help="TOML preset (see sample_runs/)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory to create."),
    set_: List[str] = typer.Option([], "--set", help="Override a setting, e.g. --set train.lr=0.1 (repeatable)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Number of training steps (train.steps)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Training seed: initialisation and data order."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue a run that was interrupted."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run directory."),
    quiet: bool = _quiet_option(),
):
    """Train a preset and write its per-step trajectory (θ_t, B_t, γ_t, optimiser state) to OUT."""
    from telecli.train.loop import record as do_record

    run = do_record(config, out, set_, steps=steps, seed=seed, device=device, overwrite=overwrite,
                    resume=resume, progress=not quiet)
    if not quiet:
        print(f"recorded {run}  (inspect: telecli info {run})")


@app.command(epilog="Example: telecli branch runs/digits --at 50 --seed 1 --out runs/digits-b50-s1")
def branch(
    run: Path = typer.Argument(..., help="Parent run directory (recorded by telecli record)."),
    at: int = typer.Option(..., "--at", help="Stored step to branch from."),
    seed: int = typer.Option(..., "--seed", help="Seed of the child's data order."),
    out: Path = typer.Option(..., "--out", "-o", help="Child run directory."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted child."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing child directory."),
    quiet: bool = _quiet_option(),
):
    """Continue RUN from step AT (θ and optimiser state) with another data order, to the parent's last step."""
    from telecli.train.loop import branch as do_branch

    child = do_branch(run, at, seed, out, overwrite=overwrite, resume=resume, device=device, progress=not quiet)
    if not quiet:
        print(f"recorded {child}")


@app.command(epilog="Example: telecli info sample_runs/digits-small")
def info(run: Path = typer.Argument(..., help="Run directory.")):
    """Summarise a run: task, model, optimiser, stored steps, shards, size."""
    from telecli.report import print_info

    print_info(run)


@app.command(epilog="Example: telecli verify runs/digits && echo sound")
def verify(run: Path = typer.Argument(..., help="Run directory.")):
    """Re-hash every shard and check the manifest, step continuity and finiteness; exit 1 on any problem."""
    from telecli.store.verify import verify_run

    problems, notes = verify_run(run)
    for note in notes:
        print(f"note: {note}")
    if problems:
        for p in problems:
            print(f"problem: {p}", file=sys.stderr)
        raise typer.Exit(1)
    print(f"{run}: sound")


@app.command(epilog="Examples:\n\n  telecli telescope runs/digits                      # → runs/digits/lens.h5\n\n"
                    "  telecli telescope runs/digits --points 500 --every 10 --out lens.h5\n\n"
                    "  telecli telescope runs/big --shard 0/4 --out part0.h5 (then: telecli merge part*.h5 --out lens.h5)\n\n"
                    "  torchrun --nproc_per_node 4 -m telecli telescope runs/big --out lens.h5")
def telescope(
    run: Path = typer.Argument(..., help="Run directory (every step stored)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Results file (default RUN/lens.h5)."),
    points: str = typer.Option("all", "--points", help="Evaluation points per split: N (seeded subset) or all."),
    every: int = typer.Option(1, "--every", help="Write every K-th step (all steps still contribute)."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="Working-memory budget, e.g. 4G (default: "
                                             "half the free GPU memory, 2G on CPU)."),
    shard: Optional[str] = typer.Option(None, "--shard", help="i/N: this job's share of the evaluation points."),
    seed: int = typer.Option(0, "--seed", help="Seed of the --points subset."),
    effective_params: bool = typer.Option(False, "--effective-params", help="Also the smoother form "
                                          "s(x)·y + c(x), effective parameters p (train/test), kernel norms."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing results file."),
    quiet: bool = _quiet_option(),
):
    """Rebuild predictions through the telescoping model: actual, telescoped, linearised, errors → HDF5."""
    from telecli.pipelines.distributed import telescope_any

    path = telescope_any(run, out, points=points, every=every, device=device, max_memory=max_memory,
                         shard=shard, seed=seed, overwrite=overwrite, progress=not quiet,
                         effective_params=effective_params)
    if path is not None and not quiet:
        print(f"wrote {path}  (plot: telecli plot {path} --figure approximation)")


@app.command(epilog="Example: telecli merge lens.shard-*-of-4.h5 --out lens.h5")
def merge(
    parts: List[Path] = typer.Argument(..., help="Shard files written with --shard i/N."),
    out: Path = typer.Option(..., "--out", "-o", help="Merged results file."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file."),
):
    """Join the shard files of one telescope job into a single results file."""
    from telecli.pipelines.telescope import merge as do_merge

    print(f"wrote {do_merge(parts, out, overwrite=overwrite)}")


@app.command(epilog="Examples:\n\n"
                    "  telecli plot runs/digits/lens.h5 --figure approximation             # Figs. 2, 7 → lens-approximation.png\n\n"
                    "  telecli plot lr0.01.h5 lr0.05.h5 lr0.2.h5 --figure approximation --out sweep.pdf\n\n"
                    "  telecli plot runs/digits/lens.h5 --figure accuracy --split test     # Fig. 8\n\n"
                    "  telecli plot runs/grok/lens.h5 --figure complexity --out grok.svg   # Figs. 4, 11-13\n\n"
                    "  telecli plot runs/w*/lens.h5 --figure double-descent --x-key model.width   # Figs. 3, 9, 10\n\n"
                    "  telecli plot runs/mom/lens.h5 --figure components --label 'SGD+momentum'")
def plot(
    files: List[Path] = typer.Argument(..., help="Results files of telecli telescope; several are overlaid."),
    figure: str = typer.Option(..., "--figure", "-f", help="approximation | accuracy | complexity | double-descent "
                               "| components (an unknown name lists all available)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Figure file, format by extension: .png (300 dpi), "
                                       ".pdf, .svg (default: FIRST-FILE-STEM-FIGURE.png next to the first file)."),
    label: List[str] = typer.Option([], "--label", help="Legend label of each file, in order (repeatable; default: "
                                    "from the run configuration, else the file name)."),
    split: str = typer.Option("test", "--split", help="train | test: the points approximation, accuracy and "
                              "components are drawn for."),
    x_key: Optional[str] = typer.Option(None, "--x-key", help="double-descent: run setting on the x-axis, a dotted "
                                        "path into the run configuration (default model.width)."),
):
    """Draw one of the paper's figures from results files (PNG, PDF or SVG)."""
    from telecli.plots import plot as do_plot

    print(f"wrote {do_plot(files, figure, out=out, labels=label or None, split=split, x_key=x_key)}")


@app.command(epilog="Example: telecli demo --out demo")
def demo(
    out: Path = typer.Option(Path("demo"), "--out", "-o", help="Where the demo writes its files."),
    overwrite: bool = typer.Option(True, "--overwrite/--keep", help="Replace an earlier demo's files."),
    quiet: bool = _quiet_option(),
):
    """Record the digits preset on the embedded data (no download) and show where everything went."""
    from telecli.demo import run_demo

    run_demo(out, overwrite=overwrite, progress=not quiet)


def main() -> None:
    try:
        app()
    except TelecliError as e:
        print(f"telecli: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("telecli: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
