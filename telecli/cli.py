"""The command-line shell: each subcommand parses its options and calls the library, nothing more.

Expected errors (TelecliError) print one line and exit with code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from telecli.errors import TelecliError
from telecli.plots import FIGURES
from telecli.reproduce import FIGURES as REPRO_FIGURES

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
REPRODUCIBLE = tuple(sorted(REPRO_FIGURES, key=lambda n: int(n[3:])))  # the figures telecli reproduce draws


def _quiet_option():
    return typer.Option(False, "--quiet", "-q", help="No progress output.")


def _json_option(what: str = "the summary"):
    return typer.Option(False, "--json", help=f"Print {what} as one JSON document on stdout (progress and notes "
                        "stay on stderr), e.g. for jq.")


@app.command(epilog="Example: telecli record sample_runs/approx-sgd.toml --out runs/sgd --set train.lr=0.05")
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


@app.command(epilog="Example: telecli branch runs/sgd --at 50 --seed 1 --out runs/sgd-b50-s1")
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
    from telecli.options import parse_count
    from telecli.train.loop import branch as do_branch

    parse_count(at, "--at", 0)
    parse_count(seed, "--seed", 0)
    child = do_branch(run, at, seed, out, overwrite=overwrite, resume=resume, device=device, progress=not quiet)
    if not quiet:
        print(f"recorded {child}")


@app.command(epilog="Examples:\n\n  telecli info sample_runs/digits-small\n\n"
                    "  telecli info runs/sgd --json | jq .steps")
def info(
    run: Path = typer.Argument(..., help="Run directory."),
    as_json: bool = _json_option("the summary (run_id, status, steps, shards, bytes, …)"),
):
    """Summarise a run: task, model, optimiser, stored steps, shards, size; for a run that is still being
    recorded, was interrupted or failed, the steps stored so far and how to resume it."""
    from telecli import report

    doc = report.run_document(run)
    if as_json:
        print(report.to_json(doc))
    else:
        report.print_rows(f"telecli run {run}", report.info_rows(doc))


@app.command(epilog="Examples:\n\n  telecli verify runs/sgd && echo sound\n\n"
                    "  telecli verify runs/mine --no-recipe      # integrity only (hashes, manifest, steps)\n\n"
                    "  telecli verify runs/sgd --json | jq -r '.problems[]'")
def verify(
    run: Path = typer.Argument(..., help="Run directory."),
    recipe: bool = typer.Option(True, "--recipe/--no-recipe", help="Also recompute every step as the analysis "
                                "models it (batch gradient of the declared loss, optimiser rule) and compare "
                                "it with the recorded update."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    quiet: bool = _quiet_option(),
    as_json: bool = _json_option('{"run", "sound", "problems", "notes", "recipe"} (exit code 1 on problems as well)'),
):
    """Re-hash every shard, check the manifest, step continuity and finiteness, and check that every
    recorded step is the step the analyses model; exit 1 on any problem."""
    from telecli import report

    doc = report.verify_document(run, recipe, device, progress=not quiet and sys.stderr.isatty())
    if as_json:
        print(report.to_json(doc))
    else:
        for note in doc["notes"]:
            print(f"note: {note}")
        for p in doc["problems"]:
            print(f"problem: {p}", file=sys.stderr)
        if doc["sound"]:
            print(f"{run}: sound")
    if not doc["sound"]:
        raise typer.Exit(1)


@app.command(epilog="Examples:\n\n  telecli telescope runs/digits                      # → runs/digits/lens.h5\n\n"
                    "  telecli telescope runs/digits --points 500 --every 10 --out lens.h5\n\n"
                    "  telecli telescope runs/big --shard 0/4 --out part0.h5 (then: telecli merge part*.h5 --out lens.h5)\n\n"
                    "  telecli telescope runs/digits --effective-params --probes 64   # sketched p ± s.e.\n\n"
                    "  torchrun --nproc_per_node 4 -m telecli telescope runs/big --out lens.h5")
def telescope(
    run: Path = typer.Argument(..., help="Run directory (every step stored)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Results file (default RUN/lens.h5)."),
    points: str = typer.Option("all", "--points", help="Evaluation points per split: N (seeded subset) or all."),
    every: Optional[int] = typer.Option(None, "--every", help="Write every K-th step (default: the stored "
                                        "steps); every step contributes, gaps in storage are replayed."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="Working-memory budget, e.g. 4G (default: "
                                             "half the free GPU memory; a quarter of RAM up to 8G on the CPU)."),
    shard: Optional[str] = typer.Option(None, "--shard", help="i/N: this job's share of the evaluation points; "
                                        "with --effective-params, of the smoother's training-target columns."),
    seed: int = typer.Option(0, "--seed", help="Seed of the --points subset and of the --probes."),
    effective_params: bool = typer.Option(False, "--effective-params", help="Also the smoother form "
                                          "s(x)·y + c(x), effective parameters p (train/test), kernel norms."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float64 | float32: compute in this precision "
                                        "(default: the run's)."),
    probes: Optional[int] = typer.Option(None, "--probes", help="With --effective-params: carry R random ±1 "
                                         "probe columns instead of all n (cost ∝ R): p and ‖s(x)‖² are then "
                                         "unbiased estimates, p's standard error is stored beside it."),
    approximate: bool = typer.Option(False, "--approximate", help="Compute even where the run is not what the "
                                     "analysis models (recorded steps that fail the recipe check, layers run in "
                                     "train mode); the caveat and per-step validity flags go into the file."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing results file."),
    quiet: bool = _quiet_option(),
    as_json: bool = _json_option("a summary of the file written (steps, final approximation errors, p)"),
):
    """Rebuild predictions through the telescoping model: actual, telescoped, linearised, errors → HDF5."""
    from telecli.jobs.distributed import telescope_any

    path = telescope_any(run, out, points=points, every=every, device=device, max_memory=max_memory,
                         shard=shard, seed=seed, overwrite=overwrite, progress=not quiet,
                         effective_params=effective_params, approximate=approximate, probes=probes, dtype=dtype)
    if path is None or (quiet and not as_json):  # another torchrun rank, or nothing to say
        return
    from telecli import report

    doc = report.telescope_document(path)  # the plot hint names the figure this file can draw
    print(report.to_json(doc) if as_json else report.telescope_hint(doc))


@app.command(epilog="Example: telecli merge lens.shard-*-of-4.h5 --out lens.h5")
def merge(
    parts: List[Path] = typer.Argument(..., help="Shard files written with --shard i/N."),
    out: Path = typer.Option(..., "--out", "-o", help="Merged results file."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file."),
):
    """Join the shard files of one telescope job into a single results file."""
    from telecli.jobs.telescope import merge as do_merge

    print(f"wrote {do_merge(parts, out, overwrite=overwrite)}")


@app.command(epilog="Figures: approximation (paper Figs. 2, 7), accuracy (8), complexity (4, 11-13), double-descent "
                    "(3, 9, 10), components, lmc (6), tabular (5, 14).\n\nExamples:\n\n"
                    "  telecli plot runs/sgd/lens.h5 --figure approximation\n\n"
                    "  telecli plot lr0.01.h5 lr0.05.h5 lr0.2.h5 --figure approximation --out sweep.pdf\n\n"
                    "  telecli plot runs/sgd/lens.h5 --figure accuracy --split test\n\n"
                    "  telecli plot runs/grok/lens.h5 --figure complexity --out grok.svg\n\n"
                    "  telecli plot runs/w*/lens.h5 --figure double-descent --x-key model.width\n\n"
                    "  telecli plot runs/mom/lens.h5 --figure components --label 'SGD+momentum'\n\n"
                    "  telecli plot runs/lmc-lmc/lmc.h5 --figure lmc\n\n"
                    "  telecli plot runs/boost/boost.h5 --figure tabular")
def plot(
    files: List[Path] = typer.Argument(..., help="Results files of telecli telescope; several are overlaid."),
    figure: str = typer.Option(..., "--figure", "-f", help="; ".join(f"{k}: {v}" for k, v in FIGURES.items()) + "."),
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


@app.command(epilog="Examples:\n\n"
                    "  telecli boost diabetes --out runs/boost-diabetes --nn-steps 300   # bundled data, ~1 min on a CPU\n\n"
                    "  telecli boost --config sample_runs/boost-diabetes.toml --out runs/boost-diabetes\n\n"
                    "  telecli boost data/houses.csv --target median_house_value --out runs/houses --search 25 --device cuda\n\n"
                    "  telecli boost openml:44138 --out runs/houses --search 25   # fetched when online\n\n"
                    "  then: telecli plot runs/boost-diabetes/boost.h5 --figure tabular   # Figs. 5, 14")
def boost(
    data: Optional[str] = typer.Argument(None, help="CSV/Parquet file, 'diabetes' (bundled with scikit-learn) or "
                                         "openml:ID | openml:NAME (needs network; else download the CSV)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: OUT/boost.h5 and the NN run OUT/nn."),
    target: Optional[str] = typer.Option(None, "--target", help="Target column (default: 'target' for diabetes, "
                                         "the data set's default for OpenML)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML settings (sample_runs/boost-*.toml); "
                                          "options given here override it."),
    proportions: Optional[str] = typer.Option(None, "--proportions", help="Shares p of irregular rows in the test "
                                              "mixtures, e.g. 0,0.25,0.5,0.75,1 (the default)."),
    mixture_size: Optional[int] = typer.Option(None, "--mixture-size", help="Rows per test mixture (default 4000, "
                                               "capped by the rows available)."),
    top: Optional[float] = typer.Option(None, "--top", help="Fraction of rows in the irregular pool (default 0.1)."),
    test_size: Optional[float] = typer.Option(None, "--test-size", help="Regular rows held out for testing: "
                                              "fraction or count (default 0.3)."),
    search: Optional[int] = typer.Option(None, "--search", help="Random-search draws per model on a validation "
                                         "split (paper: 25; default 0 = use the settings given)."),
    validation: Optional[int] = typer.Option(None, "--validation", help="Validation rows for --search (default "
                                             "2000, capped to a fifth of train)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the split, the trees and the network."),
    nn_steps: Optional[int] = typer.Option(None, "--nn-steps", help="SGD steps of the network (default 1000)."),
    nn_lr: Optional[float] = typer.Option(None, "--nn-lr", help="SGD learning rate of the network (default 0.01)."),
    nn_batch: Optional[int] = typer.Option(None, "--nn-batch", help="Batch size of the network (default 128)."),
    gbt_trees: Optional[int] = typer.Option(None, "--gbt-trees", help="Number of trees (default 100)."),
    gbt_depth: Optional[str] = typer.Option(None, "--gbt-depth", help="Tree depth, or 'none' (default 3)."),
    gbt_lr: Optional[float] = typer.Option(None, "--gbt-lr", help="Boosting learning rate (default 0.1)."),
    kernel_every: Optional[int] = typer.Option(None, "--kernel-every", help="NN kernel norms every K-th SGD step "
                                               "(default 1: every step, as the paper)."),
    telescope_nn: Optional[bool] = typer.Option(None, "--telescope/--no-telescope", help="Also run the "
                                                "telescoping model on OUT/nn (default on)."),
    smoother: Optional[bool] = typer.Option(None, "--smoother/--no-smoother", help="Store the GBT smoother S "
                                            "((n+m)·n values; default on); off: kernel norms only."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="Working-memory budget of the network's "
                                             "kernel norms and telescope, e.g. 2G (default as for telescope)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT/boost.h5 (and OUT/nn when it was trained with other settings; the same settings reuse it)."),
    quiet: bool = _quiet_option(),
    as_json: bool = _json_option("the summary (one row per test mixture: MSEs, relative MSE, kernel norms)"),
):
    """Gradient-boosted trees and a neural network through the same telescoping lens on tabular data."""
    from telecli import report
    from telecli.config import load_boost
    from telecli.jobs.boost import run_boost

    cfg = load_boost(config, {
        "data": data, "target": target, "proportions": proportions, "mixture_size": mixture_size, "top": top,
        "test_size": test_size, "search": search, "validation": validation, "seed": seed,
        "kernel_every": kernel_every, "telescope": telescope_nn, "smoother": smoother, "device": device,
        "max_memory": max_memory,
        "nn.steps": nn_steps, "nn.lr": nn_lr, "nn.batch_size": nn_batch,
        "gbt.trees": gbt_trees, "gbt.depth": gbt_depth, "gbt.lr": gbt_lr,
    })
    path = run_boost(cfg, out, overwrite=overwrite, progress=not quiet)
    if as_json:
        print(report.to_json(report.boost_document(path)))
    elif not quiet:
        report.print_boost_summary(path)
        print(f"wrote {path}  (plot: telecli plot {path} --figure tabular)")


@app.command(epilog="Examples:\n\n"
                    "  telecli reproduce fig7 --scale small --seeds 2 --jobs 2 --out repro/fig7   # ~4 min here\n\n"
                    "  telecli reproduce all --jobs 2 --out repro        # every figure into one DIR (cells shared)\n\n"
                    "  telecli reproduce fig7 --scale paper --out /scratch/fig7 --emit slurm      # then sbatch\n\n"
                    "Rerun the same command after a kill: finished cells are skipped, the rest resume.")
def reproduce(
    figure: str = typer.Argument(..., help=f"{', '.join(REPRODUCIBLE)} or all."),
    scale: str = typer.Option("small", "--scale", help="small (CPU minutes, 2 seeds) | paper (the paper's grid)."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="Seeds per setting (default: 2 small, the "
                                        "paper's count at paper scale)."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Cells run at a time here."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder of the cells, the figure and claims.json "
                                       "(default reproduce/FIGURE-SCALE)."),
    set_: List[str] = typer.Option([], "--set", help="Override a setting of every cell, e.g. --set device=cuda."),
    emit: Optional[str] = typer.Option(None, "--emit", help="slurm: write an array script (one task per cell) and "
                                       "the drawing step instead of running."),
    cell: Optional[int] = typer.Option(None, "--cell", help="Run only this cell (a Slurm array task)."),
    draw_only: bool = typer.Option(False, "--draw-only", help="Only draw and test the claims (cells done)."),
    json_out: bool = typer.Option(False, "--json", help="Print claims.json's content as JSON."),
    quiet: bool = _quiet_option(),
):
    """Reproduce a figure of the paper: its grid × seeds recorded and analysed, the figure drawn in the
    paper's layout, each of its claims tested (DIR/FIGURE.png, DIR/claims.json)."""
    import json as json_mod

    from telecli.reproduce.runner import reproduce as do_reproduce

    if figure == "all" and (emit is not None or cell is not None):
        raise TelecliError("--emit and --cell take one figure (a Slurm array per figure), not all")
    names = list(REPRODUCIBLE) if figure == "all" else [figure]
    for name in names:
        where = (out or Path("reproduce") / f"all-{scale}") if figure == "all" else out  # all: one DIR, shared cells
        doc = do_reproduce(name, scale=scale, seeds=seeds, jobs=jobs, out=where, sets=set_, emit=emit, cell=cell,
                           draw_only=draw_only, progress=not quiet, argv=sys.argv[1:])
        if json_out:
            print(json_mod.dumps(doc, indent=1))
        elif "claims" in doc:
            for c in doc["claims"]:
                print(f"{'holds' if c['holds'] else 'DOES NOT HOLD'}: {c['claim']}")
            print(f"wrote {doc['figure_file']} and claims.json ({doc['holding']} of {len(doc['claims'])} claims hold)")
        elif "emitted" in doc:
            print(f"wrote {doc['emitted'][0]} and {doc['emitted'][1]}: sbatch the first, then the second with "
                  f"--dependency=afterok:JOBID")


lmc_app = typer.Typer(
    help="Linear mode connectivity and weight averaging (method.md §5, paper Fig. 6): spawn pairs of children "
    "from a run, interpolate them, measure barriers and gradient change by layer.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@lmc_app.command("spawn", epilog="Examples:\n\n  telecli lmc spawn runs/lmc --at 0,10,50,100,300 --pairs 2   # → runs/lmc-lmc/\n\n"
                                 "  telecli lmc spawn runs/lmc --at 0,10 --shard 0/4 (one of 4 parallel jobs)\n\n"
                                 "Rerun the same command after a kill: complete children are skipped, the rest resume.")
def lmc_spawn(
    run: Path = typer.Argument(..., help="Parent run directory (telecli record) that stores θ at the spawn steps."),
    at: str = typer.Option(..., "--at", help="Spawn steps t', comma-separated (each stored in RUN)."),
    pairs: int = typer.Option(1, "--pairs", help="Pairs of children per spawn step."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Spawn directory (default RUN-lmc next to RUN)."),
    every: Optional[int] = typer.Option(None, "--every", help="Children store θ every K steps (resume points; "
                                        "default ≈ T/10)."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    shard: Optional[str] = typer.Option(None, "--shard", help="i/N: train only this job's share of the children."),
    quiet: bool = _quiet_option(),
):
    """Train K pairs of children from θ_t' (parent's optimiser state, new data orders) to the parent's last step."""
    from telecli.jobs.lmc import spawn

    path = spawn(run, at, pairs=pairs, out=out, every=every, device=device, shard=shard, progress=not quiet)
    if not quiet:
        print(f"spawned {path}  (next: telecli lmc interpolate {path})")


@lmc_app.command("interpolate", epilog="Examples:\n\n  telecli lmc interpolate runs/lmc-lmc            # → runs/lmc-lmc/lmc.h5\n\n"
                                       "  telecli lmc interpolate CHILD_A CHILD_B --alpha 0:1:11 --bn recompute\n\n"
                                       "Then: telecli plot runs/lmc-lmc/lmc.h5 --figure lmc")
def lmc_interpolate(
    sources: List[Path] = typer.Argument(..., help="A spawn directory, or two run directories A B."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Results file (default SPAWN/lmc.h5)."),
    alpha: str = typer.Option("0:1:30", "--alpha", help="min:max:n evenly spaced α (θ_α = αθ_A + (1−α)θ_B)."),
    bn: str = typer.Option("interpolate", "--bn", help="BatchNorm running statistics: interpolate | recompute "
                           "(re-estimated on training data)."),
    bn_points: str = typer.Option("all", "--bn-points", help="Training points for --bn recompute: N or all."),
    points: str = typer.Option("all", "--points", help="Test points: N (seeded subset) or all."),
    gradients: bool = typer.Option(True, "--gradients/--no-gradients", help="Also the gradient change by layer "
                                   "(from the parent's trajectory)."),
    delta: Optional[int] = typer.Option(None, "--delta", help="Δ of the gradient change (default one epoch, "
                                        "n_train // batch size)."),
    grad_points: int = typer.Option(256, "--grad-points", help="Test points of the gradient change."),
    logits: str = typer.Option("mean", "--logits", help="Gradient change over k outputs: mean | true (true class)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the point subsets."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="Working-memory budget, e.g. 4G."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing results file."),
    quiet: bool = _quiet_option(),
    as_json: bool = _json_option("a summary of the file written (barriers and gradient change per spawn step)"),
):
    """Loss/accuracy of weight average, α-weighted mean and ensemble along α; barriers; gradient change → HDF5."""
    from telecli.jobs.lmc import run_interpolate

    path = run_interpolate(sources, out, alpha=alpha, bn=bn, points=points, gradients=gradients, delta=delta,
                           grad_points=grad_points, reduction=logits, seed=seed, bn_points=bn_points, device=device,
                           max_memory=max_memory, overwrite=overwrite, progress=not quiet)
    if as_json:
        from telecli.report import lmc_document, to_json

        print(to_json(lmc_document(path)))
    elif not quiet:
        print(f"wrote {path}  (plot: telecli plot {path} --figure lmc)")


@lmc_app.command("gradients", epilog="Example: telecli lmc gradients runs/lmc --at 0,10,50 --out grads.h5")
def lmc_gradients(
    run: Path = typer.Argument(..., help="Run directory storing θ at t' and t'+Δ."),
    at: str = typer.Option(..., "--at", help="Steps t', comma-separated."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Results file (default RUN/lmc-gradients.h5)."),
    delta: Optional[int] = typer.Option(None, "--delta", help="Δ (default one epoch, n_train // batch size)."),
    points: int = typer.Option(256, "--points", help="Seeded test points."),
    logits: str = typer.Option("mean", "--logits", help="Over k outputs: mean | true (true class)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the point subset."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="Working-memory budget, e.g. 4G."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing results file."),
    quiet: bool = _quiet_option(),
    as_json: bool = _json_option("a summary of the file written (gradient change by layer per step)"),
):
    """Only the gradient change by layer, mean (∂f_{t'+Δ} − ∂f_{t'})², of one run (no children needed)."""
    from telecli.jobs.lmc import run_gradients

    path = run_gradients(run, at, out, delta=delta, points=points, reduction=logits, seed=seed, device=device,
                         max_memory=max_memory, overwrite=overwrite, progress=not quiet)
    if as_json:
        from telecli.report import lmc_document, to_json

        print(to_json(lmc_document(path)))
    elif not quiet:
        print(f"wrote {path}  (plot: telecli plot {path} --figure lmc)")


app.add_typer(lmc_app, name="lmc")


def resume_command(argv: list[str]) -> str:
    """The command that continues an interrupted job: ``record``/``branch`` with ``--resume`` (and without
    ``--overwrite``, which would start again); every other long job resumes from its partial file when the
    same command is rerun (its ``--overwrite`` kept: the old complete file may still be there).

    >>> resume_command(["telecli", "record", "a.toml", "--out", "r", "--overwrite"])
    'telecli record a.toml --out r --resume'
    >>> resume_command(["telecli", "telescope", "r", "--every", "10", "--overwrite"])
    'telecli telescope r --every 10 --overwrite'
    """
    import shlex

    args = list(argv[1:])
    if args and args[0] in ("record", "branch"):
        args = [a for a in args if a != "--overwrite"] + ([] if "--resume" in args else ["--resume"])
    return " ".join(["telecli", *map(shlex.quote, args)])


def main() -> None:
    try:
        app()
    except TelecliError as e:
        print(f"telecli: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print(f"telecli: interrupted; continue with: {resume_command(sys.argv)}", file=sys.stderr)
        sys.exit(130)
    except SystemExit as e:
        if e.code == 130:  # typer turns Ctrl-C into exit code 130 before it reaches here
            print(f"telecli: interrupted; continue with: {resume_command(sys.argv)}", file=sys.stderr)
        raise
    except OSError as e:  # the filesystem refused (read-only, full, permissions, a file where a folder is needed)
        where = f": {e.filename}" if e.filename else ""
        print(f"telecli: error: cannot write or read{where}: {e.strerror or e} (choose another --out or fix "
              f"the folder's permissions)", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
