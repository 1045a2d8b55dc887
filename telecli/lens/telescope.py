"""The telescoping model (method.md §1.4, Eq. 5) and the linearisation at initialisation (§1.3).

    f̃_{θ_T}(x) = f_{θ_0}(x) + Σ_t ∇_θ f_{θ_{t−1}}(x)ᵀ Δθ_t                              (Eq. 5 (i))
    f^lin_{θ_t}(x) = f_{θ_0}(x) + ∇_θ f_{θ_0}(x)ᵀ (θ_t − θ_0)                          (§1.3)

Representation (i) needs only the realised parameter deltas, so it holds for any optimiser. The
functions below work on a block of consecutive steps at a time so that a long trajectory streams
through bounded memory: :func:`telescope_block` carries f̃ from the block before.
"""

from __future__ import annotations

import torch
from torch import nn

from telecli.lens.functional import Params, flatten_stack, forward_block, jvp_block, jvp_directions


def telescope_block(model: nn.Module, thetas: Params, buffers: Params, x: torch.Tensor,
                    f_tilde_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Advance the telescoping model over one block of steps.

    ``thetas`` holds θ_{t0}, …, θ_{t1} (leading axis S+1) and ``buffers`` the matching buffers;
    ``f_tilde_prev`` is f̃_{θ_{t0}}(x) (n, k). Returns (f_{θ_{t0}}, …, f_{θ_{t1−1}}) — the actual network
    at the S linearisation points, which the forward-mode pass yields for free — and
    (f̃_{θ_{t0+1}}, …, f̃_{θ_{t1}}), each (S, n, k):  f̃_t = f̃_{t−1} + ∇f_{θ_{t−1}}(x)ᵀ Δθ_t  (Eq. 5 (i)).
    """
    prev = {k: v[:-1] for k, v in thetas.items()}
    delta = {k: v[1:] - v[:-1] for k, v in thetas.items()}
    bufs = {k: v[:-1] for k, v in buffers.items()}
    actual_prev, increments = jvp_block(model, prev, delta, bufs, x)
    return actual_prev, f_tilde_prev[None] + torch.cumsum(increments, dim=0)


def linearized(f0: torch.Tensor, jac0: torch.Tensor, thetas: Params, theta0_flat: torch.Tensor) -> torch.Tensor:
    """f^lin_{θ_t}(x) = f_{θ_0}(x) + J_0(x)(θ_t − θ_0) for a stack of θ_t (§1.3): (S, n, k).

    ``jac0`` is ∇_θ f_{θ_0}(x) as (n, k, P); one matrix product for the whole block."""
    d = flatten_stack(thetas) - theta0_flat[None]  # (S, P)
    n, k, p = jac0.shape
    return f0[None] + (d @ jac0.reshape(n * k, p).T).reshape(-1, n, k)


def linearized_jvp(model: nn.Module, theta0: Params, buffers0: Params, f0: torch.Tensor, x: torch.Tensor,
                   thetas: Params) -> torch.Tensor:
    """The same f^lin as :func:`linearized` without materialising J_0: forward-mode products at θ_0
    along θ_t − θ_0 for the whole stack (for when J_0 does not fit in memory)."""
    d = {name: thetas[name] - theta0[name][None] for name in theta0}
    return f0[None] + jvp_directions(model, theta0, buffers0, x, d)


def actual(model: nn.Module, thetas: Params, buffers: Params, x: torch.Tensor) -> torch.Tensor:
    """f_{θ_t}(x) for a stack of θ_t: (S, n, k)."""
    return forward_block(model, thetas, buffers, x)
