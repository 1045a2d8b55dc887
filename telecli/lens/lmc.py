"""Linear mode connectivity and weight averaging (method.md §5): pure functions over tensors.

Two children θ_A, θ_B spawned from one checkpoint θ_{t'} (§5.1) are compared along the segment

    θ_α = α θ_A + (1 − α) θ_B,        α ∈ [0, 1]

through three curves on the evaluation points (§5.2):

* the weight average       f_{θ_α}(x)                          → ℓ^lmc_α = ℓ(f_{θ_α}), accuracy;
* the α-weighted mean      α ℓ(f_{θ_A}) + (1 − α) ℓ(f_{θ_B})   → ℓ^avg_α (same for accuracy);
* the output ensemble      f̄^α(x) = α f_{θ_A}(x) + (1 − α) f_{θ_B}(x)  (pre-activation outputs).

Eq. 10: once gradients stop changing, f̄^α ≈ f_{θ_α}; :func:`prediction_gap` measures the difference.
The barriers are the LMC definition's supremum (loss) and the accuracy decrease of Fig. 6 (1) in both
readings of §5.2 (max over α; value at α = 0.5).

The gradient-change metric of Fig. 6 (2)–(3) (§5.2):

    Δ^grad_L(t') = mean_{x ∈ X_eval} mean_{j ∈ L} (∂_{θ_j} f_{θ_{t'+Δ}}(x) − ∂_{θ_j} f_{θ_{t'}}(x))²

on pre-softmax outputs; with k outputs the squared change is averaged over the k outputs
(``reduction="mean"``) or taken for the output of the true class (``reduction="true"``), method.md §8.8.

BatchNorm: the averaged model's running statistics are either interpolated like the parameters or
re-estimated on training data (:func:`recompute_batchnorm`), method.md §8.8. No I/O in this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, vmap

from telecli.lens.functional import Params, function, per_example_jacobian
from telecli.lens import metrics

__all__ = [
    "interpolate", "weight_average_outputs", "ensemble", "losses", "accuracies", "prediction_gap",
    "Curves", "curves", "barriers", "layer_groups", "Layer", "gradient_change", "recompute_batchnorm",
]


# ------------------------------------------------------------------------------------ interpolation

def interpolate(a: Params, b: Params, alphas: torch.Tensor) -> Params:
    """θ_α = α θ_A + (1 − α) θ_B for every α (leading axis len(alphas)).

    Computed as ``α·a + (1−α)·b``, so α = 1 gives θ_A and α = 0 gives θ_B bit for bit. Tensors that are
    equal in A and B (frozen weights, fixed random features) and integer tensors (BatchNorm's
    ``num_batches_tracked``) are repeated unchanged (an expanded view), never recomputed."""
    out: Params = {}
    n = alphas.shape[0]
    for name, ta in a.items():
        tb = b[name]
        if not ta.is_floating_point() or torch.equal(ta, tb):
            out[name] = ta.expand(n, *ta.shape)
            continue
        w = alphas.to(device=ta.device, dtype=ta.dtype).reshape(-1, *([1] * ta.dim()))
        out[name] = w * ta + (1 - w) * tb
    return out


def weight_average_outputs(model: nn.Module, params: Params, buffers: Params, x: torch.Tensor,
                           batched: bool = True) -> torch.Tensor:
    """f_{θ_α}(x) for a stack of parameter (and buffer) dicts: (A, n, k), in eval mode.

    ``batched``: one ``vmap`` over the stack (a single pass with A-fold wider layers); otherwise one
    forward pass per α (same values; the faster choice depends on the device and the network)."""
    f = function(model)
    n_alpha = next(iter(params.values())).shape[0]
    if batched:
        return vmap(lambda p, b: f(p, b, x))(params, buffers)
    return torch.stack([f({k: v[i] for k, v in params.items()}, {k: v[i] for k, v in buffers.items()}, x)
                        for i in range(n_alpha)])


def ensemble(f_a: torch.Tensor, f_b: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """f̄^α = α f_A + (1 − α) f_B on pre-activation outputs (Eq. 10): (A, n, k)."""
    w = alphas.to(f_a.dtype).reshape(-1, 1, 1)
    return w * f_a[None] + (1 - w) * f_b[None]


# ---------------------------------------------------------------------------------------- metrics

def losses(f: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean loss over the points for each leading index — the training loss of the run (lens.metrics)."""
    return metrics.loss(f, y.to(f.dtype), kind)


def accuracies(f: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """Accuracy for each leading index (lens.metrics: one output decided at 0.5 for ``mse``, 0 for ``ce``)."""
    return metrics.accuracy(f, y, kind)


def prediction_gap(f_weight: torch.Tensor, f_ensemble: torch.Tensor) -> torch.Tensor:
    """Eq. 10's discrepancy between weight average and ensemble: root mean square over points and
    outputs of f_{θ_α}(x) − f̄^α(x), per α."""
    return ((f_weight - f_ensemble) ** 2).mean(dim=(-2, -1)).sqrt()


@dataclass
class Curves:
    """Per-α curves (§5.2), each (A,)."""

    weight_loss: torch.Tensor  # ℓ(f_{θ_α})  (ℓ^lmc_α)
    weight_acc: torch.Tensor
    mean_loss: torch.Tensor  # α ℓ(f_A) + (1 − α) ℓ(f_B)  (ℓ^avg_α)
    mean_acc: torch.Tensor
    ensemble_loss: torch.Tensor  # ℓ(α f_A + (1 − α) f_B)
    ensemble_acc: torch.Tensor
    prediction_gap: torch.Tensor  # RMS of f_{θ_α} − f̄^α

    def as_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.__dict__)


def curves(f_weight: torch.Tensor, f_a: torch.Tensor, f_b: torch.Tensor, alphas: torch.Tensor,
           y: torch.Tensor, kind: str) -> Curves:
    """All curves of one pair from the weight-averaged outputs (A, n, k) and the children's outputs."""
    w = alphas.to(f_weight.dtype)
    la, lb = losses(f_a, y, kind), losses(f_b, y, kind)
    aa, ab = accuracies(f_a, y, kind), accuracies(f_b, y, kind)
    f_ens = ensemble(f_a, f_b, alphas)
    return Curves(
        weight_loss=losses(f_weight, y, kind), weight_acc=accuracies(f_weight, y, kind),
        mean_loss=w * la + (1 - w) * lb, mean_acc=w * aa + (1 - w) * ab,
        ensemble_loss=losses(f_ens, y, kind), ensemble_acc=accuracies(f_ens, y, kind),
        prediction_gap=prediction_gap(f_weight, f_ens),
    )


def barriers(c: Curves, alphas: torch.Tensor, over: torch.Tensor | None = None) -> dict[str, float]:
    """The scalar metrics of one pair (§5.2), maxima over the rows ``over`` of ``alphas`` (all by default;
    the α grid when extra values such as 0.5 were evaluated too):

    * ``acc_barrier``  max_α [α Acc_A + (1−α) Acc_B − Acc(θ_α)]   (main text, Fig. 6 (1); FDRC20's
      instability), ``loss_barrier`` max_α [ℓ(θ_α) − (α ℓ_A + (1−α) ℓ_B)]  (the LMC definition's sup);
    * ``acc_gap_mid`` / ``loss_gap_mid``: the same differences at α = 0.5 (App. C.3's reading: mean
      accuracy of the children minus that of their average); NaN when 0.5 is not among ``alphas``;
    * ``prediction_gap_max`` / ``prediction_gap_mid``: :func:`prediction_gap` (Eq. 10), max and at 0.5.
    Both barriers are ≥ 0 when the rows hold α = 0 or 1 (the difference is 0 there)."""
    acc_diff = c.mean_acc - c.weight_acc
    loss_diff = c.weight_loss - c.mean_loss
    rows = slice(None) if over is None else over
    mid = torch.nonzero(torch.isclose(alphas, torch.tensor(0.5, dtype=alphas.dtype, device=alphas.device),
                                      atol=1e-12, rtol=0))
    at = (lambda v: float(v[int(mid[0])])) if len(mid) else (lambda v: float("nan"))
    return {
        "acc_barrier": float(acc_diff[rows].max()), "loss_barrier": float(loss_diff[rows].max()),
        "acc_gap_mid": at(acc_diff), "loss_gap_mid": at(loss_diff),
        "prediction_gap_max": float(c.prediction_gap[rows].max()), "prediction_gap_mid": at(c.prediction_gap),
    }


# ------------------------------------------------------------------------------------ gradient change

@dataclass
class Layer:
    name: str  # module path, e.g. "layer1.0.bn1"
    params: list[str]  # its trainable parameter names (weight, bias)
    kind: str  # "linear" | "conv" | "batchnorm" | lower-cased class name
    size: int  # number of scalar parameters


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, nn.modules.batchnorm._NormBase):
        return "batchnorm"
    return type(module).__name__.lower()


def layer_groups(model: nn.Module, param_names: list[str] | None = None) -> list[Layer]:
    """The layers of §5.2's gradient metric: every module that owns trainable parameters directly, with
    its parameters pooled (weight and bias together), in the order of ``model.named_parameters()``."""
    owned = dict(model.named_parameters())
    keep = set(param_names) if param_names is not None else set(owned)
    layers: dict[str, Layer] = {}
    modules = dict(model.named_modules())
    for full, p in owned.items():
        if full not in keep or not p.requires_grad:
            continue
        mod_name = full.rsplit(".", 1)[0] if "." in full else ""
        layer = layers.get(mod_name)
        if layer is None:
            layer = layers[mod_name] = Layer(mod_name or "(root)", [], _kind(modules[mod_name]), 0)
        layer.params.append(full)
        layer.size += p.numel()
    return list(layers.values())


def _per_example_jacobian(model: nn.Module, params: Params, buffers: Params, x: torch.Tensor) -> Params:
    """name → (n, k, *shape): ∂f_c(x_i)/∂θ for every point and output (lens.functional)."""
    f = function(model)
    return per_example_jacobian(lambda p, xb: f(p, buffers, xb), params, x)


def gradient_change(model: nn.Module, theta_1: Params, buffers_1: Params, theta_2: Params, buffers_2: Params,
                    x: torch.Tensor, layers: list[Layer], reduction: str = "mean",
                    y: torch.Tensor | None = None) -> torch.Tensor:
    """Per point and layer, mean_{j ∈ L} (∂_j f_{θ_2}(x) − ∂_j f_{θ_1}(x))²: (n, len(layers)).

    The mean over x of the result is Δ^grad_L (§5.2). Outputs (k > 1): ``reduction="mean"`` averages
    the squared change over the k outputs; ``"true"`` keeps the output of the true class (argmax of
    ``y``, needed then)."""
    if reduction not in ("mean", "true"):
        raise ValueError(f"reduction must be 'mean' or 'true', got {reduction!r}")
    j1 = _per_example_jacobian(model, theta_1, buffers_1, x)
    j2 = _per_example_jacobian(model, theta_2, buffers_2, x)
    n = x.shape[0]
    cols = []
    for layer in layers:
        total = None
        for name in layer.params:
            d = (j2[name] - j1[name]).reshape(n, j1[name].shape[1], -1)  # (n, k, size)
            s = (d * d).sum(dim=2)  # (n, k)
            total = s if total is None else total + s
        if reduction == "mean":
            per = total.mean(dim=1)
        else:
            if y is None:
                raise ValueError("reduction 'true' needs the targets y")
            cls = y.argmax(dim=1) if y.shape[1] > 1 else torch.zeros(n, dtype=torch.long, device=x.device)
            per = total.gather(1, cls[:, None].to(x.device))[:, 0]
        cols.append(per / layer.size)
    return torch.stack(cols, dim=1)


# ------------------------------------------------------------------------------------------ BatchNorm

def recompute_batchnorm(model: nn.Module, params: Params, buffers: Params, x: torch.Tensor,
                        batch_size: int) -> Params:
    """Re-estimate every BatchNorm layer's running mean and variance for the network θ = ``params``:
    forward passes over ``x`` in batches of ``batch_size`` in train mode with ``momentum=None``
    (cumulative average over the batches), without gradients. Returns new buffers (the input is not
    modified); other buffers are copied unchanged."""
    new = {k: v.clone() for k, v in buffers.items()}
    bns = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or x.shape[0] == 0:
        return new
    saved = [(m, m.momentum, m.training) for _, m in bns]
    was_training = model.training
    try:
        for name, m in bns:
            m.momentum = None
            prefix = f"{name}." if name else ""
            if m.track_running_stats:
                new[prefix + "running_mean"].zero_()
                new[prefix + "running_var"].fill_(1.0)
                new[prefix + "num_batches_tracked"].zero_()
        model.train()
        bs = max(1, int(batch_size))
        starts = list(range(0, x.shape[0], bs))
        if len(starts) > 1 and x.shape[0] - starts[-1] == 1:
            starts.pop()  # a last batch of one point has no batch variance
        with torch.no_grad():
            for i in starts:
                functional_call(model, (params, new), (x[i : i + bs],))
    finally:
        model.train(was_training)
        for m, momentum, training in saved:
            m.momentum = momentum
            m.train(training)
    return new
