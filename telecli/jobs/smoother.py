"""``telecli telescope --effective-params``: the smoother form f̃(x) = s(x)·y + c(x) and p (method.md §1.5–1.6, §3).

One pass over the steps of the run. Plain SGD uses the kernel recursion of §1.5 (only the batch
columns of the tangent kernel, never a parameter-space state); momentum, weight decay, Adam and AdamW
carry the P × C parameter-space parts of the self-consistent derivation of §1.6 (C columns: nk exact,
fewer sketched or sharded) and need, at every step, the products of the Jacobian at θ_{t−1} with them on
every training and evaluation point — from the formed Jacobians or without them (lens.products, by its
cost model). Training rows of S are always computed for all n training points (the recursion needs
every row that can enter a batch); evaluation rows for the job's points.
"""

from __future__ import annotations

import numpy as np
import torch

from telecli.errors import TelecliError
from telecli.lens import products
from telecli.lens import smoother as sm
from telecli.lens.functional import flatten
from telecli.lens.kernels import jacobian as kernel_jacobian
from telecli.lens.kernels import example_cost, tangent_kernel
from telecli.lens.functional import function
from telecli.optim import get as get_optimizer
from telecli.optim import hyper_at
from telecli.jobs.recipe import gradient_scale
from telecli.progress import Progress
from telecli.store.trajectory import BUFFER, OPT, THETA, Trajectory
from telecli.train.replay import dense_states

# The smoother's parameters Θ^S y + Θ^C (§1.6 sanity check) count as tracking θ_t while
# ‖Θ^S y + Θ^C − θ_t‖_∞ ≤ PARAMETER_TOLERANCE × ‖θ_t − θ_first‖_∞ (docs/effective-parameters.md).
PARAMETER_TOLERANCE = 0.1


def effective_optimizer(opt: dict, meta: dict) -> dict:
    """The manifest's optimiser with the largest per-step momentum and weight decay the run used: a
    scheduler may switch momentum on (OneCycleLR cycles it) although the optimiser was built without."""
    out = dict(opt)
    for key in ("momentum", "weight_decay"):
        if key in meta and np.isfinite(meta[key]).any():
            out[key] = max(float(opt.get(key, 0.0)), float(np.nanmax(np.abs(meta[key]))))
    return out


def memory_needed(opt: dict, n: int, k: int, n_params: int, n_eval: int, itemsize: int,
                  width: int | None = None, basis: bool = False, jacobian: bool = True) -> int:
    """Bytes of the smoother's state for ``width`` carried columns (default nk: exact), plus the nk × width
    basis E when one is carried (a shard or a sketch, lens.smoother.Columns), plus the per-step Jacobian
    of the parameter-space path unless its products are taken without it (``jacobian=False``,
    lens.products)."""
    rule = get_optimizer(opt["name"])
    nk = n * k
    C = nk if width is None else width
    total = (2 if basis else 1) * nk * C + n_eval * k * C  # S_train (and E), the evaluation rows
    if rule.parameter_state(opt):
        states = 1 + int(rule.momentum_state(opt))
        total += states * n_params * C + n_params * C  # Θ, M, G then U
        total += (nk + n_eval * k) * n_params if jacobian else 0  # J
    return total * itemsize


def datasets(splits, sizes: dict[str, int], S: int, k: int, opt: dict | None = None, probes: int = 0) -> dict:
    """The smoother's datasets; a sketch (``probes`` R carried by this job) adds the per-probe p."""
    out = {}
    for s in splits:
        if probes:
            out[f"{s}/probe_effective_parameters"] = ((S, probes), "f8")
        for c in get_optimizer(opt["name"]).component_names(opt) if opt else []:
            out[f"{s}/components/{c}"] = ((S, sizes[s], k), "f8")
        out[f"{s}/smoother"] = ((S, sizes[s], k), "f8")
        out[f"{s}/smoother_sq_norm"] = ((S, sizes[s]), "f8")
        out[f"{s}/kernel_norm"] = ((S, sizes[s]), "f8")
    out["train/smoother_trace"] = ((S,), "f8")
    out["parameter_gap"] = ((S,), "f8")
    out["parameter_gap_relative"] = ((S,), "f8")
    return out


def _jvp(model, params: dict, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """∇_θ f(x)ᵀ v for a flat direction v (parameters in ``params`` order)."""
    from telecli.lens.functional import jvp_directions

    tangent, offset = {}, 0
    for name, p in params.items():
        tangent[name] = v[offset : offset + p.numel()].reshape(1, *p.shape)
        offset += p.numel()
    buffers = dict(model.named_buffers())
    return jvp_directions(model, params, buffers, x, tangent)[0]


def run_smoother(traj: Trajectory, model: torch.nn.Module, writer, X: dict[str, torch.Tensor],
                 idx: dict[str, np.ndarray], row_of: dict[int, int], dev: torch.device, dtype: torch.dtype,
                 budget: int, progress: bool, strategy: str = "auto", columns: str | tuple = "exact") -> None:
    """``columns``: "exact", ("shard", i, N) or ("sketch", R, seed, i, N) — what the S-part carries
    (lens.smoother.Columns, method.md §10.1)."""
    m = traj.manifest
    if m["loss"] != "mse":
        raise TelecliError(f"effective parameters need the squared loss; {traj.run_dir} was trained with "
                           f"'{m['loss']}'")
    meta = traj.meta()
    opt = effective_optimizer(m["optimizer"], meta)
    data = traj.data()
    Xtr = data["x_train"].to(dev, dtype)
    ytr = data["y_train"].to(dev, dtype)
    n, k = ytr.shape
    nk = n * k
    first, last = int(traj.steps[0]), int(traj.steps[-1])
    names = [name for name, _ in model.named_parameters()]  # the Jacobian's column order
    raw0 = traj.theta(first)
    theta0 = {name: raw0[name].to(dev, dtype) for name in names}
    P = sum(v.numel() for v in theta0.values())
    rule = get_optimizer(opt["name"])
    general = rule.parameter_state(opt)
    yvec = ytr.reshape(-1)
    cols, columns_note = sm.Columns.of(columns, yvec)
    C = cols.width
    n_eval = sum(x.shape[0] for x in X.values() if x is not Xtr)
    need = memory_needed(opt, n, k, P, n_eval, dtype.itemsize, C, basis=cols.basis is not None)
    strategy_products = None
    if general:
        lean = memory_needed(opt, n, k, P, n_eval, dtype.itemsize, C, basis=cols.basis is not None, jacobian=False)
        _, _, flops, activations = example_cost(model, Xtr, params=theta0)
        batch_size = int(np.median([len(traj.batch(meta, r)) for r in range(min(len(meta["step"]), 8))]))
        strategy_products = products.choose(k, P, flops, n + n_eval, batch_size, C + 1, jacobian_fits=need <= budget)
        if strategy_products is products.Strategy.PRODUCTS:
            need = lean
    if need > budget:
        raise TelecliError(
            f"the smoother for {opt['name']} on n={n}, k={k}, P={P:,} needs about {need / 2**30:.1f} GiB "
            f"(budget {budget / 2**30:.1f} GiB); raise --max-memory, use --device cuda, --points N for "
            f"fewer test points, --probes R for a sketch, or --shard i/N to split the columns"
        )
    kernel_memory = max(budget - need, budget // 8)  # what the kernels' and Jacobians' blocks may use
    by_products = strategy_products is products.Strategy.PRODUCTS

    def jacobian_on(x: torch.Tensor, params: dict):
        """J(x) at θ_{t−1}: formed (nk × P), or as products (lens.products)."""
        if by_products:
            return products.Products(model, params, x, kernel_memory, activations)
        return kernel_jacobian(model, x, params=params, memory=kernel_memory).reshape(x.shape[0] * k, -1)
    if rule.needs_recorded_state(opt) and not m.get("optimizer_state"):
        raise TelecliError(f"{traj.run_dir} stored no optimiser state; {opt['name']} needs it for the smoother")
    test_splits = [s for s in X if s != "train"]

    def load_buffers(step_buffers):
        with torch.no_grad():
            for name, b in model.named_buffers():
                if name in step_buffers:
                    b.copy_(step_buffers[name])

    load_buffers(traj.buffers(first))
    with torch.no_grad():
        f_train = torch.func.functional_call(model, theta0, (Xtr,)).reshape(-1)
        f_eval = {s: torch.func.functional_call(model, theta0, (X[s],)).reshape(-1) for s in test_splits}
    S_train = torch.zeros(nk, C, dtype=dtype, device=dev)
    c_train = f_train.clone()
    s_eval = {s: torch.zeros(X[s].shape[0] * k, C, dtype=dtype, device=dev) for s in test_splits}
    c_eval = {s: f_eval[s].clone() for s in test_splits}
    state = None
    if general:
        momentum = None
        if first > 0 and m.get("optimizer_state") and rule.momentum_state(opt):
            st = traj.optimizer_state(first)  # M = −(the recorded momentum) in the U convention
            momentum = -flatten({name: st[f"{name}.{rule.MOMENTUM_KEY}"].to(dev, dtype) for name in theta0})
        state = sm.ParameterState(flatten(theta0), C, momentum, need_momentum=rule.momentum_state(opt))

    theta_first = flatten(theta0)
    decay_share = 1.0  # a_t = Π (1 − γ_s λ): the share of θ_0 left after decay

    def flat_state(st_):
        ost = st_.get(OPT, {})
        keys = {k_.split(".")[-1] for k_ in ost if "." in k_}
        return {key: flatten({name: ost[f"{name}.{key}"].to(dev, dtype) for name in names}) for key in keys
                if all(f"{name}.{key}" in ost for name in names)}

    def kernel_rows_against_batch(params: dict, batch: torch.Tensor):
        """One kernel call: every training point and the evaluation points against B_t, as (rows × |B|k)."""
        x_all = torch.cat([Xtr] + [X[s] for s in test_splits])
        K_all = sm.kernel_rows(tangent_kernel(model, x_all, Xtr[batch], params=params, strategy=strategy,
                                              memory=kernel_memory))
        K_eval, offset = {}, nk
        for s in test_splits:
            K_eval[s] = K_all[offset : offset + X[s].shape[0] * k]
            offset += X[s].shape[0] * k
        return K_all[:nk], K_eval

    train_rows = torch.as_tensor(idx["train"], device=dev) if "train" in idx else None
    train_nk = sm.batch_rows(train_rows, k) if train_rows is not None else None
    all_train = train_rows is not None and np.array_equal(idx["train"], np.arange(n))  # rows of S_train as they are
    f_net = function(model)
    theta_track = None if general else flatten(theta0).clone()  # θ̃_t = Θ^S_t y + Θ^C_t, plain SGD

    def write(t: int, norms: dict[str, torch.Tensor], theta_t: torch.Tensor | None = None) -> None:
        r = row_of[t]
        for s in X:
            if s == "train":
                S_rows, c_rows = (S_train, c_train) if all_train else (S_train[train_nk], c_train[train_nk])
            else:
                S_rows, c_rows = s_eval[s], c_eval[s]
            N = X[s].shape[0]
            pred = cols.times_y(S_rows, yvec) + c_rows
            writer[f"{s}/smoother"][r] = pred.reshape(N, k).double().cpu().numpy()
            writer[f"{s}/smoother_sq_norm"][r] = cols.sq_norms(S_rows).reshape(N, k).sum(dim=1).double().cpu().numpy()
            if cols.probes:  # p seen by each probe r: p⁰ of the rows' (s(x)·z_r)²
                sq = cols.probe_sq_norms(S_rows).reshape(N, k, -1).sum(dim=1).double().cpu().numpy()
                writer[f"{s}/probe_effective_parameters"][r] = [sm.effective_parameters_k(c, n, k) for c in sq.T]
            if s in norms:
                writer[f"{s}/kernel_norm"][r] = norms[s].double().cpu().numpy()
        writer["train/smoother_trace"][r] = cols.trace(S_train)
        if theta_t is not None:
            # sanity check of §1.6: Θ^S y + Θ^C should track the real θ_t
            tracked = theta_track if state is None else cols.times_y(state.theta_S, yvec) + state.theta_C
            gap = float((tracked - theta_t).abs().max())
            writer["parameter_gap"][r] = gap
            travelled = float((theta_t - theta_first).abs().max())
            writer["parameter_gap_relative"][r] = gap / travelled if travelled > 0 else (0.0 if gap == 0 else np.inf)

    if first in row_of:
        write(first, {})
    kmax = {s: np.full(last - first, np.nan) for s in X}
    prev = None
    G_buffer = None
    with Progress(last - first, f"smoother {traj.run_dir.name}", enabled=progress) as bar:
        for t, st in dense_states(traj, (THETA, BUFFER, OPT), device=dev):
            if prev is None:
                prev = (t, st)
                continue
            t_prev, st_prev = prev
            r = t - first - 1
            if int(meta["step"][r]) != t:
                raise TelecliError(f"per-step records of {traj.run_dir} are out of order at step {t}")
            lr = float(meta["lr"][r])
            rho = gradient_scale(meta, r)  # loss scale × clipping factor: the gradient is ρ_t T_t g_t
            h = hyper_at(opt, meta, r)
            batch = torch.as_tensor(traj.batch(meta, r), device=dev)
            rows = sm.batch_rows(batch, k)
            B = len(batch)
            params = {name: st_prev[THETA][name].to(dev, dtype) for name in names}
            load_buffers(st_prev[BUFFER])
            RS, RC = cols.residual_parts(S_train, c_train, rows)
            norms = {}
            if not general:
                K_train, K_eval = kernel_rows_against_batch(params, batch)
                sm.sgd_kernel_step(S_train, c_train, K_train, RS, RC, lr * rho, B)
                for s in test_splits:
                    sm.sgd_kernel_step(s_eval[s], c_eval[s], K_eval[s], RS, RC, lr * rho, B)
                # θ̃_t = θ̃_{t−1} + γρ T_t (y − f̃_{t−1}): one vector-Jacobian product on the batch
                resid = (cols.times_y(RS, yvec) + RC).reshape(B, k)
                _, pull = torch.func.vjp(lambda p: f_net(p, dict(model.named_buffers()), Xtr[batch]), params)
                theta_track += sm.sgd_parameter_step(flatten(pull(resid)[0]), lr, rho, B)
            else:
                J_train = jacobian_on(Xtr, params)
                J_B = jacobian_on(Xtr[batch], params) if by_products else J_train[rows]
                if G_buffer is None:
                    G_buffer = torch.empty(P, C, dtype=dtype, device=dev)  # G^S, then U^S: one P × C per run
                G_S, G_C = sm.pseudo_gradient(J_B, RS, RC, rho, B, out=G_buffer)
                state_t = flat_state(st) if rule.needs_recorded_state(opt) else {}
                U_S, U_C = rule.direction(state, G_S, G_C, h, int(t), state_t)
                J_eval = {s: jacobian_on(X[s], params) for s in test_splits}
                sm.parameter_space_step(S_train, c_train, J_train, U_S, U_C, lr)
                for s in test_splits:
                    sm.parameter_space_step(s_eval[s], c_eval[s], J_eval[s], U_S, U_C, lr)
                sm.advance_parameters(state, U_S, U_C, lr)
                # The kernels K = J J_Bᵀ serve only the kernel-row norms here ((n+m)k × P × |B|k each step,
                # more than the recursion's (n+m)k × P × C): they are formed at written steps only.
                K_train, K_eval = None, {}
                if t in row_of and by_products:
                    K_train, K_eval = kernel_rows_against_batch(params, batch)
                elif t in row_of:
                    K_train = J_train @ J_B.T
                    K_eval = {s: J_eval[s] @ J_B.T for s in test_splits}
            if K_train is not None and "train" in X:
                norms["train"] = sm.kernel_row_norms(K_train, n, k, B)[train_rows]
            for s in K_eval:
                norms[s] = sm.kernel_row_norms(K_eval[s], X[s].shape[0], k, B)
            for s in norms:
                kmax[s][r] = float(norms[s].max()) if norms[s].numel() else np.nan
            if t in row_of:
                theta_t = flatten({name: st[THETA][name].to(dev, dtype) for name in names})
                write(t, norms, theta_t)
                vecs = rule.components(h, int(t), flatten(params), theta_t, flat_state(st_prev), flat_state(st),
                                       decay_share * theta_first)
                for c in rule.component_names(opt):  # a component this step lacks (momentum switched off) is 0
                    vecs.setdefault(c, torch.zeros_like(theta_t))
                for s in X:
                    if general and not by_products:
                        J = J_eval[s] if s != "train" else (J_train if all_train else J_train[train_nk])
                        comp = {c: J @ v for c, v in vecs.items()}
                    else:
                        comp = {c: _jvp(model, params, X[s], v) for c, v in vecs.items()}
                    for c, v in comp.items():
                        writer[f"{s}/components/{c}"][row_of[t]] = v.reshape(X[s].shape[0], k).double().cpu().numpy()
            decay_share *= 1.0 - lr * h.get("weight_decay", 0.0)
            prev = (t, st)
            bar.advance(1)
    for s in X:
        name = f"{s}/kernel_norm_max_every_step"
        if name in writer.f:
            del writer.f[name]
        writer.f.create_dataset(name, data=kmax[s])
    writer.f.attrs["n_train"] = n
    writer.f.attrs["smoother_path"] = (f"parameter-state (§1.6), {strategy_products.value} products" if general
                                       else "kernel recursion (§1.5)")
    writer.f.attrs["smoother_columns"] = columns_note
