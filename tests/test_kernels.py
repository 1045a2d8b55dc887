"""Tangent kernels (telecli.lens.kernels, method.md Eq. 3 without its 1/|B_t| factor): every strategy
against the jacobian reference and against a plain autograd loop over examples and outputs, float64."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from telecli.errors import TelecliError
from telecli.lens import kernels
from telecli.lens.kernels import choose_strategy, jacobian, tangent_kernel
from telecli.models import build

STRATEGIES = ["jacobian", "ntk-vp", "structured", "auto"]
# forward-mode AD (ntk-vp) loads torch's jvp decompositions through the deprecated torch.jit.script
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks: a second intra-op thread only adds contention on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def autograd_jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(n, k, P): one torch.autograd.grad call per example and output, gradients concatenated."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for a in range(len(x)):
        out = model(x[a : a + 1]).reshape(-1)
        per_output = []
        for i in range(len(out)):
            grads = torch.autograd.grad(out[i], params, retain_graph=True, allow_unused=True)
            flat = [(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)]
            per_output.append(torch.cat(flat))
        rows.append(torch.stack(per_output))
    return torch.stack(rows)


def autograd_kernel(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
    j1 = autograd_jacobian(model, x1)
    j2 = j1 if x2 is None else autograd_jacobian(model, x2)
    return torch.einsum("aip,bjp->abij", j1, j2)


def assert_kernel_equal(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10 * float(expected.abs().max()))


class Mixed(nn.Module):
    """Every structured rule and every fallback route in one network on integer tokens: Embedding
    with padding, grouped dilated Conv1d with 'same' reflect padding, GroupNorm, LayerNorm, a Linear
    called twice, a frozen weight, a weight tied between two modules, a raw parameter, and a head whose
    weight is also used outside its forward (the self-check must route it to the fallback)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 4, padding_idx=0)
        self.conv = nn.Conv1d(4, 6, 3, groups=2, dilation=2, padding="same", padding_mode="reflect")
        self.gn = nn.GroupNorm(3, 6)
        self.ln = nn.LayerNorm(6)
        self.shared = nn.Linear(6, 6)
        self.frozen = nn.Linear(6, 4)
        self.frozen.weight.requires_grad_(False)
        self.pre = nn.Linear(4, 4, bias=False)
        self.post = nn.Linear(4, 4, bias=False)
        self.post.weight = self.pre.weight  # tied
        self.decode = nn.Linear(4, 7)
        self.head = nn.Linear(7, 3)
        self.scale = nn.Parameter(torch.randn(3))
        with torch.no_grad():  # non-trivial affine parameters
            for m in (self.gn, self.ln):
                m.weight.normal_()
                m.bias.normal_()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.emb(tokens).transpose(1, 2)  # (n, 4, L)
        h = torch.tanh(self.gn(self.conv(h))).transpose(1, 2)  # (n, L, 6)
        h = torch.tanh(self.shared(torch.tanh(self.shared(self.ln(h)))))
        h = self.post(torch.tanh(self.pre(torch.tanh(self.frozen(h)))))
        h = torch.tanh(self.decode(h)).mean(1)  # (n, 7)
        return self.head(h) * self.scale + h @ self.head.weight.T


def _mlp():
    return build("mlp", [6], 2, depth=3, width=7), [6]


def _poly():
    return build("poly", [5], 1, epsilon=0.2, hidden=4), [5]


def _cnn():
    return build("cnn", [1, 8, 8], 2, channels=3), [1, 8, 8]


def _resnet20():
    net = build("resnet20", [1, 8, 8], 2)
    net.train()
    with torch.no_grad():
        for _ in range(3):  # non-trivial BatchNorm running statistics
            net(torch.randn(16, 1, 8, 8) * 2 + 0.5)
    return net.eval(), [1, 8, 8]


MODELS = {"mlp": _mlp, "poly": _poly, "cnn": _cnn, "resnet20": _resnet20}


@pytest.fixture(scope="module", params=list(MODELS))
def case(request):
    torch.manual_seed(0)
    net, shape = MODELS[request.param]()
    net = net.to(torch.float64)
    x1 = torch.randn(5, *shape, dtype=torch.float64)
    x2 = torch.randn(3, *shape, dtype=torch.float64)
    return request.param, net, x1, x2, autograd_kernel(net, x1, x2), autograd_kernel(net, x1)


@pytest.fixture(scope="module")
def mixed():
    torch.manual_seed(1)
    net = Mixed().to(torch.float64)
    x1 = torch.randint(0, 7, (4, 5))
    x1[0, :2] = 0  # padding rows
    x2 = torch.randint(0, 7, (3, 5))
    return net, x1, x2, autograd_kernel(net, x1, x2)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_matches_references(case, strategy):
    name, net, x1, x2, expected, expected_same = case
    reference = tangent_kernel(net, x1, x2, strategy="jacobian")
    assert_kernel_equal(reference, expected)
    k = tangent_kernel(net, x1, x2, strategy=strategy)
    assert k.dtype == torch.float64
    assert_kernel_equal(k, expected)
    assert_kernel_equal(k, reference)
    assert_kernel_equal(tangent_kernel(net, x1, strategy=strategy), expected_same)  # x2=None


@pytest.mark.parametrize("strategy", ["ntk-vp", "structured"])
def test_small_chunks_give_the_same_kernel(case, strategy):
    name, net, x1, x2, expected, expected_same = case
    assert_kernel_equal(tangent_kernel(net, x1, x2, strategy=strategy, chunk=2), expected)
    assert_kernel_equal(tangent_kernel(net, x1, strategy=strategy, chunk=2), expected_same)


def test_off_diagonal_output_blocks(case):
    name, net, x1, x2, expected, expected_same = case
    if expected.shape[-1] == 1:
        pytest.skip("single output")
    k = tangent_kernel(net, x1, strategy="structured")
    assert float(k[..., 0, 1].abs().max()) > 1e-6  # the cross-output blocks are not zero...
    torch.testing.assert_close(k, k.permute(1, 0, 3, 2), rtol=1e-12, atol=1e-12)  # ...and K(x, x')ᵀ = K(x', x)
    assert_kernel_equal(k[..., 1, 0], expected_same[..., 1, 0])


@pytest.mark.parametrize("strategy", ["jacobian", "ntk-vp", "structured"])
def test_params_override_evaluates_at_other_parameters(case, strategy):
    name, net, x1, x2, expected, _ = case
    torch.manual_seed(2)
    other = {n: p.detach() + 0.1 * torch.randn_like(p) for n, p in net.named_parameters()}
    moved = copy.deepcopy(net)
    moved.load_state_dict(other, strict=False)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    k = tangent_kernel(net, x1, x2, params=other, strategy=strategy)
    assert_kernel_equal(k, autograd_kernel(moved, x1, x2))
    assert not torch.allclose(k, expected)
    for n, p in net.named_parameters():  # the module keeps its own parameters
        assert torch.equal(p, before[n])


@pytest.mark.parametrize("order", ["pairs", "grads"])
def test_both_contraction_orders_are_exact(case, order, monkeypatch):
    name, net, x1, x2, expected, _ = case
    monkeypatch.setattr(kernels, "_affine_order", lambda *args: order)
    assert_kernel_equal(tangent_kernel(net, x1, x2, strategy="structured"), expected)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_rule_and_fallback_on_a_mixed_network(mixed, strategy):
    net, x1, x2, expected = mixed
    assert_kernel_equal(tangent_kernel(net, x1, x2, strategy=strategy), expected)


@pytest.mark.parametrize("order", ["pairs", "grads"])
def test_mixed_network_in_both_orders(mixed, order, monkeypatch):
    net, x1, x2, expected = mixed
    monkeypatch.setattr(kernels, "_affine_order", lambda *args: order)
    assert_kernel_equal(tangent_kernel(net, x1, x2, strategy="structured", chunk=3), expected)


def test_structured_plan_routes_unsupported_parameters_to_the_fallback(mixed):
    net, x1, x2, _ = mixed
    theta = kernels.trainable_parameters(net)
    f = kernels._functional(net, {})
    plan = kernels._structured_plan(net, f, theta, x2[:2], len(x1), len(x2))
    assert set(plan.fallback) == {"pre.weight", "head.weight", "head.bias", "scale"}
    assert "frozen.weight" not in theta and "frozen.bias" in theta


def test_jacobian_is_flattened_in_named_parameters_order(case):
    name, net, x1, *_ = case
    j = jacobian(net, x1)
    p = sum(p.numel() for p in net.parameters())
    assert j.shape == (len(x1), net(x1[:1]).shape[1], p)
    torch.testing.assert_close(j, autograd_jacobian(net, x1), rtol=1e-10, atol=1e-12)


def test_batchnorm_in_training_mode_is_refused():
    net = build("resnet20", [1, 8, 8], 2).to(torch.float64).train()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    for strategy in STRATEGIES:
        with pytest.raises(TelecliError, match="BatchNorm layer 'bn1'.*model.eval"):
            tangent_kernel(net, x, strategy=strategy)
    with pytest.raises(TelecliError, match="bn1"):
        jacobian(net, x)


def test_bad_arguments_are_one_line_errors(case):
    name, net, x1, *_ = case
    with pytest.raises(TelecliError, match="unknown kernel strategy"):
        tangent_kernel(net, x1, strategy="fast")
    with pytest.raises(TelecliError, match="not a parameter"):
        tangent_kernel(net, x1, params={"nope": torch.zeros(1)})
    first, p = next(iter(net.named_parameters()))
    with pytest.raises(TelecliError, match="shape"):
        tangent_kernel(net, x1, params={first: torch.zeros(p.numel() + 1)})


def test_auto_prefers_structured_when_every_parameter_has_a_rule(case, mixed):
    name, net, x1, x2, *_ = case
    assert choose_strategy(net, x1, x2) == "structured"  # PolyNet's θ is an nn.Linear without bias
    assert choose_strategy(mixed[0], mixed[1], mixed[2]) in ("jacobian", "ntk-vp")
