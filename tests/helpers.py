"""Helpers shared by the test modules (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import sys
from pathlib import Path

from telecli.cli import main as cli_main
from telecli.store.trajectory import DATA, MANIFEST, SHARD_DIR

BASE = """\
name = "tiny"
seed = 0
dtype = "float64"

[task]
name = "poly"
dim = 6
n_train = 40
n_test = 10

[model]
name = "mlp"
depth = 3
width = 12

[train]
loss = "mse"
optimizer = "sgd"
lr = 0.05
batch_size = 8
steps = 20
"""


def cli(*args) -> tuple[int, str, str]:
    """Run ``telecli ARGS`` through the console-script entry point in this process: (exit code, stdout, stderr)."""
    out, err, argv = io.StringIO(), io.StringIO(), sys.argv
    sys.argv = ["telecli", *map(str, args)]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli_main()
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


def write_cfg(folder: Path, text: str = BASE) -> Path:
    path = folder / "tiny.toml"
    path.write_text(text)
    return path


def sets(*items: str) -> list[str]:
    return [a for item in items for a in ("--set", item)]


def run_hashes(run: Path) -> dict[str, str]:
    """sha256 of every file of a run's identity: trajectory/* (hidden files too), data.safetensors, run.json."""
    files = sorted((run / SHARD_DIR).iterdir()) + [run / DATA, run / MANIFEST]
    return {p.relative_to(run).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("telecli: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, err)
