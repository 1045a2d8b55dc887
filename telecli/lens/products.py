"""Jacobian products for the parameter-space smoother: J(x) V and J(x)ᵀ R on blocks of columns.

The parameter-space recursion of method.md §1.6 needs two products per step at θ_{t−1}, for the C
columns the S-part carries (plus one for the C-part; method.md §10.1):

* the pseudo-gradient G_t = ρ_t/|B_t| · J_Bᵀ [R^S, R^C] on the batch (P × (C + 1));
* the increments γ_t J(x) [U^S, U^C] on every training and evaluation point ((n + m)·k × (C + 1)).

Two strategies give the same products (to rounding); they differ in cost only, and ``choose`` picks
one (F = forward FLOPs of one example, counted once; k outputs; P parameters; B batch points):

* ``JACOBIAN`` — form J(x) ((n + m)·k × P) and multiply: ≈ (n + m)(1 + 2k)F + 2(n + m + B)·k·P·(C + 1)
  FLOPs, and J in memory. Cheap for one output (k = 1) and many columns (exact p on an MLP).
* ``PRODUCTS`` — never form J: one forward-mode tangent per column at every point and one backward per
  column on the batch (``torch.func`` jvp/vjp, vmapped over chunks of columns; a chain of dense layers
  uses lens.forward's rules): ≈ (n + m + B)(1 + 2(C + 1))F FLOPs, memory ∝ a chunk of columns' activations.
  Cheap when k is large against the columns carried (a sketch, ``--probes R``, of a k-output network),
  and the only one whose memory does not grow with n·k·P.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
>>> theta = {name: p.detach() for name, p in net.named_parameters()}
>>> x = torch.randn(4, 3, dtype=torch.float64)
>>> J = torch.func.jacrev(lambda p: torch.func.functional_call(net, p, (x,)))(theta)
>>> J = torch.cat([J[name].reshape(8, -1) for name in theta], dim=1)          # (n·k, P)
>>> op = Products(net, theta, x)
>>> V, R = torch.randn(J.shape[1], 3, dtype=torch.float64), torch.randn(8, 3, dtype=torch.float64)
>>> bool(torch.allclose(op.mm(V), J @ V) and torch.allclose(op.tmm(R), J.T @ R))
True
"""

from __future__ import annotations

from enum import Enum

import torch
from torch import Tensor, nn
from torch.func import vjp, vmap

from telecli.lens.functional import function, jvp_directions

Params = dict[str, Tensor]


class Strategy(Enum):
    JACOBIAN = "jacobian"
    PRODUCTS = "products"


def costs(k: int, P: int, flops: float, rows: int, batch: int, columns: int) -> dict[Strategy, float]:
    """FLOPs of one step's products under each strategy (module docstring): ``rows`` = n + m points whose
    rows are updated, ``batch`` = |B_t|, ``columns`` = C + 1.

    >>> c = costs(k=1, P=5851, flops=11_700, rows=510, batch=100, columns=18)   # MLP, one output
    >>> min(c, key=c.get).value
    'jacobian'
    >>> c = costs(k=23, P=9888, flops=60_000, rows=324, batch=264, columns=18)  # transformer, 23 outputs
    >>> min(c, key=c.get).value
    'products'
    """
    jacobian = rows * (1 + 2 * k) * flops + 2.0 * (rows + batch) * k * P * columns
    products = (rows + batch) * (1 + 2 * columns) * flops
    return {Strategy.JACOBIAN: jacobian, Strategy.PRODUCTS: products}


def choose(k: int, P: int, flops: float, rows: int, batch: int, columns: int, jacobian_fits: bool) -> Strategy:
    """The cheaper strategy by :func:`costs`; ``PRODUCTS`` whenever J does not fit the memory budget."""
    if not jacobian_fits:
        return Strategy.PRODUCTS
    c = costs(k, P, flops, rows, batch, columns)
    return Strategy.JACOBIAN if c[Strategy.JACOBIAN] <= c[Strategy.PRODUCTS] else Strategy.PRODUCTS


class Products:
    """J(x) = ∂f_θ(x)/∂θ at fixed θ as an operator on columns, J never formed: :meth:`mm` gives J V
    (rows point-major, the order of vec(y)), :meth:`tmm` gives Jᵀ R. ``memory``: bytes a chunk of columns'
    intermediates may take (None: every column at once). Parameters flatten in ``params`` order."""

    def __init__(self, model: nn.Module, params: Params, x: Tensor, memory: int | None = None,
                 activations: int | None = None):
        self.model, self.params, self.x = model, params, x
        self.buffers = dict(model.named_buffers())
        self.f = function(model)
        self.shapes = [(name, p.shape, p.numel()) for name, p in params.items()]
        per_column = max(1, len(x)) * (activations or 1) * x.element_size() * 3  # tangent, its saved inputs
        self.chunk = None if memory is None else max(1, int(memory // per_column))
        self._pull, self._out_shape = None, None  # the batch's VJP, taken once on first use

    def _blocks(self, C: int):
        step = C if self.chunk is None else self.chunk
        return [(a, min(a + step, C)) for a in range(0, C, step)]

    def mm(self, V: Tensor) -> Tensor:
        """J V for V (P × C): (n·k × C)."""
        parts = []
        for a, b in self._blocks(V.shape[1]):
            tangents, offset = {}, 0
            for name, shape, size in self.shapes:
                tangents[name] = V[offset : offset + size, a:b].T.reshape(b - a, *shape)
                offset += size
            out = jvp_directions(self.model, self.params, self.buffers, self.x, tangents)  # (c, n, k)
            parts.append(out.reshape(b - a, -1).T)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def tmm(self, R: Tensor) -> Tensor:
        """Jᵀ R for R (n·k × C): (P × C), one backward pass per column (the primal pass is shared)."""
        if self._pull is None:
            f, buffers, x = self.f, self.buffers, self.x
            out, self._pull = vjp(lambda p: f(p, buffers, x), self.params)
            self._out_shape = out.shape
        parts = []
        for a, b in self._blocks(R.shape[1]):
            cot = R[:, a:b].T.reshape(b - a, *self._out_shape)
            grads = vmap(self._pull)(cot)[0]
            parts.append(torch.cat([grads[name].reshape(b - a, -1) for name, _, _ in self.shapes], dim=1).T)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
