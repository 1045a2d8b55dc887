"""The step the analysis models (method.md §1.1, §1.6): Δθ_t from θ_{t−1}, the batch gradient of the
declared loss, γ_t, the per-step hyper-parameters and the optimiser state at t−1, through the
optimiser's own update rule (``update`` of its module in telecli.optim, e.g. SGD:
d = ρg + λθ, b = βb_{t−1} + d, Δθ = −γb).

g is the batch-mean gradient of the declared loss (½‖f − y‖² for ``mse``) at θ_{t−1} on X[B_t], and
ρ_t the recorded gradient scale: the loss scale measured at record time (nn.MSELoss is 2/k × the
½-squared loss) times the clipping factor (clip_grad_norm_ rescales g by a scalar). These are PyTorch's
own conventions (SGD without dampening, Adam's bias corrections), so a recorded step of an honest loop
agrees with the modelled one to rounding. :func:`recipe_error` measures the disagreement and
:func:`diagnose` names its likely cause. No I/O in this module.
"""

from __future__ import annotations

import math

import torch

# A recorded step is the modelled one when recipe_error ≤ this (by the dtype the run was trained in).
# float64: an honest loop agrees to ~1e-13; float32: ~1e-6, more where Adam divides by a small √v̂.
RECIPE_TOLERANCE = {torch.float64: 1e-7, torch.float32: 1e-3}


def expected_update(name: str, theta: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor],
                    hyper: dict, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(Δθ_t, optimiser state at t) that the analysis models for step ``step`` ≥ 1 (flat P-vectors;
    ``state`` holds the state at t−1 under PyTorch's key names; the rule is the optimiser's module)."""
    from telecli.optim import get

    return get(name).update(theta, grad, state, hyper, step)


def recipe_error(delta_model: torch.Tensor, delta: torch.Tensor, theta: torch.Tensor) -> float:
    """‖Δθ_model − Δθ‖ / (‖Δθ‖ + ε‖θ_t‖): the relative disagreement of the modelled and recorded update;
    the ε‖θ_t‖ term (ε of the dtype) absorbs the rounding of the stored θ_t = θ_{t−1} + Δθ."""
    eps = torch.finfo(delta.dtype).eps
    num = float(torch.linalg.vector_norm(delta_model - delta))
    den = float(torch.linalg.vector_norm(delta)) + eps * float(torch.linalg.vector_norm(theta))
    return num / den if den > 0 else (0.0 if num == 0 else float("inf"))


def rescale(delta_model: torch.Tensor, delta: torch.Tensor) -> tuple[float, float]:
    """(α, cos): the recorded update as α × the modelled one, and the cosine between them."""
    nm = float(delta_model @ delta_model)
    if nm == 0:
        return float("nan"), float("nan")
    alpha = float(delta_model @ delta) / nm
    nd = float(delta @ delta)
    cos = float(delta_model @ delta) / (nm * nd) ** 0.5 if nd > 0 else float("nan")
    return alpha, cos


def diagnose(delta_model: torch.Tensor, delta: torch.Tensor, observed: dict[str, float] | None = None,
             loss: str = "mse") -> str:
    """The likely cause of a recorded step that is not the modelled one. ``observed`` holds what the
    Recorder saw at that step (docs/format.md: input_deviation, loss_residual, clip_spread)."""
    obs = observed or {}
    if float(delta.abs().max()) == 0.0 and float(delta_model.abs().max()) > 0.0:
        return "θ did not change: rec.step was called without an optimizer.step() before it (called twice?)"
    if obs.get("input_deviation", 0.0) > INPUT_TOLERANCE:
        return ("the batch the model saw differs from X[idx] (augmentation or noise added to the inputs "
                "inside the loop)")
    if obs.get("loss_residual", 0.0) > LOSS_TOLERANCE:
        return (f"the gradient of the loss with respect to the outputs is not that of the declared loss "
                f"'{loss}' (another loss, or targets other than y[idx])")
    if obs.get("clip_spread", 0.0) > CLIP_TOLERANCE:
        return ("the gradient was changed parameter by parameter before optimizer.step() (clip_grad_value_ "
                "or per-parameter scaling); only a scalar rescaling (clip_grad_norm_) is modelled")
    alpha, cos = rescale(delta_model, delta)
    if cos == cos and cos > 1 - 1e-6 and abs(alpha - 1) > 1e-6:
        return (f"the update is {alpha:.4g}× the modelled one: gradient clipping or a loss of another scale "
                f"(nn.MSELoss is 2/k × the ½-squared loss) that the recording did not see")
    return ("the update is not the modelled one (cosine {:.4g}): the batch the optimiser saw is not X[idx] "
            "(augmentation, noise), the loss has terms the declared loss lacks, a layer behaves differently "
            "in train mode, or rec.step was not called once after every optimizer.step()").format(cos)


# What the Recorder observes at record time (per step) and the levels above which it flags a step.
INPUT_TOLERANCE = 1e-6  # max |x_seen − X[idx]| / max |X[idx]|
LOSS_TOLERANCE = 1e-6  # ‖∂L/∂f − κ ∂L_declared/∂f‖ / ‖∂L/∂f‖ (κ: the measured loss scale)
CLIP_TOLERANCE = 1e-6  # relative spread of the per-tensor rescaling factors of the gradient


def output_gradient(loss: str, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∂L/∂f of the declared batch-mean loss (train.optim.loss_fn): (f − y)/|B| for ``mse``,
    (softmax(f) − y)/|B| (σ(f) − y for one output) for ``ce``."""
    B = f.shape[0]
    if loss == "mse":
        return (f - y) / B
    if f.shape[1] == 1:
        return (torch.sigmoid(f) - y) / B
    return (torch.softmax(f, dim=1) - y) / B


def loss_scale(dd: float, dg: float, gg: float) -> tuple[float, float]:
    """(κ, residual): the observed ∂L/∂f = g as κ × the declared loss's d, from the sums d·d, d·g, g·g:
    κ = d·g / d·d and residual = ‖g − κd‖/‖g‖ = √(1 − (d·g)²/(d·d g·g))."""
    if dd == 0:
        return 1.0, (0.0 if gg == 0 else math.inf)
    kappa = dg / dd
    if gg == 0:
        return kappa, 0.0
    return kappa, math.sqrt(max(0.0, 1.0 - dg * dg / (dd * gg)))
