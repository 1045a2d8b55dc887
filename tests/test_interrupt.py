"""Fault injection: every long job — record, branch, telescope (with and without --effective-params),
lmc spawn, lmc interpolate, boost — is SIGKILLed at seeded random moments (including before its first
file exists) and interrupted once with SIGINT (as Ctrl-C: exit code 130, "continue with: COMMAND" on
stderr), then resumed; the result must equal an uninterrupted run: the same bytes for trajectories
(run_hashes), every HDF5 dataset and attribute equal (NaN-aware) except the provenance attributes.

The job runs in a real subprocess (``python -c WRAPPER``): the wrapper patches one function of telecli
(HOOK = module:attribute) and sends the signal to its own process before or after the N-th call, so a
kill lands at a known point of the job (between a shard and the manifest that lists it, before the
manifest exists, mid-training, after a results checkpoint, just before a results file is finished).
N is drawn from a seeded generator per job; a kill that would land after the job completed leaves a
complete result, which the following resume must accept. Resumes run in-process through
``telecli.cli:main`` (one thread, like the subprocesses, so floating point agrees bit for bit).
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers import assert_one_line_error, cli, run_hashes, sets, write_cfg  # noqa: E402
from telecli.store.trajectory import MANIFEST

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# argv: SIG (KILL | INT) HOOK (module:attr[.attr]) WHEN (before | after) N telecli-args...
WRAPPER = r"""
import importlib, os, signal, sys
sig, hook, when, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
module, _, attr = hook.partition(":")
owner = importlib.import_module(module)
*path, name = attr.split(".")
for p in path:
    owner = getattr(owner, p)
original, calls = getattr(owner, name), [0]

def fire():
    os.kill(os.getpid(), signal.SIGKILL if sig == "KILL" else signal.SIGINT)

def hooked(*args, **kwargs):
    calls[0] += 1
    if when == "before" and calls[0] == n:
        fire()
    out = original(*args, **kwargs)
    if when == "after" and calls[0] == n:
        fire()
    return out

setattr(owner, name, hooked)
sys.argv = ["telecli", *sys.argv[5:]]
from telecli.cli import main
main()
"""

BUILD = "telecli.train.loop:build"  # data loading and model building, before the run directory exists
STEP = "telecli.train.loop:train_step"  # one optimiser step
MANIFEST_WRITE = "telecli.store.trajectory:write_manifest"  # every run.json write
SHARD = "telecli.store.trajectory:atomic_write_chunks"  # a shard on disk, not yet listed (when 'after')
THREAD_START = "telecli.store.trajectory:threading.Thread.start"  # a shard handed to its writer thread
CHECKPOINT = "telecli.store.results:ResultsWriter.checkpoint"  # a block of an HDF5 results file
FINISH = "telecli.store.results:ResultsWriter.finish"  # everything computed, FILE.partial not yet renamed
FIT_GBT = "telecli.jobs.boost:fit_gbt"  # boost's trees, after its data is read and checked
WRITE_RESULTS = "telecli.store.results:write_results"  # boost.h5


pytestmark = pytest.mark.usefixtures("single_thread")


def _start(sig: str, hook: str, when: str, n: int, args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRAPPER, sig, hook, when, str(n), *map(str, args)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _hooked(sig: str, hook: str, when: str, n: int, args) -> subprocess.CompletedProcess:
    proc = _start(sig, hook, when, n, args)
    _, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, None, err)


def start_kill(hook: str, when: str, n: int, *args) -> subprocess.Popen:
    """:func:`killed` in the background (the in-process reference runs meanwhile, on the other core)."""
    return _start("KILL", hook, when, n, args)


def was_killed(proc: subprocess.Popen) -> int:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode in (-signal.SIGKILL, 0), err[-3000:]
    return proc.returncode


def killed(hook: str, when: str, n: int, *args) -> int:
    """SIGKILL ``telecli ARGS`` at the N-th call of HOOK; returns the exit status (0: it finished first)."""
    return was_killed(start_kill(hook, when, n, *args))


def interrupted(hook: str, when: str, n: int, *args) -> str:
    """SIGINT (Ctrl-C) ``telecli ARGS`` at the N-th call of HOOK: exit code 130 and one line naming the command
    that continues the job; returns that command's arguments after 'telecli'."""
    r = _hooked("INT", hook, when, n, args)
    assert r.returncode == 130, (r.returncode, r.stderr[-3000:])
    found = re.findall(r"^telecli: interrupted; continue with: (.+)$", r.stderr, re.M)
    assert "continue with:" in r.stderr and len(found) == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    cmd = shlex.split(found[0])
    assert cmd[0] == "telecli", found
    return cmd[1:]


def ok(*args) -> str:
    code, out, err = cli(*args)
    assert code == 0, err[-3000:]
    return out


def _plain(f: h5py.File, v):
    """An attribute with object references (dimension scales: DIMENSION_LIST, REFERENCE_LIST) as the names
    of the objects they point to, so that two files can be compared."""
    if isinstance(v, h5py.Reference):
        return f[v].name if v else None
    if isinstance(v, np.ndarray) and (v.dtype.kind == "O" or v.dtype.names):
        return _plain(f, v.tolist())
    if isinstance(v, (list, tuple)):
        return [_plain(f, x) for x in v]
    return v


def read_h5(path: Path, skip_attrs=("created", "command")) -> dict:
    """Every dataset (path → array) and attribute (path@name → value) of an HDF5 file."""
    items: dict = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                items[name] = obj[()]
            for k, v in obj.attrs.items():
                v = _plain(f, v)
                items[f"{name}@{k}"] = sorted(v) if k == "REFERENCE_LIST" else v

        for k, v in f.attrs.items():
            if k not in skip_attrs:
                items[f"@{k}"] = _plain(f, v)
        f.visititems(visit)
    return items


def assert_h5_equal(got: Path, want: Path, skip_attrs=("created", "command")) -> None:
    a, b = read_h5(got, skip_attrs), read_h5(want, skip_attrs)
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    for k in b:
        if isinstance(b[k], list):
            assert a[k] == b[k], k
            continue
        x, y = np.asarray(a[k]), np.asarray(b[k])
        if x.dtype.kind == "f" or y.dtype.kind == "f":
            np.testing.assert_array_equal(x, y, err_msg=k)  # NaN where the other has NaN
        else:
            assert x.shape == y.shape and np.all(x == y), k
    with h5py.File(got, "r") as f:
        assert f.attrs["complete"]
    assert not Path(str(got) + ".partial").exists()


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A recorded parent (SGD with momentum, one stored step per shard) and its config file."""
    folder = tmp_path_factory.mktemp("parent")
    cfg = write_cfg(folder)
    run = folder / "run"
    ok("record", cfg, "--out", run, "--quiet", *RECORD_SETS)
    return cfg, run


RECORD_SETS = sets("train.momentum=0.9", "store.shard_mb=0.005")  # 21 shards of one step each


# ------------------------------------------------------------------------------------ record / branch

def test_record_killed_and_interrupted_resumes_byte_identical(tmp_path, parent):
    cfg, ref = parent
    rng = random.Random("interrupt-record")
    run = tmp_path / "run"
    args = ["record", cfg, "--out", run, "--quiet", *RECORD_SETS]
    # killed while loading data / building the model: nothing on disk; --resume starts it
    assert killed(BUILD, "before", 1, *args) == -signal.SIGKILL
    assert not (run / MANIFEST).exists()
    # killed before its 1st-3rd manifest write: an empty directory, a manifest without data, ...
    killed(MANIFEST_WRITE, "before", rng.randint(1, 3), *args, "--resume")
    # killed between a shard and the manifest that lists it
    killed(SHARD, "after", rng.randint(2, 8), *args, "--resume")
    # Ctrl-C mid-training: exit 130, the manifest says 'interrupted', the printed command finishes it
    again = interrupted(STEP, "before", rng.randint(1, 10), *args, "--resume")
    assert json.loads((run / MANIFEST).read_text())["status"] == "interrupted"
    assert "--resume" in again
    ok(*again)
    assert run_hashes(run) == run_hashes(ref)
    assert not list(run.rglob(".*.tmp"))
    # without --resume an existing run still needs --overwrite
    code, _, err = cli(*args)
    assert_one_line_error(code, err, "already exists", "--overwrite")


def test_branch_killed_and_interrupted_resumes_byte_identical(tmp_path, parent):
    _, run = parent
    rng = random.Random("interrupt-branch")
    ref, child = tmp_path / "ref", tmp_path / "child"
    common = ["branch", run, "--at", 6, "--seed", 3, "--quiet"]
    args = [*common, "--out", child]
    proc = start_kill(MANIFEST_WRITE, "before", 1, *args)  # the folder exists, empty
    ok(*common, "--out", ref)
    assert was_killed(proc) == -signal.SIGKILL
    assert not (child / MANIFEST).exists()
    killed(SHARD, "after", rng.randint(1, 5), *args, "--resume")
    # Ctrl-C at the worst moment of a shard: listed in the in-memory manifest, its writer thread not started
    again = interrupted(THREAD_START, "before", rng.randint(2, 6), *args, "--resume")
    ok(*again)
    assert run_hashes(child) == run_hashes(ref)


# ------------------------------------------------------------------------------------------- telescope

@pytest.fixture(scope="module")
def sgd_run(tmp_path_factory):
    """Plain SGD: its smoother carries no parameter state, so it fits a --max-memory small enough for
    blocks of a few steps."""
    folder = tmp_path_factory.mktemp("sgd")
    run = folder / "run"
    ok("record", write_cfg(folder), "--out", run, "--quiet")
    return run


@pytest.mark.parametrize("extra, memory, blocks", [([], "64K", 5), (["--effective-params"], "96K", 3)],
                         ids=["plain", "effective-params"])
def test_telescope_killed_and_interrupted_resumes_to_equal_results(request, tmp_path, extra, memory, blocks):
    """Plain (the momentum run): 20 steps in 5 blocks of 4; with --effective-params (plain SGD): 3 blocks,
    then the smoother (not checkpointed: a kill during it recomputes it)."""
    run = request.getfixturevalue("sgd_run") if extra else request.getfixturevalue("parent")[1]
    rng = random.Random(f"interrupt-telescope-{extra}")
    common = ["telescope", run, "--quiet", "--device", "cpu", "--max-memory", memory, *extra]
    out = tmp_path / "lens.h5"
    args = [*common, "--out", out]
    proc = start_kill(CHECKPOINT, "after", rng.randint(1, blocks - 1), *args)
    ok(*common, "--out", tmp_path / "ref.h5")
    assert was_killed(proc) == -signal.SIGKILL
    assert not out.exists() and Path(f"{out}.partial").is_file()
    # plain: Ctrl-C after the next block; with the smoother: everything computed, the file not yet finished
    again = interrupted(CHECKPOINT if not extra else FINISH, "after" if not extra else "before", 1, *args)
    assert Path(f"{out}.partial").is_file()
    ok(*again)
    assert_h5_equal(out, tmp_path / "ref.h5")
    if not extra:  # Ctrl-C of an --overwrite over the complete file: the command printed keeps --overwrite
        again = interrupted(CHECKPOINT, "after", rng.randint(1, blocks - 1), *args, "--overwrite")
        assert out.is_file() and Path(f"{out}.partial").is_file() and "--overwrite" in again
        ok(*again)
        assert_h5_equal(out, tmp_path / "ref.h5")


# ------------------------------------------------------------------------------------------------- lmc

@pytest.fixture(scope="module")
def spawned(tmp_path_factory, parent):
    _, run = parent
    ref = tmp_path_factory.mktemp("lmc") / "ref-spawn"
    ok("lmc", "spawn", run, "--at", "0,5", "--out", ref, "--quiet", "--device", "cpu")
    return run, ref


def _children(spawn: Path) -> list[Path]:
    return [spawn / c["dir"] for c in json.loads((spawn / "spawn.json").read_text())["children"]]


def test_lmc_spawn_killed_and_interrupted_resumes_byte_identical(tmp_path, spawned):
    run, ref = spawned
    rng = random.Random("interrupt-spawn")
    out = tmp_path / "spawn"
    args = ["lmc", "spawn", run, "--at", "0,5", "--out", out, "--quiet", "--device", "cpu"]
    killed(MANIFEST_WRITE, "before", rng.randint(1, 2), *args)  # the first child before its manifest
    killed(SHARD, "after", rng.randint(8, 24), *args)  # some children complete, one part-way
    again = interrupted(STEP, "before", rng.randint(1, 10), *args)
    assert again == [str(a) for a in args]  # rerun the same command
    ok(*again)
    assert (out / "spawn.json").read_bytes() == (ref / "spawn.json").read_bytes()
    kids = _children(ref)
    assert len(kids) == 4
    for kid in kids:
        mine = out / kid.relative_to(ref)
        assert run_hashes(mine) == run_hashes(kid), kid
    # a further rerun skips every child
    before = {k: run_hashes(out / k.relative_to(ref)) for k in kids}
    ok(*args)
    assert before == {k: run_hashes(out / k.relative_to(ref)) for k in kids}


def test_lmc_interpolate_killed_and_interrupted_resumes_to_equal_results(tmp_path, spawned):
    _, spawn = spawned
    common = ["lmc", "interpolate", spawn, "--quiet", "--device", "cpu", "--alpha", "0:1:5"]
    out = tmp_path / "lmc.h5"
    args = [*common, "--out", out]
    proc = start_kill(CHECKPOINT, "after", 1, *args)  # one of the two spawn steps done
    ok(*common, "--out", tmp_path / "ref.h5")
    assert was_killed(proc) == -signal.SIGKILL
    assert not out.exists() and Path(f"{out}.partial").is_file()
    again = interrupted(FINISH, "before", 1, *args)
    ok(*again)
    assert_h5_equal(out, tmp_path / "ref.h5")


# ----------------------------------------------------------------------------------------------- boost

BOOST = ["diabetes", "--nn-steps", 12, "--gbt-trees", 5, "--kernel-every", 2, "--device", "cpu", "--quiet"]


def test_boost_killed_and_interrupted_resumes_to_equal_results(tmp_path):
    rng = random.Random("interrupt-boost")
    ref, out = tmp_path / "ref", tmp_path / "out"
    args = ["boost", *BOOST, "--out", out]
    proc = start_kill(FIT_GBT, "before", 1, *args)  # the data read and checked, no network yet
    ok("boost", *BOOST, "--out", ref)
    assert was_killed(proc) == -signal.SIGKILL
    assert not (out / "nn" / MANIFEST).exists()
    killed(STEP, "before", rng.randint(2, 11), *args)  # the network part-way (no shard yet)
    # OUT of another configuration: refused in one line
    code, _, err = cli("boost", *BOOST[:1], "--nn-steps", 13, *BOOST[3:], "--out", out)
    assert_one_line_error(code, err, str(out), "--overwrite")
    killed(CHECKPOINT, "after", 1, *args)  # the network complete, its telescope part-way
    assert Path(f"{out}/nn/lens.h5.partial").is_file()
    again = interrupted(WRITE_RESULTS, "before", 1, *args)  # everything computed but boost.h5
    assert not (out / "boost.h5").exists()
    ok(*again)
    assert run_hashes(out / "nn") == run_hashes(ref / "nn")
    assert_h5_equal(out / "boost.h5", ref / "boost.h5")
    assert_h5_equal(out / "nn" / "lens.h5", ref / "nn" / "lens.h5", skip_attrs=("created", "command", "run"))
    # complete: the same command says so and changes nothing
    code, _, err = cli(*args)
    assert_one_line_error(code, err, "already exists", "--overwrite")
