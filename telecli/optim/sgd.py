"""torch.optim.SGD: momentum β (PyTorch's convention, no bias correction), dampening τ, Nesterov,
coupled weight decay λ (method.md §1.6).

    d = ρg + λθ;   b_1 = d,  b_t = β b_{t−1} + (1−τ) d;   Δθ = −γ (d + β b_t) (Nesterov) or −γ b_t
Smoother (U convention, D = G − λΘ):  M_1 = D,  M_t = β M_{t−1} + (1−τ) D;  U = D + β M_t or M_t;
without momentum U = D.
"""

from __future__ import annotations

import torch

from telecli.optim.base import Rule, zeros_if_missing


class SGD(Rule):
    name, label, torch_class = "sgd", "SGD", torch.optim.SGD
    HYPER = ("weight_decay", "momentum")
    MOMENTUM_KEY = "momentum_buffer"
    STEP_IN_STATE = False

    def describe(self, group):
        self.refuse(group, "maximize")
        info = {"name": "sgd", "weight_decay": float(group.get("weight_decay", 0.0)),
                "momentum": float(group.get("momentum", 0.0))}
        if group.get("nesterov"):
            info["nesterov"] = True
        if group.get("dampening"):
            info["dampening"] = float(group["dampening"])
        return info

    def make(self, cfg, params):
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    def state_keys(self, info):
        return ("momentum_buffer",) if info.get("momentum", 0.0) else ()

    def update(self, theta, grad, state, h, step):
        d = h["scale"] * grad
        if h["weight_decay"]:
            d = d + h["weight_decay"] * theta
        beta = h["momentum"]
        if not beta:
            return -h["lr"] * d, {}
        prev = state.get("momentum_buffer")
        tau = h.get("dampening", 0.0)
        if prev is None or (tau and step == 1):
            buf = d  # PyTorch starts the buffer at b_1 = d (undampened)
        else:
            buf = beta * prev + (1 - tau) * d if tau else beta * prev + d
        out = d + beta * buf if h.get("nesterov") else buf
        return -h["lr"] * out, {"momentum_buffer": buf}

    def state_from_updates(self, delta_prev, lr_prev, info):
        if info.get("nesterov"):
            return None
        return {"momentum_buffer": -delta_prev / lr_prev}  # Δθ_{t−1} = −γ_{t−1} b_{t−1}

    def parameter_state(self, info):
        return bool(info.get("momentum") or info.get("weight_decay"))

    def momentum_state(self, info):
        return bool(info.get("momentum"))

    def direction(self, ps, G_S, G_C, h, step, state_t):
        D_S, D_C = G_S, G_C  # overwritten in place (base.Rule.direction)
        lam = h["weight_decay"]
        if lam:
            D_S.sub_(ps.theta_S, alpha=lam), D_C.sub_(ps.theta_C, alpha=lam)
        beta = h["momentum"]
        if not beta:
            return D_S, D_C
        tau = h.get("dampening", 0.0)
        if tau and step == 1:
            ps.M_S.copy_(D_S)
            ps.M_C.copy_(D_C)
        else:
            ps.M_S.mul_(beta).add_(D_S, alpha=1 - tau) if tau else ps.M_S.mul_(beta).add_(D_S)
            ps.M_C.mul_(beta).add_(D_C, alpha=1 - tau) if tau else ps.M_C.mul_(beta).add_(D_C)
        if h.get("nesterov"):
            return D_S.add_(ps.M_S, alpha=beta), D_C.add_(ps.M_C, alpha=beta)
        return ps.M_S, ps.M_C

    def _coefficients(self, h, step):
        """(c_d, c_b): Δθ = −γ (c_d d + c_b b_{t−1})."""
        beta, tau = h["momentum"], h.get("dampening", 0.0)
        if not beta:
            return 1.0, 0.0
        first = step == 1 and tau
        c_d = 1.0 if first else 1.0 - tau
        if h.get("nesterov"):
            return 1.0 + beta * c_d, (0.0 if first else beta * beta)
        return c_d, (0.0 if first else beta)

    def carry(self, h, step, state_prev, state_t, zero):
        if not h["momentum"]:
            return None
        c_b = self._coefficients(h, step)[1]
        return -h["lr"] * c_b * zeros_if_missing(state_prev, "momentum_buffer", zero)

    def decay(self, h, step, state_t, v):
        c_d = self._coefficients(h, step)[0]
        if c_d == 1.0:
            return -h["lr"] * h["weight_decay"] * v
        return -h["lr"] * c_d * h["weight_decay"] * v


RULE = SGD()
