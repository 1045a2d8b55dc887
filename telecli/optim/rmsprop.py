"""torch.optim.RMSprop: smoothing α, optional momentum β and centring, coupled weight decay λ.

    d = ρg + λθ;  s = αs + (1−α)d²;  ḡ = ḡ + (1−α)(d − ḡ) (centered);  φ_t = √(s − ḡ²) + ε or √s + ε
    Δθ = −γ d/φ_t,  or with momentum b = βb + d/φ_t, Δθ = −γ b
Smoother (φ_t read from the recorded state, a fixed preconditioner; D = G − λΘ):
    U = diag(1/φ_t) D,  or M = βM + diag(1/φ_t) D, U = M
"""

from __future__ import annotations

import torch

from telecli.optim.base import Rule, zeros_if_missing


class RMSprop(Rule):
    name, label, torch_class = "rmsprop", "RMSprop", torch.optim.RMSprop
    HYPER = ("weight_decay", "momentum", "alpha")
    MOMENTUM_KEY = "momentum_buffer"

    def describe(self, group):
        self.refuse(group, "maximize")
        info = {"name": "rmsprop", "weight_decay": float(group.get("weight_decay", 0.0)),
                "momentum": float(group.get("momentum", 0.0)), "alpha": float(group["alpha"]),
                "eps": float(group["eps"])}
        if group.get("centered"):
            info["centered"] = True
        return info

    def make(self, cfg, params):
        return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, eps=cfg.eps,
                                   weight_decay=cfg.weight_decay)

    def state_keys(self, info):
        return (("square_avg",) + (("momentum_buffer",) if info.get("momentum") else ())
                + (("grad_avg",) if info.get("centered") else ()))

    def needs_recorded_state(self, info):
        return True

    def phi(self, state: dict, h: dict) -> torch.Tensor:
        s = state["square_avg"]
        if h.get("centered"):
            g = state["grad_avg"]
            return (s - g * g).sqrt() + h["eps"]
        return s.sqrt() + h["eps"]

    def update(self, theta, grad, state, h, step):
        d = h["scale"] * grad
        if h["weight_decay"]:
            d = d + h["weight_decay"] * theta
        a = h["alpha"]
        new = {"square_avg": a * state["square_avg"] + (1 - a) * d * d}
        if h.get("centered"):
            prev = zeros_if_missing(state, "grad_avg", d)
            new["grad_avg"] = prev + (1 - a) * (d - prev)
        p = self.phi(new, h)
        if not h["momentum"]:
            return -h["lr"] * d / p, new
        new["momentum_buffer"] = h["momentum"] * zeros_if_missing(state, "momentum_buffer", d) + d / p
        return -h["lr"] * new["momentum_buffer"], new

    def momentum_state(self, info):
        return bool(info.get("momentum"))

    def direction(self, ps, G_S, G_C, h, step, state_t):
        lam = h["weight_decay"]
        D_S, D_C = G_S, G_C  # overwritten in place (base.Rule.direction)
        if lam:
            D_S.sub_(ps.theta_S, alpha=lam), D_C.sub_(ps.theta_C, alpha=lam)
        p = self.phi(state_t, h)
        D_S.div_(p[:, None]), D_C.div_(p)
        if not h["momentum"]:
            return D_S, D_C
        ps.M_S.mul_(h["momentum"]).add_(D_S)
        ps.M_C.mul_(h["momentum"]).add_(D_C)
        return ps.M_S, ps.M_C

    def carry(self, h, step, state_prev, state_t, zero):
        if not h["momentum"]:
            return None
        return -h["lr"] * h["momentum"] * zeros_if_missing(state_prev, "momentum_buffer", zero)

    def decay(self, h, step, state_t, v):
        return -h["lr"] * h["weight_decay"] * v / self.phi(state_t, h)


RULE = RMSprop()
