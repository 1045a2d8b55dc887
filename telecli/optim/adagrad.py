"""torch.optim.Adagrad: accumulated squared gradients, learning-rate decay, coupled weight decay λ.

    d = ρg + λθ;  s = s + d²;  φ_t = √s + ε;  γ'_t = γ/(1 + (t−1)·lr_decay);  Δθ = −γ'_t d/φ_t
Smoother (φ_t read from the recorded state; D = G − λΘ):  U = (γ'_t/γ) diag(1/φ_t) D
"""

from __future__ import annotations

import torch

from telecli.optim.base import Rule


class Adagrad(Rule):
    name, label, torch_class = "adagrad", "Adagrad", torch.optim.Adagrad
    HYPER = ("weight_decay",)

    def describe(self, group):
        self.refuse(group, "maximize")
        return {"name": "adagrad", "weight_decay": float(group.get("weight_decay", 0.0)),
                "lr_decay": float(group.get("lr_decay", 0.0)), "eps": float(group["eps"]),
                "initial_accumulator_value": float(group.get("initial_accumulator_value", 0.0))}

    def make(self, cfg, params):
        return torch.optim.Adagrad(params, lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay)

    def state_keys(self, info):
        return ("sum",)

    def restore(self, optimizer, params, state, info, step):
        if step == 0:  # Adagrad keeps its state from construction on: the initial accumulator
            for p in params.values():
                optimizer.state[p]["sum"].fill_(info.get("initial_accumulator_value", 0.0))
                optimizer.state[p]["step"].zero_()
            return
        super().restore(optimizer, params, state, info, step)

    def needs_recorded_state(self, info):
        return True

    def rate(self, h: dict, step: int) -> float:
        """γ'_t/γ_t = 1/(1 + (t−1)·lr_decay)."""
        return 1.0 / (1 + (step - 1) * h.get("lr_decay", 0.0))

    def update(self, theta, grad, state, h, step):
        d = h["scale"] * grad
        if h["weight_decay"]:
            d = d + h["weight_decay"] * theta
        s = state["sum"] + d * d
        return -h["lr"] * self.rate(h, step) * d / (s.sqrt() + h["eps"]), {"sum": s}

    def direction(self, ps, G_S, G_C, h, step, state_t):
        lam = h["weight_decay"]
        D_S, D_C = G_S, G_C  # overwritten in place (base.Rule.direction)
        if lam:
            D_S.sub_(ps.theta_S, alpha=lam), D_C.sub_(ps.theta_C, alpha=lam)
        p = (state_t["sum"].sqrt() + h["eps"]) / self.rate(h, step)
        return D_S.div_(p[:, None]), D_C.div_(p)

    def decay(self, h, step, state_t, v):
        return -h["lr"] * self.rate(h, step) * h["weight_decay"] * v / (state_t["sum"].sqrt() + h["eps"])


RULE = Adagrad()
