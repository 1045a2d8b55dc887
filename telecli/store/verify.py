"""Integrity checks of a run directory (``telecli verify``): hashes, manifest, step continuity, finiteness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from telecli.errors import TelecliError
from telecli.store.atomic import sha256_file
from telecli.store.trajectory import DATA, MANIFEST, SHARD_DIR, read_manifest


def verify_run(run_dir: str | Path, progress=None) -> tuple[list[str], list[str]]:
    """(problems, notes): every problem found, one line each (empty when the run is sound), and
    remarks that are not faults (a run still being recorded). A folder that is no run at all (no
    run.json) raises TelecliError instead: that is a bad input, not a damaged run."""
    run_dir = Path(run_dir)
    if not (run_dir / MANIFEST).is_file():
        read_manifest(run_dir)  # not a run at all (bad input, exit 2): the TelecliError names why
    try:
        manifest = read_manifest(run_dir)
    except TelecliError as e:
        return [str(e)], []
    problems: list[str] = []
    data = run_dir / DATA
    if not data.is_file():
        problems.append(f"{DATA} is missing")
    elif sha256_file(data) != manifest["data"].get("sha256"):
        problems.append(f"{DATA}: sha256 does not match the manifest (corrupt)")
    names = [p["name"] for p in manifest["parameters"]]
    shapes = {p["name"]: p["shape"] for p in manifest["parameters"]}
    listed = set()
    prev_last = None
    steps_seen: list[int] = []
    for s in manifest["shards"]:
        listed.add(s["file"])
        path = run_dir / s["file"]
        if progress:
            progress()
        # Continuity of the manifest's step ranges, checked before the file so that one damaged shard
        # is not also reported as a gap at the next one.
        if prev_last is not None and s["first_step"] != prev_last + 1:
            problems.append(f"{s['file']}: starts at step {s['first_step']}, previous shard ended at {prev_last}")
        prev_last = s["last_step"]
        if not path.is_file():
            problems.append(f"{s['file']}: missing")
            continue
        size = path.stat().st_size
        if size != s["bytes"]:
            problems.append(f"{s['file']}: {size} bytes, manifest says {s['bytes']} (truncated or replaced)")
            continue
        if sha256_file(path) != s["sha256"]:
            problems.append(f"{s['file']}: sha256 does not match the manifest (corrupt)")
            continue
        try:
            with safe_open(str(path), framework="pt") as f:
                keys = set(f.keys())
                steps = f.get_tensor("step").numpy()
                meta = f.get_tensor("meta.step").numpy()
                for n in names:
                    key = "theta." + n
                    if key not in keys:
                        problems.append(f"{s['file']}: parameter {n} missing")
                        continue
                    t = f.get_tensor(key)
                    if list(t.shape[1:]) != shapes[n] or t.shape[0] != len(steps):
                        problems.append(f"{s['file']}: parameter {n} has shape {list(t.shape)}, expected "
                                        f"[{len(steps)}, {', '.join(map(str, shapes[n]))}]")
                    bad = ~torch.isfinite(t.reshape(len(steps), -1)).all(dim=1)
                    if bad.any():
                        problems.append(f"{s['file']}: parameter {n} is non-finite at step {int(steps[bad.numpy()][0])}")
        except Exception as e:  # unreadable header etc.
            problems.append(f"{s['file']}: unreadable ({e})")
            continue
        steps_seen.extend(steps.tolist())
        if len(steps) != s["stored"] or steps[-1] != s["last_step"] or steps[0] < s["first_step"]:
            problems.append(f"{s['file']}: stored steps {steps[0]}..{steps[-1]} disagree with the manifest")
        lo = max(s["first_step"], manifest.get("first_step", 0) + 1)
        if not np.array_equal(meta, np.arange(lo, s["last_step"] + 1)):
            problems.append(f"{s['file']}: per-step records are not continuous from step {lo} to {s['last_step']}")
    if steps_seen and np.any(np.diff(steps_seen) <= 0):
        problems.append("stored steps are not strictly increasing across shards")
    if steps_seen and steps_seen[0] != manifest.get("first_step", 0):
        problems.append(f"first stored step is {steps_seen[0]}, manifest says {manifest.get('first_step', 0)}")
    shard_dir = run_dir / SHARD_DIR
    if shard_dir.is_dir():
        for extra in sorted(shard_dir.glob("*.safetensors")):
            rel = f"{SHARD_DIR}/{extra.name}"
            if rel not in listed:
                problems.append(f"{rel}: not listed in the manifest (left by an interrupted write; "
                                f"'telecli record --resume' rewrites it)")
    notes = []
    if manifest.get("status") != "complete":
        notes.append(f"run status is '{manifest.get('status')}' (not complete); stored steps up to "
                     f"{prev_last} are sound" if not problems else f"run status is '{manifest.get('status')}'")
    return problems, notes
