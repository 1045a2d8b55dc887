"""Summaries of runs and results files, built in one place: a plain dict per command (what ``--json``
prints) and its text rendering (``telecli info``, ``verify``, ``boost``'s table).

Documents are read back from the run directory or from the results file a command has just written.
Text goes to stdout as a rich table on a terminal, and as plain ``key: value`` lines or space-aligned
columns (no box drawing) when stdout is a pipe or a file; progress and notes are on stderr.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from telecli.errors import TelecliError
from telecli.store.trajectory import MANIFEST, Trajectory, read_manifest


# ------------------------------------------------------------------------------------------ printing


def to_json(doc: Any) -> str:
    """One strict JSON document: numpy scalars and arrays become numbers and lists, NaN/±inf null; keys
    starting with '_' (helpers of the text rendering) are left out."""
    return json.dumps(_plain(doc), indent=2, ensure_ascii=False, allow_nan=False)


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items() if not str(k).startswith("_")}  # _: text-only helpers
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return _plain(v.tolist())
    if isinstance(v, (bytes, np.bytes_)):
        return v.decode()
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, Path):
        return str(v)
    return v


def stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def print_rows(title: str, rows: list[tuple[str, str]]) -> None:
    """Label/value rows: a rich table on a terminal, ``label: value`` lines otherwise."""
    if not stdout_is_terminal():
        for k, v in rows:
            print(f"{k}: {v}")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for k, v in rows:
        table.add_row(k, v)
    Console().print(table)


def print_columns(title: str, heads: list[str], rows: list[list[str]]) -> None:
    """A table with a header: rich on a terminal, right-aligned space-separated columns otherwise."""
    if stdout_is_terminal():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, title_justify="left")
        for h in heads:
            table.add_column(h, justify="right")
        for r in rows:
            table.add_row(*r)
        Console().print(table)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(heads)]
    print(title)
    for r in [heads, *rows]:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)).rstrip())


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# ------------------------------------------------------------------------------------- telecli info


def run_manifest(run: str | Path) -> dict[str, Any]:
    """read_manifest, with the folder a ``telecli record`` killed before its first write named as such."""
    run = Path(run)
    if run.is_dir() and not (run / MANIFEST).exists():
        left = [p for p in run.iterdir() if not (p.name.startswith(".") and p.name.endswith(".tmp"))]
        if not left:
            raise TelecliError(
                f"{run} is not a telecli run yet: it has no {MANIFEST} (a 'telecli record' killed before it wrote "
                f"one leaves such a folder); start it again with the same 'telecli record CONFIG --out {run}' "
                f"(without --resume)")
    return read_manifest(run)


def _resume(run: Path, m: dict[str, Any]) -> str | None:
    """How to continue an incomplete run: the recorded command line with --resume when provenance.json
    holds a telecli one, else in words; None when resuming cannot help (stopped on a non-finite loss)."""
    if m.get("status") == "complete" or str(m.get("status", "")).startswith("stopped"):
        return None
    argv = None
    try:
        argv = json.loads((run / "provenance.json").read_text()).get("command")
    except (OSError, ValueError, AttributeError):
        pass
    if isinstance(argv, list) and len(argv) > 1 and all(isinstance(a, str) for a in argv):
        from telecli.cli import resume_command

        if argv[1] in ("record", "branch") or argv[1:3] == ["lmc", "spawn"]:
            return resume_command(argv)
    if m.get("config") is None:
        return "reopen it with Recorder(..., resume=True) in the training loop that recorded it"
    return f"rerun the record command with --resume (telecli record CONFIG --out {run} --resume)"


def run_document(run: str | Path) -> dict[str, Any]:
    """What ``telecli info RUN --json`` prints; also for a run still being recorded, interrupted or
    failed (the steps stored so far and how to resume it)."""
    run = Path(run)
    m = run_manifest(run)
    d = m["data"]
    task = d.get("task") or {}
    kw = m["model"].get("kwargs") or {}
    status = str(m.get("status"))
    doc: dict[str, Any] = {
        "run": str(run), "run_id": m.get("run_id"), "status": status, "complete": status == "complete",
        "task": {**task, "name": task.get("name"), "n_train": d.get("n_train"), "n_test": d.get("n_test"),
                 "input_shape": d.get("input_shape"), "output_dim": d.get("output_dim")},
        "model": {"factory": m["model"].get("factory"), "name": kw.get("name"), "kwargs": kw},
        "parameters": sum(_prod(p["shape"]) for p in m["parameters"]),
        "dtype": m.get("dtype"), "loss": m.get("loss"), "optimizer": m.get("optimizer"),
        "schedule": None, "planned_steps": (m.get("storage") or {}).get("total_steps"),
        "steps": 0, "first_step": None, "last_step": None, "contiguous": None,
        "shards": len(m.get("shards", [])), "steps_per_shard": m.get("steps_per_shard"),
        "bytes": int(sum(s["bytes"] for s in m.get("shards", []))),
        "parent": m.get("parent"), "training_loss": None, "versions": m.get("versions", {}),
        "stopped_early": m.get("stopped_early"),  # {"step", "epoch", "reason", …} when a stopping rule ended it
    }
    if m.get("config"):
        tr = m["config"]["train"]
        doc["schedule"] = {k: tr.get(k) for k in ("lr", "schedule", "batch_size", "steps")}
    if m.get("shards"):
        traj = Trajectory(run)
        doc.update(steps=int(len(traj.steps)), first_step=int(traj.steps[0]), last_step=int(traj.steps[-1]),
                   contiguous=traj.is_contiguous())
        loss = traj.meta()["loss"]
        if len(loss):
            doc["training_loss"] = {"first": float(loss[0]), "last": float(loss[-1])}
        doc["_describe_steps"] = traj.describe_steps()
    doc["resume"] = None if status == "complete" else _resume(run, m)
    if status == "running":
        doc["note"] = "still being recorded, or killed before it could record its status"
    elif status == "interrupted":
        doc["note"] = "interrupted (Ctrl-C) after the steps stored so far"
    elif status.startswith("failed"):
        doc["note"] = "the recording raised an error after the steps stored so far"
    elif status.startswith("stopped"):
        doc["note"] = "stopped on a non-finite loss: change the configuration (lower train.lr) and record again"
    return doc


def info_rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    t, mo = doc["task"], doc["model"]
    rows = [("run", doc["run"]), ("run id", str(doc["run_id"])), ("status", doc["status"])]
    if doc.get("note"):
        rows.append(("note", doc["note"]))
    rows += [
        ("task", f"{t.get('name') or '?'}  train {t['n_train']} × {t['input_shape']}  test {t['n_test']}  "
                 f"outputs {t['output_dim']}"),
        ("model", f"{mo['factory']}  {mo['name'] or ''}  {doc['parameters']:,} parameters ({doc['dtype']})"),
        ("loss", str(doc["loss"])),
        ("optimizer", ", ".join(f"{k}={v}" for k, v in (doc["optimizer"] or {}).items())),
    ]
    if doc["schedule"]:
        s = doc["schedule"]
        rows.append(("schedule", f"lr {s['lr']} {s['schedule']}  batch {s['batch_size'] or 'full'}  steps {s['steps']}"))
    if doc["steps"]:
        stored = doc["_describe_steps"] + ("  (contiguous)" if doc["contiguous"] else "")
        if not doc["complete"] and doc["planned_steps"]:
            stored += f"  (so far; training runs to step {doc['planned_steps']})"
    else:
        stored = "none yet" + (f" (training runs to step {doc['planned_steps']})" if doc["planned_steps"] else "")
    rows.append(("stored steps", stored))
    if doc.get("stopped_early"):
        e = doc["stopped_early"]
        rows.append(("stopped early", f"at step {e['step']} (epoch {e.get('epoch')}, of {e.get('planned_steps')} "
                                      f"planned): {e.get('reason')}"))
    rows.append(("shards", f"{doc['shards']} × ≤{doc['steps_per_shard']} steps, {_size(doc['bytes'])}"))
    if doc["parent"]:
        rows.append(("parent", f"{doc['parent']['run']} at step {doc['parent']['at']}"))
    if doc["training_loss"]:
        rows.append(("training loss", f"first {doc['training_loss']['first']:.4g}  last {doc['training_loss']['last']:.4g}"))
    rows.append(("versions", ", ".join(f"{k} {v}" for k, v in doc["versions"].items())))
    if doc.get("resume"):
        rows.append(("resume", doc["resume"]))
    return rows


def print_info(run: str | Path) -> None:
    doc = run_document(run)
    print_rows(f"telecli run {run}", info_rows(doc))



# ----------------------------------------------------------------------------------- telecli verify


def verify_document(run: str | Path, recipe: bool = True, device: str | None = None,
                    progress: bool = False) -> dict[str, Any]:
    """Integrity checks, then (when those pass and ``recipe``) the recipe check: what ``telecli verify
    --json`` prints. ``sound`` is False on any problem (the command then exits 1)."""
    from telecli.store.verify import verify_run

    run = Path(run)
    if run.is_dir() and not (run / MANIFEST).exists():
        run_manifest(run)  # no run (yet): a bad input, exit 2
    problems, notes = verify_run(run)
    rec: dict[str, Any] = {"checked": False}
    if not recipe:
        rec["skipped"] = "--no-recipe"
    elif problems:
        rec["skipped"] = "the integrity checks failed"
    elif not read_manifest(run).get("shards"):
        rec["skipped"] = "no recorded steps yet"
        notes.append("recipe: not checked, no recorded steps yet")
    else:
        from telecli.jobs.recipe import verify_recipe

        report = verify_recipe(run, device, progress=progress)
        problems += report.lines()
        notes += report.notes
        if report.ok:
            notes.append(report.summary()[len("recipe: "):])
        finite = report.error[np.isfinite(report.error)]
        rec = {"checked": True, "ok": report.ok, "tolerance": report.tolerance, "steps": int(len(report.steps)),
               "failed": int(report.n_failed), "max_error": float(finite.max()) if finite.size else None,
               "failures": [{"step": int(t), "cause": c} for t, c in report.failures],
               "problems": list(report.problems), "summary": report.summary()}
    return {"run": str(run), "sound": not problems, "problems": problems, "notes": notes, "recipe": rec}


# ------------------------------------------------------------------------------ results-file summaries


def _attr(a, key: str, default: Any = None) -> Any:
    """An HDF5 attribute as Python: bytes decoded, the JSON 'null' of write_results as None."""
    v = a.get(key, default)
    if isinstance(v, (bytes, np.bytes_)):
        v = v.decode()
    if isinstance(v, str) and v == "null":
        return None
    return _plain(v)


def _strings(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _last(ds) -> float | None:
    v = np.asarray(ds[...], dtype=np.float64).reshape(-1)  # a scalar dataset is its own last value
    return float(v[-1]) if v.size and np.isfinite(v[-1]) else None


def _nanmax(ds) -> float | None:
    v = np.asarray(ds[...], dtype=np.float64)
    return float(np.nanmax(v)) if np.isfinite(v).any() else None


TELESCOPE_FINAL = ("approx_error_telescoped", "approx_error_linearized", "loss_actual", "error_actual",
                   "effective_parameters", "effective_parameters_se", "smoother_gap", "kernel_norm_max")


def telescope_document(path: str | Path) -> dict[str, Any]:
    """What ``telecli telescope --json`` prints: the written steps and, per split, the final value of each
    per-step metric (approximation errors of the telescoped and linearised models, with
    ``--effective-params`` the effective parameters p), the largest telescoping error, validity."""
    import h5py

    path = Path(path)
    with h5py.File(path, "r") as f:
        a = f.attrs
        steps = f["steps"][...] if "steps" in f else np.zeros(0, dtype=np.int64)
        shard = _attr(a, "shard")
        doc: dict[str, Any] = {
            "path": str(path), "run": _attr(a, "run"), "run_id": _attr(a, "run_id"),
            "complete": bool(a.get("complete", True)), "shard": shard,
            "steps": int(len(steps)), "first_step": int(steps[0]) if len(steps) else None,
            "last_step": int(steps[-1]) if len(steps) else None, "every": _attr(a, "every"),
            "effective_params": bool(a.get("effective_params", False)),
            "probes": int(a.get("probes", 0)) or None, "approximate": bool(a.get("approximate", False)),
            "caveats": json.loads(_attr(a, "caveats") or "[]"), "dtype": _attr(a, "dtype"),
            "device": _attr(a, "device"),
        }
        for s in ("train", "test"):
            if s not in f or not isinstance(f[s], h5py.Group):
                continue
            g = f[s]
            entry: dict[str, Any] = {"points": int(len(g["index"])) if "index" in g else None}
            for name in TELESCOPE_FINAL:
                if name in g:
                    entry[name] = _last(g[name])
            if "approx_error_telescoped" in g:
                entry["approx_error_telescoped_max"] = _nanmax(g["approx_error_telescoped"])
            if f"validity/{s}/ok" in f:
                entry["valid"] = bool(np.all(f[f"validity/{s}/ok"][...]))
            doc[s] = entry
        has_p = any(f"{s}/effective_parameters" in f for s in ("train", "test"))
    doc["figure"] = "complexity" if has_p else "approximation"
    doc["plot"] = f"telecli plot {path} --figure {doc['figure']}"
    doc["partial"] = bool(shard and "/" in str(shard) and not str(shard).endswith("/1"))  # one of N shards
    if doc["partial"]:  # its values cover this shard's points (or smoother columns) only
        doc["merge"] = f"telecli merge SHARD-FILES --out {path.parent / 'lens.h5'}"
    return doc


def telescope_hint(doc: dict[str, Any]) -> str:
    """The line ``telecli telescope`` prints when it is done."""
    if doc.get("merge"):
        return f"wrote {doc['path']}  (shard {doc['shard']}; join the shard files: {doc['merge']})"
    return f"wrote {doc['path']}  (plot: {doc['plot']})"


def boost_document(path: str | Path) -> dict[str, Any]:
    """What ``telecli boost --json`` prints: the data and split, one row per test mixture (MSEs, relative
    MSE, kernel norms, telescoping error of the NN) and the GBT's final effective parameters."""
    import h5py

    from telecli.jobs.boost import summary_rows

    path = Path(path)
    rows = summary_rows(path)
    with h5py.File(path, "r") as f:
        a = f.attrs
        nn_run, nn_lens = _attr(a, "nn_run"), _attr(a, "nn_lens")
        doc: dict[str, Any] = {
            "path": str(path), "dataset": _attr(a, "dataset"), "target": _attr(a, "target"),
            "seed": _attr(a, "seed"), "n_rows": _attr(a, "n_rows"), "mixture_size": _attr(a, "mixture_size"),
            "n_train": int(len(f["split/train"])) if "split/train" in f else None,
            "n_test": int(len(f["split/test"])) if "split/test" in f else None,
            "nn_run": str(path.parent / nn_run) if nn_run else None,
            "nn_lens": str(path.parent / nn_lens) if nn_lens else None,
            "nn_steps": _attr(a, "nn_steps"), "gbt_trees": _attr(a, "gbt_n_estimators"),
            "mse_train": {"nn": _last(f["metrics/mse_nn_train"]) if "metrics/mse_nn_train" in f else None,
                          "gbt": _last(f["metrics/mse_gbt_train"]) if "metrics/mse_gbt_train" in f else None},
            "gbt_effective_parameters": {s: _last(f[f"gbt/p_{s}"]) for s in ("train", "test") if f"gbt/p_{s}" in f},
            "mixtures": [{**r, "n_irregular": int(r["n_irregular"])} for r in rows],
        }
    doc["gbt_effective_parameters"] = doc["gbt_effective_parameters"] or None  # --no-smoother
    doc["plot"] = f"telecli plot {path} --figure tabular"
    return doc


BOOST_COLUMNS = [("p", "proportions", "{:g}"), ("n irr", "n_irregular", "{:.0f}"), ("MSE NN", "mse_nn", "{:.4f}"),
                 ("MSE GBT", "mse_gbt", "{:.4f}"), ("rel MSE", "relative_mse", "{:.3f}"),
                 ("‖k‖ NN", "kernel_norm_nn", "{:.3f}"), ("‖k‖ GBT", "kernel_norm_gbt", "{:.3f}"),
                 ("|f−f̃| NN", "telescoping_error_nn", "{:.1e}")]


def print_boost_summary(path: str | Path) -> None:
    """The table ``telecli boost`` prints: one row per test mixture."""
    doc = boost_document(path)
    rows = doc["mixtures"]
    heads = [c for c in BOOST_COLUMNS if rows and c[1] in rows[0]] or BOOST_COLUMNS[:-1]
    title = (f"NN vs GBT on {doc['dataset']} (seed {doc['seed']}, mixtures of {doc['mixture_size']}; MSE of the "
             f"standardised target)")
    print_columns(title, [h for h, _, _ in heads], [[fmt.format(r[k]) for _, k, fmt in heads] for r in rows])
    print("rel MSE = (MSE^p_NN − MSE^p_GBT)/(MSE^0_NN − MSE^0_GBT); ‖k‖ = normalised max kernel-weight norm "
          "(mean_t max over the mixture / mean_t max over train), method.md §4.4")


def lmc_document(path: str | Path) -> dict[str, Any]:
    """What ``telecli lmc interpolate --json`` / ``lmc gradients --json`` print: per spawn step t' the
    barriers and gaps (mean and standard error over the pairs) and the gradient change by layer."""
    import h5py

    path = Path(path)
    with h5py.File(path, "r") as f:
        a = f.attrs
        steps = f["spawn_steps"][...]
        doc: dict[str, Any] = {"path": str(path), "kind": "interpolate" if "curves" in f else "gradients",
                               "source": _attr(a, "source"), "parent": _attr(a, "parent"),
                               "parent_run_id": _attr(a, "parent_run_id"), "spawn_steps": steps}
        if "alpha" in f:
            al = f["alpha"][...]
            doc["alpha"] = {"n": int(len(al)), "min": float(al.min()), "max": float(al.max())}
            doc["bn"] = _attr(a, "bn")
        layers = _strings(f["gradients/layers"][...]) if "gradients/change" in f else []
        change = f["gradients/change"][...] if layers else None
        if layers:
            doc["gradients"] = {"delta": _attr(a, "gradient_delta"), "points": _attr(a, "gradient_points"),
                                "reduction": _attr(a, "gradient_reduction"), "layers": layers}
        summary = {k: f[f"summary/{k}"][...] for k in f["summary"]} if "summary" in f else {}
        pairs = f["pairs"][...] if "pairs" in f else None
        per = []
        for r, t in enumerate(steps):
            e: dict[str, Any] = {"step": int(t)}
            if pairs is not None:
                e["pairs"] = int(pairs[r])
            for k in sorted(summary):
                e[k] = summary[k][r]
            if change is not None:
                e["gradient_change"] = dict(zip(layers, change[r]))
            per.append(e)
        doc["by_step"] = per
    doc["plot"] = f"telecli plot {path} --figure lmc"
    return doc


def _prod(shape) -> int:
    out = 1
    for s in shape:
        out *= s
    return out
