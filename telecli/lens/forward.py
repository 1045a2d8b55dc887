"""Forward mode: f_θ(x) and the tangent ∇_θ f_θ(x)ᵀ v (the increment of Eq. 5 (i), the linearisation of
§1.3), as cheaply as the arithmetic allows.

Two strategies, chosen per network (:func:`chain_of`):

* ``chain`` — a network that is a sequence of layers with a rule below (Linear, Flatten, elementwise
  activations): one pass carries (h, ḣ) layer by layer, ḣ_l = Ẇ_l a_{l−1} + ḃ_l + W_l ȧ_{l−1} for a
  dense layer and ȧ = σ'(h) ⊙ ḣ for an activation. That is three matrix products of the forward's size
  per dense layer (two for the first, whose input has no tangent) — the floor. With the primal pass
  cached (:meth:`Chain.primal`), a tangent at a fixed θ (the linearisation at θ₀) costs two.
* ``autodiff`` — anything else: one ``torch.func.jvp`` per step (a loop: under ``vmap`` over steps the
  batched weights cost about twice as much).

A chain is accepted only after it reproduces ``torch.func.jvp`` on probe inputs (values and tangents),
so a network whose ``forward`` does more than run its layers in order falls back to ``autodiff``.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
>>> theta = {k: v.detach() for k, v in net.named_parameters()}
>>> v = {k: torch.ones_like(t) for k, t in theta.items()}
>>> x = torch.randn(5, 3, dtype=torch.float64)
>>> chain = chain_of(net, theta, {}, x)
>>> f, jv = chain.jvp(theta, v, x)
>>> f_ad, jv_ad = torch.func.jvp(lambda p: torch.func.functional_call(net, p, (x,)), (theta,), (v,))
>>> bool(torch.allclose(f, f_ad) and torch.allclose(jv, jv_ad))
True
"""

from __future__ import annotations

import math
import weakref
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Params = dict[str, Tensor]

# Elementwise activations: σ and σ'(h) from the input h and the output σ(h); Identity is skipped.


def _gelu_slope(h: Tensor, _out: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.erf(h / math.sqrt(2.0))) + h * torch.exp(-0.5 * h * h) / math.sqrt(2.0 * math.pi)


ACTIVATIONS: dict[type, tuple[Callable[[Tensor], Tensor], Callable[[Tensor, Tensor], Tensor]] | None] = {
    nn.ReLU: (torch.relu, lambda h, _o: (h > 0).to(h.dtype)),
    nn.Tanh: (torch.tanh, lambda _h, o: 1.0 - o * o),
    nn.Sigmoid: (torch.sigmoid, lambda _h, o: o * (1.0 - o)),
    nn.GELU: (F.gelu, _gelu_slope),
    nn.Identity: None,
}


class Chain:
    """A sequential network as (kind, parameter prefix, module) steps: ``linear``, ``flatten``, ``act``."""

    def __init__(self, steps: list[tuple[str, str, nn.Module]]):
        self.steps = steps

    def jvp(self, theta: Params, v: Params, x: Tensor) -> tuple[Tensor, Tensor]:
        """(f_θ(x), ∇_θ f_θ(x)ᵀ v) in one pass."""
        a, da = x, None
        for kind, name, m in self.steps:
            if kind == "linear":
                W, b = theta[f"{name}weight"], theta.get(f"{name}bias")
                dW, db = v[f"{name}weight"], v.get(f"{name}bias")
                h = F.linear(a, W, b)
                dh = F.linear(a, dW, db)
                if da is not None:
                    dh = dh.addmm_(da, W.t()) if dh.dim() == 2 else dh + F.linear(da, W)
                a, da = h, dh
            elif kind == "flatten":
                a = m(a)
                da = None if da is None else m(da)
            else:
                fn, slope = ACTIVATIONS[type(m)]
                out = fn(a)
                da = None if da is None else slope(a, out) * da
                a = out
        return a, (torch.zeros_like(a) if da is None else da)

    def primal(self, theta: Params, x: Tensor) -> list:
        """The primal pass at θ, kept for :meth:`tangent`: per dense layer its input, per activation σ'(h)."""
        saved, a = [], x
        for kind, name, m in self.steps:
            if kind == "linear":
                saved.append(a)
                a = F.linear(a, theta[f"{name}weight"], theta.get(f"{name}bias"))
            elif kind == "flatten":
                saved.append(None)
                a = m(a)
            else:
                fn, slope = ACTIVATIONS[type(m)]
                out = fn(a)
                saved.append(slope(a, out))
                a = out
        return saved

    def tangent(self, saved: list, theta: Params, v: Params) -> Tensor:
        """∇_θ f_θ(x)ᵀ v at the θ of ``saved`` (two products per dense layer, no primal work)."""
        da = None
        for (kind, name, m), s in zip(self.steps, saved):
            if kind == "linear":
                dh = F.linear(s, v[f"{name}weight"], v.get(f"{name}bias"))
                if da is not None:
                    dh = dh.addmm_(da, theta[f"{name}weight"].t()) if dh.dim() == 2 else \
                        dh + F.linear(da, theta[f"{name}weight"])
                da = dh
            elif kind == "flatten":
                da = None if da is None else m(da)
            elif da is not None:
                da = s * da
        return da


def _steps(model: nn.Module, theta: Params, buffers: Params) -> list | None:
    """The chain of ``model`` (an nn.Sequential, or a module whose only child is one), or None."""
    if buffers:
        return None
    seq, prefix = model, ""
    while not isinstance(seq, nn.Sequential):
        children = list(seq.named_children())
        if len(children) != 1 or seq._parameters:
            return None
        name, seq = children[0]
        prefix += name + "."
    steps, covered = [], set()
    for name, m in seq.named_children():
        p = f"{prefix}{name}."
        if type(m) is nn.Linear:
            steps.append(("linear", p, m))
            covered |= {f"{p}weight"} | ({f"{p}bias"} if m.bias is not None else set())
        elif type(m) is nn.Flatten:
            steps.append(("flatten", p, m))
        elif type(m) in ACTIVATIONS:
            if ACTIVATIONS[type(m)] is not None and not (type(m) is nn.GELU and m.approximate != "none"):
                steps.append(("act", p, m))
            elif type(m) is nn.GELU:
                return None
        else:
            return None
    return steps if covered == set(theta) else None


_CHAINS: "weakref.WeakKeyDictionary[nn.Module, Chain | None]" = weakref.WeakKeyDictionary()


def chain_of(model: nn.Module, theta: Params, buffers: Params, probe: Tensor) -> Chain | None:
    """The ``chain`` strategy for ``model`` if it applies and reproduces torch.func.jvp on ``probe`` (a
    few inputs), else None (``autodiff``). Memoised per model."""
    if model in _CHAINS:
        return _CHAINS[model]
    steps = _steps(model, theta, buffers)
    chain = Chain(steps) if steps else None
    if chain is not None:
        x = probe[:4]
        g = torch.Generator(device="cpu").manual_seed(0)
        v = {k: torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device) for k, t in theta.items()}
        with torch.no_grad():
            f, jv = chain.jvp(theta, v, x)
            saved = chain.primal(theta, x)
            jv2 = chain.tangent(saved, theta, v)
        f_ad, jv_ad = torch.func.jvp(lambda p: torch.func.functional_call(model, (p, buffers), (x,)), (theta,), (v,))
        tol = 1e-10 if f.dtype == torch.float64 else 1e-4
        scale = lambda t: float(t.abs().max()) + 1e-30  # noqa: E731
        if not (f.shape == f_ad.shape and float((f - f_ad).abs().max()) <= tol * scale(f_ad)
                and float((jv - jv_ad).abs().max()) <= tol * scale(jv_ad)
                and float((jv2 - jv_ad).abs().max()) <= tol * scale(jv_ad)):
            chain = None
    _CHAINS[model] = chain
    return chain


__all__ = ["Chain", "chain_of", "ACTIVATIONS"]
