"""The trajectory store: determinism of the recorded bytes, stride / log-spaced storage, shard cutting,
reading back (Trajectory) and `telecli verify` on sound and damaged runs.

Runs here are tiny (poly task, 3-layer MLP of width 12, float64) and recorded in-process; the CLI is
driven through its real entry point ``telecli.cli:main`` (which maps TelecliError to exit code 2).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from telecli import config as config_mod
from helpers import cli, run_hashes, sets, write_cfg  # noqa: E402
from telecli.errors import IntegrityError, TelecliError
from telecli.store.trajectory import DATA, MANIFEST, SHARD_DIR, Trajectory, stored_steps
from telecli.store.verify import verify_run
from telecli.train.loop import BatchOrder, build, run_training
from telecli.train.optim import learning_rate

N_PARAMS = 6 * 12 + 12 + 12 * 12 + 12 + 12 + 1  # 253


pytestmark = pytest.mark.usefixtures("single_thread")


def record(tmp_path: Path, name: str, *overrides: str) -> Path:
    cfg = write_cfg(tmp_path)
    run = tmp_path / name
    code, _, err = cli("record", cfg, "--out", run, "--quiet", *sets(*overrides))
    assert code == 0, err
    return run


# ----------------------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_files_other_seed_differs(tmp_path):
    opts = ("train.momentum=0.9", "store.shard_mb=0.01")
    a = record(tmp_path, "a", *opts)
    b = record(tmp_path, "b", *opts)
    c = record(tmp_path, "c", *opts, "seed=1")
    ha, hb, hc = run_hashes(a), run_hashes(b), run_hashes(c)
    assert len([k for k in ha if k.startswith("trajectory/")]) >= 3  # several shards compared
    assert ha == hb
    assert (a / MANIFEST).read_bytes() == (b / MANIFEST).read_bytes()
    # Another training seed: other θ_0 and data order → every shard differs; the data do not (task.seed).
    shards = [k for k in ha if k.startswith("trajectory/")]
    assert set(shards) == {k for k in hc if k.startswith("trajectory/")}
    assert all(ha[k] != hc[k] for k in shards)
    assert ha[MANIFEST] != hc[MANIFEST]
    assert ha[DATA] == hc[DATA]
    t0a, t0c = Trajectory(a).theta(0), Trajectory(c).theta(0)
    assert t0a.keys() == t0c.keys() and not any(torch.equal(t0a[k], t0c[k]) for k in t0a if t0a[k].dim() == 2)


# ------------------------------------------------------------------------------------ stride, log, shards


def test_stored_steps_schedules():
    assert stored_steps(23, every=5) == [0, 5, 10, 15, 20, 23]
    assert stored_steps(20, every=5) == [0, 5, 10, 15, 20]
    assert stored_steps(4) == [0, 1, 2, 3, 4]
    # round(10^(2i/9)) for i = 0..9 is 1 2 3 5 8 13 22 36 60 100; 0 is always stored.
    assert stored_steps(100, log_points=10) == [0, 1, 2, 3, 5, 8, 13, 22, 36, 60, 100]


def _check_meta_continuous(traj: Trajectory, cfg, T: int) -> None:
    meta = traj.meta()
    np.testing.assert_array_equal(meta["step"], np.arange(1, T + 1))
    np.testing.assert_array_equal(meta["lr"], [learning_rate(cfg.train, t) for t in range(1, T + 1)])
    assert np.isfinite(meta["loss"]).all()
    order = BatchOrder(traj.manifest["data"]["n_train"], cfg.train.batch_size, cfg.seed)
    for row, t in enumerate(range(1, T + 1)):
        np.testing.assert_array_equal(traj.batch(meta, row), order(t))


@pytest.mark.parametrize(
    "store, steps, expect",
    [
        ("store.every=5", 23, [0, 5, 10, 15, 20, 23]),
        ("store.log_points=10", 100, [0, 1, 2, 3, 5, 8, 13, 22, 36, 60, 100]),
    ],
)
def test_stride_and_log_spaced_storage(tmp_path, store, steps, expect):
    # Small shards: the per-step records of unstored steps must survive shard boundaries too.
    overrides = [store, f"train.steps={steps}", "store.shard_mb=0.005"]
    run = record(tmp_path, "run", *overrides)
    cfg = config_mod.load(write_cfg(tmp_path), overrides)
    traj = Trajectory(run)
    assert traj.steps.tolist() == expect
    assert len(traj.shards) >= 2 and not traj.is_contiguous()
    _check_meta_continuous(traj, cfg, steps)
    assert verify_run(run) == ([], [])
    # θ at stored steps equals an every-step recording of the same configuration.
    full = Trajectory(record(tmp_path, "full", f"train.steps={steps}"))
    assert full.is_contiguous() and full.steps.tolist() == list(range(steps + 1))
    for s in expect:
        a, b = traj.theta(s), full.theta(s)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for k in ("step", "lr", "loss", "batch"):
        np.testing.assert_array_equal(traj.meta()[k], full.meta()[k])
    missing = next(s for s in range(steps) if s not in expect)
    with pytest.raises(TelecliError, match=f"step {missing} is not stored"):
        traj.theta(missing)


def test_shards_are_cut_by_size_and_iter_states_streams(tmp_path):
    shard_mb = 0.01
    run = record(tmp_path, "run", "train.optimizer=\"adamw\"", "train.lr=0.01", f"store.shard_mb={shard_mb}")
    traj = Trajectory(run)
    m = traj.manifest
    per_step = N_PARAMS * 8 * 3  # θ, exp_avg, exp_avg_sq in float64
    assert sum(int(np.prod(p["shape"])) for p in m["parameters"]) == N_PARAMS
    assert m["steps_per_shard"] == int(shard_mb * 2**20 // per_step) == 1
    assert m["optimizer_state"] == ["exp_avg", "exp_avg_sq"]
    assert [s.stored for s in traj.shards] == [m["steps_per_shard"]] * 21
    assert [(s.first_step, s.last_step) for s in traj.shards][:3] == [(0, 0), (1, 1), (2, 2)]
    assert traj.complete and traj.last_step == 20
    streamed = list(traj.iter_states())
    assert [s for s, _ in streamed] == list(range(21))
    for s, theta in streamed:
        one = traj.theta(s)
        assert theta.keys() == one.keys() and all(torch.equal(theta[k], one[k]) for k in theta)
    assert [s for s, _ in traj.iter_states([3, 7, 8, 20])] == [3, 7, 8, 20]
    opt = dict(traj.iter_states([5], prefix="opt."))[5]
    assert set(opt) == {f"{n}.{k}" for n in traj.param_names for k in ("exp_avg", "exp_avg_sq")} | {"step"}
    assert float(opt["step"]) == 5.0
    # θ_t streamed back equals a replay of the same training in memory.
    cfg = config_mod.load(write_cfg(tmp_path), ["train.optimizer=\"adamw\"", "train.lr=0.01"])
    setup = build(cfg, torch.device("cpu"))
    for k, v in setup.model.named_parameters():
        assert torch.equal(v.detach(), streamed[0][1][k])
    data = traj.data()
    assert torch.equal(data["x_train"], setup.x_train) and torch.equal(data["y_test"], setup.y_test)


def test_full_batch_run_stores_no_batch_indices(tmp_path):
    run = record(tmp_path, "run", "train.batch_size=0", "train.steps=5")
    traj = Trajectory(run)
    meta = traj.meta()
    assert traj.manifest["full_batch"] and "batch" not in meta
    np.testing.assert_array_equal(traj.batch(meta, 0), np.arange(40))
    assert verify_run(run) == ([], [])


# ----------------------------------------------------------------------------------------------- verify


@pytest.fixture(scope="module")
def sound_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sound")
    with _threads(1):
        return record(folder, "run", "train.momentum=0.9", "store.shard_mb=0.01")


@contextlib.contextmanager
def _threads(n):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def test_verify_sound_run(sound_run):
    code, out, err = cli("verify", sound_run)
    assert code == 0, err
    assert "sound" in out and err == ""
    assert len(Trajectory(sound_run, check_hashes=True).shards) >= 3


def _flip(path: Path, offset: int) -> None:
    blob = bytearray(path.read_bytes())
    blob[offset] ^= 0x01
    path.write_bytes(bytes(blob))


def _damage(run: Path, how: str) -> str:
    shard = run / SHARD_DIR / "shard-000001.safetensors"
    if how == "flip-data":
        _flip(shard, shard.stat().st_size - 3)  # inside a tensor: sizes and header still valid
        return "trajectory/shard-000001.safetensors"
    if how == "flip-header":
        _flip(shard, 20)
        return "trajectory/shard-000001.safetensors"
    if how == "truncate":
        shard.write_bytes(shard.read_bytes()[:-100])
        return "trajectory/shard-000001.safetensors"
    if how == "delete":
        shard.unlink()
        return "trajectory/shard-000001.safetensors"
    if how == "data":
        _flip(run / DATA, (run / DATA).stat().st_size - 5)
        return DATA
    if how == "unlisted":
        shutil.copy(shard, run / SHARD_DIR / "shard-000999.safetensors")
        return "trajectory/shard-000999.safetensors"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["flip-data", "flip-header", "truncate", "delete", "data", "unlisted"])
def test_verify_names_the_damaged_file(tmp_path, sound_run, how):
    run = tmp_path / "run"
    shutil.copytree(sound_run, run)
    name = _damage(run, how)
    code, out, err = cli("verify", run)
    assert code != 0
    assert name in err, err
    assert "sound" not in out
    problems, _ = verify_run(run)
    assert problems and all(name in p for p in problems), problems


@pytest.mark.parametrize("how", ["flip-data", "truncate", "delete", "data"])
def test_reader_refuses_damaged_files(tmp_path, sound_run, how):
    run = tmp_path / "run"
    shutil.copytree(sound_run, run)
    name = _damage(run, how)
    if how == "data":
        with pytest.raises(IntegrityError, match=DATA):
            Trajectory(run).data()
    elif how == "flip-data":
        Trajectory(run)  # sizes match: the cheap open succeeds, the hash check does not
        with pytest.raises(IntegrityError, match=name):
            Trajectory(run, check_hashes=True)
    else:
        with pytest.raises(IntegrityError, match=name):
            Trajectory(run)


def test_verify_unknown_directory(tmp_path):
    code, _, err = cli("verify", tmp_path / "nothing")
    assert code != 0 and "nothing" in err
    (tmp_path / "empty").mkdir()
    code, _, err = cli("verify", tmp_path / "empty")
    assert code != 0 and MANIFEST in err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / MANIFEST).write_text("{not json")
    code, _, err = cli("verify", tmp_path / "bad")
    assert code != 0 and "corrupt" in err


def test_in_memory_run_record_matches_cli_record(tmp_path):
    """run_training (the library call) and `telecli record` write the same bytes."""
    cli_run = record(tmp_path, "cli", "train.steps=6")
    cfg = config_mod.load(write_cfg(tmp_path), ["train.steps=6"])
    lib_run = run_training(cfg, tmp_path / "lib", progress=False)
    assert run_hashes(cli_run) == run_hashes(lib_run)
    assert json.loads((lib_run / MANIFEST).read_text())["status"] == "complete"


# ------------------------------------------------------------------------------------- shard format


def test_shard_bytes_are_those_of_safetensors_save(tmp_path, sound_run):
    """The writer lays shards out itself (no copy of the tensors); the bytes equal safetensors' own."""
    from safetensors import safe_open
    from safetensors.torch import save as st_save

    from telecli.store.trajectory import _serialize, _view

    for s in Trajectory(sound_run).shards:
        path = sound_run / s.file
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        assert st_save(tensors) == path.read_bytes()
    g = torch.Generator().manual_seed(0)
    odd = {
        "b.f32": torch.randn(3, 2, generator=g), "a.f64": torch.randn(5, dtype=torch.float64, generator=g),
        "bf16": torch.randn(4, generator=g).to(torch.bfloat16), "f16": torch.randn(2, 2, generator=g).half(),
        "i64.scalar": torch.tensor(7), "i32": torch.arange(3, dtype=torch.int32), "i16": torch.arange(2).short(),
        "i8": torch.tensor([-1, 2], dtype=torch.int8), "u8": torch.arange(5, dtype=torch.uint8),
        "mask": torch.tensor([True, False, True]), "empty": torch.zeros(0, 3, dtype=torch.float64),
        "Z.upper": torch.ones(1), "ünïcode": torch.ones(2, dtype=torch.float64),
    }
    header, pieces = _serialize(odd)
    assert header + b"".join(bytes(_view(p)) for p in pieces) == st_save(odd)
    other = {"f8": torch.tensor([0.5, -2.0, 1.0]).to(torch.float8_e4m3fn), "x": torch.ones(2)}  # not in the table
    header, pieces = _serialize(other)
    assert header == b"" and header + b"".join(bytes(_view(p)) for p in pieces) == st_save(other)


def test_float32_run_round_trips(tmp_path):
    run = record(tmp_path, "run", 'dtype="float32"', "train.steps=5", "store.shard_mb=0.002")
    traj = Trajectory(run, check_hashes=True)
    assert traj.manifest["dtype"] == "float32" and len(traj.shards) >= 2
    theta = traj.theta(5)
    assert all(v.dtype == torch.float32 for v in theta.values())
    assert verify_run(run) == ([], [])


def test_writer_failure_is_raised_and_leaves_a_valid_prefix(tmp_path, monkeypatch):
    """A shard write that fails (disk full, …) in the background is raised in the training loop; the run on
    disk stays the prefix written before it (sound, resumable)."""
    import telecli.store.trajectory as trajectory_mod

    cfg = config_mod.load(write_cfg(tmp_path), ["store.shard_mb=0.005", "train.steps=30"])
    real = trajectory_mod.atomic_write_chunks
    calls = {"n": 0}

    def flaky(path, chunks):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError(28, "No space left on device")
        return real(path, chunks)

    monkeypatch.setattr(trajectory_mod, "atomic_write_chunks", flaky)
    with pytest.raises(OSError, match="No space left"):
        run_training(cfg, tmp_path / "run", progress=False)
    traj = Trajectory(tmp_path / "run", check_hashes=True)
    assert len(traj.shards) == 3 and traj.manifest["status"] == "running"
    assert verify_run(tmp_path / "run")[0] == []
    monkeypatch.setattr(trajectory_mod, "atomic_write_chunks", real)
    run_training(cfg, tmp_path / "run", resume=True, progress=False)
    full = run_training(cfg, tmp_path / "full", progress=False)
    assert run_hashes(tmp_path / "run") == run_hashes(full)
