"""The optimiser registry: config / manifest name → the module's :class:`~telecli.optim.base.Rule`.

Adding an optimiser = one module in this package + one line here (docs/architecture.md).
"""

from __future__ import annotations

import torch

from telecli.errors import TelecliError
from telecli.optim import adagrad, adam, rmsprop, sgd
from telecli.optim.base import Rule

OPTIMIZERS: dict[str, Rule] = {
    "sgd": sgd.RULE,
    "adam": adam.ADAM,
    "adamw": adam.ADAMW,
    "rmsprop": rmsprop.RULE,
    "adagrad": adagrad.RULE,
}


def get(name: str) -> Rule:
    try:
        return OPTIMIZERS[name.lower()]
    except KeyError:
        raise TelecliError(f"unknown optimizer '{name}' (use {', '.join(OPTIMIZERS)})") from None


def describe(optimizer: torch.optim.Optimizer) -> dict:
    """The manifest entry of a torch optimiser (one param group), refusing what is not modelled."""
    rule = next((r for r in OPTIMIZERS.values() if type(optimizer) is r.torch_class), None)
    if rule is None:
        names = ", ".join(r.torch_class.__name__ for r in OPTIMIZERS.values())
        raise TelecliError(f"optimiser {type(optimizer).__name__} is not supported by the telescoping analyses "
                           f"(use torch.optim.{names})")
    if len(optimizer.param_groups) != 1:
        raise TelecliError("the Recorder needs an optimiser with a single parameter group")
    return rule.describe(optimizer.param_groups[0])


def hyper_at(info: dict, meta: dict, row: int) -> dict:
    """The hyper-parameters of one step: γ_t, ρ_t (loss scale × clipping factor) and the module's
    per-step records where the Recorder kept them, else the manifest's constants."""
    import math

    def get_(key: str, default):
        v = meta.get(key)
        return default if v is None or not math.isfinite(float(v[row])) else float(v[row])

    rule = get(info["name"])
    h = {k: v for k, v in info.items() if k != "name" and k != "betas"}
    if "betas" in info:
        h["beta1"], h["beta2"] = info["betas"]
    for key in rule.HYPER:
        h[key] = get_(key, h.get(key, 0.0))
    h["lr"] = float(meta["lr"][row])
    h["scale"] = get_("loss_scale", 1.0) * get_("clip", 1.0)
    return h


__all__ = ["OPTIMIZERS", "get", "describe", "hyper_at", "Rule"]
