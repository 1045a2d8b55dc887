"""What every optimiser module provides (one module per optimiser, registered in telecli.optim).

An optimiser is described in four places of the method, each a method of :class:`Rule`:

* recording — ``describe`` (manifest constants from a torch optimiser, refusing what is not modelled),
  ``state_keys`` (the per-parameter state stored per step), ``hyper`` (the per-step scalars read from
  the param group when optimizer.step() runs), ``make`` (the torch optimiser of a preset), ``restore``
  (put recorded state back for resume, branch and replay);
* the recipe (method.md §1.1, §1.6) — ``update``: Δθ_t and the state at t from θ_{t−1}, the gradient
  and the state at t−1, in PyTorch's own conventions (checked by telecli.jobs.recipe);
* the smoother (method.md §1.6, Eqs. 16–21 corrected) — ``direction``: U_t = (U^S, U^C) with
  Θ_t = Θ_{t−1} + γ_t U_t from the pseudo-gradient G_t = ρ_t T_t(y − f̃_{t−1}), applied to the S- and
  C-parts alike; ``parameter_state`` says whether Θ must be carried (else the kernel recursion of §1.5);
* ``components``: Δθ_t split by origin (gradient, momentum carry-over, weight decay, θ₀ decay).

Vectors are flat P-vectors (parameters in module order); ``h`` is the step's hyper-parameters: ``lr``
(γ_t), ``scale`` (ρ_t = loss scale × clipping factor) and the module's ``HYPER`` keys.
"""

from __future__ import annotations

from typing import Any

import torch

from telecli.errors import TelecliError


class Rule:
    name: str = ""
    label: str = ""  # in figures
    torch_class: type | None = None
    HYPER: tuple[str, ...] = ("weight_decay",)  # per-step scalars (meta.<key>) read from the param group
    MOMENTUM_KEY: str | None = None  # recorded state that carries the momentum M (U convention: M = −state)
    STEP_IN_STATE = True  # PyTorch keeps a per-parameter step count in the state

    # -- recording --------------------------------------------------------------------------------------
    def describe(self, group: dict) -> dict[str, Any]:
        """Manifest constants of a param group; raise TelecliError for options the analyses do not model."""
        raise NotImplementedError

    def refuse(self, group: dict, *flags: str) -> None:
        for flag in flags:
            if group.get(flag):
                raise TelecliError(f"optimiser option {flag}=True is not supported by the telescoping analyses")

    def make(self, cfg, params) -> torch.optim.Optimizer:
        raise NotImplementedError

    def state_keys(self, info: dict) -> tuple[str, ...]:
        return ()

    def hyper(self, group: dict) -> dict[str, float]:
        return {key: float(group.get(key, 0.0)) for key in self.HYPER}

    def restore(self, optimizer: torch.optim.Optimizer, params: dict[str, torch.nn.Parameter],
                state: dict[str, torch.Tensor], info: dict, step: int) -> None:
        """Load recorded per-parameter state (``NAME.KEY`` tensors) taken after ``step`` steps."""
        optimizer.state.clear()
        keys = self.state_keys(info)
        if step == 0 or not keys:
            return
        for name, p in params.items():
            optimizer.state[p] = {key: state[f"{name}.{key}"].to(device=p.device, dtype=p.dtype).clone()
                                  for key in keys}
            if self.STEP_IN_STATE:
                self.add_step(optimizer.state[p], step)

    @staticmethod
    def add_step(st: dict, step: int) -> None:
        scalar = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
        st["step"] = torch.tensor(float(step), dtype=scalar)

    def state_from_updates(self, delta_prev: torch.Tensor, lr_prev: float, info: dict) -> dict | None:
        """The state at t−1 from the previous update where it was not stored (None: not derivable)."""
        return None

    def needs_recorded_state(self, info: dict) -> bool:
        """Whether the smoother reads the recorded state (a preconditioner φ_t)."""
        return False

    # -- the recipe -------------------------------------------------------------------------------------
    def update(self, theta: torch.Tensor, grad: torch.Tensor, state: dict, h: dict, step: int
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    # -- the smoother -----------------------------------------------------------------------------------
    def parameter_state(self, info: dict) -> bool:
        """True when Θ^S (P × nk) must be carried; plain SGD runs on the kernel recursion instead."""
        return True

    def momentum_state(self, info: dict) -> bool:
        """True when the direction carries a momentum M^S, M^C."""
        return False

    def direction(self, ps, G_S: torch.Tensor, G_C: torch.Tensor, h: dict, step: int, state_t: dict
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """U_t = (U^S_t, U^C_t) from the pseudo-gradient G_t (method.md §1.6), updating the momentum parts
        of ``ps`` in place. G_S and G_C are the step's own: the rule may overwrite them (and return them),
        so that a step allocates no P × C array; U is used before the next step only."""
        raise NotImplementedError

    # -- update components ------------------------------------------------------------------------------
    def component_names(self, info: dict) -> list[str]:
        names = ["gradient"]
        if self.momentum_state(info):
            names.append("momentum")
        if info.get("weight_decay"):
            names += ["weight_decay", "theta0_decay"]
        return names

    def components(self, h: dict, step: int, theta_prev, theta_t, state_prev: dict, state_t: dict,
                   theta0_share) -> dict[str, torch.Tensor]:
        """Δθ_t split into directions whose images under ∇f(x)ᵀ are the update components of Δf̃_t; they
        sum to Δθ_t exactly (the gradient term is what remains). ``carry`` and ``decay`` come from the
        module: the momentum carry-over, and the map v ↦ its weight-decay term applied to v."""
        zero = torch.zeros_like(theta_prev)
        out: dict[str, torch.Tensor] = {}
        carry = self.carry(h, step, state_prev, state_t, zero)
        if carry is not None:
            out["momentum"] = carry
        lam = h.get("weight_decay", 0.0)
        if lam:
            total = self.decay(h, step, state_t, theta_prev)
            out["theta0_decay"] = self.decay(h, step, state_t, theta0_share)
            out["weight_decay"] = total - out["theta0_decay"]
        out["gradient"] = (theta_t - theta_prev) - sum(out.values(), zero)
        return out

    def carry(self, h, step, state_prev, state_t, zero):
        return None

    def decay(self, h, step, state_t, v):
        return -h["lr"] * h["weight_decay"] * v


def zeros_if_missing(state: dict, key: str, like: torch.Tensor) -> torch.Tensor:
    v = state.get(key)
    return torch.zeros_like(like) if v is None else v
