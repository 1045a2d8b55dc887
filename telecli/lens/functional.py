"""The network as a pure function f(θ, x) (torch.func), its Jacobian and Jacobian-vector products.

Parameters travel as dicts name → tensor in the order of ``model.named_parameters()``; a stack of
parameter dicts (leading step axis) is evaluated with ``vmap``. The module is evaluated in eval mode:
BatchNorm uses its running statistics (passed as buffers); layers whose eval function differs from
what was trained (dropout) are refused by :func:`check_evaluable`.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vmap

from telecli.errors import TelecliError

Params = dict[str, torch.Tensor]


def check_evaluable(model: nn.Module) -> None:
    """Refuse layers that make f(θ, x) ill-defined per example: dropout, train-mode normalisation."""
    for name, mod in model.named_modules():
        if isinstance(mod, nn.modules.dropout._DropoutNd) and mod.p > 0:
            raise TelecliError(f"layer '{name}' is dropout (p={mod.p}); the telescoping analyses need a "
                               f"deterministic network — set p=0")
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.training:
            raise TelecliError(f"layer '{name}' is BatchNorm in train mode; call model.eval() so it uses "
                               f"running statistics")


def function(model: nn.Module) -> Callable[[Params, Params, torch.Tensor], torch.Tensor]:
    """f(θ, buffers, x) → (n, k) outputs."""

    def f(params: Params, buffers: Params, x: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (params, buffers), (x,))
        return out if out.dim() == 2 else out.reshape(out.shape[0], -1)

    return f


def flatten(params: Params) -> torch.Tensor:
    """θ as one vector (parameters in dict order)."""
    return torch.cat([p.reshape(-1) for p in params.values()])


def flatten_stack(params: Params) -> torch.Tensor:
    """A stack of parameter dicts (leading axis S) as an (S, P) matrix."""
    return torch.cat([p.reshape(p.shape[0], -1) for p in params.values()], dim=1)


def jacobian(model: nn.Module, params: Params, buffers: Params, x: torch.Tensor) -> torch.Tensor:
    """Per-example Jacobian ∇_θ f(x), shape (n, k, P), parameters flattened in dict order."""
    f = function(model)

    def one(xi: torch.Tensor) -> Params:
        return jacrev(lambda p: f(p, buffers, xi[None])[0])(params)

    jac = vmap(one)(x)  # name → (n, k, *shape)
    n, k = x.shape[0], next(iter(jac.values())).shape[1]
    return torch.cat([jac[name].reshape(n, k, -1) for name in params], dim=2)


def jvp_block(model: nn.Module, params: Params, tangents: Params, buffers: Params, x: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """For a block of S linearisation points θ_s and directions v_s (leading axis S in every tensor):
    (f_{θ_s}(x), ∇_θ f_{θ_s}(x)ᵀ v_s), each (S, n, k). One forward-mode pass per step (torch.func.jvp)."""
    f = function(model)

    def one(p: Params, v: Params, b: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return jvp(lambda q: f(q, b, x), (p,), (v,))

    return vmap(one)(params, tangents, buffers)


def jvp_directions(model: nn.Module, params: Params, buffers: Params, x: torch.Tensor, tangents: Params
                   ) -> torch.Tensor:
    """∇_θ f_θ(x)ᵀ v_s at one fixed θ for a stack of directions v_s: (S, n, k). Under vmap the primal
    pass at θ is unbatched, so it runs once for the whole stack."""
    f = function(model)
    return vmap(lambda v: jvp(lambda q: f(q, buffers, x), (params,), (v,))[1])(tangents)


def forward_block(model: nn.Module, params: Params, buffers: Params, x: torch.Tensor) -> torch.Tensor:
    """f_{θ_s}(x) for a stack of parameter dicts: (S, n, k)."""
    f = function(model)
    return vmap(lambda p, b: f(p, b, x))(params, buffers)
