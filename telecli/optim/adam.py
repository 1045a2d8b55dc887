"""torch.optim.Adam (coupled weight decay) and AdamW (decoupled), with or without amsgrad
(method.md §1.6).

    d = ρg (+ λθ for Adam);  m = β₁m + (1−β₁)d;  v = β₂v + (1−β₂)d²;  v̂max = max(v̂max, v) (amsgrad)
    φ_t = √(v or v̂max)/√(1−β₂ᵗ) + ε;  Δθ = −γ m/(1−β₁ᵗ)/φ_t  (− γλθ for AdamW)
Smoother (U convention, φ_t read from the recorded state, a fixed preconditioner):
    D = G (− λΘ for Adam);  M = β₁M + (1−β₁)D;  U = diag(1/φ_t) M/(1−β₁ᵗ)  (− λΘ for AdamW)
"""

from __future__ import annotations

import torch

from telecli.optim.base import Rule, zeros_if_missing


def phi(v: torch.Tensor, step: int, beta2: float, eps: float) -> torch.Tensor:
    """φ_t = √v_t / √(1−β₂ᵗ) + ε, exactly as PyTorch's Adam/AdamW form the denominator."""
    return v.sqrt() / (1.0 - beta2**step) ** 0.5 + eps


class Adam(Rule):
    name, label, torch_class = "adam", "Adam", torch.optim.Adam
    HYPER = ("weight_decay", "beta1", "beta2")
    MOMENTUM_KEY = "exp_avg"
    decoupled = False

    def describe(self, group):
        self.refuse(group, "maximize")
        info = {"name": self.name, "weight_decay": float(group.get("weight_decay", 0.0)),
                "betas": [float(b) for b in group["betas"]], "eps": float(group["eps"])}
        if group.get("amsgrad"):
            info["amsgrad"] = True
        return info

    def make(self, cfg, params):
        from telecli.errors import TelecliError

        if len(cfg.betas) != 2:
            raise TelecliError(f"train.betas needs two values, got {cfg.betas}")
        return self.torch_class(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                weight_decay=cfg.weight_decay)

    def state_keys(self, info):
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if info.get("amsgrad") else ())

    def hyper(self, group):
        b1, b2 = (float(b) for b in group["betas"])
        return {"weight_decay": float(group.get("weight_decay", 0.0)), "beta1": b1, "beta2": b2}

    def needs_recorded_state(self, info):
        return True

    def phi(self, state_t: dict, h: dict, step: int) -> torch.Tensor:
        v = state_t["max_exp_avg_sq"] if h.get("amsgrad") else state_t["exp_avg_sq"]
        return phi(v, step, h["beta2"], h["eps"])

    def update(self, theta, grad, state, h, step):
        d = h["scale"] * grad
        if h["weight_decay"] and not self.decoupled:
            d = d + h["weight_decay"] * theta
        m = h["beta1"] * state["exp_avg"] + (1 - h["beta1"]) * d
        v = h["beta2"] * state["exp_avg_sq"] + (1 - h["beta2"]) * d * d
        new = {"exp_avg": m, "exp_avg_sq": v}
        if h.get("amsgrad"):
            new["max_exp_avg_sq"] = torch.maximum(zeros_if_missing(state, "max_exp_avg_sq", v), v)
        delta = -h["lr"] / (1 - h["beta1"]**step) * m / self.phi(new, h, step)
        if h["weight_decay"] and self.decoupled:
            delta = delta - h["lr"] * h["weight_decay"] * theta
        return delta, new

    def momentum_state(self, info):
        return True

    def direction(self, ps, G_S, G_C, h, step, state_t):
        lam, b1 = h["weight_decay"], h["beta1"]
        D_S, D_C = G_S, G_C  # overwritten in place (base.Rule.direction)
        if lam and not self.decoupled:
            D_S.sub_(ps.theta_S, alpha=lam), D_C.sub_(ps.theta_C, alpha=lam)
        ps.M_S.mul_(b1).add_(D_S, alpha=1 - b1)
        ps.M_C.mul_(b1).add_(D_C, alpha=1 - b1)
        denom = (1.0 - b1**step) * self.phi(state_t, h, step)
        U_S = torch.div(ps.M_S, denom[:, None], out=G_S)  # G is spent: its storage takes U
        U_C = torch.div(ps.M_C, denom, out=G_C)
        if lam and self.decoupled:
            U_S.sub_(ps.theta_S, alpha=lam), U_C.sub_(ps.theta_C, alpha=lam)
        return U_S, U_C

    def carry(self, h, step, state_prev, state_t, zero):
        c1 = 1 - h["beta1"]**step
        return -h["lr"] * h["beta1"] * zeros_if_missing(state_prev, "exp_avg", zero) / (c1 * self.phi(state_t, h, step))

    def decay(self, h, step, state_t, v):
        if self.decoupled:
            return -h["lr"] * h["weight_decay"] * v
        c1 = 1 - h["beta1"]**step
        return -h["lr"] * (1 - h["beta1"]) * h["weight_decay"] * v / (c1 * self.phi(state_t, h, step))


class AdamW(Adam):
    name, label, torch_class = "adamw", "AdamW", torch.optim.AdamW
    decoupled = True


ADAM = Adam()
ADAMW = AdamW()
