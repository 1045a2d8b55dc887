"""The recipe check: every recorded step against the step the analysis models (telecli.lens.recipe).

For each step t the run holds θ_{t−1}, B_t, γ_t and the per-step hyper-parameters, the gradient scale
ρ_t, the loss and the optimiser state; from them the batch gradient of the declared loss is recomputed
at θ_{t−1} (the network as the analyses evaluate it: eval mode, recorded buffers) and pushed through the
optimiser's update rule. The result is compared with the recorded Δθ_t (and the recorded state at t).
Run by ``telecli verify`` and before ``telecli telescope --effective-params``, whose smoother assumes
exactly this recipe at every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from telecli.lens import recipe as lens
from telecli.lens.functional import flatten, function
from telecli.optim import get as get_optimizer
from telecli.optim import hyper_at
from telecli.progress import Progress
from telecli.store.trajectory import BUFFER, OPT, THETA, Trajectory
from telecli.train.optim import loss_fn
from telecli.train.replay import dense_states

OBSERVED = ("input_deviation", "loss_residual", "clip_spread")


@dataclass
class RecipeReport:
    """Per-step recipe errors (NaN where a step could not be checked) and the first failures' causes."""

    steps: np.ndarray
    error: np.ndarray
    tolerance: float
    failures: list[tuple[int, str]] = field(default_factory=list)  # (step, cause), the first few
    n_failed: int = 0
    problems: list[str] = field(default_factory=list)  # whole-run reasons (layers in train mode, …)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.n_failed == 0

    def lines(self) -> list[str]:
        """One line per problem: whole-run reasons, then the first failing step with its cause."""
        out = list(self.problems)
        if self.n_failed:
            t, cause = self.failures[0]
            out.append(f"step {t} is not the step the analysis models (recipe error {self.error_at(t):.3g} > "
                       f"{self.tolerance:g}; {self.n_failed} of {len(self.steps)} steps): {cause}")
        return out

    def error_at(self, t: int) -> float:
        return float(self.error[int(np.searchsorted(self.steps, t))])

    def summary(self) -> str:
        finite = self.error[np.isfinite(self.error)]
        if self.ok:
            worst = f"max error {finite.max():.2g}" if finite.size else "no step checkable"
            return f"recipe: every step is the modelled one ({worst}, tolerance {self.tolerance:g})"
        return "recipe: " + "; ".join(self.lines())


def train_mode_problems(traj: Trajectory, model: torch.nn.Module) -> list[str]:
    """Layers that ran in train mode while a batch-dependent (or random) forward differs from the eval
    function the analyses evaluate. Runs recorded before this was kept: every such layer is suspect."""
    from telecli.train.watch import mode_dependent_layers

    m = traj.manifest
    if "train_mode_layers" in m:
        layers = [(d["name"], d["type"]) for d in m["train_mode_layers"]]
    else:
        layers = [(name, type(mod).__name__) for name, mod in mode_dependent_layers(model)]
    def what(name, kind):
        return f"layer '{name}' is dropout ({kind})" if "Dropout" in kind else f"layer '{name}' ({kind})"

    return [f"{what(name, kind)} ran in train mode while recorded: its forward depends on the batch or on "
            f"chance, so f(θ, x) of one example is not the function that was trained; record with the layer "
            f"in eval mode (or without it)" for name, kind in layers]


def gradient_scale(meta: dict[str, np.ndarray], row: int) -> float:
    """ρ_t = loss scale × clipping factor (1 where not recorded)."""
    def get(key):
        v = meta.get(key)
        return 1.0 if v is None or not math.isfinite(float(v[row])) else float(v[row])

    return get("loss_scale") * get("clip")


def check_recipe(traj: Trajectory, model: torch.nn.Module, device: torch.device, progress: bool = False,
                 max_failures: int = 5) -> RecipeReport:
    """Recompute every step of ``traj`` as the analysis models it and compare with the record.
    ``model`` is the rebuilt network (eval mode) on ``device``."""
    m = traj.manifest
    opt = m["optimizer"]
    dtype = next(model.parameters()).dtype
    tol = lens.RECIPE_TOLERANCE.get(dtype, 1e-3)
    data = traj.data()
    X, Y = data["x_train"].to(device, dtype), data["y_train"].to(device, dtype)
    names = [n for n, _ in model.named_parameters()]
    f = function(model)
    meta = traj.meta()
    first, last = int(traj.steps[0]), int(traj.steps[-1])
    steps = np.arange(first + 1, last + 1)
    error = np.full(len(steps), np.nan)
    report = RecipeReport(steps, error, tol, problems=train_mode_problems(traj, model))
    rule = get_optimizer(opt["name"])
    momentum = rule.MOMENTUM_KEY is not None and (opt.get("momentum") or np.nanmax(meta.get("momentum", [0.0]),
                                                                                   initial=0.0))
    needs_state = rule.needs_recorded_state(opt)
    if needs_state and not m.get("optimizer_state"):
        report.notes.append(f"no optimiser state stored: the {opt['name']} steps cannot be checked")
        return report
    prev = None
    prev_delta = None
    with Progress(len(steps), f"recipe {traj.run_dir.name}", enabled=progress) as bar:
        for t, st in dense_states(traj, (THETA, BUFFER, OPT), device=device):
            if prev is None:
                prev = (t, st)
                continue
            _, st_prev = prev
            r = t - first - 1
            params = {n: st_prev[THETA][n].to(device, dtype) for n in names}
            buffers = {n: (v.to(device, dtype) if v.is_floating_point() else v.to(device))
                       for n, v in st_prev[BUFFER].items()}
            batch = torch.as_tensor(traj.batch(meta, r), device=device)
            xb, yb = X[batch], Y[batch]
            grad = flatten(torch.func.grad(lambda p: loss_fn(m["loss"], f(p, buffers, xb), yb))(params))
            theta_prev = flatten(params)
            theta_t = flatten({n: st[THETA][n].to(device, dtype) for n in names})
            delta = theta_t - theta_prev
            hyper = hyper_at(opt, meta, r)  # γ_t, ρ_t and the per-step hyper-parameters
            state_prev, state_t = _state(st_prev, names, device, dtype), _state(st, names, device, dtype)
            checkable = True
            if momentum and rule.MOMENTUM_KEY not in state_prev:  # momentum not stored
                if t - 1 == 0:
                    state_prev = {}
                else:
                    derived = None if prev_delta is None else rule.state_from_updates(*prev_delta, opt)
                    checkable = derived is not None
                    state_prev = derived or {}
            if checkable:
                step_no = int(float(st[OPT]["step"])) if "step" in st.get(OPT, {}) and needs_state else t
                model_delta, model_state = lens.expected_update(opt["name"], theta_prev, grad, state_prev, hyper,
                                                                step_no)
                err = lens.recipe_error(model_delta, delta, theta_t)
                for key, v in model_state.items():
                    if key in state_t:
                        err = max(err, lens.recipe_error(v, state_t[key], state_t[key]))
                error[r] = err
                if not err <= tol:
                    report.n_failed += 1
                    if len(report.failures) < max_failures:
                        observed = {k: float(meta[k][r]) for k in OBSERVED if k in meta and np.isfinite(meta[k][r])}
                        report.failures.append((t, lens.diagnose(model_delta, delta, observed, m["loss"])))
            prev_delta = (delta, hyper["lr"])
            prev = (t, st)
            bar.advance(1)
    return report


def _state(st: dict, names: list[str], device, dtype) -> dict[str, torch.Tensor]:
    ost = st.get(OPT, {})
    keys = {k.rsplit(".", 1)[1] for k in ost if "." in k}
    return {key: flatten({n: ost[f"{n}.{key}"].to(device, dtype) for n in names}) for key in keys
            if all(f"{n}.{key}" in ost for n in names)}


def verify_recipe(run, device: str | None = None, progress: bool = False) -> RecipeReport:
    """The recipe check of a run directory (``telecli verify``); a network the analyses cannot evaluate
    at all (dropout) is reported as a problem rather than raised."""
    from telecli.errors import TelecliError
    from telecli.jobs.common import rebuild_network
    from telecli.runtime import device_for

    traj = Trajectory(run)
    dev = device_for(device)
    try:
        model = rebuild_network(traj, dev)
    except TelecliError as e:
        return RecipeReport(np.zeros(0, dtype=np.int64), np.zeros(0), 0.0, problems=[str(e)])
    return check_recipe(traj, model, dev, progress)
