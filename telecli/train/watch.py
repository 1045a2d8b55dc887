"""What a training loop really did between two ``rec.step`` calls, observed through hooks on the model
and the optimiser (the Recorder installs them; the user's loop is unchanged):

* how many times ``optimizer.step()`` ran (exactly once per recorded step, or the record is refused);
* the param group at that moment (γ_t and the optimiser module's per-step hyper-parameters: momentum,
  β₁, β₂, weight decay, …), so schedulers that cycle them (OneCycleLR) are recorded per step rather
  than assumed constant;
* the clipping factor c_t = ‖g_seen‖/‖g_raw‖ between the gradient backward accumulated and the one the
  optimiser used (``clip_grad_norm_`` rescales by a scalar: exact; per-tensor rescaling is flagged);
* the inputs of the forward passes that built the gradient, compared with X[idx] (augmentation or noise
  inside the loop is flagged), and ∂L/∂f, compared with the declared loss's: its ratio κ_t is the loss
  scale (nn.MSELoss is 2/k × the ½-squared loss), a residual means another loss;
* the layers whose train-mode forward depends on the batch or on chance (BatchNorm, dropout, …) that ran
  in train mode.

None of it changes what the loop computes. The numbers go to the per-step records (docs/format.md) and
are checked offline by ``telecli verify`` (telecli.jobs.recipe).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd import Variable

from telecli.lens.recipe import loss_scale, output_gradient

# Layers whose forward in train mode differs from eval mode (batch statistics, randomness).
MODE_DEPENDENT = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.RReLU,
                  nn.modules.instancenorm._InstanceNorm)


def mode_dependent_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    out = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.modules.dropout._DropoutNd) and mod.p == 0:
            continue
        if isinstance(mod, nn.modules.instancenorm._InstanceNorm) and not mod.track_running_stats:
            continue  # per-example statistics in both modes
        if isinstance(mod, MODE_DEPENDENT):
            out.append((name or type(mod).__name__, mod))
    return out


class LoopWatch:
    """Hooks that observe one step of a training loop; :meth:`take` returns and resets what they saw."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, params: list[nn.Parameter]):
        self.params = params
        self.layers = mode_dependent_layers(model)
        self.train_mode: dict[str, str] = {}  # layer name → type, seen in train mode in a gradient forward
        self._reset()
        self.handles = [
            optimizer.register_step_pre_hook(self._pre_step),
            optimizer.register_step_post_hook(self._post_step),
            model.register_forward_pre_hook(self._forward_pre),
            model.register_forward_hook(self._forward),
        ]
        self.optimizer = optimizer

    def _reset(self) -> None:
        self.opt_steps = 0
        self.group: dict | None = None
        self.clip = math.nan
        self.clip_spread = math.nan
        self.raw: torch.Tensor | None = None  # per-tensor ‖g‖ once a backward has accumulated every gradient
        self._versions: list[int] | None = None
        self._queued = False  # the end-of-backward callback is queued for the backward running now
        self.inputs: list[torch.Tensor] = []
        self.outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    # -- hooks ------------------------------------------------------------------------------------------
    def _output_grad(self, f: torch.Tensor, g: torch.Tensor) -> None:
        # ∂L/∂f reaches the model's output first in a backward: keep it, and have the engine call
        # _backward_done once that backward has accumulated every gradient (one callback per backward,
        # whatever the number of parameters).
        self.outputs.append((f, g.detach()))
        if not self._queued:
            self._queued = True
            Variable._execution_engine.queue_callback(self._backward_done)

    def _backward_done(self) -> None:
        # The gradients' norms in one call (with gradient accumulation the last backward's norms are
        # those of the summed gradients) and their version counters, which in-place changes bump.
        self._queued = False
        grads = [q.grad for q in self.params]
        if any(g is None for g in grads):
            self.raw = None  # a parameter this backward did not reach: the factor stays unknown
            return
        self.raw = torch.stack(torch._foreach_norm(grads))
        self._versions = [g._version for g in grads]

    def _pre_step(self, optimizer, args, kwargs) -> None:
        g = optimizer.param_groups[0]
        self.group = {k: v for k, v in g.items() if k != "params"}  # the values this step uses
        grads = [p.grad for p in self.params]
        if self.raw is None or any(q is None for q in grads):
            return  # no observed backward produced them: the factor stays unknown (NaN)
        if [q._version for q in grads] == self._versions:
            self.clip, self.clip_spread = 1.0, 0.0  # the gradients backward left, untouched
            return
        seen = torch.stack(torch._foreach_norm([q.detach() for q in grads])).to(self.raw.dtype)
        raw_l, seen_l = (torch.stack([self.raw, seen]) ** 2).tolist()  # one device synchronisation
        total_raw, total_seen = sum(raw_l), sum(seen_l)
        if total_raw <= 0:
            self.clip, self.clip_spread = 1.0, 0.0
            return
        self.clip = math.sqrt(total_seen / total_raw)
        ratios = [math.sqrt(s / r) for s, r in zip(seen_l, raw_l) if r > 0]
        self.clip_spread = max(abs(r - self.clip) for r in ratios) / self.clip if self.clip > 0 else 0.0

    def _post_step(self, optimizer, args, kwargs) -> None:
        self.opt_steps += 1

    def _forward_pre(self, module, args) -> None:
        if not torch.is_grad_enabled():
            return
        if args and torch.is_tensor(args[0]):
            self.inputs.append(args[0].detach())
        for name, mod in self.layers:
            if mod.training:
                self.train_mode[name] = type(mod).__name__

    def _forward(self, module, args, out) -> None:
        if torch.is_grad_enabled() and torch.is_tensor(out) and out.requires_grad:
            f = out.detach()
            out.register_hook(lambda g: self._output_grad(f, g))

    # -- one step ---------------------------------------------------------------------------------------
    def take(self, x_batch: torch.Tensor, y_batch: torch.Tensor, loss: str) -> dict:
        """What the hooks saw since the last call, measured against the recorded batch (X[idx], y[idx])."""
        seen = {"opt_steps": self.opt_steps, "group": self.group, "clip": self.clip,
                "clip_spread": self.clip_spread, "input_deviation": math.nan, "batch_seen": None,
                "loss_scale": math.nan, "loss_residual": math.nan}
        x_seen = _match(self.inputs, x_batch)
        if x_seen is not None:
            seen["batch_seen"] = x_seen.shape[0]
            if x_seen.shape == x_batch.shape:
                ref = x_batch
                if ref.dtype != x_seen.dtype or ref.device != x_seen.device:
                    ref = ref.to(x_seen.device, x_seen.dtype)
                if torch.equal(x_seen, ref):
                    seen["input_deviation"] = 0.0
                else:
                    dev, scale = torch.stack([(x_seen - ref).abs().max(), ref.abs().max()]).tolist()
                    seen["input_deviation"] = dev / (scale or 1.0)
        if self.outputs:
            f = _join([o[0] for o in self.outputs])
            g = _join([o[1] for o in self.outputs])
            if f.shape[0] == y_batch.shape[0] and f.shape[1] == y_batch.numel() // y_batch.shape[0]:
                # the residual is a difference of near-equal numbers: sums in float64
                if f.dtype != torch.float64:
                    f, g = f.to(torch.float64), g.to(torch.float64)
                y = y_batch if y_batch.shape == f.shape else y_batch.reshape(f.shape)
                if y.dtype != f.dtype or y.device != f.device:
                    y = y.to(f.device, f.dtype)
                d = output_gradient(loss, f, y)
                m = torch.stack([d.view(-1), g.reshape(-1)])
                (dd, dg), (_, gg) = (m @ m.T).tolist()
                seen["loss_scale"], seen["loss_residual"] = loss_scale(dd, dg, gg)
        self._reset()
        return seen


def _join(tensors: list[torch.Tensor]) -> torch.Tensor:
    flat = [t.reshape(t.shape[0], -1) for t in tensors]
    return flat[0] if len(flat) == 1 else torch.cat(flat)


def _match(inputs: list[torch.Tensor], x_batch: torch.Tensor) -> torch.Tensor | None:
    """The input batch that built the gradient: the forwards' inputs joined (gradient accumulation), or
    the single one whose example shape is the data's; None when no forward can be compared."""
    same = [x for x in inputs if x.dim() == x_batch.dim() and x.shape[1:] == x_batch.shape[1:]]
    if not same:
        return None
    if len(same) == 1:
        return same[0]
    joined = torch.cat(same)
    if joined.shape[0] == x_batch.shape[0]:
        return joined
    return next((x for x in reversed(same) if x.shape[0] == x_batch.shape[0]), same[-1])
