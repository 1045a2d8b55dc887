"""The transformer of method.md §10.2 through the lens.

* Tangent kernels: every strategy (structured, ntk-vp, jacobian, auto) against autograd's per-example
  gradients, contracted, to 1e-10 in float64 — one block without LayerNorm (Nanda et al.) and two blocks
  with it, all parameters or the unembedding only. The structured plan needs no fallback: attention is
  built from Linear layers, so the Linear (over positions), Embedding and LayerNorm rules cover it.
* Telescoping is exact (1e-10) on a transformer whose trainable part is linear (only the unembedding
  trained; the rest frozen and kept by the Recorder), with AdamW and gaps in storage (replayed).
* End to end: record → telescope --effective-params (sketched p) → plot complexity on a tiny run.
"""

from __future__ import annotations

import time

import h5py
import numpy as np
import pytest
import torch

from helpers import cli, write_cfg
from telecli import config
from telecli.jobs.telescope import run_telescope
from telecli.lens import kernels
from telecli.models import build
from telecli.store.trajectory import Trajectory
from telecli.train.loop import run_training

TOL = 1e-10


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    yield


def _net(blocks=1, layernorm=False, trainable=()):
    torch.manual_seed(0)
    net = build("transformer", [3], 7, d_model=8, heads=2, d_mlp=12, blocks=blocks, layernorm=layernorm,
                trainable=list(trainable))
    return net.to(torch.float64).eval()


def _autograd_kernel(net, x1, x2):
    params = [p for p in net.parameters() if p.requires_grad]

    def grads(x):
        out = net(x)
        rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(out[a, i], params, retain_graph=True)])
                for a in range(out.shape[0]) for i in range(out.shape[1])]
        return torch.stack(rows).view(out.shape[0], out.shape[1], -1)

    return torch.einsum("aip,bjp->abij", grads(x1), grads(x2))


@pytest.mark.parametrize("blocks,layernorm,trainable", [(1, False, ()), (2, True, ()), (1, False, ("unembed",)),
                                                        (2, True, ("blocks.1", "ln_f"))])
def test_kernels_match_autograd(blocks, layernorm, trainable):
    net = _net(blocks, layernorm, trainable)
    g = torch.Generator().manual_seed(1)
    x1 = torch.randint(0, 8, (5, 3), generator=g).double()
    x2 = torch.randint(0, 8, (4, 3), generator=g).double()
    ref = _autograd_kernel(net, x1, x2)
    same = _autograd_kernel(net, x1, x1)
    theta = kernels.trainable_parameters(net)
    assert kernels._candidate_plan(net, theta).fallback == []
    assert kernels._structured_plan(net, kernels._functional(net, {}), theta, x2[:2], 5, 4).fallback == []
    assert kernels.choose_strategy(net, x1, x2) == "structured"
    for strategy in kernels.STRATEGIES:
        K = kernels.tangent_kernel(net, x1, x2, strategy=strategy)
        assert K.shape == (5, 4, 7, 7)
        assert (K - ref).abs().max() <= TOL * max(1.0, float(ref.abs().max())), strategy
        assert (kernels.tangent_kernel(net, x1, strategy=strategy) - same).abs().max() <= TOL * float(same.abs().max())
    J = kernels.jacobian(net, x1)
    assert (torch.einsum("aip,bjp->abij", J, J) - same).abs().max() <= TOL * float(same.abs().max())


def test_token_ids_as_floats():
    net = _net()
    ids = torch.tensor([[0, 6, 7], [3, 2, 7]])
    assert torch.equal(net(ids.double()), net(ids))
    with pytest.raises(Exception, match="multiple of heads"):
        build("transformer", [3], 7, d_model=10, heads=4)
    with pytest.raises(Exception, match="names no parameter"):
        build("transformer", [3], 7, d_model=8, heads=2, trainable=["nope"])


def _read(path):
    with h5py.File(path) as f:
        out = {}
        f.visititems(lambda n, o: out.__setitem__(n, o[...]) if isinstance(o, h5py.Dataset) else None)
        return out


def test_telescoping_is_exact_when_only_the_unembedding_trains(tmp_path):
    """f is linear in θ = the unembedding (the frozen rest is a fixed feature map), so Eq. 5 and the
    smoother are exact; the stored gaps are replayed with the frozen values the Recorder kept."""
    cfg = config.from_dict({
        "task": {"name": "modular", "modulus": 7},
        "model": {"name": "transformer", "d_model": 8, "heads": 2, "d_mlp": 12, "kwargs": {"trainable": ["unembed"]}},
        "train": {"optimizer": "adamw", "lr": 0.05, "weight_decay": 1.0, "betas": [0.9, 0.98], "steps": 12,
                  "schedule": "warmup", "warmup_steps": 3},
        "store": {"log_points": 5}})
    run = run_training(cfg, tmp_path / "run", progress=False)
    traj = Trajectory(run)
    assert [p["name"] for p in traj.manifest["parameters"]] == ["unembed.weight"]
    assert not traj.is_contiguous()
    d = _read(run_telescope(run, effective_params=True, progress=False))
    for split in ("train", "test"):
        actual = d[f"{split}/actual"]
        assert np.abs(actual[-1] - actual[0]).max() > 1e-3  # it did learn
        assert np.abs(d[f"{split}/telescoped"] - actual).max() < TOL
        assert np.abs(d[f"{split}/smoother"] - actual).max() < TOL
        assert d[f"{split}/effective_parameters"][0] == 0 and d[f"{split}/effective_parameters"][-1] > 0
    assert d["parameter_gap"][1:].max() < TOL


TINY = """\
description = "tiny modular run"
name = "modular-tiny"
seed = 0
dtype = "float64"

[task]
name = "modular"
modulus = 7

[model]
name = "transformer"
d_model = 8
heads = 2
d_mlp = 16

[train]
loss = "mse"
optimizer = "adamw"
lr = 1e-2
weight_decay = 1.0
betas = [0.9, 0.98]
steps = 20

[store]
log_points = 8
"""


def test_record_telescope_and_p_end_to_end(tmp_path):
    start = time.perf_counter()
    preset = write_cfg(tmp_path, TINY)
    run = tmp_path / "run"
    code, _, err = cli("record", preset, "--out", run, "--quiet")
    assert code == 0, err
    code, _, err = cli("telescope", run, "--effective-params", "--probes", "8", "--quiet")
    assert code == 0, err
    d = _read(run / "lens.h5")
    for split in ("train", "test"):
        assert d[f"{split}/telescoped"].shape == d[f"{split}/actual"].shape == d[f"{split}/linearized"].shape
        tele = d[f"{split}/approx_error_telescoped"]
        assert np.all(np.isfinite(tele)) and tele[-1] <= d[f"{split}/approx_error_linearized"][-1]
        p = d[f"{split}/effective_parameters"]
        assert p[0] == 0 and np.all(np.isfinite(p)) and p[-1] > 0
        assert np.all(np.isfinite(d[f"{split}/kernel_norm_max"][1:]))
        assert set(k.split("/")[-1] for k in d if k.startswith(f"{split}/components/")) >= {"gradient", "weight_decay"}
    code, out, err = cli("plot", run / "lens.h5", "--figure", "complexity", "--out", tmp_path / "c.png")
    assert code == 0, err
    assert (tmp_path / "c.png").stat().st_size > 0
    assert time.perf_counter() - start < 60


def test_presets_follow_nanda_et_al():
    """method.md §10.2: the paper variant has Nanda et al.'s settings; the small one differs only as its
    comments say; the two small presets differ only in the loss."""
    from pathlib import Path

    sample = Path(__file__).resolve().parent.parent / "sample_runs"
    for stem, loss in (("modular-grokking", "mse"), ("modular-grokking-ce", "ce")):
        c = config.load(sample / "paper" / f"{stem}.toml")
        assert (c.task.name, c.task.modulus, c.task.operation, c.task.train_fraction) == ("modular", 113, "add", 0.3)
        m = c.model
        assert (m.name, m.d_model, m.heads, m.d_mlp, m.blocks, m.activation, m.layernorm) == \
            ("transformer", 128, 4, 512, 1, "relu", False)
        t = c.train
        assert (t.loss, t.optimizer, t.lr, t.weight_decay, t.betas, t.batch_size, t.steps) == \
            (loss, "adamw", 1e-3, 1.0, [0.9, 0.98], 0, 40_000)
    small = [config.load(sample / f"{s}.toml").to_dict() for s in ("modular-grokking", "modular-grokking-ce")]
    for d in small:
        d.pop("name")
        assert d["train"].pop("loss")
    assert small[0] == small[1]


def test_branch_keeps_the_frozen_parameters(tmp_path):
    """A branch (another seed) continues the parent's network: its frozen part is the parent's, not a
    fresh initialisation from the child's seed."""
    from telecli.train.loop import branch

    cfg = config.from_dict({
        "task": {"name": "modular", "modulus": 7},
        "model": {"name": "transformer", "d_model": 8, "heads": 2, "d_mlp": 12, "kwargs": {"trainable": ["unembed"]}},
        "train": {"optimizer": "adamw", "lr": 0.05, "weight_decay": 1.0, "steps": 6}})
    parent = run_training(cfg, tmp_path / "parent", progress=False)
    child = branch(parent, 3, 1, tmp_path / "child", progress=False)
    p, c = Trajectory(parent).data(), Trajectory(child).data()
    frozen = [k for k in p if k.startswith("frozen.")]
    assert frozen and all(torch.equal(p[k], c[k]) for k in frozen)
    d = _read(run_telescope(child, progress=False))
    assert np.abs(d["test/telescoped"] - d["test/actual"]).max() < TOL
