"""The trajectory store: a run directory that holds θ_0, θ_t for the stored steps, and per step the batch
B_t, learning rate γ_t, training loss and optimiser state (docs/format.md is the specification).

    RUN/run.json                       manifest: model factory, optimiser, parameter names and shapes,
                                       shard index with sha256 per shard, package versions
    RUN/data.safetensors               the exact training and evaluation tensors
    RUN/trajectory/shard-NNNNNN.safetensors
                                       many steps per shard, stacked per tensor, so a step range is
                                       read without loading the shard
    RUN/provenance.json                command line, host, times (not part of the run's identity)

The writer buffers steps in memory and writes a shard atomically once it holds ``steps_per_shard``
stored steps (in a background thread, while training goes on); the manifest is rewritten atomically
after each shard. A run killed at any moment is therefore a valid prefix, and a resumed run cuts its
shards at the same steps (byte-identical files).
This module does no maths.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from telecli.errors import IntegrityError, TelecliError
from telecli.store.atomic import (
    atomic_write_bytes,
    atomic_write_chunks,
    atomic_write_json,
    sha256_file,
)

FORMAT = "telecli-trajectory"
FORMAT_VERSION = 1
MANIFEST = "run.json"
DATA = "data.safetensors"
SHARD_DIR = "trajectory"

# Tensor name prefixes inside a shard (docs/format.md).
THETA, BUFFER, OPT = "theta.", "buffer.", "opt."
SEAL = "manifest_sha256"  # run.json's hash of all its other keys


def manifest_sha256(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest without its own seal, as canonical JSON (sorted keys, no spaces): the run's
    configuration, model, data hash and shard index in one integrity check (docs/format.md §1.3)."""
    body = {k: v for k, v in json.loads(json.dumps(manifest)).items() if k != SEAL}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Seal ``manifest`` (:func:`manifest_sha256`) and write it atomically as RUN/run.json."""
    manifest[SEAL] = manifest_sha256(manifest)
    atomic_write_json(run_dir / MANIFEST, manifest)


def shard_name(index: int) -> str:
    return f"{SHARD_DIR}/shard-{index:06d}.safetensors"


def steps_per_shard(bytes_per_step: int, shard_mb: float) -> int:
    return max(1, int(shard_mb * 2**20 // max(1, bytes_per_step)))


def stored_steps(total: int, every: int = 1, log_points: int = 0, extra: list[int] | tuple = ()) -> list[int]:
    """The steps whose parameters are stored: every ``every``-th, or ~``log_points`` log-spaced, plus
    ``extra``; 0 and ``total`` always."""
    if log_points > 0 and total > 0:
        grid = np.unique(np.round(np.logspace(0, math.log10(total), log_points)).astype(int))
        steps = {0, total, *grid.tolist()}
    else:
        steps = set(range(0, total + 1, max(1, every))) | {0, total}
    steps |= {int(s) for s in extra}
    return sorted(s for s in steps if 0 <= s <= total)


def write_data(run_dir: Path, tensors: dict[str, torch.Tensor]) -> str:
    """Write data.safetensors atomically; returns its sha256."""
    blob = st_save({k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()})
    return atomic_write_bytes(run_dir / DATA, blob)


class TrajectoryWriter:
    """Appends steps to a run directory; see the module docstring for the layout.

    Stored steps are copied straight into preallocated per-tensor blocks (one row per step, reused from
    shard to shard). A full block is written by a background thread — the shard (hashed while it is
    written), then the manifest that lists it, both atomic and in that order — while training fills the
    other block; at most one shard is in flight. :meth:`flush`, :meth:`write_manifest` and :meth:`close`
    wait for it, and a failed write is raised again by every later call (nothing more is written after
    it, so the run on disk stays a valid prefix). The files are those of ``safetensors.torch.save``.
    """

    def __init__(self, run_dir: str | Path, manifest: dict[str, Any]):
        self.run_dir = Path(run_dir)
        self.manifest = manifest
        self.per_shard = int(manifest["steps_per_shard"])
        self.full_batch = bool(manifest.get("full_batch", False))
        self._block: dict[str, torch.Tensor] | None = None  # rows being filled
        self._layout: list | None = None  # (name, shape, dtype) of the tensors add_state last checked
        self._rows = 0
        self._spare: list[dict[str, torch.Tensor]] = []  # blocks whose shard is written
        self._meta: list[tuple[int, float, float, torch.Tensor | None, dict[str, float]]] = []
        self._job: threading.Thread | None = None
        self._job_block: dict[str, torch.Tensor] | None = None
        self._error: BaseException | None = None
        last = manifest["shards"][-1]["last_step"] if manifest["shards"] else -1
        self._range_start = last + 1

    # -- appending ------------------------------------------------------------------------------------
    def add_meta(self, step: int, lr: float, loss: float, batch: torch.Tensor | None,
                 extra: dict[str, float] | None = None) -> None:
        """Per-step record (every step, stored or not): γ_t, the training loss at θ_{t−1}, B_t, and
        further per-step scalars (``extra``: stored as ``meta.<name>``, float64, NaN where absent)."""
        if batch is not None:
            batch = batch.detach().to("cpu", torch.int64, copy=True)  # the caller may reuse its index buffer
        self._meta.append((step, lr, loss, batch, dict(extra or {})))

    def add_state(self, step: int, tensors: dict[str, torch.Tensor]) -> None:
        """Snapshot at a stored step: θ_t, buffers and optimiser state under their prefixed names."""
        if self._block is None:
            self._block = self._new_block(tensors)
        block, row = self._block, self._rows
        layout = [(key, value.shape, value.dtype) for key, value in tensors.items()]
        if layout != self._layout:  # the first step, or something changed: name what
            if block.keys() != {*tensors, "step"}:
                raise TelecliError(f"stored tensors changed at step {step}: {sorted(set(block) ^ {*tensors, 'step'})}")
            for key, shape, dtype in layout:
                dest = block[key][0]
                if dest.shape != shape or dest.dtype != dtype:
                    raise TelecliError(f"tensor {key} changed from {list(dest.shape)} {dest.dtype} to "
                                       f"{list(shape)} {dtype} at step {step}")
            self._layout = layout
        torch._foreach_copy_([block[key][row] for key in tensors], [v.detach() for v in tensors.values()])
        block["step"][row] = step
        self._rows += 1
        self.manifest["last_step"] = step
        if self._rows >= self.per_shard:
            self._submit()

    def _new_block(self, template: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        def fits(b):
            return b.keys() == {*template, "step"} and all(
                b[k].shape[1:] == v.shape and b[k].dtype == v.dtype for k, v in template.items())

        for i, b in enumerate(self._spare):
            if fits(b):
                return self._spare.pop(i)
        block = {k: torch.empty((self.per_shard, *v.shape), dtype=v.dtype) for k, v in template.items()}
        block["step"] = torch.empty(self.per_shard, dtype=torch.int64)
        return block

    # -- writing --------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Write the buffered steps as one shard (atomic) and the manifest after it (atomic); returns once
        both are on disk."""
        self._submit()
        self._wait()

    def _submit(self) -> None:
        """Hand the buffered steps to a background thread (after the previous shard is written)."""
        self._wait()
        if not self._rows:
            return
        block, rows = self._block, self._rows
        stored = {k: v[:rows] for k, v in block.items()}
        last = int(stored["step"][-1])
        meta = [m for m in self._meta if m[0] <= last]
        self._meta = [m for m in self._meta if m[0] > last]
        tensors = dict(stored)
        tensors["meta.step"] = torch.tensor([m[0] for m in meta], dtype=torch.int64)
        tensors["meta.lr"] = torch.tensor([m[1] for m in meta], dtype=torch.float64)
        tensors["meta.loss"] = torch.tensor([m[2] for m in meta], dtype=torch.float64)
        for key in sorted({k for m in meta for k in m[4]}):
            tensors[f"meta.{key}"] = torch.tensor([m[4].get(key, math.nan) for m in meta], dtype=torch.float64)
        if not self.full_batch:
            width = max([len(m[3]) for m in meta] + [1])
            batch = torch.full((len(meta), width), -1, dtype=torch.int64)
            for i, m in enumerate(meta):
                batch[i, : len(m[3])] = m[3]
            tensors["meta.batch"] = batch
        header, pieces = _serialize(tensors)
        name = shard_name(len(self.manifest["shards"]))
        entry = {
            "file": name,
            "first_step": self._range_start,
            "last_step": last,
            "stored": rows,
            "bytes": len(header) + sum(p.numel() * p.element_size() if isinstance(p, torch.Tensor) else len(p)
                                       for p in pieces),
            "sha256": None,  # set by the job, before the manifest that lists the shard is written
        }
        snapshot = json.loads(json.dumps(self.manifest))
        self.manifest["shards"].append(entry)
        self._range_start = last + 1
        self._block, self._rows = None, 0
        self._job_block = block
        self._job = threading.Thread(target=self._write_job, args=(name, header, pieces, entry, snapshot),
                                     name=f"telecli-{Path(name).stem}")
        self._job.start()

    def _write_job(self, name: str, header: bytes, pieces: list, entry: dict, snapshot: dict) -> None:
        try:
            size, sha = atomic_write_chunks(self.run_dir / name, [header, *(_view(p) for p in pieces)])
            if size != entry["bytes"]:
                raise IntegrityError(f"shard {name}: wrote {size} bytes, expected {entry['bytes']}")
            entry["sha256"] = sha
            snapshot["shards"].append(entry)
            write_manifest(self.run_dir, snapshot)
        except BaseException as e:  # raised again in the training thread by _wait
            self._error = e

    def _wait(self) -> None:
        if self._job is not None:
            self._job.join()
            self._job = None
            if self._error is None and self._job_block is not None:
                self._spare.append(self._job_block)
            self._job_block = None
        if self._error is not None:
            raise self._error

    def write_manifest(self) -> None:
        self._wait()
        write_manifest(self.run_dir, self.manifest)

    def close(self, status: str = "complete") -> None:
        self.flush()
        self._spare = []  # release the blocks' memory
        self.manifest["status"] = status
        self.write_manifest()


# safetensors' dtype codes, and the order in which its serialiser lays tensors out (by dtype in this
# order, then by name); writing the same layout keeps the files identical to ``safetensors.torch.save``.
_ST_DTYPES = {torch.int64: "I64", torch.float64: "F64", torch.float32: "F32", torch.int32: "I32",
              torch.bfloat16: "BF16", torch.float16: "F16", torch.int16: "I16", torch.int8: "I8",
              torch.uint8: "U8", torch.bool: "BOOL"}
_ST_RANK = {code: i for i, code in enumerate(_ST_DTYPES.values())}


def _serialize(tensors: dict[str, torch.Tensor]) -> tuple[bytes, list]:
    """(8-byte length + JSON header, the pieces that follow) of a safetensors file, without copying the
    tensors; falls back to ``safetensors.torch.save`` for another dtype or byte order."""
    if sys.byteorder != "little" or any(t.dtype not in _ST_DTYPES or t.device.type != "cpu"
                                        for t in tensors.values()):
        return b"", [st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})]
    items = sorted(tensors.items(), key=lambda kv: (_ST_RANK[_ST_DTYPES[kv[1].dtype]], kv[0]))
    header, pieces, offset = {}, [], 0
    for name, t in items:
        t = t.detach().contiguous()
        n = t.numel() * t.element_size()
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        pieces.append(t)
        offset += n
    blob = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    blob += b" " * (-len(blob) % 8)
    return len(blob).to_bytes(8, "little") + blob, pieces


def _view(piece) -> bytes | memoryview:
    """The raw bytes of a contiguous CPU tensor as a memoryview (no copy)."""
    if not isinstance(piece, torch.Tensor):
        return piece
    t = piece.reshape(-1)
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    elif t.dtype == torch.bool:
        t = t.view(torch.uint8)
    return memoryview(t.numpy()).cast("B")


@dataclass
class ShardInfo:
    file: str
    first_step: int
    last_step: int
    stored: int
    bytes: int
    sha256: str


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    path = run_dir / MANIFEST
    if not run_dir.is_dir():
        raise TelecliError(f"run directory not found: {run_dir}")
    if not path.is_file():
        raise TelecliError(f"{run_dir} is not a telecli run (no {MANIFEST}); record one with 'telecli record'")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise IntegrityError(f"{path} is not valid JSON ({e}); the manifest is corrupt") from None
    if manifest.get("format") != FORMAT:
        raise TelecliError(f"{path} is not a telecli trajectory manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise TelecliError(f"{path} has format version {manifest['format_version']}; upgrade telecli")
    if SEAL in manifest and manifest[SEAL] != manifest_sha256(manifest):
        raise IntegrityError(f"{path} was edited after telecli wrote it (its {SEAL} does not match its "
                             f"content); restore the original file or record the run again")
    return manifest


class Trajectory:
    """Read access to a run directory; streams θ_t shard by shard, reading only the steps asked for."""

    def __init__(self, run_dir: str | Path, check_hashes: bool = False):
        self.run_dir = Path(run_dir)
        self.manifest = read_manifest(self.run_dir)
        self.shards = [ShardInfo(**s) for s in self.manifest["shards"]]
        if not self.shards:
            raise TelecliError(f"{self.run_dir} holds no recorded steps yet")
        self.param_names = [p["name"] for p in self.manifest["parameters"]]
        self.buffer_names = [b["name"] for b in self.manifest.get("buffers", [])]
        for s in self.shards:
            path = self.run_dir / s.file
            if not path.is_file():
                raise IntegrityError(f"shard {s.file} listed in {MANIFEST} is missing; run 'telecli verify {run_dir}'")
            if path.stat().st_size != s.bytes:
                raise IntegrityError(
                    f"shard {s.file} has {path.stat().st_size} bytes, manifest says {s.bytes} (truncated or "
                    f"replaced); run 'telecli verify {run_dir}'"
                )
            if check_hashes and sha256_file(path) != s.sha256:
                raise IntegrityError(f"shard {s.file} does not match its sha256 in {MANIFEST} (corrupt)")
        self._steps: list[np.ndarray] = []
        for s in self.shards:
            with self._open(s) as f:
                self._steps.append(f.get_tensor("step").numpy())
        self.steps = np.concatenate(self._steps)

    def _open(self, shard: ShardInfo):
        try:
            return safe_open(str(self.run_dir / shard.file), framework="pt")
        except Exception as e:  # safetensors raises its own error types on a bad header
            raise IntegrityError(f"shard {shard.file} cannot be read ({e}); run 'telecli verify'") from None

    # -- metadata ---------------------------------------------------------------------------------------
    @property
    def last_step(self) -> int:
        return int(self.steps[-1])

    @property
    def complete(self) -> bool:
        return self.manifest.get("status") == "complete"

    def is_contiguous(self) -> bool:
        """True when every step from the first to the last is stored (needed by the telescoping sum)."""
        return bool(np.array_equal(self.steps, np.arange(self.steps[0], self.steps[0] + len(self.steps))))

    def meta(self) -> dict[str, np.ndarray]:
        """Per-step records for steps 1..last: step, lr (γ_t), loss (at θ_{t−1} on B_t), batch (−1 padded),
        and the per-step scalars the Recorder observed (docs/format.md; NaN in shards that lack one)."""
        parts: dict[str, list[np.ndarray]] = {"step": [], "lr": [], "loss": [], "batch": []}
        extra: dict[str, list[tuple[int, np.ndarray]]] = {}
        for i, s in enumerate(self.shards):
            with self._open(s) as f:
                keys = set(f.keys())
                for k in ("step", "lr", "loss"):
                    parts[k].append(f.get_tensor(f"meta.{k}").numpy())
                if "meta.batch" in keys:
                    parts["batch"].append(f.get_tensor("meta.batch").numpy())
                for k in sorted(keys):
                    if k.startswith("meta.") and k[5:] not in parts:
                        extra.setdefault(k[5:], []).append((i, f.get_tensor(k).numpy()))
        out = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items() if k != "batch"}
        for k, cols in extra.items():
            have = dict(cols)
            out[k] = np.concatenate([have.get(i, np.full(len(parts["step"][i]), np.nan))
                                     for i in range(len(self.shards))])
        if parts["batch"]:
            width = max(b.shape[1] for b in parts["batch"])
            out["batch"] = np.concatenate(
                [np.pad(b, ((0, 0), (0, width - b.shape[1])), constant_values=-1) for b in parts["batch"]]
            )
        return out

    def batch(self, meta: dict[str, np.ndarray], row: int) -> np.ndarray:
        """B_t of the ``row``-th per-step record (all training points for a full-batch run)."""
        if "batch" not in meta:
            return np.arange(self.manifest["data"]["n_train"])
        b = meta["batch"][row]
        return b[b >= 0]

    # -- tensors ----------------------------------------------------------------------------------------
    def _locate(self, step: int) -> tuple[int, int]:
        for i, st in enumerate(self._steps):
            j = np.searchsorted(st, step)
            if j < len(st) and st[j] == step:
                return i, int(j)
        raise TelecliError(f"step {step} is not stored in {self.run_dir} (stored: {self.describe_steps()})")

    def describe_steps(self) -> str:
        s = self.steps
        if len(s) <= 6:
            return ", ".join(map(str, s))
        return f"{len(s)} steps from {s[0]} to {s[-1]}"

    def state(self, step: int, prefix: str = THETA) -> dict[str, torch.Tensor]:
        """The tensors under ``prefix`` at one stored step (θ_t by default), reading only that slice."""
        i, j = self._locate(step)
        with self._open(self.shards[i]) as f:
            return {k[len(prefix):]: f.get_slice(k)[j : j + 1][0] for k in f.keys() if k.startswith(prefix)}

    def theta(self, step: int) -> dict[str, torch.Tensor]:
        return self.state(step, THETA)

    def buffers(self, step: int) -> dict[str, torch.Tensor]:
        return self.state(step, BUFFER)

    def optimizer_state(self, step: int) -> dict[str, torch.Tensor]:
        return self.state(step, OPT)

    def iter_states(self, steps: list[int] | np.ndarray | None = None, prefix: str | tuple[str, ...] = THETA
                    ) -> Iterator[tuple[int, dict]]:
        """Stream (step, tensors) in step order; each shard is opened once and only the asked-for rows
        are read (contiguous rows in one slice). With a tuple of prefixes, the tensors come as
        {prefix: {name: tensor}}."""
        prefixes = (prefix,) if isinstance(prefix, str) else tuple(prefix)
        wanted = None if steps is None else set(int(s) for s in steps)
        for shard, st in zip(self.shards, self._steps):
            rows = [j for j, s in enumerate(st) if wanted is None or int(s) in wanted]
            if not rows:
                continue
            with self._open(shard) as f:
                keys = {p: [k for k in f.keys() if k.startswith(p)] for p in prefixes}
                for lo, hi in _runs(rows):
                    block = {p: {k[len(p):]: f.get_slice(k)[lo:hi] for k in ks} for p, ks in keys.items()}
                    for r in range(hi - lo):
                        out = {p: {k: v[r] for k, v in b.items()} for p, b in block.items()}
                        yield int(st[lo + r]), (out[prefixes[0]] if isinstance(prefix, str) else out)

    def data(self) -> dict[str, torch.Tensor]:
        path = self.run_dir / DATA
        if not path.is_file():
            raise IntegrityError(f"{path} is missing")
        want = self.manifest["data"].get("sha256")
        if want and sha256_file(path) != want:
            raise IntegrityError(f"{path} does not match its sha256 in {MANIFEST} (corrupt)")
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}


def _runs(rows: list[int]) -> Iterator[tuple[int, int]]:
    start = prev = rows[0]
    for r in rows[1:]:
        if r != prev + 1:
            yield start, prev + 1
            start = r
        prev = r
    yield start, prev + 1
