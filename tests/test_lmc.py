"""telecli lmc (method.md §5): spawn, interpolate, gradients, the figure, the presets.

* α = 0 and α = 1 reproduce the children exactly; a network linear in its parameters (fixed random
  features + linear readout, squared loss) has no loss barrier and identical weight-average and
  ensemble predictions (Eq. 10 holds with equality).
* On the small preset (sample_runs/lmc-small.toml, float64, seed 0, pair 0, exactly as shipped) the
  barrier shrinks from t' = 0 to t' = 20 and the output layer's gradient change falls. Measured here:
  loss barrier 0.0865 → 0.0013, accuracy barrier 0.0178 → 0.0052, max prediction gap 0.94 → 0.060,
  gradient change of the output layer 6.9e-3 → 3.0e-4 (the thresholds below leave 2–4× margin).
* ``lmc spawn`` SIGKILLed once a child is complete resumes to the same children bit for bit; the
  gradient metric matches per-example autograd; BatchNorm statistics are interpolated or re-estimated;
  bad inputs exit with code 2 and one line.

Everything runs on one thread (two shared cores); the CLI is driven in-process through
``telecli.cli:main`` except where a process must be killed.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from telecli import config as config_mod
from helpers import assert_one_line_error, cli  # noqa: E402
from telecli.lens import lmc as lens
from telecli.jobs import lmc as pipe
from telecli.jobs.common import rebuild_network
from telecli.store.trajectory import Trajectory
from telecli.store.verify import verify_run
from telecli.train.loop import run_training

SAMPLE = Path(__file__).resolve().parent.parent / "sample_runs"
SMALL = SAMPLE / "lmc-small.toml"
KILL_AFTER = Path(__file__).with_name("kill_after.py")  # SIGKILL after the N-th results checkpoint
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("single_thread")


def ok(*args) -> str:
    code, out, err = cli(*args)
    assert code == 0, err
    return out


def read(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path) as f:
        out = {}
        f.visititems(lambda n, o: out.__setitem__(n, o[...]) if isinstance(o, h5py.Dataset) else None)
        return out


def strings(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def final_theta(run: Path) -> dict[str, torch.Tensor]:
    tr = Trajectory(run)
    return tr.theta(tr.last_step)


def tiny(tmp: Path, name: str, model: dict, steps: int = 12, **train) -> Path:
    """A tiny `telecli record` run on digits 3 vs 5 (squared loss, SGD with momentum, every step stored)."""
    cfg = config_mod.from_dict({"name": name, "device": "cpu", "task": {"name": "digits", "classes": [3, 5]},
                                "model": model, "train": {"loss": "mse", "optimizer": "sgd", "lr": 0.2,
                                                          "momentum": 0.5, "batch_size": 64, "steps": steps, **train}})
    return run_training(cfg, tmp / name, progress=False)


# ------------------------------------------------------------------------------------ the small preset

@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The small preset as shipped: parent (600 steps), one pair at t' = 0 and at t' = 20, interpolated."""
    root = tmp_path_factory.mktemp("lmc-small")
    parent = root / "parent"
    ok("record", SMALL, "--out", parent, "--quiet", "--device", "cpu")
    ok("lmc", "spawn", parent, "--at", "0,20", "--quiet", "--device", "cpu")
    spawn = root / "parent-lmc"
    ok("lmc", "interpolate", spawn, "--quiet", "--device", "cpu")
    return SimpleNamespace(root=root, parent=parent, spawn=spawn, results=spawn / "lmc.h5")


def test_small_preset_barrier_shrinks_as_output_gradients_settle(small):
    d = read(small.results)
    assert d["spawn_steps"].tolist() == [0, 20] and d["pairs"].tolist() == [1, 1]
    assert d["alpha"].shape == (30,) and d["alpha"][0] == 0.0 and d["alpha"][-1] == 1.0
    assert d["curves/weight_acc"].shape == (2, 1, 30)
    assert (d["children/acc"] > 0.85).all()  # the children learned (≈ 0.93)
    loss_b, acc_b = d["metrics/loss_barrier"][:, 0], d["metrics/acc_barrier"][:, 0]
    gap = d["metrics/prediction_gap_max"][:, 0]
    head = strings(d["gradients/layers"]).index("head")
    assert strings(d["gradients/kind"])[head] == "linear"
    grad = d["gradients/change"][:, head]
    assert loss_b[0] > 0.03 and loss_b[1] < 0.1 * loss_b[0], loss_b  # 0.0865 → 0.0013
    assert acc_b[0] > 0.01 and acc_b[1] < 0.6 * acc_b[0], acc_b  # 0.0178 → 0.0052
    assert gap[1] < 0.2 * gap[0], gap  # 0.94 → 0.060
    assert grad[0] > 2e-3 and grad[1] < 0.1 * grad[0], grad  # 6.9e-3 → 3.0e-4
    # summaries over the (single) pair; the App. C.3 reading (α = 0.5) agrees in sign
    assert np.array_equal(d["summary/acc_barrier_mean"], acc_b) and np.isnan(d["summary/acc_barrier_se"]).all()
    assert d["metrics/acc_gap_mid"][0, 0] > 0
    with h5py.File(small.results) as f:
        assert f.attrs["format"] == "telecli-lmc" and f.attrs["gradient_delta"] == 9  # 1258 // 128
        assert json.loads(f.attrs["config"])["name"] == "lmc-small"


def test_endpoints_reproduce_the_children_exactly(small):
    d = read(small.results)
    row = 1  # t' = 20
    a, b = small.spawn / "t20/pair0/a", small.spawn / "t20/pair0/b"
    th_a, th_b = final_theta(a), final_theta(b)
    stack = lens.interpolate(th_a, th_b, torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64))
    for name in th_a:
        assert torch.equal(stack[name][0], th_b[name]) and torch.equal(stack[name][2], th_a[name])
        assert not torch.equal(stack[name][1], th_a[name])
    traj = Trajectory(a)
    model = rebuild_network(traj, CPU)
    data = traj.data()
    x, y = data["x_test"][torch.as_tensor(d["test/index"])], torch.as_tensor(d["test/targets"])
    for col, th, side in ((-1, th_a, 0), (0, th_b, 1)):
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(th[n])
            f = model(x)
        loss, acc = float(lens.losses(f, y, "ce")), float(lens.accuracies(f, y, "ce"))
        for kind in ("weight", "mean", "ensemble"):
            assert abs(d[f"curves/{kind}_loss"][row, 0, col] - loss) < 1e-12
            assert d[f"curves/{kind}_acc"][row, 0, col] == acc
        assert d["curves/prediction_gap"][row, 0, col] == 0.0
        assert abs(d["children/loss"][row, 0, side] - loss) < 1e-12 and d["children/acc"][row, 0, side] == acc
    assert strings(d["children/dir"][row, 0]) == ["t20/pair0/a", "t20/pair0/b"]
    seeds = d["children/seed"][row, 0]
    assert seeds.tolist() == [pipe.child_seed(0, 20, 0, "a"), pipe.child_seed(0, 20, 0, "b")]
    assert seeds[0] != seeds[1]


def test_children_are_ordinary_runs_that_share_the_parents_data(small):
    index = json.loads((small.spawn / "spawn.json").read_text())
    assert index["format"] == "telecli-lmc-spawn" and len(index["children"]) == 4
    assert (small.spawn / index["parent"]).resolve() == small.parent.resolve()
    child = small.spawn / "t20/pair0/b"
    assert verify_run(child) == ([], [])
    m = json.loads((child / "run.json").read_text())
    assert m["parent"]["at"] == 20 and m["first_step"] == 20 and m["last_step"] == 600
    assert os.path.samefile(child / "data.safetensors", small.parent / "data.safetensors")  # hard link
    cfg = config_mod.load(SMALL)
    assert m["config"]["train"] == cfg.to_dict()["train"]  # training unchanged; only seed, name, store differ
    assert m["config"]["seed"] == pipe.child_seed(0, 20, 0, "b")


def test_two_runs_give_one_pair_with_its_spawn_step(small, tmp_path):
    a, b = small.spawn / "t20/pair0/a", small.spawn / "t20/pair0/b"
    out = tmp_path / "pair.h5"
    ok("lmc", "interpolate", a, b, "--out", out, "--alpha", "0:1:30", "--quiet")
    one, ref = read(out), read(small.results)
    assert one["spawn_steps"].tolist() == [20]
    for name in ("curves/weight_loss", "curves/ensemble_acc", "metrics/acc_barrier", "gradients/change"):
        assert np.array_equal(one[name][0], ref[name][1]), name


def test_gradient_change_matches_autograd(small):
    """Δ^grad_L (§5.2) against per-example autograd gradients of every logit, both reductions."""
    traj = Trajectory(small.parent)
    model = rebuild_network(traj, CPU)
    layers = lens.layer_groups(model)
    assert [(l.name, l.kind) for l in layers] == [("features.0", "conv"), ("features.2", "conv"), ("head", "linear")]
    data = traj.data()
    x, y = data["x_test"][:4], data["y_test"][:4]
    th1, th2 = traj.theta(20), traj.theta(29)
    got_mean = lens.gradient_change(model, th1, {}, th2, {}, x, layers, "mean")
    got_true = lens.gradient_change(model, th1, {}, th2, {}, x, layers, "true", y)

    def grads(theta, i, c):
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(theta[n])
        model.zero_grad()
        model(x[i : i + 1])[0, c].backward()
        return {n: p.grad.detach().clone() for n, p in model.named_parameters()}

    for i in range(4):
        per_c = []
        for c in range(10):
            g1, g2 = grads(th1, i, c), grads(th2, i, c)
            per_c.append([sum(float(((g2[n] - g1[n]) ** 2).sum()) for n in l.params) / l.size for l in layers])
        per_c = np.array(per_c)
        assert np.allclose(got_mean[i].numpy(), per_c.mean(axis=0), rtol=1e-10, atol=0)
        assert np.allclose(got_true[i].numpy(), per_c[int(y[i].argmax())], rtol=1e-10, atol=0)


def test_lmc_figure_draws_barriers_and_gradient_change(small, tmp_path):
    from telecli.plots import lmc as lmc_plot

    grads = tmp_path / "grads.h5"
    ok("lmc", "gradients", small.parent, "--at", "0,10,20,50", "--out", grads, "--points", "32", "--quiet")
    g = read(grads)
    assert g["spawn_steps"].tolist() == [0, 10, 20, 50] and g["gradients/change"].shape == (4, 3)
    with h5py.File(small.results) as f, h5py.File(grads) as f2:
        for out in (tmp_path / "lmc.png", tmp_path / "lmc.svg"):
            lmc_plot.draw([f, f2], out, labels=["random init", "gradients only"])
            assert out.stat().st_size > 5000
    code, out, err = cli("plot", small.results, "--figure", "lmc", "--out", tmp_path / "cli.png")
    assert code == 0 and (tmp_path / "cli.png").is_file(), err


# ------------------------------------------------------------------------------- linear in parameters

def test_linear_in_parameters_has_no_barrier(tmp_path):
    """f_θ = θ_Wᵀ tanh(Ax + c) + θ_b: f_{θ_α} = αf_A + (1−α)f_B, so weight average and ensemble agree and
    the (convex) squared loss has no barrier."""
    run = tiny(tmp_path, "features", {"name": "features", "width": 40}, steps=20)
    spawn = tmp_path / "spawn"
    ok("lmc", "spawn", run, "--at", "0,5", "--out", spawn, "--quiet", "--shard", "0/2")  # two jobs share the children
    assert sorted(p.parent.relative_to(spawn).as_posix() + "/" + p.name for p in spawn.glob("t*/pair*/*")) == \
        ["t0/pair0/a", "t5/pair0/a"]
    ok("lmc", "spawn", run, "--at", "0,5", "--out", spawn, "--quiet", "--shard", "1/2")
    ok("lmc", "interpolate", spawn, "--alpha", "0:1:11", "--quiet")
    d = read(spawn / "lmc.h5")
    wl, el, ml = d["curves/weight_loss"], d["curves/ensemble_loss"], d["curves/mean_loss"]
    assert np.abs(wl - ml).max() > 1e-4  # the children differ
    assert np.abs(wl - el).max() < 1e-12
    assert np.array_equal(d["curves/weight_acc"], d["curves/ensemble_acc"])
    assert d["curves/prediction_gap"].max() < 1e-12 and d["metrics/prediction_gap_max"].max() < 1e-12
    assert np.abs(d["metrics/loss_barrier"]).max() < 1e-12
    assert d["gradients/change"].max() < 1e-24  # ∂f/∂θ does not depend on θ


# --------------------------------------------------------------------------------------------- resume

def _status(run: Path) -> str:
    try:
        return json.loads((run / "run.json").read_text()).get("status", "")
    except (FileNotFoundError, json.JSONDecodeError):
        return ""


def _shards(run: Path) -> int:
    try:
        return len(json.loads((run / "run.json").read_text())["shards"])
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def _hashes(run: Path) -> dict[str, str]:
    return {p.relative_to(run).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file()}


def test_spawn_resumes_after_sigkill(small, tmp_path):
    """SIGKILL a real `telecli lmc spawn` once child a is complete and child b is part-way (a stored
    checkpoint past its start); rerunning skips a, resumes b, and both equal an uninterrupted spawn."""
    out = tmp_path / "spawn"
    a, b = out / "t20/pair0/a", out / "t20/pair0/b"
    args = [sys.executable, "-m", "telecli", "lmc", "spawn", str(small.parent), "--at", "20", "--out", str(out),
            "--quiet", "--device", "cpu"]
    proc = subprocess.Popen(args, env=SUBPROCESS_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if _status(a) == "complete" and _shards(b) >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.003)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "spawn finished before it could be killed"
    assert _status(b) == "running" and _status(a) == "complete"
    before = _hashes(a)
    ok("lmc", "spawn", small.parent, "--at", "20", "--out", out, "--quiet", "--device", "cpu")
    assert _hashes(a) == before  # skipped, untouched
    for side, run in (("a", a), ("b", b)):
        ref = final_theta(small.spawn / f"t20/pair0/{side}")
        got = final_theta(run)
        assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref), side
    assert verify_run(b) == ([], [])
    # a further rerun has nothing to do; asking for more pairs adds them to the index
    index = json.loads((out / "spawn.json").read_text())
    assert [c["dir"] for c in index["children"]] == ["t20/pair0/a", "t20/pair0/b"]


def test_interpolate_resumes_after_kill(small, tmp_path):
    """SIGKILL `lmc interpolate` after its first spawn step (results-file fault injection); the rerun
    continues the partial file and writes the same results as the uninterrupted run."""
    out = tmp_path / "lmc.h5"
    args = ["lmc", "interpolate", small.spawn, "--out", out, "--quiet", "--device", "cpu"]
    r = subprocess.run([sys.executable, str(KILL_AFTER), "1", *map(str, args)], env=SUBPROCESS_ENV)
    assert r.returncode == -signal.SIGKILL
    assert not out.exists() and out.with_name("lmc.h5.partial").is_file()
    ok(*args)
    got, ref = read(out), read(small.results)
    assert got.keys() == ref.keys()
    for name in ref:
        if ref[name].dtype.kind == "f":
            assert np.array_equal(got[name], ref[name], equal_nan=True), name
        else:
            assert np.array_equal(got[name], ref[name]), name


# ------------------------------------------------------------------------------------------ BatchNorm

def test_recompute_batchnorm_is_the_cumulative_average_of_batch_statistics():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 36, 2)).double()
    net.eval()
    params = {n: p.detach() for n, p in net.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in net.named_buffers()}
    x = torch.randn(50, 1, 8, 8, dtype=torch.float64)
    new = lens.recompute_batchnorm(net, params, buffers, x, 16)  # batches 16, 16, 16, 2
    assert torch.equal(buffers["1.running_mean"], net[1].running_mean)  # input not modified
    assert net[1].momentum == 0.1 and not net.training
    with torch.no_grad():
        h = [net[0](x[i : i + 16]) for i in range(0, 50, 16)]
    mean = torch.stack([z.mean(dim=(0, 2, 3)) for z in h]).mean(0)
    var = torch.stack([z.transpose(0, 1).reshape(3, -1).var(dim=1, unbiased=True) for z in h]).mean(0)
    assert torch.allclose(new["1.running_mean"], mean, rtol=1e-12, atol=1e-14)
    assert torch.allclose(new["1.running_var"], var, rtol=1e-12, atol=1e-14)
    assert int(new["1.num_batches_tracked"]) == 4


def test_batchnorm_network_interpolate_and_recompute(tmp_path):
    """ResNet-20 (BatchNorm) on digits: both --bn modes keep the children at α = 0, 1 and differ inside."""
    cfg = config_mod.from_dict({"name": "bn", "device": "cpu", "dtype": "float32",
                                "task": {"name": "digits", "classes": [], "one_hot": True, "flatten": False,
                                         "n_train": 192, "n_test": 64},
                                "model": {"name": "resnet20"},
                                "train": {"loss": "ce", "optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
                                          "batch_size": 64, "steps": 5}})
    run = run_training(cfg, tmp_path / "bn", progress=False)
    spawn = tmp_path / "spawn"
    ok("lmc", "spawn", run, "--at", "2", "--out", spawn, "--quiet")
    files = {}
    for mode in ("interpolate", "recompute"):
        files[mode] = read(Path(pipe.run_interpolate([spawn], spawn / f"{mode}.h5", alpha="0:1:5", bn=mode,
                                                     gradients=True, grad_points=2, progress=False)))
    batched = read(Path(pipe.run_interpolate([spawn], spawn / "vmap.h5", alpha="0:1:5", gradients=False,
                                             batched=True, progress=False)))  # one vmap over the α stack
    i, r = files["interpolate"], files["recompute"]
    assert np.allclose(batched["curves/weight_loss"], i["curves/weight_loss"], rtol=1e-5, atol=1e-6)
    for name in ("curves/weight_loss", "curves/weight_acc"):
        assert np.array_equal(i[name][..., [0, -1]], r[name][..., [0, -1]])
    assert np.abs(i["curves/weight_loss"][..., 1:-1] - r["curves/weight_loss"][..., 1:-1]).max() > 1e-6
    kinds = strings(i["gradients/kind"])
    assert kinds.count("batchnorm") == 19 and kinds.count("conv") == 19 and kinds[-1] == "linear"
    assert np.isfinite(i["gradients/change"]).all()


# ---------------------------------------------------------------------------------------- bad inputs

def test_bad_inputs_exit_2_with_one_line(small, tmp_path):
    out = tmp_path / "x"
    code, _, err = cli("lmc", "spawn", small.parent, "--at", "0,700", "--out", out)
    assert_one_line_error(code, err, "spawn step 700", "beyond", "600")
    code, _, err = cli("lmc", "spawn", small.parent, "--at", "3", "--out", out)
    assert_one_line_error(code, err, "spawn step 3 is not stored", "store.steps")
    code, _, err = cli("lmc", "spawn", small.parent, "--at", "x1", "--out", out)
    assert_one_line_error(code, err, "--at")
    assert not out.exists()
    code, _, err = cli("lmc", "spawn", small.parent, "--at", "20", "--out", small.spawn, "--every", "7")
    assert_one_line_error(code, err, "--every 60")
    w10 = tiny(tmp_path, "w10", {"name": "features", "width": 10}, steps=2)
    w12 = tiny(tmp_path, "w12", {"name": "features", "width": 12}, steps=2)
    code, _, err = cli("lmc", "interpolate", w10, w12, "--out", tmp_path / "r.h5")
    assert_one_line_error(code, err, "different architectures", "readout.weight")
    assert not (tmp_path / "r.h5").exists()
    code, _, err = cli("lmc", "interpolate", small.spawn, "--alpha", "1:0:5", "--out", tmp_path / "r.h5")
    assert_one_line_error(code, err, "--alpha")
    code, _, err = cli("lmc", "interpolate", w10, "--out", tmp_path / "r.h5")
    assert_one_line_error(code, err, "two runs")
    code, _, err = cli("lmc", "interpolate", small.spawn, "--delta", "4", "--out", tmp_path / "r.h5")
    assert_one_line_error(code, err, "not stored", "--no-gradients")
    code, _, err = cli("lmc", "interpolate", small.spawn)  # exists
    assert_one_line_error(code, err, "already exists", "--overwrite")
    other = tiny(tmp_path, "other", {"name": "features", "width": 10}, steps=2, lr=0.1)
    code, _, err = cli("lmc", "spawn", other, "--at", "0", "--out", small.spawn)
    assert_one_line_error(code, err, "another run")


# ------------------------------------------------------------------------------------------- presets

def test_presets_store_spawn_steps_and_one_epoch_later():
    small = config_mod.load(SMALL)
    spawn = [0, 1, 2, 5, 10, 20, 50, 100, 200, 300]
    assert small.dtype == "float64" and small.model.name == "cnn" and small.task.name == "digits"
    assert (small.train.momentum, small.train.lr, small.train.batch_size, small.train.milestones) == (0.9, 0.1, 128, [300, 450])
    assert set(spawn) | {t + 9 for t in spawn} <= set(small.store.steps) | set(range(0, 601, small.store.every))
    paper = config_mod.load(SAMPLE / "paper/lmc-resnet20.toml")
    spawn = [0, 4, 25, 50, 100, 224, 500, 1000, 2000, 4472, 10000, 25100]
    assert paper.name == "lmc-resnet20-paper" and paper.model.name == "resnet20" and paper.task.name == "cifar10"
    assert (paper.train.steps, paper.train.batch_size, paper.train.momentum, paper.train.lr) == (63000, 128, 0.9, 0.1)
    assert (paper.train.milestones, paper.train.decay, paper.train.weight_decay, paper.train.augment) == \
        ([32000, 48000], 0.1, 1e-4, True)
    assert set(spawn) | {t + 390 for t in spawn} <= set(paper.store.steps)
    pre = config_mod.load(SAMPLE / "paper/lmc-svhn-pretrain.toml")
    assert (pre.task.name, pre.train.steps, pre.train.milestones, pre.train.decay) == ("svhn", 30000, [15000, 25000], 0.2)
    ft = config_mod.load(SAMPLE / "paper/lmc-resnet20-svhn.toml")
    assert (ft.train.steps, ft.train.milestones, ft.train.decay) == (12800, [6400, 9600], 0.2)
    assert ft.model.factory == "telecli.models.pretrained:pretrained"
    assert {t for t in spawn if t <= 12800} | {t + 390 for t in spawn if t <= 12800} <= set(ft.store.steps)
