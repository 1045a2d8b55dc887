"""Smoother form and effective parameters (method.md §1.5–1.6, §3.1) against exact references.

Tolerances (float64): a network linear in θ makes the telescoping model exact, so s(x)·y + c(x) must
reproduce the real network and Θ^S·y + Θ^C the real θ_t to 1e-10; full-batch GD linear regression
must give the closed form of Eq. 15 to 1e-10.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from telecli import config
from telecli.errors import TelecliError
from telecli.lens.smoother import effective_parameters, effective_parameters_k
from telecli.jobs.telescope import merge, run_telescope
from telecli.store.trajectory import Trajectory
from telecli.train.loop import run_training
from telecli.train.recorder import Recorder

OPTIMISERS = {
    "sgd": dict(optimizer="sgd", lr=0.2),
    "weight_decay": dict(optimizer="sgd", lr=0.2, weight_decay=0.1),
    "momentum": dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=0.01),
    "adam": dict(optimizer="adam", lr=1e-2, weight_decay=0.05, betas=[0.9, 0.99]),
    "adamw": dict(optimizer="adamw", lr=1e-2, weight_decay=0.1, betas=[0.9, 0.99]),
}


def read(path):
    with h5py.File(path) as f:
        out = {}
        f.visititems(lambda n, o: out.__setitem__(n, o[...]) if isinstance(o, h5py.Dataset) else None)
        out["_attrs"] = dict(f.attrs)
        return out


@pytest.mark.parametrize("opt", sorted(OPTIMISERS))
@pytest.mark.parametrize("outputs", [1, 3])
def test_linear_in_parameters_smoother_is_exact(tmp_path, opt, outputs):
    """Minibatches, schedules through γ_t (warmup), every optimiser; k = 1 and k = 3 (one-hot)."""
    task = {"name": "digits"} if outputs == 1 else {"name": "digits", "classes": [0, 4, 8], "one_hot": True}
    cfg = config.from_dict({"name": opt, "task": task, "model": {"name": "features", "width": 30},
                            "train": {"batch_size": 48, "steps": 15, "schedule": "warmup", "warmup_steps": 5,
                                      **OPTIMISERS[opt]}})
    run = run_training(cfg, tmp_path / "run", progress=False)
    d = read(run_telescope(run, effective_params=True, progress=False))
    for split in ("train", "test"):
        assert np.abs(d[f"{split}/smoother"] - d[f"{split}/actual"]).max() < 1e-10
        assert d[f"{split}/smoother_gap"].max() < 1e-10
        assert np.all(np.diff(d[f"{split}/effective_parameters"][:3]) > 0)  # p grows from 0 as it learns
        assert d[f"{split}/effective_parameters"][0] == 0
    if opt != "sgd":
        assert d["parameter_gap"][1:].max() < 1e-10  # Θ^S y + Θ^C tracks θ_t (§1.6 sanity check)


def test_full_batch_linear_regression_closed_form(tmp_path):
    """Eq. 15: full-batch GD with a constant kernel K = (XXᵀ + 1)/n gives S_T = I − (I − γK)^T,
    c_T = (I − γK)^T f_0; test rows from s_t(x) = s_{t−1}(x) + γ k(x)(I − S_{t−1}) in numpy."""
    rng = np.random.default_rng(0)
    n, m, d, T, lr = 30, 12, 5, 40, 0.3
    X, Xt = rng.standard_normal((n, d)), rng.standard_normal((m, d))
    y, yt = rng.standard_normal((n, 1)), rng.standard_normal((m, 1))
    torch.manual_seed(0)
    model = torch.nn.Linear(d, 1).double()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    Xtr, ytr = torch.as_tensor(X), torch.as_tensor(y)
    with Recorder(tmp_path / "lr", model, opt, (Xtr, ytr), (torch.as_tensor(Xt), torch.as_tensor(yt)),
                  model_factory="torch.nn:Linear", model_kwargs={"in_features": d, "out_features": 1},
                  full_batch=True) as rec:
        for _ in range(T):
            opt.zero_grad()
            (0.5 * ((model(Xtr) - ytr) ** 2).sum(dim=1).mean()).backward()
            opt.step()
            rec.step(None)
    res = read(run_telescope(tmp_path / "lr", effective_params=True, progress=False))

    K = (X @ X.T + 1) / n
    kt = (Xt @ X.T + 1) / n
    A = np.eye(n) - lr * K
    S_T = np.eye(n) - np.linalg.matrix_power(A, T)
    S, s_test = np.zeros((n, n)), np.zeros((m, n))
    for _ in range(T):
        s_test = s_test + lr * kt @ (np.eye(n) - S)
        S = (np.eye(n) - lr * K) @ S + lr * K
    np.testing.assert_allclose(S, S_T, atol=1e-12)  # the recursion and Eq. 15 agree
    p_train, p_test = effective_parameters(S_T, n), effective_parameters(s_test, n)
    assert abs(res["train/effective_parameters"][-1] - p_train) < 1e-10
    assert abs(res["test/effective_parameters"][-1] - p_test) < 1e-10
    assert abs(res["train/smoother_trace"][-1] - np.trace(S_T)) < 1e-10
    f0 = res["train/actual"][0]
    c_T = np.linalg.matrix_power(A, T) @ f0
    np.testing.assert_allclose(res["train/smoother"][-1], S_T @ y + c_T, atol=1e-10)
    np.testing.assert_allclose(res["train/smoother"][-1], res["train/actual"][-1], atol=1e-10)
    # kernel-row norms k_t(x) = K(x, B)/|B| with the full batch: ‖row of K‖₂
    np.testing.assert_allclose(res["test/kernel_norm"][-1], np.linalg.norm(kt, axis=1), atol=1e-12)


def test_effective_parameters_for_k_outputs_reduce_to_the_paper():
    rng = np.random.default_rng(1)
    S = rng.standard_normal((7, 7))
    assert effective_parameters_k((S**2).sum(axis=1), 7, 1) == pytest.approx(effective_parameters(S, 7), rel=1e-15)
    for k in (1, 3):  # an interpolating smoother (S = I on vec(y)) has p_train = n for any k
        assert effective_parameters_k(np.full(7, float(k)), 7, k) == pytest.approx(7.0)


def test_nonlinear_network_tracks_the_real_one(tmp_path):
    """On a real MLP the smoother agrees with the network up to the telescoping error."""
    cfg = config.from_dict({"name": "mlp", "task": {"name": "digits"}, "model": {"name": "mlp", "width": 32},
                            "train": {"batch_size": 64, "steps": 30, "optimizer": "sgd", "lr": 0.05,
                                      "momentum": 0.5}})
    run = run_training(cfg, tmp_path / "run", progress=False)
    d = read(run_telescope(run, effective_params=True, progress=False))
    for split in ("train", "test"):
        assert d[f"{split}/smoother_gap"][-1] < 5 * d[f"{split}/approx_error_telescoped"][-1] + 1e-6
        assert d[f"{split}/smoother_gap"][-1] < 0.1 * d[f"{split}/approx_error_linearized"][-1]
    assert 0 < d["train/effective_parameters"][-1] < Trajectory(run).manifest["data"]["n_train"]


def test_sharded_effective_parameters_merge_exactly(tmp_path):
    cfg = config.from_dict({"name": "sh", "task": {"name": "digits"}, "model": {"name": "mlp", "width": 16},
                            "train": {"batch_size": 64, "steps": 12, "lr": 0.1}})
    run = run_training(cfg, tmp_path / "run", progress=False)
    whole = read(run_telescope(run, tmp_path / "w.h5", effective_params=True, max_memory="8M", progress=False))
    parts = [run_telescope(run, tmp_path / f"p{i}.h5", shard=f"{i}/2", effective_params=True, max_memory="8M",
                           progress=False) for i in range(2)]
    merged = read(merge(parts, tmp_path / "m.h5"))
    for key in ("train/effective_parameters", "test/effective_parameters", "test/smoother", "train/kernel_norm",
                "test/kernel_norm_max_every_step", "train/smoother_trace"):
        np.testing.assert_allclose(merged[key], whole[key], rtol=1e-12, atol=1e-14, err_msg=key)


def test_cross_entropy_run_is_refused(tmp_path):
    cfg = config.from_dict({"name": "ce", "task": {"name": "digits"}, "model": {"name": "mlp", "width": 8},
                            "train": {"batch_size": 64, "steps": 3, "loss": "ce"}})
    run = run_training(cfg, tmp_path / "run", progress=False)
    with pytest.raises(TelecliError, match="squared loss"):
        run_telescope(run, effective_params=True, progress=False)


@pytest.mark.parametrize("opt", ["sgd", "momentum", "adam", "adamw"])
def test_update_components_sum_to_the_telescoping_increment(tmp_path, opt):
    """gradient + momentum + weight decay + θ₀ decay = ∇f(x)ᵀΔθ_t = f̃_t − f̃_{t−1} (to 1e-12)."""
    train = {**OPTIMISERS[opt], "weight_decay": 0.1}
    cfg = config.from_dict({"name": opt, "task": {"name": "digits"}, "model": {"name": "mlp", "width": 12},
                            "train": {"batch_size": 64, "steps": 8, **train}})
    run = run_training(cfg, tmp_path / "run", progress=False)
    d = read(run_telescope(run, effective_params=True, progress=False))
    names = {"gradient", "weight_decay", "theta0_decay"} | ({"momentum"} if opt != "sgd" else set())
    for split in ("train", "test"):
        got = {n.split("/")[-1] for n in d if n.startswith(f"{split}/components/")}
        assert got == names
        total = sum(d[f"{split}/components/{n}"][1:] for n in names)
        np.testing.assert_allclose(total, np.diff(d[f"{split}/telescoped"], axis=0), rtol=0, atol=1e-12)
        assert np.abs(d[f"{split}/components/theta0_decay"][1:]).max() > 0


def test_unreliable_smoother_is_flagged(tmp_path, capsys):
    """A learning rate far past the edge of stability makes the smoother drift from the network: warn."""
    cfg = config.from_dict({"name": "eos", "task": {"name": "digits"}, "model": {"name": "mlp", "width": 16},
                            "train": {"batch_size": 0, "steps": 40, "lr": 3.0}})
    run = run_training(cfg, tmp_path / "run", progress=False)
    run_telescope(run, effective_params=True, progress=False)
    assert "unreliable" in capsys.readouterr().err
    cfg.train.lr = 0.05
    run = run_training(cfg, tmp_path / "ok", progress=False)
    run_telescope(run, effective_params=True, progress=False)
    assert "unreliable" not in capsys.readouterr().err


# ---------------------------------------------------------------------------------- method.md §10.1


def _small_run(tmp_path, opt: str, steps: int = 12):
    cfg = config.from_dict({"name": opt, "task": {"name": "digits"}, "model": {"name": "mlp", "width": 16},
                            "train": {"batch_size": 64, "steps": steps, **OPTIMISERS[opt]}})
    return run_training(cfg, tmp_path / f"run-{opt}", progress=False)


@pytest.mark.parametrize("opt", ["sgd", "adamw"])
def test_column_shards_merge_to_the_single_run(tmp_path, opt):
    """--shard i/N with --effective-params splits the training-target columns (kernel recursion for SGD,
    parameter-space state for AdamW): merged sums of squared rows equal one run to 1e-12."""
    run = _small_run(tmp_path, opt)
    whole = read(run_telescope(run, tmp_path / "w.h5", effective_params=True, progress=False))
    parts = [run_telescope(run, tmp_path / f"p{i}.h5", shard=f"{i}/3", effective_params=True, progress=False)
             for i in range(3)]
    part0 = read(parts[0])
    assert part0["test/index"].shape == whole["test/index"].shape  # every shard evaluates every point
    assert np.all(part0["test/smoother_sq_norm"] <= whole["test/smoother_sq_norm"] + 1e-15)  # a partial sum
    merged = read(merge(parts, tmp_path / "m.h5"))
    for key in ("train/smoother_sq_norm", "test/smoother_sq_norm", "train/effective_parameters",
                "test/effective_parameters", "train/smoother_trace", "train/smoother", "test/smoother",
                "test/smoother_gap", "parameter_gap", "test/actual", "test/telescoped"):
        np.testing.assert_allclose(merged[key], whole[key], rtol=1e-12, atol=1e-14, err_msg=key)
    assert merged["_attrs"]["shard"] == "merged"


@pytest.mark.parametrize("opt", ["sgd", "adamw"])
def test_identity_probes_reproduce_exact_p(tmp_path, opt, monkeypatch):
    """The sketch's recursion with the probes √(nk)·I (so Z Zᵀ/R = I exactly) gives the exact p, per-point
    ‖s(x)‖² and trace to 1e-12; the predictions s(x)·y + c(x) are exact for any probes."""
    from telecli.lens import smoother as sm

    run = _small_run(tmp_path, opt)
    nk = Trajectory(run).manifest["data"]["n_train"]
    exact = read(run_telescope(run, tmp_path / "e.h5", effective_params=True, progress=False))
    sketch = sm.Columns.sketch

    def identity_probes(y, R, seed=0, shard=(0, 1), probes=None):
        return sketch(y, R, seed, shard, probes=nk**0.5 * torch.eye(nk, dtype=y.dtype))

    monkeypatch.setattr(sm.Columns, "sketch", staticmethod(identity_probes))
    got = read(run_telescope(run, tmp_path / "i.h5", effective_params=True, probes=nk, progress=False))
    for key in ("train/effective_parameters", "test/effective_parameters", "test/smoother_sq_norm",
                "train/smoother_sq_norm", "train/smoother_trace", "test/smoother", "parameter_gap"):
        np.testing.assert_allclose(got[key], exact[key], rtol=1e-12, atol=1e-14, err_msg=key)
    np.testing.assert_allclose(got["test/probe_effective_parameters"].mean(axis=1), exact["test/effective_parameters"],
                               rtol=1e-12, atol=1e-14)


def test_sketched_p_is_unbiased_with_an_honest_standard_error(tmp_path):
    """Rademacher probes: over seeds the mean of the estimates matches exact p within 3 standard errors
    of that mean, each run's stored s.e. matches the spread of the estimates across seeds (within a
    factor 2), and the smoother predictions stay exact."""
    run = _small_run(tmp_path, "adamw")
    exact = read(run_telescope(run, tmp_path / "e.h5", effective_params=True, progress=False))
    runs = [read(run_telescope(run, tmp_path / f"s{seed}.h5", effective_params=True, probes=16, seed=seed,
                               progress=False)) for seed in range(8)]
    for split in ("train", "test"):
        p = exact[f"{split}/effective_parameters"][-1]
        est = np.array([r[f"{split}/effective_parameters"][-1] for r in runs])
        se = np.array([r[f"{split}/effective_parameters_se"][-1] for r in runs])
        assert abs(est.mean() - p) < 3 * est.std(ddof=1) / np.sqrt(len(est))
        assert 0.5 < np.sqrt(np.mean(se**2)) / est.std(ddof=1) < 2.0
        assert est.std() > 0  # the probes differ by seed
        for r in runs:
            np.testing.assert_allclose(r[f"{split}/smoother"], exact[f"{split}/smoother"], rtol=1e-12, atol=1e-13)
    assert runs[0]["_attrs"]["probes"] == 16


def test_sketch_state_grows_with_probes_not_n():
    from telecli.jobs.smoother import memory_needed

    opt = {"name": "adamw", "momentum": 0.0}
    mem = lambda width, n=2000: memory_needed(opt, n, 1, 50_000, 1000, 8, width=width)  # noqa: E731
    assert mem(2000) == memory_needed(opt, 2000, 1, 50_000, 1000, 8)  # exact = all nk columns
    assert mem(129) - mem(65) == 2 * (mem(65) - mem(33)) > 0  # the state is linear in the columns carried
    assert mem(65) < mem(2000) / 2  # (n + m)k × P of Jacobians remain


def test_probes_need_the_smoother_and_enough_columns(tmp_path):
    run = _small_run(tmp_path, "sgd", steps=2)
    with pytest.raises(TelecliError, match="--effective-params"):
        run_telescope(run, tmp_path / "a.h5", probes=8, progress=False)
    with pytest.raises(TelecliError, match="--probes must be"):
        run_telescope(run, tmp_path / "b.h5", probes=1, effective_params=True, progress=False)


def test_float32_smoother_tracks_float64(tmp_path):
    """--dtype float32 on a float64 run: p and the smoother predictions within 1e-5 (relative) of float64
    over 12 AdamW steps (the benchmark bench_sketch.py reports it over long runs)."""
    run = _small_run(tmp_path, "adamw")
    f64 = read(run_telescope(run, tmp_path / "a.h5", effective_params=True, progress=False))
    f32 = read(run_telescope(run, tmp_path / "b.h5", effective_params=True, dtype="float32", progress=False))
    assert f32["_attrs"]["dtype"] == "float32"
    for split in ("train", "test"):
        p, q = f64[f"{split}/effective_parameters"][1:], f32[f"{split}/effective_parameters"][1:]
        assert np.max(np.abs(q - p) / p) < 1e-5
        assert np.abs(f32[f"{split}/smoother"] - f64[f"{split}/smoother"]).max() < 1e-5
        assert np.abs(f32[f"{split}/smoother"] - f64[f"{split}/smoother"]).max() > 0  # really float32


@pytest.mark.parametrize("model", [{"name": "mlp", "width": 16},
                                   {"name": "features", "width": 30}])
@pytest.mark.parametrize("opt", ["momentum", "adamw"])
def test_jacobian_products_without_the_jacobian_equal_the_formed_ones(tmp_path, monkeypatch, opt, model):
    """The parameter-space smoother's products J_Bᵀ R and J U (lens.products) taken by forward- and
    reverse-mode passes per column equal those of the formed Jacobian: every dataset to 1e-12, sketched
    and exact, k = 3 outputs; on a network linear in θ the products path stays exact (1e-10)."""
    from telecli.lens import products

    task = {"name": "digits", "classes": [0, 4, 8], "one_hot": True}
    cfg = config.from_dict({"name": opt, "task": task, "model": model,
                            "train": {"batch_size": 48, "steps": 10, **OPTIMISERS[opt]}})
    run = run_training(cfg, tmp_path / "run", progress=False)
    got = {}
    for strategy in products.Strategy:
        monkeypatch.setattr(products, "choose", lambda *a, s=strategy, **k: s)
        for probes in (0, 6):
            path = run_telescope(run, tmp_path / f"{strategy.value}-{probes}.h5", effective_params=True,
                                 probes=probes or None, points=40, progress=False)
            got[strategy, probes] = read(path)
    for probes in (0, 6):
        a, b = got[products.Strategy.PRODUCTS, probes], got[products.Strategy.JACOBIAN, probes]
        assert a["_attrs"]["smoother_path"].endswith("products products")
        assert b["_attrs"]["smoother_path"].endswith("jacobian products")
        for key, value in b.items():
            if key != "_attrs" and value.dtype.kind == "f":
                np.testing.assert_allclose(a[key], value, rtol=1e-12, atol=1e-13, err_msg=key)
    if model["name"] == "features":
        d = got[products.Strategy.PRODUCTS, 0]
        assert np.abs(d["test/smoother"] - d["test/actual"]).max() < 1e-10
        assert d["parameter_gap"][1:].max() < 1e-10


def test_products_match_autograd_in_chunks_of_columns():
    """lens.products.Products on a transformer (no chain: torch.func) and on an MLP (the chain of dense
    layers), one column per chunk and all at once, against autograd's Jacobian (1e-12, float64)."""
    from telecli.lens.products import Products
    from telecli.models.transformer import Transformer
    from torch import nn

    torch.manual_seed(0)
    nets = {"transformer": (Transformer((3,), 5, d_model=8, heads=2, d_mlp=12, vocab=8),
                            torch.randint(0, 8, (6, 3)).double()),
            "mlp": (nn.Sequential(nn.Linear(4, 7), nn.ReLU(), nn.Linear(7, 3)), torch.randn(6, 4))}
    for name, (net, x) in nets.items():
        net = net.double()
        theta = {k: p.detach() for k, p in net.named_parameters()}
        J = torch.func.jacrev(lambda p: torch.func.functional_call(net, p, (x.double(),)))(theta)
        J = torch.cat([J[k].reshape(J[k].shape[0] * J[k].shape[1], -1) for k in theta], dim=1)
        V = torch.randn(J.shape[1], 4, dtype=torch.float64)
        R = torch.randn(J.shape[0], 4, dtype=torch.float64)
        for memory in (None, 1):  # every column at once; one column per chunk
            op = Products(net, theta, x.double(), memory=memory)
            torch.testing.assert_close(op.mm(V), J @ V, rtol=1e-12, atol=1e-12, msg=name)
            torch.testing.assert_close(op.tmm(R), J.T @ R, rtol=1e-12, atol=1e-12, msg=name)
