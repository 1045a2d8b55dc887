"""Gradient-boosted trees in the telescoping (smoother) form, method.md §4.1 (Eq. 9) and §4.4.

With squared loss, boosting tree t is fitted to the residuals r_t = y − f_{t−1}(X_train) and each of
its leaves predicts the mean of the residuals that fall in it. So, with the tree kernel
K_t(x, x_i) = 1{x_i in x's leaf}/n_leaf(x) and its row k_t(x) = [K_t(x, x_1) … K_t(x, x_n)] (Eq. 9),

    f_T(x) = h_0(x) + γ Σ_t k_t(x) r_t.

This is the same structure as the network's telescoping model (method.md §1.5). Unrolling r_t gives
a smoother f_t(x) = s_t(x)·y + c_t(x), with s_0 = 0, c_0 = h_0 and, per tree,

    s_t(x) = s_{t−1}(x) + γ k_t(x)(I − S_{t−1}),        c_t(x) = c_{t−1}(x) − γ k_t(x) c_{t−1},

where S_{t−1} (n×n) and c_{t−1} (n) hold s_{t−1} and c_{t−1} at the training points. For
GradientBoostingRegressor(loss="squared_error", subsample=1) the representation is exact: it
reproduces ``predict`` and ``staged_predict`` to rounding error (there is no telescoping error).

Efficiency. No per-tree n×n kernel matrix is built (that is the U-turn paper's approach, kept only
as the baseline in benchmarks/bench_boost.py). For any M with n rows, k_t(x)·M is the mean of M's
rows over x's leaf, so one tree costs one pass over the rows of S: leaf sums (a sparse leaf-indicator
product), then every row gains the row of its leaf. The leaf sums needed by tree t+1 are
accumulated while tree t's update is applied, block by block, together with the row norms (for p⁰)
and the diagonal (for trace S); staged predictions cost O(n_leaves·n) more. Cost per tree O((n+m)·n);
memory (n+m)·n + 2·n_leaves·n float64 values plus the (T, n+m) kernel-norm arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from telecli.errors import TelecliError
from telecli.lens.smoother import effective_parameters_from_sq_norms

_BLOCK_BYTES = 4_000_000  # rows of S processed together: a block of about this many bytes


@dataclass
class BoostSmoother:
    """A fitted squared-loss boosting model as a smoother f_t(x) = s_t(x)·y + c_t(x) (method.md §4.1).

    Indexing: trajectory arrays have T+1 entries indexed by the number of trees fitted so far,
    t = 0…T (t = 0 is the initial predictor h_0); per-tree arrays have T rows, row t−1 for tree t.
    """

    S_train: np.ndarray  # (n, n) rows s_T(x_i) at the training points
    S_test: np.ndarray  # (m, n) rows s_T(x_j) at the test points
    c_train: np.ndarray  # (n,) intercepts c_T(x_i)
    c_test: np.ndarray  # (m,) intercepts c_T(x_j)
    learning_rate: float
    p_train: np.ndarray  # (T+1,) p^train of s_t = Σ_i ‖s_t(x_i)‖² (method.md §3.1)
    p_test: np.ndarray  # (T+1,) p^test of s_t = (n/m) Σ_j ‖s_t(x_j)‖²
    trace_train: np.ndarray  # (T+1,) trace(S_t) (the U-turn code's eff_p_tr)
    kernel_norm_train: np.ndarray  # (T, n) ‖k_t(x_i)‖₂ = 1/√n_leaf(x_i)
    kernel_norm_test: np.ndarray  # (T, m) ‖k_t(x_j)‖₂
    n_leaves: np.ndarray  # (T,) leaves of each tree
    init_in_smoother: bool  # True: h_0 = mean(y) was put in s_0 = 1ᵀ/n (c_0 = 0)
    staged_train: np.ndarray | None = None  # (T+1, n) s_t(x_i)·y + c_t(x_i), if y_train was given
    staged_test: np.ndarray | None = None  # (T+1, m)

    @property
    def n_trees(self) -> int:
        return int(self.kernel_norm_train.shape[0])

    @property
    def n_train(self) -> int:
        return int(self.S_train.shape[1])

    def predict(self, y_train) -> tuple[np.ndarray, np.ndarray]:
        """(S_train·y + c_train, S_test·y + c_test): the final model's train and test predictions."""
        y = _as_targets(y_train, self.n_train)
        return self.S_train @ y + self.c_train, self.S_test @ y + self.c_test


def boosting_smoother(gbr, X_train, X_test, y_train=None, *, init_in_smoother: bool = False) -> BoostSmoother:
    """Smoother form of a fitted squared-loss ``GradientBoostingRegressor`` (method.md §4.1, Eq. 9).

    ``X_train`` must be exactly the rows the model was fitted on (checked against every tree's leaf
    counts). ``y_train`` is optional: S and c do not depend on it given the trees (c_0 is the fitted
    init's prediction); when given, staged predictions s_t·y + c_t are stored for t = 0…T.

    ``init_in_smoother``: the default init h_0 = mean(y) = (1ᵀ/n)·y is a smoother too. By default it is
    kept in the intercept (s_0 = 0, c_0 = h_0, as the network's f_θ₀ in §1.5); with True it goes into
    s_0 = 1ᵀ/n and c_0 = 0, which adds to p⁰ (a constant fit has p⁰ = 1). Only for the mean init.

    Raises TelecliError for any other loss, subsample < 1, early stopping (n_iter_no_change),
    sample weights, or rows that are not the training rows.
    """
    _check_model(gbr)
    Xtr = _as_matrix(X_train, "X_train")
    Xte = _as_matrix(X_test, "X_test")
    n, m = Xtr.shape[0], Xte.shape[0]
    y = None if y_train is None else _as_targets(y_train, n)
    ids_tr, ids_te, counts = _leaf_ids(gbr, Xtr, Xte)
    T = len(counts)
    gamma = float(gbr.learning_rate)

    norm_tr = np.empty((T, n))
    norm_te = np.empty((T, m))
    for t in range(T):
        inv_sqrt = 1.0 / np.sqrt(counts[t])
        norm_tr[t] = inv_sqrt[ids_tr[t]]
        norm_te[t] = inv_sqrt[ids_te[t]]

    # t = 0: s_0 = 0, c_0 = h_0 (or s_0 = 1ᵀ/n, c_0 = 0 for the mean init, see docstring)
    mean_in_s = bool(init_in_smoother) and _is_mean_dummy(gbr.init_)
    if init_in_smoother and not mean_in_s and not (isinstance(gbr.init_, str) and gbr.init_ == "zero"):
        raise TelecliError(
            f"init_in_smoother needs the default mean init (or init='zero'), got init={gbr.init!r}; "
            "call boosting_smoother without init_in_smoother"
        )
    if mean_in_s:
        S_tr, S_te = np.full((n, n), 1.0 / n), np.full((m, n), 1.0 / n)
        c_tr, c_te = np.zeros(n), np.zeros(m)
    else:
        S_tr, S_te = np.zeros((n, n)), np.zeros((m, n))
        c_tr, c_te = _init_predictions(gbr, Xtr), _init_predictions(gbr, Xte)

    p_tr, p_te, trace = np.empty(T + 1), np.empty(T + 1), np.empty(T + 1)
    p_tr[0] = effective_parameters_from_sq_norms(np.einsum("ij,ij->i", S_tr, S_tr), n)
    p_te[0] = effective_parameters_from_sq_norms(np.einsum("ij,ij->i", S_te, S_te), n) if m else np.nan
    trace[0] = np.trace(S_tr)
    staged_tr = staged_te = None
    if y is not None:
        staged_tr, staged_te = np.empty((T + 1, n)), np.empty((T + 1, m))
        sy_tr, sy_te = S_tr @ y, S_te @ y
        staged_tr[0], staged_te[0] = sy_tr + c_tr, sy_te + c_te

    # leaf sums Σ_{i in leaf} s_{t−1}(x_i) for the next tree; for tree 1 from S_0 directly
    leaf_sums = _leaf_indicator(ids_tr[0], len(counts[0])) @ S_tr if T else None
    sq_tr, sq_te, diag = np.empty(n), np.empty(m), np.empty(n)
    rows = np.arange(n)
    for t in range(T):
        ids, ids_t, cnt = ids_tr[t], ids_te[t], counts[t]
        # D[l] = γ (k_l − k_l S_{t−1}) with k_l = 1{i in leaf l}/n_l: the row every point of leaf l gains
        D = leaf_sums
        D *= (-gamma / cnt)[:, None]
        D[ids, rows] += gamma / cnt[ids]
        # c_t(x) = c_{t−1}(x) − γ k_t(x) c_{t−1}: leaf means of the training intercepts
        dc = -gamma * np.bincount(ids, weights=c_tr, minlength=len(cnt)) / cnt
        c_tr += dc[ids]
        c_te += dc[ids_t]
        nxt = (ids_tr[t + 1], len(counts[t + 1])) if t + 1 < T else None
        if y is not None:  # s_t(x)·y = s_{t−1}(x)·y + D[leaf(x)]·y: staged predictions at O(n_leaves·n)
            dy = D @ y
            sy_tr += dy[ids]
            sy_te += dy[ids_t]
        leaf_sums = _apply_update(S_tr, D, ids, sq_tr, diag, nxt)
        _apply_update(S_te, D, ids_t, sq_te, None, None)
        p_tr[t + 1] = effective_parameters_from_sq_norms(sq_tr, n)
        p_te[t + 1] = effective_parameters_from_sq_norms(sq_te, n) if m else np.nan
        trace[t + 1] = diag.sum()
        if y is not None:
            staged_tr[t + 1], staged_te[t + 1] = sy_tr + c_tr, sy_te + c_te

    return BoostSmoother(
        S_train=S_tr,
        S_test=S_te,
        c_train=c_tr,
        c_test=c_te,
        learning_rate=gamma,
        p_train=p_tr,
        p_test=p_te,
        trace_train=trace,
        kernel_norm_train=norm_tr,
        kernel_norm_test=norm_te,
        n_leaves=np.array([len(c) for c in counts], dtype=np.int64),
        init_in_smoother=mean_in_s,
        staged_train=staged_tr,
        staged_test=staged_te,
    )


def tree_kernel_norms(gbr, X_train, X) -> np.ndarray:
    """(T, len(X)) kernel-row norms ‖k_t(x)‖₂ = 1/√n_leaf_t(x) (method.md §4.1), without building S.

    Cheap (O(T·(n + len(X)))): use it for the kernel-norm ratio of many test mixtures (§4.4).
    """
    _check_model(gbr)
    Xtr = _as_matrix(X_train, "X_train")
    ids_tr, ids_x, counts = _leaf_ids(gbr, Xtr, _as_matrix(X, "X"))
    return np.stack([1.0 / np.sqrt(c[i]) for c, i in zip(counts, ids_x)]) if counts else np.empty((0, len(X)))


def normalised_max_kernel_norm(norms_test, norms_train) -> float:
    """Normalised maximum kernel-weight norm (method.md §4.4).

        ( (1/T) Σ_t max_{j∈test} ‖k_t(x_j)‖₂ ) / ( (1/T) Σ_t max_{i∈train} ‖k_t(x_i)‖₂ )

    Arguments are (T, m) and (T, n) arrays of row norms (row t: step or tree t), or (T,) arrays that
    already hold the per-step maxima. Above 1: the test points get larger kernel weights than any
    training point did. Works for the tree kernel and for a network's tangent-kernel rows alike.
    """
    mx_te, mx_tr = _per_step_max(norms_test, "norms_test"), _per_step_max(norms_train, "norms_train")
    if mx_te.shape != mx_tr.shape:
        raise TelecliError(
            f"norms_test and norms_train cover different numbers of steps ({mx_te.size} vs {mx_tr.size})"
        )
    den = mx_tr.mean()
    if not den > 0:
        raise TelecliError("training kernel norms are all zero: the normalised kernel norm is undefined")
    return float(mx_te.mean() / den)


def network_kernel_norms(model, theta, x_eval, x_train, batch, *, strategy: str = "auto", memory: int | None = None):
    """The network's kernel-weight norms ‖k_t(x)‖₂ for every row of ``x_eval`` (method.md Eq. 3, γ_t
    excluded: a constant γ cancels in :func:`normalised_max_kernel_norm`), as a torch vector.

    k_t(x) = [K^θ_t(x, x_i)]_i with K^θ_t(x, x_i) = 1{i∈B_t}/|B_t| ∇f_θ(x)ᵀ∇f_θ(x_i), θ = θ_{t−1}
    (``theta``); an index repeated in B_t counts once per occurrence. Single-output networks.
    """
    import torch

    from telecli.lens.kernels import tangent_kernel

    uniq, counts = np.unique(np.asarray(batch), return_counts=True)
    K = tangent_kernel(model, x_eval, x_train[torch.as_tensor(uniq, device=x_train.device)], params=theta,
                       strategy=strategy, memory=memory)
    if K.shape[2:] != (1, 1):
        raise TelecliError(f"kernel norms need a single-output network, got {K.shape[2]} outputs")
    w = torch.as_tensor(counts / counts.sum(), dtype=K.dtype, device=K.device)
    return torch.linalg.vector_norm(K[:, :, 0, 0] * w, dim=1)


def mse(pred, y) -> float:
    """Mean squared error (1/m) Σ_j (f(x_j) − y_j)² of §4.4 (the full square, not the training loss's
    ½); inf when it is not finite (a diverged search draw)."""
    v = float(np.mean((np.asarray(pred, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2))
    return v if np.isfinite(v) else np.inf


DENOMINATOR_FLOOR = 0.01  # relative MSE is drawn only when MSE^0_NN − MSE^0_GBT > this × MSE^0_GBT


def relative_mse_meaningful(mse_nn_0: float, mse_gbt_0: float, floor: float = DENOMINATOR_FLOOR) -> bool:
    """Whether the ratio of :func:`relative_mse` says what §4.4 means by it: the trees beat the network on
    regular data (p = 0) by more than ``floor`` of their MSE. A negative denominator (the network wins at
    p = 0) flips the ratio's sign and a near-zero one blows it up; the difference MSE_NN − MSE_GBT is
    then the honest quantity.

    >>> relative_mse_meaningful(1.2, 1.0), relative_mse_meaningful(0.9, 1.0), relative_mse_meaningful(1.001, 1.0)
    (True, False, False)
    """
    return bool(np.isfinite(mse_nn_0) and np.isfinite(mse_gbt_0) and mse_nn_0 - mse_gbt_0 > floor * abs(mse_gbt_0))


def relative_mse(mse_nn_p, mse_gbt_p, mse_nn_0, mse_gbt_0):
    """Relative MSE (MSE^p_NN − MSE^p_GBT) / (MSE^0_NN − MSE^0_GBT) (method.md §4.4); 1 at p = 0.

    Arguments broadcast (arrays over proportions p or seeds work); returns a float for scalars.
    """
    num = np.asarray(mse_nn_p, dtype=np.float64) - np.asarray(mse_gbt_p, dtype=np.float64)
    den = np.asarray(mse_nn_0, dtype=np.float64) - np.asarray(mse_gbt_0, dtype=np.float64)
    if not (np.all(np.isfinite(num)) and np.all(np.isfinite(den))):
        raise TelecliError("relative MSE got a non-finite MSE; check the evaluated predictions")
    if np.any(den == 0):
        raise TelecliError("relative MSE is undefined: MSE_NN and MSE_GBT are equal at p = 0")
    out = num / den
    return float(out) if out.ndim == 0 else out


# ---------------------------------------------------------------------------------------------- helpers


def _check_model(gbr) -> None:
    from sklearn.ensemble import GradientBoostingRegressor

    if not isinstance(gbr, GradientBoostingRegressor):
        raise TelecliError(
            f"the boosting smoother needs a sklearn GradientBoostingRegressor, got {type(gbr).__name__}"
        )
    if not hasattr(gbr, "estimators_"):
        raise TelecliError("the GradientBoostingRegressor is not fitted; call fit(X_train, y_train) first")
    if gbr.loss != "squared_error":
        raise TelecliError(
            f"loss={gbr.loss!r} is not supported: leaves are residual means only for loss='squared_error'"
        )
    if gbr.subsample != 1.0:
        raise TelecliError(
            f"subsample={gbr.subsample} is not supported: each tree must see all training rows (subsample=1.0)"
        )
    if gbr.n_iter_no_change is not None:
        raise TelecliError(
            f"n_iter_no_change={gbr.n_iter_no_change} holds out a validation split the trees never saw; "
            "refit with n_iter_no_change=None"
        )


def _is_mean_dummy(init) -> bool:
    from sklearn.dummy import DummyRegressor

    return isinstance(init, DummyRegressor) and init.strategy == "mean"


def _init_predictions(gbr, X: np.ndarray) -> np.ndarray:
    """h_0(x): the init estimator's prediction (mean(y) by default; 0 for init='zero')."""
    if len(X) == 0:
        return np.zeros(0)
    if isinstance(gbr.init_, str) and gbr.init_ == "zero":
        return np.zeros(len(X))
    return np.asarray(gbr.init_.predict(X), dtype=np.float64).reshape(len(X))


def _as_matrix(X, name: str) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise TelecliError(f"{name} must be a 2-D array (rows × features), got shape {X.shape}")
    return X


def _as_targets(y, n: int) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != (n,):
        raise TelecliError(f"y_train must have one value per training row ({n}), got shape {y.shape}")
    return y


def _leaf_ids(gbr, Xtr: np.ndarray, Xte: np.ndarray):
    """Compact leaf ids 0…L_t−1 per tree for train and test rows, and the training count of each leaf.

    Checks that the training rows reproduce every tree's leaf sample counts and that no tree was
    fitted with sample weights (its leaf values would then be weighted means).
    """
    T = int(gbr.n_estimators_)
    leaves_tr = np.asarray(gbr.apply(Xtr)).reshape(len(Xtr), -1)[:, :T].astype(np.intp)
    leaves_te = np.asarray(gbr.apply(Xte)).reshape(len(Xte), -1)[:, :T].astype(np.intp) if len(Xte) else None
    ids_tr, ids_te, counts = [], [], []
    for t in range(T):
        tree = gbr.estimators_[t, 0].tree_
        lut = np.full(tree.node_count, -1, dtype=np.int32)
        used = np.unique(leaves_tr[:, t])
        is_leaf = tree.children_left == -1
        n_node = tree.n_node_samples
        lut[used] = np.arange(len(used))
        cnt = np.bincount(lut[leaves_tr[:, t]], minlength=len(used)).astype(np.float64)
        if len(used) != int(is_leaf.sum()) or not np.array_equal(cnt, n_node[used]):
            raise TelecliError(
                f"X_train does not reproduce the leaf counts of tree {t + 1}: pass exactly the rows "
                "the model was fitted on, in any order"
            )
        if not np.allclose(tree.weighted_n_node_samples[used], n_node[used], rtol=0, atol=1e-9):
            raise TelecliError(
                "the model was fitted with sample_weight: leaf values are weighted means, which the "
                "unweighted tree kernel does not represent; refit without sample weights"
            )
        ids_tr.append(lut[leaves_tr[:, t]])
        ids_te.append(lut[leaves_te[:, t]] if leaves_te is not None else np.zeros(0, dtype=np.int32))
        counts.append(cnt)
    return ids_tr, ids_te, counts


def _leaf_indicator(ids: np.ndarray, n_leaves: int) -> sp.csr_array:
    """Sparse (n_leaves × len(ids)) 0/1 matrix P with P[l, i] = 1{ids[i] = l}; P @ M = leaf sums of M."""
    k = len(ids)
    return sp.csr_array((np.ones(k), (ids, np.arange(k))), shape=(n_leaves, k))


def _apply_update(S, D, ids, sq, diag, nxt):
    """S[i] += D[ids[i]] for every row, in blocks; fills the squared row norms ``sq`` (and ``diag``).

    ``nxt = (ids_next, n_leaves_next)``: also return the leaf sums of the updated rows for the next
    tree (sparse leaf-indicator product per block), so S is read once per tree.
    """
    n_rows, n = S.shape
    block = int(np.clip(_BLOCK_BYTES // (8 * max(n, 1)), 16, 1024))
    sums = np.zeros((nxt[1], n)) if nxt is not None else None
    for a in range(0, n_rows, block):
        b = min(a + block, n_rows)
        blk = S[a:b]
        blk += D[ids[a:b]]
        sq[a:b] = np.einsum("ij,ij->i", blk, blk)
        if diag is not None:
            diag[a:b] = blk[np.arange(b - a), np.arange(a, b)]
        if sums is not None:
            used, inv = np.unique(nxt[0][a:b], return_inverse=True)
            sums[used] += _leaf_indicator(inv, len(used)) @ blk
    return sums


def _per_step_max(norms, name: str) -> np.ndarray:
    a = np.asarray(norms, dtype=np.float64)
    if a.ndim == 2:
        if a.shape[1] == 0:
            raise TelecliError(f"{name} has no points: the maximum kernel norm is undefined")
        a = a.max(axis=1)
    elif a.ndim != 1:
        raise TelecliError(f"{name} must be a (T, points) array of row norms or (T,) per-step maxima")
    if a.size == 0:
        raise TelecliError(f"{name} covers no steps (T = 0)")
    if not np.all(np.isfinite(a)):
        raise TelecliError(f"{name} holds non-finite kernel norms")
    return a
