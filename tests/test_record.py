"""`telecli record` / `branch` / `info` end to end and the Recorder API in a hand-written loop:
SIGKILL + --resume gives byte-identical files, branches restart exactly, every task and model trains,
and bad inputs exit with code 2 and one line while leaving existing files untouched.

The CLI is driven through its console-script entry point ``telecli.cli:main`` in this process (it maps
TelecliError to exit code 2), and as a real subprocess where a process must be killed or an exit status
seen from outside. Configurations are tiny (poly task, 3-layer MLP of width 12–16, float64).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from telecli import config as config_mod
from helpers import assert_one_line_error, cli, run_hashes, sets, write_cfg  # noqa: E402
from telecli.store.trajectory import MANIFEST, SHARD_DIR, Trajectory, write_manifest
from telecli.store.verify import verify_run
from telecli.train.loop import BatchOrder, build, run_training
from telecli.train.optim import learning_rate, loss_fn
from telecli.train.recorder import Recorder


OPTIMIZERS = {  # name → (overrides, number of per-parameter optimiser state tensors)
    "sgd": ([], 0),
    "sgd-momentum": (["train.momentum=0.9"], 1),
    "adamw": (['train.optimizer="adamw"', "train.lr=0.01", "train.weight_decay=0.01"], 2),
}
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


pytestmark = pytest.mark.usefixtures("single_thread")


def all_hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def record(tmp_path: Path, name: str, *overrides: str) -> Path:
    run = tmp_path / name
    code, _, err = cli("record", write_cfg(tmp_path), "--out", run, "--quiet", *sets(*overrides))
    assert code == 0, err
    return run


def thetas_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------ SIGKILL + --resume


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _kill_overrides(name: str) -> list[str]:
    extra, n_state = OPTIMIZERS[name]
    # ~6 stored steps per shard whatever the optimiser state: many shard and manifest writes to land in.
    return [*extra, "model.width=16", "train.steps=200", f"store.shard_mb={0.02 * (1 + n_state)}"]


def _kill_chain(cfg: Path, run: Path, overrides: list[str], rng: random.Random, span: float) -> list[tuple]:
    """Start `python -m telecli record` (then `--resume` twice) and SIGKILL each process at a random moment:
    the first one 0–5 ms after its manifest appears, the others up to ``span`` s after their first write."""
    events = []
    for k in range(3):
        args = ["record", cfg, "--out", run, "--quiet", *sets(*overrides)] + (["--resume"] if k else [])
        before = _read(run / MANIFEST)
        proc = subprocess.Popen([sys.executable, "-m", "telecli", *map(str, args)], env=SUBPROCESS_ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Time from the moment this process has written something (past its imports): its first manifest
        # for a fresh run, a new shard (or a fresh start) for a resumed one.
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            now = _read(run / MANIFEST)
            if now is not None and now != before:
                break
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.005) if k == 0 else rng.uniform(0.0, span))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=300)
        m = json.loads((run / MANIFEST).read_text())
        events.append((proc.returncode, m["status"], m["shards"][-1]["last_step"] if m["shards"] else None))
    return events


def test_sigkill_at_random_moments_then_resume_is_byte_identical(tmp_path):
    """For plain SGD, SGD with momentum and AdamW: kill `telecli record` (a real process) with SIGKILL three
    times, at seeded random moments (the first one just after the manifest appears, before any shard),
    resuming in between; the final --resume must give the files of an uninterrupted run byte for byte
    (θ, per-step records and optimiser state restored exactly). The three chains run side by side."""
    cfg = write_cfg(tmp_path)
    span = {}
    for name in OPTIMIZERS:
        t0 = time.monotonic()
        code, _, err = cli("record", cfg, "--out", tmp_path / f"ref-{name}", "--quiet", *sets(*_kill_overrides(name)))
        span[name] = 0.35 * (time.monotonic() - t0)  # a share of the uninterrupted recording time
        assert code == 0, err
        assert len(list((tmp_path / f"ref-{name}" / SHARD_DIR).iterdir())) >= 30
    with ThreadPoolExecutor(len(OPTIMIZERS)) as pool:
        futures = {name: pool.submit(_kill_chain, cfg, tmp_path / f"run-{name}", _kill_overrides(name),
                                     random.Random(f"sigkill-{name}"), span[name]) for name in OPTIMIZERS}
        events = {name: f.result() for name, f in futures.items()}
    for name in OPTIMIZERS:
        ev, run = events[name], tmp_path / f"run-{name}"
        assert ev[0][0] == -signal.SIGKILL and ev[0][1] == "running", (name, ev)
        code, _, err = cli("record", cfg, "--out", run, "--quiet", "--resume", *sets(*_kill_overrides(name)))
        assert code == 0, (name, err, ev)
        assert not [p.name for p in run.rglob(".*.tmp")], (name, ev)  # half-written files of the kills are gone
        assert run_hashes(run) == run_hashes(tmp_path / f"ref-{name}"), (name, ev)
        assert verify_run(run) == ([], []), name
    print("kill events (exit code, status, last shard step):", events)


def test_resume_after_a_kill_between_shard_and_manifest(tmp_path):
    """Deterministic version of the worst moments: shard 2 renamed into place but not yet listed in the
    manifest, shard 3 half-written as a temporary file, the manifest's own temporary file left behind."""
    overrides = ["train.momentum=0.9", "store.shard_mb=0.01"]
    ref = record(tmp_path, "ref", *overrides)
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    manifest = json.loads((run / MANIFEST).read_text())
    shards = manifest["shards"]
    assert len(shards) >= 6
    manifest.update(shards=shards[:2], last_step=shards[1]["last_step"], status="running")
    write_manifest(run, manifest)  # as the writer seals it
    tdir = run / SHARD_DIR
    half = tdir / ".shard-000003.safetensors.k1ll3d_x.tmp"
    (tdir / "shard-000003.safetensors").rename(half)
    half.write_bytes(half.read_bytes()[:50])
    for s in shards[4:]:
        (run / s["file"]).unlink()
    (run / ".run.json.zz9plx0q.tmp").write_text('{"format": "tel')
    problems, notes = verify_run(run)
    assert any("shard-000002.safetensors: not listed" in p for p in problems), problems
    assert cli("record", write_cfg(tmp_path), "--out", run, "--quiet", "--resume", *sets(*overrides))[0] == 0
    assert run_hashes(run) == run_hashes(ref)
    assert not list(run.rglob(".*.tmp"))


def test_a_run_killed_before_its_first_shard_can_be_resumed_or_rerecorded(tmp_path):
    ref = record(tmp_path, "ref")
    cfg = write_cfg(tmp_path)
    # Killed after its first manifest (no shard; data half-written): --resume starts it again.
    run = tmp_path / "run"
    run.mkdir()
    manifest = json.loads((ref / MANIFEST).read_text())
    manifest["data"]["sha256"] = None
    manifest.update(shards=[], last_step=0, status="running")
    write_manifest(run, manifest)  # as the writer seals it
    (run / ".data.safetensors.ab12cd34.tmp").write_bytes(b"\0" * 64)
    code, _, err = cli("record", cfg, "--out", run, "--quiet", "--resume")
    assert code == 0, err
    assert run_hashes(run) == run_hashes(ref)
    # Killed while writing its very first file: only a temporary file; a plain record proceeds.
    run2 = tmp_path / "run2"
    run2.mkdir()
    (run2 / ".run.json.ab12cd34.tmp").write_text("{")
    code, _, err = cli("record", cfg, "--out", run2, "--quiet")
    assert code == 0, err
    assert run_hashes(run2) == run_hashes(ref)
    # A directory with other files is never taken over, even with --overwrite.
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    (other / ".notes.txt.ab12cd34.tmp").write_text("mine too")
    code, _, err = cli("record", cfg, "--out", other, "--quiet", "--overwrite")
    assert_one_line_error(code, err, "not a telecli run directory")
    assert sorted(p.name for p in other.iterdir()) == [".notes.txt.ab12cd34.tmp", "notes.txt"]


# ------------------------------------------------------------------------------ Recorder in a user's loop


def test_recorder_in_a_hand_written_loop_matches_record(tmp_path):
    overrides = ["train.momentum=0.9", "train.steps=12", "store.shard_mb=0.01", "train.schedule=\"warmup\"",
                 "train.warmup_steps=4"]
    cfg = config_mod.load(write_cfg(tmp_path), overrides)
    recorded = run_training(cfg, tmp_path / "recorded", progress=False)

    setup = build(cfg, torch.device("cpu"))
    order = BatchOrder(setup.x_train.shape[0], cfg.train.batch_size, cfg.seed)
    T = cfg.train.steps
    with Recorder(tmp_path / "mine", setup.model, setup.optimizer, train=(setup.x_train, setup.y_train),
                  test=(setup.x_test, setup.y_test), model_factory=setup.factory, model_kwargs=setup.kwargs,
                  loss=cfg.train.loss, total_steps=T, shard_mb=cfg.store.shard_mb, full_batch=order.full) as rec:
        for t in range(1, T + 1):
            idx = order(t)
            for g in setup.optimizer.param_groups:
                g["lr"] = learning_rate(cfg.train, t)
            setup.optimizer.zero_grad()
            loss = loss_fn(cfg.train.loss, setup.model(setup.x_train[idx]), setup.y_train[idx])
            loss.backward()
            setup.optimizer.step()
            rec.step(idx, loss=loss.item())

    a, b = Trajectory(recorded), Trajectory(tmp_path / "mine")
    assert b.complete and len(b.shards) >= 3
    np.testing.assert_array_equal(a.steps, np.arange(T + 1))
    np.testing.assert_array_equal(a.steps, b.steps)
    for (sa, ta), (sb, tb) in zip(a.iter_states(), b.iter_states()):
        assert sa == sb and thetas_equal(ta, tb)
    for s in (1, 7, T):
        assert thetas_equal(a.optimizer_state(s), b.optimizer_state(s))
    ma, mb = a.meta(), b.meta()
    assert ma.keys() == mb.keys() == {"step", "lr", "loss", "batch", "clip", "clip_spread", "input_deviation",
                                      "loss_scale", "loss_residual", "weight_decay", "momentum"}
    for k in ma:
        np.testing.assert_array_equal(ma[k], mb[k])
    np.testing.assert_allclose(ma["lr"][:5], [0.0125, 0.025, 0.0375, 0.05, 0.05], rtol=1e-15)
    assert thetas_equal(a.data(), b.data())
    # Same tensors under the same names: the shards are the same files.
    assert [s.sha256 for s in a.shards] == [s.sha256 for s in b.shards]
    assert b.manifest["model"]["factory"] == a.manifest["model"]["factory"] == "telecli.models:build"
    assert b.manifest["optimizer"] == a.manifest["optimizer"] == {"name": "sgd", "momentum": 0.9, "weight_decay": 0.0}
    assert verify_run(tmp_path / "mine") == ([], [])


# ------------------------------------------------------------------------------------ tasks and models


N_TR, N_TE = 200, 50


def _write_idx(path: Path, arr, magic: int, gz: bool = False) -> None:
    arr = np.asarray(arr, dtype=np.uint8)
    blob = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()
    if gz:
        path, blob = path.with_name(path.name + ".gz"), gzip.compress(blob)
    path.write_bytes(blob)


def make_mnist(folder: Path) -> Path:
    """Tiny MNIST in the IDX format (labels cycle 0..9); half the files gzipped."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for part, n, gz in (("train", N_TR, True), ("t10k", N_TE, False)):
        _write_idx(folder / f"{part}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), 2051, gz)
        _write_idx(folder / f"{part}-labels-idx1-ubyte", np.arange(n) % 10, 2049, gz)
    return folder


def make_cifar(root: Path) -> Path:
    """Tiny CIFAR-10 binary version: 1 label byte + 3072 pixel bytes per record, 50 records per file."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = np.arange(50) % 10
        rec = np.concatenate([labels[:, None], rng.integers(0, 256, (50, 3072))], axis=1).astype(np.uint8)
        (folder / name).write_bytes(rec.tobytes())
    return root


CASES = {
    "digits-mlp": ({"name": "digits"}, {"name": "mlp", "width": 8}, {}),
    "poly-poly": ({"name": "poly", "dim": 10, "n_train": 30, "n_test": 10}, {"name": "poly", "hidden": 20}, {}),
    "mnist1d-mlp": ({"name": "mnist1d", "classes": [0, 1], "n_train": 60, "n_test": 20}, {"name": "mlp", "width": 8}, {}),
    "tabular-diabetes-mlp": ({"name": "tabular", "root": "diabetes", "n_train": 60, "n_test": 20},
                             {"name": "mlp", "width": 8}, {}),
    "mnist-mlp": ({"name": "mnist", "root": "<mnist>"}, {"name": "mlp", "width": 8}, {}),
    "cifar10-cnn-augment": ({"name": "cifar10", "root": "<cifar>", "flatten": False, "grayscale": False},
                            {"name": "cnn", "channels": 4}, {"augment": True}),
    "digits-cnn": ({"name": "digits", "flatten": False}, {"name": "cnn", "channels": 4}, {}),
    "digits-resnet20": ({"name": "digits", "flatten": False, "n_train": 48}, {"name": "resnet20"}, {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_task_and_model_trains_and_verifies(tmp_path, case):
    task, model, train = (dict(d) for d in CASES[case])
    if task.get("root") == "<mnist>":
        task["root"] = str(make_mnist(tmp_path / "mnist"))
    elif task.get("root") == "<cifar>":
        task["root"] = str(make_cifar(tmp_path / "cifar"))
    cfg = config_mod.from_dict({"name": case, "task": task, "model": model,
                                "train": {"steps": 3, "batch_size": 16, "lr": 0.01, **train}})
    run = run_training(cfg, tmp_path / "run", progress=False)
    assert verify_run(run) == ([], [])
    traj = Trajectory(run, check_hashes=True)
    assert traj.complete and traj.steps.tolist() == [0, 1, 2, 3]
    m = traj.manifest
    assert m["data"]["task"]["name"] == task["name"] and m["model"]["kwargs"]["name"] == model["name"]
    data = traj.data()
    assert data["x_train"].shape[0] == m["data"]["n_train"] > 0 and data["x_test"].shape[0] == m["data"]["n_test"] > 0
    assert list(data["x_train"].shape[1:]) == m["data"]["input_shape"]
    if not task.get("flatten", True):
        assert data["x_train"].dim() == 4
    meta = traj.meta()
    assert meta["step"].tolist() == [1, 2, 3] and np.isfinite(meta["loss"]).all()
    order = BatchOrder(m["data"]["n_train"], 16, cfg.seed)
    for r, t in enumerate((1, 2, 3)):
        np.testing.assert_array_equal(traj.batch(meta, r), order(t))
    t0, t3 = traj.theta(0), traj.theta(3)
    assert all(torch.isfinite(v).all() for v in t3.values())
    assert not thetas_equal(t0, t3)  # it trained
    if model["name"] == "resnet20":  # BatchNorm running statistics are stored with θ and move in training
        b0, b3 = traj.buffers(0), traj.buffers(3)
        assert any(k.endswith("running_mean") for k in b0) and not thetas_equal(b0, b3)


# ---------------------------------------------------------------------------------------------- errors


def test_missing_config_file_exits_2_in_a_real_process(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "telecli", "record", str(tmp_path / "nope.toml"), "--out", str(out)],
                       capture_output=True, text=True, env=SUBPROCESS_ENV, timeout=120)
    assert_one_line_error(r.returncode, r.stderr, "config file not found", "nope.toml")
    assert not out.exists()


def test_bad_inputs_exit_2_and_leave_existing_files_untouched(tmp_path):
    run = record(tmp_path, "run", "train.steps=5")
    before = all_hashes(run)
    cfg = write_cfg(tmp_path)
    mnist_root = tmp_path / "no-mnist-here"

    cases = [
        (["record", tmp_path / "missing.toml"], ["config file not found", "missing.toml"]),
        (["record", cfg, *sets("train.bogus=1")], ["unknown setting 'train.bogus'"]),
        (["record", cfg, *sets("bogus=1")], ["unknown setting 'bogus'"]),
        (["record", cfg, *sets('task.name="imagenet"')], ["setting 'task.name' must be one of", "'imagenet'"]),
        (["record", cfg, *sets('task.name="mnist"', f'task.root="{mnist_root}"')], ["task.root", "no-mnist-here"]),
        (["record", cfg, *sets('task.name="mnist"')], ["task.root"]),
        (["record", cfg, *sets('train.optimizer="lbfgs"')], ["setting 'train.optimizer' must be one of", "'lbfgs'"]),
    ]
    for args, needles in cases:
        for flag in ([], ["--overwrite"]):  # even --overwrite must not touch the run before the inputs are good
            code, _, err = cli(*args, "--out", run, "--quiet", *flag)
            assert_one_line_error(code, err, *needles)
            assert all_hashes(run) == before, (args, flag)

    # An existing run without --overwrite.
    code, _, err = cli("record", cfg, "--out", run, "--quiet", *sets("train.steps=5"))
    assert_one_line_error(code, err, "already exists", "--overwrite")
    assert all_hashes(run) == before
    # --resume of a run that does not exist (or was killed before its run.json) starts it from scratch;
    # a folder without run.json holding files telecli did not write is refused.
    code, _, err = cli("record", cfg, "--out", tmp_path / "ghost", "--quiet", "--resume", *sets("train.steps=5"))
    assert code == 0, err
    assert run_hashes(tmp_path / "ghost") == run_hashes(run)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    code, _, err = cli("record", cfg, "--out", tmp_path / "foreign", "--quiet", "--resume")
    assert_one_line_error(code, err, "cannot resume", "foreign", "notes.txt")
    assert [p.name for p in (tmp_path / "foreign").iterdir()] == ["notes.txt"]
    # --resume of a run recorded with another configuration.
    # resume a complete run: nothing to do, nothing changed
    code, out, err = cli("record", cfg, "--out", run, "--quiet", "--resume", *sets("train.steps=5"))
    assert code == 0 and "already complete" in out and all_hashes(run) == before
    code, _, err = cli("record", cfg, "--out", run, "--quiet", "--resume", *sets("train.steps=6"))
    assert_one_line_error(code, err, "another configuration")
    assert all_hashes(run) == before
    # --overwrite does replace it.
    code, _, err = cli("record", cfg, "--out", run, "--quiet", "--overwrite", *sets("train.steps=4"))
    assert code == 0, err
    assert Trajectory(run).last_step == 4


def test_branch_errors(tmp_path):
    parent = record(tmp_path, "parent", "store.every=5", "train.steps=10")
    before = all_hashes(parent)
    for at, needle in ((3, "step 3 is not stored"), (99, "step 99 is not stored")):
        code, _, err = cli("branch", parent, "--at", at, "--seed", 1, "--out", tmp_path / "child", "--quiet")
        assert_one_line_error(code, err, needle, "pick a stored step")
        assert not (tmp_path / "child").exists()
    code, _, err = cli("branch", tmp_path / "nobody", "--at", 0, "--seed", 1, "--out", tmp_path / "child", "--quiet")
    assert_one_line_error(code, err, "nobody")
    assert all_hashes(parent) == before


def test_non_finite_loss_stops_with_exit_2_and_keeps_the_prefix(tmp_path):
    cfg = write_cfg(tmp_path)
    run = tmp_path / "run"
    overrides = sets("train.lr=1e6", "train.steps=60", "store.shard_mb=0.01")
    code, _, err = cli("record", cfg, "--out", run, "--quiet", *overrides)
    assert_one_line_error(code, err, "non-finite training loss at step", str(run))
    traj = Trajectory(run, check_hashes=True)
    m = traj.manifest
    assert m["status"].startswith("stopped: non-finite loss at step ")
    bad = int(m["status"].rsplit(" ", 1)[1])
    assert 1 < bad <= 60 and traj.last_step == bad - 1
    np.testing.assert_array_equal(traj.steps, np.arange(bad))
    np.testing.assert_array_equal(traj.meta()["step"], np.arange(1, bad))
    assert np.isfinite(traj.meta()["loss"]).all()
    for _, theta in traj.iter_states():
        assert all(torch.isfinite(v).all() for v in theta.values())
    code, out, err = cli("verify", run)
    assert code == 0 and "sound" in out and "stopped" in out, (out, err)
    # Resuming cannot help: the configuration must change.
    before = all_hashes(run)
    code, _, err = cli("record", cfg, "--out", run, "--quiet", "--resume", *overrides)
    assert_one_line_error(code, err, "non-finite")
    assert all_hashes(run) == before


# ------------------------------------------------------------------------------------------------ branch


@pytest.mark.parametrize("name", ["sgd-momentum", "adamw"])
def test_branch_restarts_exactly_from_the_parent_state(tmp_path, name):
    extra, _ = OPTIMIZERS[name]
    parent = record(tmp_path, "parent", *extra, "train.steps=12", "store.shard_mb=0.01")
    S = 5
    for seed in (1, 0):
        code, _, err = cli("branch", parent, "--at", S, "--seed", seed, "--out", tmp_path / f"child{seed}", "--quiet")
        assert code == 0, err
        assert verify_run(tmp_path / f"child{seed}") == ([], [])
    p, c1, c0 = Trajectory(parent), Trajectory(tmp_path / "child1"), Trajectory(tmp_path / "child0")
    for child, seed in ((c1, 1), (c0, 0)):
        assert child.steps.tolist() == list(range(S, 13)) and child.last_step == p.last_step == 12
        assert child.manifest["first_step"] == S
        assert child.manifest["parent"] == {"run": str(parent), "at": S}
        assert child.manifest["config"]["seed"] == seed
        assert thetas_equal(child.theta(S), p.theta(S))
        assert child.meta()["step"].tolist() == list(range(S + 1, 13))
    # The parent's own seed replays the parent exactly from S on (θ, optimiser state, batches, losses).
    for t in range(S, 13):
        assert thetas_equal(c0.theta(t), p.theta(t)), t
    assert thetas_equal(c0.optimizer_state(12), p.optimizer_state(12))
    pm, cm = p.meta(), c0.meta()
    for k in ("lr", "loss", "batch"):
        np.testing.assert_array_equal(cm[k], pm[k][S:])
    # Another seed: another data order, another end point.
    assert not np.array_equal(c1.meta()["batch"], pm["batch"][S:])
    assert not thetas_equal(c1.theta(12), p.theta(12))


# -------------------------------------------------------------------------------------------------- info


def test_info_mentions_the_parameter_count(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    run = record(tmp_path, "run", "train.steps=4")
    cfg = config_mod.load(write_cfg(tmp_path), ["train.steps=4"])
    n = sum(p.numel() for p in build(cfg, torch.device("cpu")).model.parameters())
    assert n == 253
    code, out, err = cli("info", run)
    assert code == 0, err
    assert f"{n} parameters" in out, out
    assert "complete" in out and "0, 1, 2, 3, 4" in out, out
    code, _, err = cli("info", tmp_path / "nothing")
    assert_one_line_error(code, err, "nothing")


def test_a_run_recorded_before_a_setting_existed_resumes(tmp_path):
    """A manifest written before train.stop existed (the key absent) resumes: absent settings are read
    with their defaults. A changed setting is still refused."""
    from telecli.store.trajectory import MANIFEST, write_manifest

    cfg = write_cfg(tmp_path)
    run = tmp_path / "run"
    opts = sets("train.steps=6", "store.every=2", "store.shard_mb=0")
    code, _, err = cli("record", cfg, "--out", run, "--quiet", *opts)
    assert code == 0, err
    manifest = json.loads((run / MANIFEST).read_text())
    for key in ("stop", "stop_patience_epochs", "stop_tolerance"):
        del manifest["config"]["train"][key]
    manifest["shards"] = manifest["shards"][:2]
    manifest["status"], manifest["last_step"] = "interrupted", manifest["shards"][-1]["last_step"]
    write_manifest(run, manifest)
    code, _, err = cli("record", cfg, "--out", run, "--quiet", *opts, "--set", "train.lr=0.0123", "--resume")
    assert code == 2 and "another configuration" in err
    code, _, err = cli("record", cfg, "--out", run, "--quiet", *opts, "--resume")
    assert code == 0, err
    assert json.loads((run / MANIFEST).read_text())["status"] == "complete"
