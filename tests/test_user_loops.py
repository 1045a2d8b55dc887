"""No silent wrong answers on users' own loops (README "Your own training loop").

Each test is a hand-written PyTorch loop through ``Recorder`` as README shows it, on a 64-32-1 MLP on
digits (float64), with one thing a user might do differently. The outcome is exact (modelled through a
per-step record: clipping, OneCycleLR, nn.MSELoss, boolean masks), or refused / flagged naming the
cause (train-mode BatchNorm, skipped or doubled rec.step, noise on the inputs, another loss, per-tensor
clipping, unsupported optimisers).

Tolerances (float64): the recipe check passes an honest loop at recipe_error ≤ 1e-7 (measured ~1e-14);
on a model linear in θ the smoother reproduces the network and θ_t to 1e-10 whenever a case is exact.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from helpers import cli
from telecli.errors import TelecliError
from telecli.jobs.recipe import verify_recipe
from telecli.jobs.telescope import run_telescope
from telecli.train.recorder import Recorder


def make_net(width: int = 32, batchnorm: bool = False, dropout: float = 0.0, features: bool = False):
    """The user's network (importable as test_user_loops:make_net): 64-width-1, ReLU; ``features``
    freezes the hidden layer (fixed random features), which makes the network linear in θ."""
    torch.manual_seed(0)
    layers = [nn.Linear(64, width)]
    if batchnorm:
        layers.append(nn.BatchNorm1d(width))
    layers.append(nn.Tanh() if features else nn.ReLU())
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(width, 1))
    net = nn.Sequential(*layers)
    if features:
        for p in net[0].parameters():
            p.requires_grad_(False)
    return net


def digits(n_train: int = 240, n_test: int = 80, dtype=torch.float64):
    d = load_digits()
    X = torch.as_tensor(d.data / 16.0, dtype=dtype)
    y = torch.as_tensor((d.target % 2 == 0).astype(float), dtype=dtype)[:, None]
    return (X[:n_train], y[:n_train]), (X[n_train:n_train + n_test], y[n_train:n_train + n_test])


def half_mse(out, target):
    return 0.5 * ((out - target) ** 2).sum(dim=1).mean()


def user_loop(run, *, steps: int = 40, batch: int = 32, opt: str = "sgd", opt_kwargs=None, net_kwargs=None,
              loss_fn=half_mse, before_step=None, noise: float = 0.0, skip_at=(), double_at=(), index=None,
              scheduler=None, lr: float = 0.1, dtype=torch.float64):
    """A user's loop: shuffled minibatches, the optimiser, ``rec.step(idx)`` after ``optimizer.step()``."""
    net_kwargs = net_kwargs or {}
    (X, y), test = digits(dtype=dtype)
    net = make_net(**net_kwargs).to(dtype)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
                 "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad}[opt](params, lr=lr,
                                                                                       **(opt_kwargs or {}))
    sched = scheduler(optimizer, steps) if scheduler else None
    gen = torch.Generator().manual_seed(1)
    with Recorder(run, net, optimizer, train=(X, y), test=test, model_factory="test_user_loops:make_net",
                  model_kwargs=net_kwargs) as rec:
        for t in range(1, steps + 1):
            idx = torch.randperm(X.shape[0], generator=gen)[:batch]
            xb = X[idx] + noise * torch.randn(X[idx].shape, generator=gen, dtype=X.dtype) if noise else X[idx]
            optimizer.zero_grad()
            loss_fn(net(xb), y[idx]).backward()
            if before_step:
                before_step(params)
            optimizer.step()
            if sched:
                sched.step()
            if t in skip_at:
                continue
            rec.step(idx if index is None else index(idx, X.shape[0]))
            if t in double_at:
                rec.step(idx)
    return run


def read(path):
    with h5py.File(path) as f:
        out = {}
        f.visititems(lambda n, o: out.__setitem__(n, o[...]) if isinstance(o, h5py.Dataset) else None)
        out["_attrs"] = dict(f.attrs)
        return out


def assert_exact(run, linear: bool):
    """The recipe check passes; on a model linear in θ the smoother reproduces network and θ_t."""
    report = verify_recipe(run)
    assert report.ok, report.lines()
    d = read(run_telescope(run, effective_params=True, progress=False, overwrite=True))
    assert d["validity/recipe"].all() and d["validity/parameters"].all()
    if linear:
        for split in ("train", "test"):
            assert np.abs(d[f"{split}/smoother"] - d[f"{split}/actual"]).max() < 1e-10
        assert np.nanmax(d["parameter_gap"]) < 1e-10
    return d


def assert_refused(run, cause: str):
    """verify names the cause; --effective-params refuses; --approximate computes and flags it."""
    report = verify_recipe(run)
    assert not report.ok and cause in " ".join(report.lines()), report.lines()
    with pytest.raises(TelecliError, match="--approximate"):
        run_telescope(run, effective_params=True, progress=False)
    d = read(run_telescope(run, effective_params=True, progress=False, approximate=True))
    assert not d["validity/recipe"][-1] and not d["validity/train/ok"][-1]
    assert cause in d["_attrs"]["caveats"]
    return d


# ------------------------------------------------------------------------------------------ baseline

def test_an_honest_loop_passes_every_check(tmp_path):
    run = user_loop(tmp_path / "plain")
    d = assert_exact(run, linear=False)
    assert d["_attrs"]["caveats"] == "[]"
    code, out, err = cli("verify", run, "--quiet")
    assert code == 0 and "every step is the modelled one" in out, err


# Every optimiser of the registry (telecli.optim) with its options: exact on a model linear in θ.
EXACT = {
    "sgd": ("sgd", {}, 0.05),
    "sgd-momentum-wd": ("sgd", {"momentum": 0.9, "weight_decay": 1e-3}, 0.05),
    "sgd-nesterov": ("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}, 0.05),
    "sgd-dampening": ("sgd", {"momentum": 0.9, "dampening": 0.3, "weight_decay": 1e-3}, 0.05),
    "adam": ("adam", {"weight_decay": 1e-3}, 1e-2),
    "adam-amsgrad": ("adam", {"amsgrad": True, "weight_decay": 1e-3}, 1e-2),
    "adamw": ("adamw", {"weight_decay": 0.1}, 1e-2),
    "adamw-amsgrad": ("adamw", {"amsgrad": True, "weight_decay": 0.1}, 1e-2),
    "rmsprop": ("rmsprop", {"weight_decay": 1e-3}, 1e-3),
    "rmsprop-momentum": ("rmsprop", {"momentum": 0.9, "weight_decay": 1e-3}, 1e-3),
    "rmsprop-centered": ("rmsprop", {"centered": True, "momentum": 0.5}, 1e-3),
    "adagrad": ("adagrad", {"weight_decay": 1e-3, "lr_decay": 0.01}, 1e-2),
}


def test_every_registered_optimiser_has_an_exactness_case():
    from telecli.optim import OPTIMIZERS

    assert {opt for opt, _, _ in EXACT.values()} == set(OPTIMIZERS)


@pytest.mark.parametrize("case", sorted(EXACT))
def test_linear_model_is_exact_for_every_optimiser(tmp_path, case):
    opt, kw, lr = EXACT[case]
    d = assert_exact(user_loop(tmp_path / case, opt=opt, opt_kwargs=kw, lr=lr, net_kwargs={"features": True}),
                     linear=True)
    theta_gap = d["parameter_gap"][1:]
    assert np.isfinite(theta_gap).all() and theta_gap.max() < 1e-10  # Θ^S y + Θ^C reproduces θ_t


# ------------------------------------------------------------------------ rows of the table

def test_train_mode_batchnorm_is_refused_naming_the_layer(tmp_path):
    run = user_loop(tmp_path / "bn", net_kwargs={"batchnorm": True})
    with pytest.raises(TelecliError, match=r"layer '1' \(BatchNorm1d\) ran in train mode"):
        run_telescope(run, progress=False)
    with pytest.raises(TelecliError, match=r"layer '1' \(BatchNorm1d\)"):
        run_telescope(run, effective_params=True, progress=False)
    report = verify_recipe(run)
    assert "BatchNorm1d" in report.lines()[0] and report.n_failed > 0  # the eval-mode gradient is not it
    d = read(run_telescope(run, progress=False, approximate=True))
    assert "BatchNorm1d" in d["_attrs"]["caveats"]


def test_batchnorm_in_eval_mode_is_a_fixed_function_and_passes(tmp_path):
    """Frozen BatchNorm (eval mode while training) is an affine map of fixed statistics: exact."""
    (X, y), test = digits()
    net = make_net(batchnorm=True).double()
    net.eval()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    with Recorder(tmp_path / "bn-eval", net, optimizer, train=(X, y), test=test,
                  model_factory="test_user_loops:make_net", model_kwargs={"batchnorm": True}) as rec:
        for t in range(10):
            idx = torch.arange(32 * t, 32 * t + 32) % 240
            optimizer.zero_grad()
            half_mse(net(X[idx]), y[idx]).backward()
            optimizer.step()
            rec.step(idx)
    assert verify_recipe(tmp_path / "bn-eval").ok
    run_telescope(tmp_path / "bn-eval", progress=False)


def test_skipped_rec_step_is_refused_at_record_time(tmp_path):
    with pytest.raises(TelecliError, match="optimizer.step.. ran 2 times since the previous rec.step"):
        user_loop(tmp_path / "skip", skip_at=(5, 17))


def test_doubled_rec_step_is_refused_at_record_time(tmp_path):
    with pytest.raises(TelecliError, match="has not run since the previous rec.step"):
        user_loop(tmp_path / "double", double_at=(5,))


@pytest.mark.parametrize("opt", ["sgd", "momentum"])
def test_noise_on_the_inputs_is_refused_with_its_cause(tmp_path, opt):
    kw = {"momentum": 0.9} if opt == "momentum" else {}
    run = user_loop(tmp_path / opt, noise=0.05, opt_kwargs=kw)
    d = assert_refused(run, "the batch the model saw differs from X[idx]")
    if opt == "momentum":
        assert np.nanmax(d["parameter_gap_relative"]) > 0  # now computed and compared for momentum ...
    assert np.isfinite(d["parameter_gap"][1:]).all()  # ... and for plain SGD


@pytest.mark.parametrize("opt", ["sgd", "momentum", "adamw"])
def test_clip_grad_norm_is_recorded_and_exact(tmp_path, opt):
    kw = {"sgd": {}, "momentum": {"momentum": 0.9}, "adamw": {"weight_decay": 0.1}}[opt]
    run = user_loop(tmp_path / opt, opt="adamw" if opt == "adamw" else "sgd", opt_kwargs=kw,
                    lr=1e-2 if opt == "adamw" else 0.5, net_kwargs={"features": True},
                    before_step=lambda ps: torch.nn.utils.clip_grad_norm_(ps, 0.05))
    from telecli.store.trajectory import Trajectory

    clip = Trajectory(run).meta()["clip"]
    assert (clip < 0.99).sum() > 10  # it did clip
    assert_exact(run, linear=True)


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_one_cycle_lr_is_recorded_per_step_and_exact(tmp_path, opt):
    """OneCycleLR cycles γ and momentum / β₁; the Recorder keeps both per step."""
    def sched(optimizer, steps):
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.2 if opt == "sgd" else 2e-2, total_steps=steps)

    run = user_loop(tmp_path / opt, opt=opt, opt_kwargs={"momentum": 0.9} if opt == "sgd" else {},
                    net_kwargs={"features": True}, scheduler=sched)
    from telecli.store.trajectory import Trajectory

    meta = Trajectory(run).meta()
    beta = meta["momentum" if opt == "sgd" else "beta1"]
    assert beta.max() - beta.min() > 0.05 and meta["lr"].max() > 5 * meta["lr"].min()
    assert_exact(run, linear=True)


def test_nn_mse_loss_scale_is_detected_and_exact(tmp_path):
    run = user_loop(tmp_path / "mseloss", loss_fn=nn.MSELoss(), net_kwargs={"features": True})
    from telecli.store.trajectory import Trajectory

    np.testing.assert_allclose(Trajectory(run).meta()["loss_scale"], 2.0, rtol=1e-12)
    assert_exact(run, linear=True)


def test_sum_reduction_loss_is_detected_and_exact(tmp_path):
    run = user_loop(tmp_path / "sum", loss_fn=lambda o, t: ((o - t) ** 2).sum(), lr=0.005,
                    net_kwargs={"features": True})
    assert_exact(run, linear=True)


def test_another_loss_is_refused_with_its_cause(tmp_path):
    """An L1 loss: ∂L/∂f is not proportional to the squared loss's."""
    run = user_loop(tmp_path / "l1", loss_fn=nn.L1Loss())
    assert_refused(run, "is not that of the declared loss 'mse'")


def test_clip_grad_value_is_refused_with_its_cause(tmp_path):
    run = user_loop(tmp_path / "value", lr=0.5, before_step=lambda ps: torch.nn.utils.clip_grad_value_(ps, 0.01))
    assert_refused(run, "changed parameter by parameter")


def test_boolean_mask_is_taken_as_indices(tmp_path):
    def mask(idx, n):
        m = torch.zeros(n, dtype=torch.bool)
        m[idx] = True
        return m

    # a mask selects the examples in index order: the loop must then train on X[mask]
    (X, y), test = digits()
    net = make_net(features=True).double()
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    gen = torch.Generator().manual_seed(0)
    with Recorder(tmp_path / "mask", net, optimizer, train=(X, y), test=test, model_factory="test_user_loops:make_net",
                  model_kwargs={"features": True}) as rec:
        for _ in range(20):
            m = mask(torch.randperm(240, generator=gen)[:32], 240)
            optimizer.zero_grad()
            half_mse(net(X[m]), y[m]).backward()
            optimizer.step()
            rec.step(m)
    assert_exact(tmp_path / "mask", linear=True)


@pytest.mark.parametrize("index,match", [
    (lambda idx, n: idx[:-4], "got 28 indices but the model's forward saw a batch of 32"),
    (lambda idx, n: torch.zeros(n - 1, dtype=torch.bool), "one entry per training point"),
    (lambda idx, n: idx.double(), "must be integer indices"),
    (lambda idx, n: idx + n, "outside the training set"),
    (lambda idx, n: idx[:0], "is empty"),
])
def test_bad_indices_are_refused_at_record_time(tmp_path, index, match):
    with pytest.raises(TelecliError, match=match):
        user_loop(tmp_path / "bad", index=index, steps=3)


def test_repeated_indices_count_once_per_draw(tmp_path):
    """Sampling with replacement: a batch with repeats is the multiset mean, modelled exactly."""
    run = user_loop(tmp_path / "repeat", index=None, net_kwargs={"features": True}, batch=32)
    (X, y), test = digits()
    net = make_net(features=True).double()
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    gen = torch.Generator().manual_seed(3)
    with Recorder(tmp_path / "rep", net, optimizer, train=(X, y), test=test, model_factory="test_user_loops:make_net",
                  model_kwargs={"features": True}) as rec:
        for _ in range(20):
            idx = torch.randint(0, 240, (48,), generator=gen)
            optimizer.zero_grad()
            half_mse(net(X[idx]), y[idx]).backward()
            optimizer.step()
            rec.step(idx)
    assert len(torch.unique(idx)) < 48
    assert_exact(tmp_path / "rep", linear=True)
    assert run.exists()


@pytest.mark.parametrize("opt,kw,match", [
    ("sgd", {"maximize": True}, "maximize=True is not supported"),
    ("adam", {"maximize": True}, "maximize=True is not supported"),
])
def test_unsupported_optimisers_are_refused_in_one_line(tmp_path, opt, kw, match):
    with pytest.raises(TelecliError, match=match):
        user_loop(tmp_path / opt, opt=opt, opt_kwargs=kw, steps=2)


def test_dropout_is_refused(tmp_path):
    run = user_loop(tmp_path / "drop", net_kwargs={"dropout": 0.2}, steps=3)
    with pytest.raises(TelecliError, match="is dropout"):
        run_telescope(run, progress=False)
    assert "is dropout" in verify_recipe(run).lines()[0]


# ------------------------------------------------- the offline check alone (hooks that saw nothing)

@pytest.fixture
def blind_hooks(monkeypatch):
    """A loop the Recorder's hooks cannot see into (a compiled or wrapped model, a run recorded before
    they existed): no clipping factor, no loss scale, no inputs. The offline recipe check must still
    catch every fault."""
    from telecli.train import watch

    monkeypatch.setattr(watch.LoopWatch, "_backward_done", lambda self: None)
    monkeypatch.setattr(watch.LoopWatch, "_forward_pre", lambda self, m, a: None)
    monkeypatch.setattr(watch.LoopWatch, "_forward", lambda self, m, a, o: None)


FAULTS = {
    "noise": (dict(noise=0.05), "cosine"),
    "clip_grad_norm": (dict(lr=0.5, before_step=lambda ps: torch.nn.utils.clip_grad_norm_(ps, 0.05)),
                       "× the modelled one: gradient clipping or a loss of another scale"),
    "nn.MSELoss": (dict(loss_fn=nn.MSELoss()), "the update is 2× the modelled one"),
    "weight_penalty": (dict(loss_fn=lambda o, t: half_mse(o, t) + 0.1 * (o ** 2).mean()), "cosine"),
    "l1_loss": (dict(loss_fn=nn.L1Loss()), "cosine"),
}


@pytest.mark.parametrize("model", ["linear", "mlp"])
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_offline_recipe_check_catches_each_fault(tmp_path, blind_hooks, fault, model):
    kwargs, cause = FAULTS[fault]
    run = user_loop(tmp_path / fault, steps=12, net_kwargs={"features": model == "linear"}, **kwargs)
    report = verify_recipe(run)
    assert report.n_failed >= 10 and cause in report.lines()[-1], report.lines()
    with pytest.raises(TelecliError, match="not the step the analysis models"):
        run_telescope(run, effective_params=True, progress=False)


def test_offline_recipe_check_passes_an_honest_loop_it_cannot_see_into(tmp_path, blind_hooks):
    assert verify_recipe(user_loop(tmp_path / "honest", steps=12, opt="adam", lr=1e-2)).ok


# ---------------------------------------------------------------------------------------- float32

@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_float32_honest_loop_passes_and_faults_are_caught(tmp_path, opt):
    """float32 tolerance (RECIPE_TOLERANCE): 1e-3; an honest float32 loop measures ≤ ~1e-5."""
    from telecli.lens.recipe import RECIPE_TOLERANCE

    assert RECIPE_TOLERANCE[torch.float32] == 1e-3
    lr = 1e-2 if opt == "adam" else 0.1
    honest = verify_recipe(user_loop(tmp_path / "honest", steps=30, opt=opt, lr=lr, dtype=torch.float32))
    print(opt, "float32 honest recipe error max", np.nanmax(honest.error))
    assert honest.ok and np.nanmax(honest.error) < 1e-4, honest.lines()
    noisy = verify_recipe(user_loop(tmp_path / "noisy", steps=30, opt=opt, lr=lr, noise=0.05, dtype=torch.float32))
    assert noisy.n_failed >= 25 and "differs from X[idx]" in noisy.lines()[-1]
