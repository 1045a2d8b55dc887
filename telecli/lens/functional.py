"""The network as a pure function f(θ, x) (torch.func), its Jacobian and Jacobian-vector products.

Parameters travel as dicts name → tensor in the order of ``model.named_parameters()``; a stack of
parameter dicts (leading step axis) is evaluated with ``vmap``. The module is evaluated in eval mode:
BatchNorm uses its running statistics (passed as buffers); :func:`check_per_example` refuses a network
whose output for one example depends on the batch or on chance. Whether the network *was trained* in
such a mode is the recording's to say (telecli.jobs.recipe.train_mode_problems).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vmap

from telecli.errors import TelecliError

Params = dict[str, torch.Tensor]


def check_per_example(model: nn.Module) -> None:
    """Raise TelecliError naming the first layer that couples the examples of a batch.

    A per-example Jacobian (and hence a tangent kernel) needs f(x_a) to depend on x_a alone:
    BatchNorm must use running statistics (eval mode, track_running_stats=True), and dropout must be
    off (its masks differ between passes, so no two evaluations agree).
    """
    for name, m in model.named_modules():
        label = name or type(model).__name__
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or m.running_mean is None):
            raise TelecliError(
                f"BatchNorm layer '{label}' normalises with batch statistics (training mode or no "
                f"running stats), so per-example gradients and tangent kernels are undefined: call "
                f"model.eval() first"
            )
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0:
            raise TelecliError(
                f"dropout layer '{label}' is active (training mode), so the network is random and its "
                f"tangent kernel undefined: call model.eval() first"
            )


def function(model: nn.Module) -> Callable[[Params, Params, torch.Tensor], torch.Tensor]:
    """f(θ, buffers, x) → (n, k) outputs."""

    def f(params: Params, buffers: Params, x: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (params, buffers), (x,))
        return out if out.dim() == 2 else out.reshape(out.shape[0], -1)

    return f


def leaf_output_elements(model: nn.Module, run: Callable[[], torch.Tensor]) -> tuple[int, torch.Tensor]:
    """(elements of every leaf module's tensor output, result) of ``run()`` — a forward of ``model`` on one
    example: the per-point activation count the memory plans and the kernels' cost model use."""
    total = 0

    def count(_module, _args, out):
        nonlocal total
        if torch.is_tensor(out):
            total += out.numel()

    handles = [m.register_forward_hook(count) for m in model.modules() if next(m.children(), None) is None]
    try:
        result = run()
    finally:
        for h in handles:
            h.remove()
    return total, result


def flatten(params: Params) -> torch.Tensor:
    """θ as one vector (parameters in dict order)."""
    return torch.cat([p.reshape(-1) for p in params.values()])


def flatten_stack(params: Params) -> torch.Tensor:
    """A stack of parameter dicts (leading axis S) as an (S, P) matrix."""
    return torch.cat([p.reshape(p.shape[0], -1) for p in params.values()], dim=1)


def per_example_jacobian(f: Callable[[Params, torch.Tensor], torch.Tensor], theta: Params, x: torch.Tensor,
                         rows: int | None = None) -> Params:
    """∂f(x_a)/∂θ for every example by parameter: name → (n, k, *shape), by vmap over jacrev, ``rows``
    examples at a time. ``f(θ, x)`` maps a batch to (n, k). The one per-example Jacobian of the project:
    :func:`jacobian`, the tangent kernels and the LMC gradient change all use it."""

    def f_one(th: Params, xa: torch.Tensor) -> torch.Tensor:
        return f(th, xa.unsqueeze(0))[0]

    jac = vmap(jacrev(f_one), in_dims=(None, 0))
    blocks = [jac(theta, xb) for xb in (x.split(rows) if rows else [x])]
    if len(blocks) == 1:
        return blocks[0]
    return {name: torch.cat([b[name] for b in blocks]) for name in theta}


def flatten_jacobian(jac: Params, names) -> torch.Tensor:
    """name → (n, k, *shape) as one (n, k, P) tensor, parameters in ``names`` order."""
    first = jac[next(iter(names))]
    n, k = first.shape[0], first.shape[1]
    return torch.cat([jac[name].reshape(n, k, -1) for name in names], dim=2)


def jacobian(model: nn.Module, params: Params, buffers: Params, x: torch.Tensor) -> torch.Tensor:
    """Per-example Jacobian ∇_θ f(x), shape (n, k, P), parameters flattened in dict order."""
    f = function(model)
    return flatten_jacobian(per_example_jacobian(lambda p, xb: f(p, buffers, xb), params, x), params)


def jvp_block(model: nn.Module, params: Params, tangents: Params, buffers: Params, x: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """For a block of S linearisation points θ_s and directions v_s (leading axis S in every tensor):
    (f_{θ_s}(x), ∇_θ f_{θ_s}(x)ᵀ v_s), each (S, n, k). One forward-mode pass per step (lens.forward:
    the chain of layer rules where it applies, else torch.func.jvp)."""
    from telecli.lens.forward import chain_of

    S = next(iter(params.values())).shape[0]
    at = lambda d, s: {k: v[s] for k, v in d.items()}  # noqa: E731
    chain = chain_of(model, at(params, 0), at(buffers, 0), x)
    f = function(model)
    out = tan = None
    for s in range(S):
        p, v, b = at(params, s), at(tangents, s), at(buffers, s)
        if chain is not None:
            with torch.no_grad():
                o, j = chain.jvp(p, v, x)
        else:
            o, j = jvp(lambda q: f(q, b, x), (p,), (v,))
        if out is None:
            out, tan = o.new_empty((S, *o.shape)), j.new_empty((S, *j.shape))
        out[s], tan[s] = o, j
    return out, tan


def jvp_directions(model: nn.Module, params: Params, buffers: Params, x: torch.Tensor, tangents: Params
                   ) -> torch.Tensor:
    """∇_θ f_θ(x)ᵀ v_s at one fixed θ for a stack of directions v_s: (S, n, k). The primal pass at θ runs
    once for the whole stack (the chain keeps it; under vmap it is unbatched)."""
    from telecli.lens.forward import chain_of

    chain = chain_of(model, params, buffers, x)
    if chain is None:
        f = function(model)
        return vmap(lambda v: jvp(lambda q: f(q, buffers, x), (params,), (v,))[1])(tangents)
    S = next(iter(tangents.values())).shape[0]
    with torch.no_grad():
        saved = chain.primal(params, x)
        first = chain.tangent(saved, params, {k: v[0] for k, v in tangents.items()})
        out = first.new_empty((S, *first.shape))
        out[0] = first
        for s in range(1, S):
            out[s] = chain.tangent(saved, params, {k: v[s] for k, v in tangents.items()})
    return out


def forward_block(model: nn.Module, params: Params, buffers: Params, x: torch.Tensor) -> torch.Tensor:
    """f_{θ_s}(x) for a stack of parameter dicts: (S, n, k)."""
    f = function(model)
    return vmap(lambda p, b: f(p, b, x))(params, buffers)
