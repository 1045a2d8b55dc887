"""Built-in networks (telecli.models): shapes, init_scale, trainability, ResNet-20, factories, PolyNet."""

import numpy as np
import pytest
import torch

from telecli import config as config_mod
from telecli.errors import TelecliError
from telecli.jobs.common import rebuild_network
from telecli.store.trajectory import Trajectory
from telecli.train.loop import run_training
from telecli.models import build, instantiate, resolve_factory
from telecli.models.cnn import CNN, image_shape
from telecli.models.resnet20 import ResNet20

torch.set_num_threads(1)

# name -> (input_shape, extra kwargs)
CASES = {
    "mlp": ([1, 8, 8], {"depth": 2, "width": 16}),
    "poly": ([64], {"hidden": 8}),
    "cnn": ([1, 8, 8], {"channels": 4}),
    "resnet20": ([1, 8, 8], {}),
}


def _build(name, init_scale=1.0, k=3, seed=0):
    shape, kw = CASES[name]
    torch.manual_seed(seed)
    return build(name, shape, k, init_scale=init_scale, **kw)


@pytest.mark.parametrize("name", list(CASES))
def test_forward_shape_float64(name):
    net = _build(name).double()
    x = torch.randn(5, *CASES[name][0], dtype=torch.float64)
    out = net(x)
    assert out.shape == (5, 3) and out.dtype == torch.float64
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", list(CASES))
def test_init_scale_multiplies_every_parameter(name):
    p1 = list(_build(name, 1.0).parameters())
    p3 = list(_build(name, 3.0).parameters())
    assert len(p1) == len(p3) > 0
    for a, b in zip(p1, p3):
        assert torch.equal(b, a * 3)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_sgd_reduces_mse(name):
    net = _build(name).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, *CASES[name][0], generator=g, dtype=torch.float64)
    y = torch.randn(32, 3, generator=g, dtype=torch.float64)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)

    def loss():
        return 0.5 * ((net(x) - y) ** 2).sum(1).mean()

    first = loss().item()
    for _ in range(20):
        opt.zero_grad()
        l = loss()
        l.backward()
        opt.step()
    assert loss().item() < 0.95 * first


def test_cnn_flat_inputs_and_head():
    assert image_shape([64]) == (1, 8, 8)
    assert image_shape([10]) == (1, 1, 10)
    assert image_shape([3, 32, 32]) == (3, 32, 32)
    net = CNN([10], 2, channels=2, sigmoid=True)
    out = net(torch.randn(4, 10))
    assert out.shape == (4, 2) and ((out > 0) & (out < 1)).all()
    assert isinstance(net.head, torch.nn.Linear) and net.head.in_features == 4
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.Dropout)) for m in net.modules())
    # train and eval mode compute the same function
    x = torch.randn(3, 10)
    assert torch.equal(net.train()(x), net.eval()(x))


def test_resnet20_param_count():
    # Idelbayev's option-A ResNet-20: 269,722 parameters (272,474 is the option-B variant,
    # which adds 1×1 conv + BN shortcuts: 16·32 + 64 + 32·64 + 128 = 2,752 more).
    net = ResNet20([3, 32, 32], 10)
    assert sum(p.numel() for p in net.parameters()) == 269_722
    assert sum(p.numel() for p in ResNet20([1, 28, 28], 10).parameters()) == 269_722 - 2 * 16 * 9
    assert net.linear.in_features == 64 and net.linear.out_features == 10
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    n_conv = sum(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    assert (n_conv, n_bn) == (19, 19)


def test_resnet20_eval_deterministic_and_cifar_size():
    torch.manual_seed(0)
    net = ResNet20([3, 32, 32], 10).double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    net.train()
    net(x)  # update running statistics once so eval differs from init
    net.eval()
    a, b = net(x), net(x)
    assert a.shape == (2, 10) and torch.equal(a, b)


def test_resnet20_errors():
    with pytest.raises(TelecliError, match="task.flatten = false"):
        ResNet20([64], 10)
    with pytest.raises(TelecliError):
        ResNet20([3, 4, 4], 10)


def test_instantiate_and_resolve_factory():
    torch.manual_seed(0)
    net = instantiate(
        "telecli.models:build",
        {"name": "cnn", "input_shape": [1, 8, 8], "output_dim": 2, "channels": 2, "init_scale": 1.0},
    )
    assert isinstance(net, CNN)
    assert net(torch.randn(3, 64)).shape == (3, 2)
    assert resolve_factory("telecli.models:build") is build
    for bad in ("nomodule:fn", "telecli.models:nothing", "badstring"):
        with pytest.raises(TelecliError):
            resolve_factory(bad)
    with pytest.raises(TelecliError):
        build("nonexistent", [2], 1)


def test_polynet_matches_hand_computation():
    eps = 0.3
    torch.manual_seed(0)
    net = build("poly", [2], 2, epsilon=eps, hidden=3).double()
    theta = net.hidden.weight.detach().numpy()  # (3, 2)
    assert theta.shape == (3, 2)
    x = np.array([[0.5, -1.0], [2.0, 0.25]])
    expected = np.empty(2)
    for i in range(2):
        hs = [theta[j, 0] * x[i, 0] + theta[j, 1] * x[i, 1] for j in range(3)]
        expected[i] = sum(h + eps / 2 * h * h for h in hs) / 3
    out = net(torch.from_numpy(x)).detach().numpy()
    assert out.shape == (2, 2)
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-12)
    np.testing.assert_allclose(out[:, 1], expected, rtol=1e-12)


def test_pretrained_factory_starts_from_the_pretrained_network(tmp_path, monkeypatch):
    src = run_training(config_mod.from_dict({
        "name": "src", "device": "cpu", "task": {"name": "digits", "classes": [3, 5]},
        "model": {"name": "features", "width": 10},
        "train": {"loss": "mse", "optimizer": "sgd", "lr": 0.2, "momentum": 0.5, "batch_size": 64, "steps": 6}}),
        tmp_path / "src", progress=False)
    monkeypatch.chdir(tmp_path)
    cfg = config_mod.from_dict({"name": "ft", "device": "cpu", "task": {"name": "digits", "classes": [3, 5]},
                                "model": {"name": "factory", "factory": "telecli.models.pretrained:pretrained",
                                          "kwargs": {"run": "src"}},
                                "train": {"loss": "mse", "lr": 0.1, "batch_size": 64, "steps": 3}})
    ft = run_training(cfg, tmp_path / "ft", progress=False)
    tr = Trajectory(ft)
    want = Trajectory(src).theta(6)
    assert all(torch.equal(tr.theta(0)[k], want[k]) for k in want)
    assert Trajectory(src).buffers(6)["proj"].equal(tr.buffers(0)["proj"])
    rebuild_network(tr, torch.device("cpu"))  # the factory rebuilds it offline too
