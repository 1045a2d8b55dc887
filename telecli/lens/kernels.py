"""Empirical tangent kernels K(x, x') = ∇_θ f(x) ∇_θ f(x')ᵀ of a network f_θ: R^d → R^k.

method.md §1.2, Eq. 3 defines the per-step kernel of SGD as

    K^θ_t(x, x_i) = 1{i ∈ B_t} / |B_t| · ∇_θ f_{θ_{t-1}}(x)ᵀ ∇_θ f_{θ_{t-1}}(x_i).

This module computes only the inner product ∇_θ f(x)ᵀ ∇_θ f(x') (one k×k block per pair of inputs,
evaluated at the parameters it is given). The batch indicator 1{i ∈ B_t}, the 1/|B_t| factor and
the learning rate γ_t are applied by the callers (the recursions of §1.5 and §7: k_t(x) =
J_eval J_batchᵀ / |B_t|). Everything here is a pure function over tensors: no file I/O.

Four strategies give the same kernel (they differ in cost only; names follow neural-tangents'
``NtkImplementation``):

* ``"jacobian"`` (JACOBIAN_CONTRACTION), the reference: per-example Jacobians by
  ``torch.func.vmap(jacrev(·))``, contracted over the P parameters. Cost ≈ (n1 + n2)(1 + 2k)F
  + 2 n1 n2 k² P FLOPs (F = forward FLOPs of one example); memory n2·k·P for the stored Jacobian.
* ``"ntk-vp"`` (NTK_VECTOR_PRODUCTS): the n2·k rows ∂f_j(x2_b)/∂θ come from per-example VJPs; each
  row is pushed through all of x1 at once by one JVP, which yields the column K[:, b, :, j].
  Cost ≈ n2(1 + 2k)F + 3 n1 n2 k F; memory bounded by the block size, J(x1) is never formed.
  (Forward mode follows the true derivative where PyTorch's backward departs from it on purpose:
  an Embedding's padding_idx row, if that row also gets gradient through a tied use.)
* ``"structured"`` (STRUCTURED_DERIVATIVES), the fast exact one: one forward of each input set with
  hooks records each layer's input a, and k backward passes give g_i = ∂f_i/∂(layer output); the
  parameter gradients are never requested. Per layer (``_Rule`` subclasses below):
  Linear/Conv1d/Conv2d weights contribute Σ_{l,m} (a1_l·a2_m)(g1_l·g2_m) over their output positions
  (l, m; one position for a Linear on (n, d) inputs; im2col patches a_l for convolutions), or the
  inner products of the per-example gradients Σ_l g_l ⊗ a_l when those are smaller
  (``_affine_order``; for convolutions they come from one grouped ``convolution_backward``);
  biases contribute Σ_{l,m} g1_l·g2_m. BatchNorm/LayerNorm/GroupNorm affine parameters contribute
  their (small) per-example gradients Σ g ⊙ x̂ and Σ g; Embedding tables Σ_{l,m} 1{idx1_l = idx2_m}
  (g1_l·g2_m). Any other trainable parameter (a raw ``nn.Parameter`` used in a custom forward, a
  layer type without a rule, a weight tied between modules) gets an exact fallback: its per-example
  Jacobian, contracted. A self-check against autograd on two examples moves a layer to the fallback
  when its rule does not reproduce its gradient norm (e.g. its weight is also used outside the
  layer's forward).
* ``"auto"`` picks by the cost model in ``choose_strategy``.

Requirements: inputs carry the example axis first, and f(x_a) depends on x_a only, so BatchNorm must
be in eval mode (running statistics) and dropout off — ``check_per_example`` says which layer is not.
"""

from __future__ import annotations

import math
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, jvp, vjp, vmap

from telecli.errors import TelecliError
from telecli.lens.functional import check_per_example, flatten_jacobian, leaf_output_elements, per_example_jacobian

STRATEGIES = ("auto", "structured", "jacobian", "ntk-vp")
MEMORY_BUDGET = 1 << 29  # bytes of intermediates one block of examples may use (sets default chunks)
JACOBIAN_MEMORY_LIMIT = 8 * MEMORY_BUDGET  # "auto" avoids storing a larger Jacobian J(x2)

Params = dict[str, Tensor]
Network = Callable[[Params, Tensor], Tensor]  # f(θ, x) → (n, k)
Calls = list[Tensor]  # one tensor per call of a layer in a forward pass
Names = tuple[str, ...]  # a layer's trainable parameters, by local name ("weight", "bias")

__all__ = [
    "MEMORY_BUDGET",
    "STRATEGIES",
    "check_per_example",
    "choose_strategy",
    "jacobian",
    "tangent_kernel",
    "trainable_parameters",
]


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def tangent_kernel(
    model: nn.Module,
    x1: Tensor,
    x2: Tensor | None = None,
    *,
    params: Mapping[str, Tensor] | None = None,
    strategy: str = "auto",
    chunk: int | None = None,
    memory: int | None = None,
) -> Tensor:
    """Empirical tangent kernel ∇_θ f(x1)ᵀ ∇_θ f(x2) of ``model``, shape (n1, n2, k, k).

    K[a, b, i, j] = ∂f_i(x1_a)/∂θ · ∂f_j(x2_b)/∂θ, summed over every trainable parameter (those that
    require grad). This is the inner product of method.md Eq. 3 *without* its batch indicator
    1{i ∈ B_t} and 1/|B_t| factor, which callers apply.

    x2=None means x2 = x1 (computed once). ``params`` (name → tensor, names as in
    ``model.named_parameters()``; buffers may be given too) evaluates the kernel at other
    parameters than the module's own, through ``torch.func.functional_call``; missing names keep
    the module's values. ``strategy`` is one of ``STRATEGIES`` (see the module docstring).
    ``chunk`` is the number of examples per block (x1 rows for "jacobian" and "structured", x2
    examples for "ntk-vp"); by default blocks are sized to ``MEMORY_BUDGET``, or to an eighth of
    ``memory`` (bytes the call may use: the job's ``--max-memory``), which then also caps the stored
    Jacobian of "jacobian" at seven eighths.

    The result is detached (not differentiable w.r.t. θ), in the dtype and on the device of f(x).
    Raises TelecliError for BatchNorm in training mode (no per-example Jacobian exists) and for an
    unknown strategy or parameter name.
    """
    if strategy not in STRATEGIES:
        raise TelecliError(f"unknown kernel strategy '{strategy}' (known: {', '.join(STRATEGIES)})")
    if chunk is not None and chunk < 1:
        raise TelecliError(f"kernel chunk must be ≥ 1 example, got {chunk}")
    check_per_example(model)
    theta, consts = _split_parameters(model, params)
    f = _functional(model, consts)
    sizes = _measure(model, f, theta, x1, x2, memory)
    if sizes.p == 0:
        return x1.new_zeros(sizes.n1, sizes.n2, sizes.k, sizes.k, dtype=sizes.dtype)
    if strategy == "auto":
        strategy = _choose(model, theta, sizes)
    if strategy == "jacobian":
        return _jacobian_kernel(f, theta, x1, x2, chunk or sizes.jacobian_rows())
    if strategy == "ntk-vp":
        return _ntk_vp_kernel(f, theta, x1, x2, chunk or sizes.ntk_vp_rows())
    return _structured_kernel(model, f, theta, x1, x2, chunk, sizes)


def jacobian(
    model: nn.Module,
    x: Tensor,
    *,
    params: Mapping[str, Tensor] | None = None,
    chunk: int | None = None,
    memory: int | None = None,
) -> Tensor:
    """Per-example Jacobian ∂f(x_a)/∂θ, shape (n, k, P), detached.

    The last axis is θ flattened parameter by parameter in ``model.named_parameters()`` order
    (trainable parameters only, i.e. ``trainable_parameters(model, params)``). Rows of
    T_t in method.md Eq. 1 are these Jacobians (times 1/|B_t|). ``params``/``chunk``/``memory`` as in
    ``tangent_kernel``.
    """
    check_per_example(model)
    theta, consts = _split_parameters(model, params)
    f = _functional(model, consts)
    sizes = _measure(model, f, theta, x, None, memory)
    if sizes.p == 0:
        return x.new_zeros(sizes.n1, sizes.k, 0, dtype=sizes.dtype)
    return _per_example_jacobian(f, theta, x, chunk or sizes.jacobian_rows())


def choose_strategy(
    model: nn.Module, x1: Tensor, x2: Tensor | None = None, *, params: Mapping[str, Tensor] | None = None,
    memory: int | None = None,
) -> str:
    """The strategy ``tangent_kernel(..., strategy="auto")`` uses for these inputs.

    Cost model (F = forward FLOPs of one example, counted by ``torch.utils.flop_counter`` on one
    example; P trainable parameters; k outputs):

    * "structured" whenever every trainable parameter belongs to a layer with a rule (Linear,
      Conv1d/2d, Embedding, BatchNorm, LayerNorm, GroupNorm; not tied to another module): it never
      forms per-example parameter gradients of Linear layers and costs about one forward and k
      backward passes plus activation-sized contractions.
    * otherwise the cheaper of "jacobian", ≈ (n1 + n2)(1 + 2k)F + 2 n1 n2 k² P, and "ntk-vp",
      ≈ n2(1 + 2k)F + 3 n1 n2 k F; "jacobian" only while J(x2) (n2·k·P values) fits in
      ``JACOBIAN_MEMORY_LIMIT`` bytes (seven eighths of ``memory`` when given).
    """
    check_per_example(model)
    theta, consts = _split_parameters(model, params)
    sizes = _measure(model, _functional(model, consts), theta, x1, x2, memory)
    return _choose(model, theta, sizes)


def example_cost(model: nn.Module, x: Tensor, *, params: Mapping[str, Tensor] | None = None
                 ) -> tuple[int, int, float, int]:
    """(k, P, F, A) for one example of ``x``: outputs, trainable parameters, forward FLOPs (counted by
    ``torch.utils.flop_counter``) and activation elements — what the cost models weigh. Measured once per
    architecture and input shape."""
    theta, consts = _split_parameters(model, params)
    s = _measure(model, _functional(model, consts), theta, x, None)
    return s.k, s.p, s.flops, s.activations


def trainable_parameters(model: nn.Module, params: Mapping[str, Tensor] | None = None) -> Params:
    """θ: name → tensor for every parameter that requires grad, in ``model.named_parameters()``
    order, each replaced by ``params[name]`` when given; all detached."""
    return _split_parameters(model, params)[0]


# ---------------------------------------------------------------------------------------------
# Parameters, the functional network, sizes and the cost model
# ---------------------------------------------------------------------------------------------


def _split_parameters(model: nn.Module, params: Mapping[str, Tensor] | None) -> tuple[Params, Params]:
    """(θ, constants): θ are the trainable parameters (module values overridden by ``params``),
    constants are the other overrides (frozen parameters, buffers)."""
    own = dict(model.named_parameters(remove_duplicate=False))
    own_buffers = dict(model.named_buffers(remove_duplicate=False))
    given = dict(params or {})
    for name, value in given.items():
        ref = own.get(name, own_buffers.get(name))
        if ref is None:
            raise TelecliError(f"kernel params: '{name}' is not a parameter or buffer of {type(model).__name__}")
        if tuple(value.shape) != tuple(ref.shape):
            raise TelecliError(
                f"kernel params: '{name}' has shape {tuple(value.shape)}, the network expects {tuple(ref.shape)}"
            )
    theta = {n: given.get(n, p).detach() for n, p in model.named_parameters() if p.requires_grad}
    consts = {n: v.detach() for n, v in given.items() if n not in theta}
    return theta, consts


def _functional(model: nn.Module, consts: Params) -> Network:
    """f(θ, x) → (n, k): the network at parameters θ (method.md §1.1), outputs flattened to k."""

    def f(theta: Params, x: Tensor) -> Tensor:
        out = functional_call(model, {**consts, **theta}, (x,))
        return out.reshape(out.shape[0], -1)

    return f


@dataclass(frozen=True)
class _Sizes:
    """What the cost model and the default block sizes need to know."""

    n1: int
    n2: int
    same: bool  # x2 is None: one set of inputs
    k: int
    p: int
    flops: float  # forward FLOPs of one example
    activations: int  # activation elements of one example (inputs and layer outputs)
    dtype: torch.dtype
    budget: int = MEMORY_BUDGET  # bytes of intermediates one block may use
    jacobian_limit: int = JACOBIAN_MEMORY_LIMIT  # bytes a stored Jacobian J(x2) may take

    @property
    def itemsize(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()

    def rows_within(self, elements_per_row: float) -> int:
        return max(1, int(self.budget // max(1.0, elements_per_row * self.itemsize)))

    def jacobian_rows(self) -> int:
        return self.rows_within(self.k * (self.p + self.activations))

    def ntk_vp_rows(self) -> int:
        return self.rows_within(self.k * (self.p + self.n1 * self.activations))

    def capture_rows(self) -> int:
        # forward activations, im2col patches (≈ 9× a 3×3 conv's input) and k output gradients
        return self.rows_within(self.activations * (self.k + 10))


_CACHE: OrderedDict = OrderedDict()  # (kind, id(model), signature) → (weakref to the model, value)


def _cached(kind: str, model: nn.Module, signature: tuple, make):
    """Per-model memo of what depends only on the architecture and the input shapes (the per-example
    measurement and the structured plan), so repeated calls — one per training step in the smoother —
    skip the FLOP-counting forward and the plan's self-check. Bounded; a hit must be the same module."""
    key = (kind, id(model), signature)
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is model:
        _CACHE.move_to_end(key)
        return hit[1]
    value = make()
    _CACHE[key] = (weakref.ref(model), value)
    while len(_CACHE) > 32:
        _CACHE.popitem(last=False)
    return value


def _signature(theta: Params, x: Tensor) -> tuple:
    return (tuple(x.shape[1:]), x.dtype, str(x.device),
            tuple((n, tuple(t.shape), t.dtype) for n, t in theta.items()))


def _measure(model: nn.Module, f: Network, theta: Params, x1: Tensor, x2: Tensor | None,
             memory: int | None = None) -> _Sizes:
    """Per-example FLOPs and activations (measured once per architecture and input shape), with the
    sizes and the memory of this call."""
    k, p, flops, elements, dtype = _cached("measure", model, _signature(theta, x1),
                                           lambda: _measure_example(model, f, theta, x1))
    n2 = len(x1) if x2 is None else len(x2)
    limits = {} if memory is None else {"budget": max(1, memory // 8), "jacobian_limit": memory * 7 // 8}
    return _Sizes(len(x1), n2, x2 is None, k, p, flops, elements, dtype, **limits)


def _measure_example(model: nn.Module, f: Network, theta: Params, x1: Tensor) -> tuple:
    """Run one example forward once, counting FLOPs (torch.utils.flop_counter) and activations."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        activations, out = leaf_output_elements(model, lambda: f(theta, x1[:1]))
    p = sum(t.numel() for t in theta.values())
    flops = float(counter.get_total_flops()) or 2.0 * p
    return out.shape[1], p, flops, x1[:1].numel() + activations, out.dtype


def _choose(model: nn.Module, theta: Params, s: _Sizes) -> str:
    """The cost model documented in ``choose_strategy``."""
    if not _candidate_plan(model, theta).fallback:
        return "structured"
    distinct = s.n1 if s.same else s.n1 + s.n2
    jacobian_cost = distinct * (1 + 2 * s.k) * s.flops + 2.0 * s.n1 * s.n2 * s.k**2 * s.p
    ntk_vp_cost = s.n2 * (1 + 2 * s.k) * s.flops + 3.0 * s.n1 * s.n2 * s.k * s.flops
    jacobian_fits = s.n2 * s.k * s.p * s.itemsize <= s.jacobian_limit
    return "jacobian" if jacobian_fits and jacobian_cost <= ntk_vp_cost else "ntk-vp"


# ---------------------------------------------------------------------------------------------
# "jacobian": per-example Jacobians, contracted (the reference)
# ---------------------------------------------------------------------------------------------


def _per_example_jacobian(f: Network, theta: Params, x: Tensor, rows: int) -> Tensor:
    """∂f(x_a)/∂θ for every example, (n, k, P), ``rows`` examples at a time (lens.functional)."""
    return torch.cat([flatten_jacobian(per_example_jacobian(f, theta, xb), theta) for xb in x.split(rows)])


def _contract_grads(q1: Tensor, q2: Tensor) -> Tensor:
    """Σ_p q1[a, i, p] q2[b, j, p] → (n1, n2, k, k)."""
    n1, k1, _ = q1.shape
    n2, k2, _ = q2.shape
    return (q1.reshape(n1 * k1, -1) @ q2.reshape(n2 * k2, -1).T).view(n1, k1, n2, k2).permute(0, 2, 1, 3)


def _jacobian_kernel(f: Network, theta: Params, x1: Tensor, x2: Tensor | None, rows: int) -> Tensor:
    """JACOBIAN_CONTRACTION: J(x1) J(x2)ᵀ with J(x2) stored and J(x1) formed ``rows`` at a time."""
    j2 = _per_example_jacobian(f, theta, x1 if x2 is None else x2, rows)
    blocks = []
    for s in range(0, len(x1), rows):
        j1 = j2[s : s + rows] if x2 is None else _per_example_jacobian(f, theta, x1[s : s + rows], rows)
        blocks.append(_contract_grads(j1, j2))
    return torch.cat(blocks)


# ---------------------------------------------------------------------------------------------
# "ntk-vp": VJPs for the rows of J(x2), one JVP through all of x1 per row
# ---------------------------------------------------------------------------------------------


def _ntk_vp_kernel(f: Network, theta: Params, x1: Tensor, x2: Tensor | None, rows: int) -> Tensor:
    """NTK_VECTOR_PRODUCTS: K[:, b, :, j] = J(x1) · ∂f_j(x2_b)/∂θ, the JVP of f(·, x1) along the
    VJP of f(·, x2_b) with the unit cotangent e_j. ``rows`` x2 examples per block."""
    x2 = x1 if x2 is None else x2

    def gradient_rows(xb: Tensor) -> Params:  # ∂f_j(xb)/∂θ for j = 1..k, as a dict of (k, *shape)
        out, pullback = vjp(lambda th: f(th, xb.unsqueeze(0))[0], theta)
        unit = torch.eye(out.numel(), dtype=out.dtype, device=out.device)
        return vmap(pullback)(unit)[0]

    def push(tangent: Params) -> Tensor:  # J(x1) · tangent, (n1, k)
        return jvp(lambda th: f(th, x1), (theta,), (tangent,))[1]

    columns = []
    for xb in x2.split(rows):
        grads = vmap(gradient_rows)(xb)  # name → (c, k, *shape)
        c, k = next(iter(grads.values())).shape[:2]
        tangents = {name: g.reshape(c * k, *g.shape[2:]) for name, g in grads.items()}
        out = vmap(push)(tangents)  # (c·k, n1, k): [(b, j), a, i]
        columns.append(out.reshape(c, k, len(x1), -1).permute(2, 0, 3, 1))
    return torch.cat(columns, dim=1)


# ---------------------------------------------------------------------------------------------
# "structured": layer by layer, from layer inputs and output gradients
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Block:
    """One layer's share of ∇_θ f(x) for a set of examples (every tensor has the example axis first).

    kind "grads": tensors = (q,), q (n, k, Q) the per-example gradients of the layer's parameters.
    kind "pairs": tensors = (a, g); a (n, L, D) the layer input at L positions (for an Embedding,
    (n, L) integer rows, -1 for padding), g (n, k, O, L) = ∂f_i/∂(layer output) at those positions.
    The weight's per-example gradient is Σ_l g_l ⊗ a_l and the bias's Σ_l g_l; neither is formed.
    """

    kind: str
    tensors: tuple[Tensor, ...]
    weight: bool = True
    bias: bool = False

    def rows(self, s: slice) -> _Block:
        return replace(self, tensors=tuple(t[s] for t in self.tensors))


def _cat_blocks(parts: list[list[_Block]]) -> list[_Block]:
    """Concatenate the blocks of several example ranges, layer by layer."""
    if len(parts) == 1:
        return parts[0]
    return [replace(bs[0], tensors=tuple(map(torch.cat, zip(*(b.tensors for b in bs))))) for bs in zip(*parts)]


def _contract(b1: _Block, b2: _Block) -> Tensor:
    """This layer's term of K(x1, x2), (n1, n2, k, k)."""
    if b1.kind == "grads":
        return _contract_grads(b1.tensors[0], b2.tensors[0])
    return _contract_pairs(b1, b2)


def _contract_pairs(b1: _Block, b2: _Block) -> Tensor:
    """Σ_{l,m} [w·(a1_l·a2_m) + b] (g1_{i,l}·g2_{j,m}) with w, b ∈ {0, 1} for a trainable weight
    and bias: the weight term (a1 a2ᵀ) ⊙ (g1 g2ᵀ) and the bias term g1 g2ᵀ of a shared affine map."""
    (a1, g1), (a2, g2) = b1.tensors, b2.tensors
    n1, k, o, l1 = g1.shape
    n2, _, _, l2 = g2.shape
    gram = _position_gram(a1, a2, g1.dtype) if b1.weight else g1.new_zeros(n1, l1, n2, l2)
    if b1.bias:
        gram = gram + 1
    gg = g1.permute(0, 3, 1, 2).reshape(n1 * l1 * k, o) @ g2.permute(0, 3, 1, 2).reshape(n2 * l2 * k, o).T
    return torch.einsum("albm,alibmj->abij", gram, gg.view(n1, l1, k, n2, l2, k))


def _position_gram(a1: Tensor, a2: Tensor, dtype: torch.dtype) -> Tensor:
    """a1_l · a2_m for every pair of examples and positions, (n1, L1, n2, L2). Integer rows (an
    Embedding's input) are one-hot vectors: equal rows give 1, padding (-1) matches nothing."""
    if a1.is_floating_point():
        n1, l1, d = a1.shape
        n2, l2, _ = a2.shape
        return (a1.reshape(n1 * l1, d) @ a2.reshape(n2 * l2, d).T).view(n1, l1, n2, l2)
    same = (a1[:, :, None, None] == a2[None, None]) & (a1 >= 0)[:, :, None, None]
    return same.to(dtype)


def _affine_order(n1: int, n2: int, k: int, shapes: list[tuple[int, int, int]], weight: bool) -> str:
    """The cheaper exact contraction for a weight shared over L positions ((L, D, O) per group:
    L = 1 for a Linear on (n, D) inputs, L = output locations of a convolution), in multiply–adds:

    * "grads": form Σ_l g_l ⊗ a_l per example, then inner products:
      (n1 + n2)·k·L·O·D + n1·n2·k²·O·D
    * "pairs": n1·n2·L²·(D + k²·O + k²)
    """
    if not weight:
        return "grads"
    grads = sum((n1 + n2) * k * L * O * D + n1 * n2 * k * k * O * D for L, D, O in shapes)
    pairs = sum(n1 * n2 * L * L * (D + k * k * O + k * k) for L, D, O in shapes)
    return "pairs" if pairs < grads else "grads"


class _Rule:
    """How the structured strategy handles one layer type whose parameters are (weight, bias).

    ``save`` runs in the forward hook on the layer's input; ``blocks`` turns the saved inputs and the
    output gradients of every call of the layer (a layer called twice shares its weight across both
    calls, like positions) into ``_Block``s.
    """

    bases: tuple[type[nn.Module], ...] = ()

    def handles(self, m: nn.Module) -> bool:
        return any(isinstance(m, b) and type(m).forward is b.forward for b in self.bases)

    def save(self, m: nn.Module, x: Tensor) -> Tensor:
        """What the contraction needs from one call's input (runs in the forward hook)."""
        raise NotImplementedError

    def order(self, m: nn.Module, active: Names, saved: Calls, grads: Calls, n1: int, n2: int) -> str:
        """"pairs" or "grads" for a kernel between n1 and n2 examples (see ``_affine_order``)."""
        raise NotImplementedError

    def blocks(self, m: nn.Module, active: Names, saved: Calls, grads: Calls, order: str) -> list[_Block]:
        raise NotImplementedError


class _AffineRule(_Rule):
    """A weight applied at L positions, plus a bias: Linear (positions = leading axes) and
    convolutions (positions = output locations, inputs = im2col patches, one block per conv group).
    Calls of the same layer are further positions of the same weight."""

    def inputs(self, m: nn.Module, saved: list[Tensor]) -> Tensor:
        """The layer input at every position, (n, L, D·groups)."""
        raise NotImplementedError

    def outputs(self, m: nn.Module, grads: list[Tensor]) -> Tensor:
        """∂f_i/∂(layer output) at every position, (n, k, O, L)."""
        raise NotImplementedError

    def weight_gradients(self, m: nn.Module, saved: Calls, grads: Calls) -> Tensor:
        """Per-example weight gradients Σ_l g_l ⊗ a_l, (n, k, weight.numel()) in weight layout."""
        a, g = self.inputs(m, saved), self.outputs(m, grads)
        n, k, o, l = g.shape
        return torch.bmm(g.reshape(n, k * o, l), a).view(n, k, -1)

    def order(self, m, active, saved, grads, n1, n2):
        groups = getattr(m, "groups", 1)
        g = self.outputs(m, grads)
        shapes = [(g.shape[3], m.weight[0].numel(), g.shape[2] // groups)] * groups
        return _affine_order(n1, n2, g.shape[1], shapes, "weight" in active)

    def blocks(self, m, active, saved, grads, order):
        weight, bias = "weight" in active, "bias" in active
        g = self.outputs(m, grads)
        if order == "pairs":
            groups = getattr(m, "groups", 1)
            pairs = zip(self.inputs(m, saved).chunk(groups, dim=2), g.chunk(groups, dim=2))
            return [_Block("pairs", (a_, g_), weight, bias) for a_, g_ in pairs]
        parts = [self.weight_gradients(m, saved, grads)] if weight else []
        parts += [g.sum(3)] if bias else []
        return [_Block("grads", (_cat(parts, dim=2),))]


def _cat(tensors: list[Tensor], dim: int) -> Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=dim)


class _LinearRule(_AffineRule):
    bases = (nn.Linear,)

    def save(self, m, x):
        return x

    def inputs(self, m, saved):
        n = saved[0].shape[0]
        return _cat([s.reshape(n, -1, s.shape[-1]) for s in saved], dim=1)

    def outputs(self, m, grads):
        n, k = grads[0].shape[:2]
        return _cat([gr.reshape(n, k, -1, gr.shape[-1]).transpose(2, 3) for gr in grads], dim=3)


class _ConvRule(_AffineRule):
    """Conv1d/Conv2d. The saved input is padded as the layer pads it (unless that is plain zero
    padding, which the patch extraction and ``convolution_backward`` apply themselves)."""

    bases = (nn.Conv1d, nn.Conv2d)

    def save(self, m, x):
        if isinstance(m.padding, str) or m.padding_mode != "zeros":  # 'same'/'valid', reflect, ...
            mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
            return F.pad(x, m._reversed_padding_repeated_twice, mode=mode)
        return x

    def inputs(self, m, saved):
        return _cat([_patches(m, x) for x in saved], dim=1)

    def outputs(self, m, grads):
        n, k, o = grads[0].shape[:3]
        return _cat([gr.reshape(n, k, o, -1) for gr in grads], dim=3)

    def weight_gradients(self, m, saved, grads):
        return sum(_conv_weight_gradients(m, x, g) for x, g in zip(saved, grads))


def _conv_padding(m: nn.Conv1d | nn.Conv2d) -> tuple[int, ...]:
    """The zero padding still to apply to a saved input (``_ConvRule.save`` did any other)."""
    return (0,) * len(m.kernel_size) if isinstance(m.padding, str) or m.padding_mode != "zeros" else m.padding


def _patches(m: nn.Conv1d | nn.Conv2d, x: Tensor) -> Tensor:
    """im2col: the (C_in·kernel) input patch under each output location, (n, L, C_in·Π kernel).
    The channel axis is outermost in a patch, so conv groups are contiguous slices."""
    kernel, dilation, padding, stride = m.kernel_size, m.dilation, _conv_padding(m), m.stride
    if isinstance(m, nn.Conv1d):  # as a 1-pixel-high image
        x = x.unsqueeze(2)
        kernel, dilation, padding, stride = (1, *kernel), (1, *dilation), (0, *padding), (1, *stride)
    return F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride).transpose(1, 2)


def _conv_weight_gradients(m: nn.Conv1d | nn.Conv2d, x: Tensor, g: Tensor) -> Tensor:
    """Per-example, per-output weight gradients of a convolution, (n, k, weight.numel()), without
    im2col: the weight gradient of one convolution whose groups are (example, conv group) pairs and
    whose output channels are (output i, channel) pairs — the grouped-convolution trick."""
    n, k, o = g.shape[:3]
    groups, spatial = m.groups, g.shape[3:]
    o_g = o // groups
    grad_out = g.reshape(n, k, groups, o_g, *spatial).transpose(1, 2).reshape(1, n * groups * k * o_g, *spatial)
    weight_shape = (n * groups * k * o_g, *m.weight.shape[1:])
    _, gw, _ = torch.ops.aten.convolution_backward(
        grad_out,
        x.reshape(1, -1, *x.shape[2:]),
        x.new_zeros(1).expand(weight_shape),  # only its shape is read
        None,
        list(m.stride),
        list(_conv_padding(m)),
        list(m.dilation),
        False,
        [0] * len(spatial),
        n * groups,
        [False, True, False],
    )
    return gw.view(n, groups, k, -1).transpose(1, 2).reshape(n, k, -1)


class _EmbeddingRule(_Rule):
    """Rows of the embedding table: example a's gradient is Σ_l e_{idx_l} ⊗ g_l, so the Gram of
    positions is 1{idx1_l = idx2_m} (padding rows get no gradient)."""

    bases = (nn.Embedding,)

    def handles(self, m):
        return super().handles(m) and m.max_norm is None and not m.scale_grad_by_freq

    def save(self, m, x):
        idx = x.reshape(x.shape[0], -1).clone()
        if m.padding_idx is not None:
            idx[idx == m.padding_idx] = -1
        return idx

    def order(self, m, active, saved, grads, n1, n2):
        return "pairs"

    def blocks(self, m, active, saved, grads, order):
        n, k = grads[0].shape[:2]
        g = _cat([gr.reshape(n, k, -1, gr.shape[-1]).transpose(2, 3) for gr in grads], dim=3)
        return [_Block("pairs", (_cat(saved, dim=1), g))]


class _NormRule(_Rule):
    """Elementwise affine after a normalisation, y = x̂ ⊙ w + b: the per-example gradients are small
    (one value per channel/feature): ∂/∂w = Σ g ⊙ x̂ and ∂/∂b = Σ g over the other axes."""

    bases = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)

    def save(self, m, x):
        if isinstance(m, nn.LayerNorm):
            return F.layer_norm(x, m.normalized_shape, None, None, m.eps)
        if isinstance(m, nn.GroupNorm):
            return F.group_norm(x, m.num_groups, None, None, m.eps)
        return F.batch_norm(x, m.running_mean, m.running_var, None, None, False, 0.0, m.eps)

    def order(self, m, active, saved, grads, n1, n2):
        return "grads"

    def per_parameter(self, m: nn.Module, t: Tensor) -> Tensor:
        """Sum (n, k, *output) over the axes a parameter is broadcast along → (n, k, numel)."""
        n, k = t.shape[:2]
        if isinstance(m, nn.LayerNorm):
            return t.reshape(n, k, -1, math.prod(m.normalized_shape)).sum(2)
        return t.reshape(n, k, t.shape[2], -1).sum(3)

    def blocks(self, m, active, saved, grads, order):
        parts = []
        if "weight" in active:
            parts.append(sum(self.per_parameter(m, g * xh.unsqueeze(1)) for xh, g in zip(saved, grads)))
        if "bias" in active:
            parts.append(sum(self.per_parameter(m, g) for g in grads))
        return [_Block("grads", (_cat(parts, dim=2),))]


_RULES: tuple[_Rule, ...] = (_LinearRule(), _ConvRule(), _EmbeddingRule(), _NormRule())


def _rule_for(m: nn.Module) -> _Rule | None:
    return next((r for r in _RULES if r.handles(m)), None)


@dataclass
class _Layer:
    name: str
    module: nn.Module
    rule: _Rule
    active: Names
    order: str = "grads"

    def parameter_names(self) -> list[str]:
        return [f"{self.name}.{p}" if self.name else p for p in self.active]


@dataclass
class _Plan:
    layers: list[_Layer]
    fallback: list[str] = field(default_factory=list)  # parameters contracted from their Jacobians


def _candidate_plan(model: nn.Module, theta: Params) -> _Plan:
    """Layers with a rule that own trainable parameters; every other trainable parameter (no rule,
    or tied to several modules) goes to the fallback."""
    holders: dict[int, int] = {}
    for m in model.modules():
        for p in m._parameters.values():
            if p is not None:
                holders[id(p)] = holders.get(id(p), 0) + 1
    layers = []
    for name, m in model.named_modules():
        rule = _rule_for(m)
        own = [(pn, p) for pn, p in m.named_parameters(recurse=False) if p.requires_grad]
        active = tuple(pn for pn, p in own if (f"{name}.{pn}" if name else pn) in theta and holders[id(p)] == 1)
        if rule is not None and active:
            layers.append(_Layer(name, m, rule, active))
    covered = {n for layer in layers for n in layer.parameter_names()}
    return _Plan(layers, [n for n in theta if n not in covered])


def _structured_plan(model: nn.Module, f: Network, theta: Params, probe: Tensor, n1: int, n2: int) -> _Plan:
    """The candidate plan, checked on the probe examples: a layer that is not called, or whose rule
    does not reproduce its parameters' gradient norms (e.g. its weight is also used outside its
    forward), moves to the fallback. Each remaining layer gets its contraction order."""
    plan = _candidate_plan(model, theta)
    saved, grads = _capture(plan, f, theta, probe)
    called = [layer for layer in plan.layers if saved[layer.name]]
    for layer in called:
        layer.order = layer.rule.order(layer.module, layer.active, saved[layer.name], grads[layer.name], n1, n2)
    exact = _self_check(called, f, theta, probe, saved, grads)
    handled = {n for layer in exact for n in layer.parameter_names()}
    return _Plan(exact, [n for n in theta if n not in handled])


def _self_check(
    layers: list[_Layer], f: Network, theta: Params, probe: Tensor, saved: dict, grads: dict
) -> list[_Layer]:
    """The layers whose blocks give Σ_a Σ_i |∂f_i(x_a)/∂θ_layer|² as autograd does on the probe."""
    names = [n for layer in layers for n in layer.parameter_names()]
    if not names:
        return []
    truth = dict.fromkeys(names, 0.0)
    leaves = {n: t.detach().requires_grad_(n in truth) for n, t in theta.items()}
    with torch.enable_grad():
        out = f(leaves, probe)
        for a in range(out.shape[0]):
            for i in range(out.shape[1]):
                gs = torch.autograd.grad(out[a, i], [leaves[n] for n in names], retain_graph=True, allow_unused=True)
                for n, g in zip(names, gs):
                    truth[n] += 0.0 if g is None else float(g.pow(2).sum())
    tol = 10 * math.sqrt(torch.finfo(out.dtype).eps)
    exact = []
    for layer in layers:
        blocks = layer.rule.blocks(layer.module, layer.active, saved[layer.name], grads[layer.name], layer.order)
        ours = sum(float(torch.einsum("aaii->", _contract(b, b))) for b in blocks)
        expected = sum(truth[n] for n in layer.parameter_names())
        if abs(ours - expected) <= tol * max(abs(expected), 1e-30):
            exact.append(layer)
    return exact


def _capture(plan: _Plan, f: Network, theta: Params, x: Tensor) -> tuple[dict[str, Calls], dict[str, Calls]]:
    """One forward of x with hooks on the planned layers: per layer and call, the saved input
    (``rule.save``) and the output gradients ∂f_i/∂(layer output), (n, k, *output) — obtained by
    adding a zero probe to each layer output and differentiating f w.r.t. the probes only."""
    saved: dict[str, Calls] = {layer.name: [] for layer in plan.layers}
    probes: dict[str, Calls] = {layer.name: [] for layer in plan.layers}

    def hook_for(layer: _Layer):
        def hook(module, args, out):
            if args[0].shape[:1] != x.shape[:1] or out.shape[:1] != x.shape[:1]:
                raise TelecliError(
                    f"structured kernel: layer '{layer.name}' does not keep the example axis first; "
                    f"use strategy='jacobian'"
                )
            saved[layer.name].append(layer.rule.save(module, args[0].detach()))
            probe = torch.zeros_like(out, requires_grad=True)
            probes[layer.name].append(probe)
            return out + probe

        return hook

    handles = [layer.module.register_forward_hook(hook_for(layer)) for layer in plan.layers]
    try:
        with torch.enable_grad():
            out = f(theta, x)
    finally:
        for h in handles:
            h.remove()
    flat = [p for layer in plan.layers for p in probes[layer.name]]
    flat_grads = iter(_output_gradients(out, flat))
    grads = {layer.name: [next(flat_grads) for _ in probes[layer.name]] for layer in plan.layers}
    return saved, grads


def _output_gradients(out: Tensor, probes: list[Tensor]) -> list[Tensor]:
    """∂f_i(x_a)/∂probe_a for every output i: k backward passes of Σ_a f_i(x_a) (examples are
    independent), stacked to (n, k, *probe shape[1:])."""
    k = out.shape[1]
    if not probes:
        return []
    if not out.requires_grad:
        return [p.new_zeros(p.shape[0], k, *p.shape[1:]) for p in probes]
    per_output = []
    for i in range(k):
        gs = torch.autograd.grad(out[:, i].sum(), probes, retain_graph=i + 1 < k, allow_unused=True)
        per_output.append([torch.zeros_like(p) if g is None else g for p, g in zip(probes, gs)])
    return [torch.stack(gs, dim=1) for gs in zip(*per_output)]


def _blocks(plan: _Plan, f: Network, theta: Params, x: Tensor, rows: int, s: _Sizes) -> list[_Block]:
    """Every layer's ``_Block`` for the examples x (captured ``rows`` at a time), then the fallback
    parameters' per-example Jacobians as one "grads" block."""
    parts = []
    for xb in x.split(rows):
        saved, grads = _capture(plan, f, theta, xb)
        part = []
        for layer in plan.layers:
            if not saved[layer.name]:
                raise TelecliError(
                    f"structured kernel: layer '{layer.name}' was not called for these inputs; "
                    f"use strategy='jacobian'"
                )
            part += layer.rule.blocks(layer.module, layer.active, saved[layer.name], grads[layer.name], layer.order)
        if plan.fallback:
            p = sum(theta[n].numel() for n in plan.fallback)
            rows_fb = min(rows, s.rows_within(s.k * (p + s.activations)))
            part.append(_Block("grads", (_fallback_jacobian(plan, f, theta, xb, rows_fb),)))
        parts.append(part)
    return _cat_blocks(parts)


def _fallback_jacobian(plan: _Plan, f: Network, theta: Params, x: Tensor, rows: int) -> Tensor:
    """Per-example Jacobian w.r.t. the fallback parameters only, (n, k, P_fallback)."""
    rest = {n: t for n, t in theta.items() if n not in plan.fallback}
    sub = {n: theta[n] for n in plan.fallback}
    return _per_example_jacobian(lambda th, xb: f({**rest, **th}, xb), sub, x, rows)


def _contraction_rows(blocks: list[_Block], s: _Sizes) -> int:
    """x1 rows per block so that the largest contraction intermediate fits in the block budget."""
    per_row = 1.0
    for b in blocks:
        n2, k = b.tensors[-1].shape[:2]
        if b.kind == "pairs":
            l2 = b.tensors[1].shape[3]
            per_row = max(per_row, 2.0 * k * k * l2 * n2 * l2 + l2 * n2 * l2)
        else:
            per_row = max(per_row, 2.0 * k * k * n2)
    return min(s.rows_within(per_row), s.capture_rows())


def _structured_kernel(
    model: nn.Module, f: Network, theta: Params, x1: Tensor, x2: Tensor | None, chunk: int | None, s: _Sizes
) -> Tensor:
    """STRUCTURED_DERIVATIVES: Σ over layers of each layer's contraction (``_contract``), with the
    x2 side prepared once and x1 taken ``chunk`` rows at a time."""
    other = x1 if x2 is None else x2
    plan = _cached("plan", model, (_signature(theta, other), s.n1, s.n2),
                   lambda: _structured_plan(model, f, theta, other[:2], s.n1, s.n2))
    side2 = _blocks(plan, f, theta, other, chunk or s.capture_rows(), s)
    rows = chunk or _contraction_rows(side2, s)
    out = []
    for start in range(0, s.n1, rows):
        sl = slice(start, start + rows)
        side1 = [b.rows(sl) for b in side2] if x2 is None else _blocks(plan, f, theta, x1[sl], rows, s)
        out.append(sum(_contract(b1, b2) for b1, b2 in zip(side1, side2)))
    return torch.cat(out)
