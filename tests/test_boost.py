"""Gradient boosting in the telescoping form (telecli.lens.boost, method.md §4.1 Eq. 9, §4.4) and the
irregularity protocol (telecli.lens.irregular, §4.2).

The independent reference builds dense per-tree n×n tree-kernel matrices from each tree's own
``apply`` and runs the matrix recursion S_t = S_{t−1} + γ K_t (I − S_{t−1}) (the U-turn approach).
"""

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, make_regression
from sklearn.decomposition import PCA
from sklearn.ensemble import GradientBoostingRegressor
from threadpoolctl import threadpool_limits

from telecli.errors import TelecliError
from telecli.lens.boost import (
    boosting_smoother,
    normalised_max_kernel_norm,
    relative_mse,
    tree_kernel_norms,
)
from telecli.lens.irregular import irregular_split, irregularity_scores
from telecli.lens.smoother import effective_parameters

ATOL = 1e-10


def _diabetes():
    X, y = load_diabetes(return_X_y=True)  # real data, 442 rows, 10 features
    perm = np.random.default_rng(0).permutation(len(y))
    X, y = X[perm], y[perm]
    return X[:300], y[:300], X[300:]


def _synthetic():
    X, y = make_regression(n_samples=260, n_features=6, n_informative=4, noise=5.0, random_state=1)
    y = y + 0.02 * y**2  # a non-linear target
    return X[:200], y[:200], X[200:]


DATA = {"diabetes": _diabetes(), "synthetic": _synthetic()}

CASES = [  # (data, max_depth, learning_rate, init)
    ("diabetes", 3, 0.1, None),
    ("diabetes", 1, 1.0, "zero"),
    ("diabetes", None, 0.5, None),
    ("diabetes", 2, 0.3, "zero"),
    ("synthetic", 3, 0.1, "zero"),
    ("synthetic", 5, 0.05, None),
    ("synthetic", None, 1.0, None),
]


def _fit(data, max_depth, lr, init, n_estimators=50, **kw):
    Xtr, ytr, Xte = DATA[data]
    gbr = GradientBoostingRegressor(
        n_estimators=n_estimators, max_depth=max_depth, learning_rate=lr, init=init, random_state=0, **kw
    )
    return gbr.fit(Xtr, ytr), Xtr, ytr, Xte


def _dense_kernel(tree, X_train, X):
    """Dense len(X)×n kernel K(x, x_i) = 1{same leaf}/n_leaf, from the tree's own apply."""
    lt = tree.apply(np.asarray(X_train, dtype=np.float32))
    lx = tree.apply(np.asarray(X, dtype=np.float32))
    same = (lx[:, None] == lt[None, :]).astype(np.float64)
    return same / same.sum(axis=1, keepdims=True)


def _dense_reference(gbr, Xtr, Xte):
    """Matrix recursion over per-tree dense kernels; returns per-tree S, c and kernels' rows."""
    n, m = len(Xtr), len(Xte)
    g = gbr.learning_rate
    S, St = np.zeros((n, n)), np.zeros((m, n))
    h0 = 0.0 if gbr.init_ == "zero" else float(gbr.init_.constant_.ravel()[0])
    c, ct = np.full(n, h0), np.full(m, h0)
    out = []
    for est in gbr.estimators_[:, 0]:
        K, Kt = _dense_kernel(est, Xtr, Xtr), _dense_kernel(est, Xtr, Xte)
        St = St + g * Kt @ (np.eye(n) - S)
        ct = ct - g * Kt @ c
        S = S + g * K @ (np.eye(n) - S)
        c = c - g * K @ c
        out.append((S.copy(), St.copy(), c.copy(), ct.copy(), K, Kt))
    return out


@pytest.mark.parametrize("data,max_depth,lr,init", CASES)
def test_smoother_reproduces_predict_and_staged_predict(data, max_depth, lr, init):
    gbr, Xtr, ytr, Xte = _fit(data, max_depth, lr, init)
    sm = boosting_smoother(gbr, Xtr, Xte, ytr)
    assert sm.S_train.shape == (len(Xtr), len(Xtr)) and sm.S_test.shape == (len(Xte), len(Xtr))
    np.testing.assert_allclose(sm.S_train @ ytr + sm.c_train, gbr.predict(Xtr), rtol=0, atol=ATOL)
    np.testing.assert_allclose(sm.S_test @ ytr + sm.c_test, gbr.predict(Xte), rtol=0, atol=ATOL)
    ptr, pte = sm.predict(ytr)
    np.testing.assert_allclose(ptr, gbr.predict(Xtr), rtol=0, atol=ATOL)
    np.testing.assert_allclose(pte, gbr.predict(Xte), rtol=0, atol=ATOL)
    # every stage t = 1…T matches staged_predict; t = 0 is the init's prediction
    np.testing.assert_allclose(sm.staged_train[1:], np.array(list(gbr.staged_predict(Xtr))), rtol=0, atol=ATOL)
    np.testing.assert_allclose(sm.staged_test[1:], np.array(list(gbr.staged_predict(Xte))), rtol=0, atol=ATOL)
    h0 = 0.0 if init == "zero" else ytr.mean()
    np.testing.assert_allclose(sm.staged_train[0], h0, rtol=0, atol=ATOL)
    if init == "zero":
        np.testing.assert_array_equal(sm.c_train, 0.0)


@pytest.mark.parametrize("data,max_depth,lr,init", CASES[:3] + CASES[4:6])
def test_matches_dense_matrix_recursion(data, max_depth, lr, init):
    gbr, Xtr, ytr, Xte = _fit(data, max_depth, lr, init)
    sm = boosting_smoother(gbr, Xtr, Xte)
    with threadpool_limits(1):  # small matrices: BLAS threads only contend on a shared machine
        ref = _dense_reference(gbr, Xtr, Xte)
    n = len(Xtr)
    assert sm.n_trees == len(ref) == 50 and sm.n_train == n
    assert sm.staged_train is None  # no y given
    S, St, c, ct, _, _ = ref[-1]
    np.testing.assert_allclose(sm.S_train, S, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sm.S_test, St, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sm.c_train, c, rtol=0, atol=ATOL)
    np.testing.assert_allclose(sm.c_test, ct, rtol=0, atol=ATOL)
    assert sm.p_train[0] == 0.0 and sm.p_test[0] == 0.0 and sm.trace_train[0] == 0.0
    for t, (S_t, St_t, _, _, K, Kt) in enumerate(ref, start=1):
        # p^train = Σ_i ‖s_t(x_i)‖², p^test = (n/m) Σ_j ‖s_t(x_j)‖² (method.md §3.1), per tree
        assert sm.p_train[t] == pytest.approx(np.sum(S_t**2), rel=1e-10)
        assert sm.p_test[t] == pytest.approx(n / len(Xte) * np.sum(St_t**2), rel=1e-10)
        assert sm.trace_train[t] == pytest.approx(np.trace(S_t), rel=1e-10, abs=1e-12)
        # tree-kernel rows: sum to 1 over training points, norm 1/√n_leaf ∈ [1/√n, 1] (method.md §4.1)
        np.testing.assert_allclose(K.sum(axis=1), 1.0, rtol=0, atol=1e-12)
        np.testing.assert_allclose(Kt.sum(axis=1), 1.0, rtol=0, atol=1e-12)
        np.testing.assert_allclose(sm.kernel_norm_train[t - 1], np.linalg.norm(K, axis=1), rtol=1e-12)
        np.testing.assert_allclose(sm.kernel_norm_test[t - 1], np.linalg.norm(Kt, axis=1), rtol=1e-12)
    for norms in (sm.kernel_norm_train, sm.kernel_norm_test):
        assert norms.min() >= 1 / np.sqrt(n) - 1e-15 and norms.max() <= 1 + 1e-15
    assert sm.p_train[-1] == pytest.approx(effective_parameters(sm.S_train, n), rel=1e-12)
    assert sm.p_test[-1] == pytest.approx(effective_parameters(sm.S_test, n), rel=1e-12)
    np.testing.assert_array_equal(sm.n_leaves, [e.tree_.n_leaves for e in gbr.estimators_[:, 0]])
    np.testing.assert_allclose(tree_kernel_norms(gbr, Xtr, Xte), sm.kernel_norm_test, rtol=0, atol=0)


def test_training_rows_in_any_order_and_mean_init_in_smoother():
    gbr, Xtr, ytr, Xte = _fit("diabetes", 3, 0.2, None)
    perm = np.random.default_rng(3).permutation(len(ytr))
    sm = boosting_smoother(gbr, Xtr[perm], Xte, ytr[perm])
    np.testing.assert_allclose(sm.S_test @ ytr[perm] + sm.c_test, gbr.predict(Xte), rtol=0, atol=ATOL)
    # h_0 = mean(y) = (1ᵀ/n)·y moved into s_0: still exact, c = 0, p starts at 1
    sm2 = boosting_smoother(gbr, Xtr, Xte, ytr, init_in_smoother=True)
    assert sm2.init_in_smoother and sm2.p_train[0] == pytest.approx(1.0) and sm2.p_test[0] == pytest.approx(1.0)
    np.testing.assert_array_equal(sm2.c_train, 0.0)
    np.testing.assert_allclose(sm2.S_train @ ytr, gbr.predict(Xtr), rtol=0, atol=ATOL)
    np.testing.assert_allclose(sm2.S_test @ ytr, gbr.predict(Xte), rtol=0, atol=ATOL)
    np.testing.assert_allclose(sm2.S_train.sum(axis=1), 1.0, atol=1e-12)  # boosting rows sum to 1


@pytest.mark.parametrize(
    "kw,word",
    [
        ({"subsample": 0.5}, "subsample"),
        ({"loss": "absolute_error"}, "absolute_error"),
        ({"loss": "huber"}, "huber"),
        ({"n_iter_no_change": 3}, "n_iter_no_change"),
    ],
)
def test_unsupported_settings_raise(kw, word):
    gbr, Xtr, ytr, Xte = _fit("synthetic", 2, 0.1, None, n_estimators=5, **kw)
    with pytest.raises(TelecliError, match=word):
        boosting_smoother(gbr, Xtr, Xte, ytr)


def test_wrong_rows_weights_and_models_raise():
    gbr, Xtr, ytr, Xte = _fit("synthetic", 2, 0.1, None, n_estimators=5)
    with pytest.raises(TelecliError, match="X_train"):
        boosting_smoother(gbr, Xtr[:-10], Xte)
    with pytest.raises(TelecliError, match="init_in_smoother"):
        custom = GradientBoostingRegressor(n_estimators=3, init=GradientBoostingRegressor(n_estimators=2))
        boosting_smoother(custom.fit(Xtr, ytr), Xtr, Xte, init_in_smoother=True)
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(ytr))
    weighted = GradientBoostingRegressor(n_estimators=3, max_depth=2).fit(Xtr, ytr, sample_weight=w)
    with pytest.raises(TelecliError, match="sample_weight"):
        boosting_smoother(weighted, Xtr, Xte)
    with pytest.raises(TelecliError, match="not fitted"):
        boosting_smoother(GradientBoostingRegressor(), Xtr, Xte)
    with pytest.raises(TelecliError, match="GradientBoostingRegressor"):
        boosting_smoother(object(), Xtr, Xte)
    with pytest.raises(TelecliError, match="y_train"):
        boosting_smoother(gbr, Xtr, Xte, ytr[:-1])


def test_effective_parameters_known_values():
    n = 7
    assert effective_parameters(np.eye(n), n) == pytest.approx(n)  # interpolation: p = n
    assert effective_parameters(np.full((n, n), 1 / n), n) == pytest.approx(1.0)  # the mean: p = 1
    assert effective_parameters(np.full((3, n), 1 / n), n) == pytest.approx(1.0)  # test rows: (n/m)Σ
    with pytest.raises(TelecliError):
        effective_parameters(np.eye(3), 4)


def test_normalised_max_kernel_norm_and_relative_mse():
    tr = np.array([[0.5, 0.25], [1.0, 0.5]])  # per-step max 0.5, 1.0 → mean 0.75
    te = np.array([[0.3, 0.6, 0.1], [0.9, 0.2, 0.2]])  # per-step max 0.6, 0.9 → mean 0.75
    assert normalised_max_kernel_norm(te, tr) == pytest.approx(1.0)
    assert normalised_max_kernel_norm(2 * te, tr) == pytest.approx(2.0)
    assert normalised_max_kernel_norm(np.array([0.6, 0.9]), tr) == pytest.approx(1.0)
    with pytest.raises(TelecliError):
        normalised_max_kernel_norm(te[:1], tr)
    assert relative_mse(3.0, 1.0, 3.0, 1.0) == 1.0
    assert relative_mse(5.0, 1.5, 2.0, 1.0) == pytest.approx(3.5)
    np.testing.assert_allclose(relative_mse(np.array([2.0, 4.0]), np.array([1.0, 1.0]), 2.0, 1.0), [1.0, 3.0])
    with pytest.raises(TelecliError, match="p = 0"):
        relative_mse(2.0, 1.0, 1.0, 1.0)
    # a GBT's ratio on its own training points is 1
    gbr, Xtr, ytr, Xte = _fit("diabetes", 3, 0.1, None, n_estimators=10)
    norms_tr = tree_kernel_norms(gbr, Xtr, Xtr)
    assert normalised_max_kernel_norm(norms_tr, norms_tr) == 1.0


# ---------------------------------------------------------------------------------- irregularity (§4.2)


def _tabular(N=1500, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, 5)) @ rng.standard_normal((5, 5))
    X[:, 0] = np.exp(X[:, 0])  # one heavy-tailed feature
    return X * np.array([1.0, 10.0, 0.1, 5.0, 1e3]), rng.standard_normal(N)


def test_irregularity_scores_are_abs_pc1_distance_to_median():
    X, _ = _tabular()
    s = irregularity_scores(X)
    Z = (X - X.mean(0)) / X.std(0)
    z = PCA(n_components=1).fit_transform(Z)[:, 0]
    np.testing.assert_allclose(s, np.abs(z - np.median(z)), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(irregularity_scores(X * 7.0 + 3.0), s, rtol=1e-9, atol=1e-9)  # standardised
    with pytest.raises(TelecliError):
        irregularity_scores(np.array([[np.nan, 1.0], [1.0, 2.0]]))


def test_irregular_split_pool_disjointness_and_proportions():
    X, y = _tabular()
    N = len(y)
    out = irregular_split(X, y, mixture_size=120, seed=5)
    s = out["scores"]
    pool, train, reg = out["irregular"], out["train"], out["regular_test"]
    assert len(pool) == round(0.1 * N)
    np.testing.assert_array_equal(np.sort(pool), np.sort(np.argsort(-s, kind="stable")[: len(pool)]))
    assert s[pool].min() >= np.delete(s, pool).max()  # exactly the top 10 % by score
    assert not (set(pool) & set(train) or set(pool) & set(reg) or set(train) & set(reg))
    assert len(pool) + len(train) + len(reg) == N
    assert len(reg) == round(0.3 * (N - len(pool)))
    assert out["mixture_size"] == 120 and not out["capped"]
    pool_set, reg_set = set(pool), set(reg)
    for p in (0.0, 0.25, 0.5, 0.75, 1.0):
        mix = out["mixtures"][p]
        assert len(mix) == 120 and len(set(mix)) == 120  # without replacement
        k = sum(i in pool_set for i in mix)
        assert k == out["n_irregular"][p] == int(np.floor(p * 120 + 0.5))
        assert all(i in reg_set for i in mix if i not in pool_set)


def test_irregular_split_cap_determinism_and_bad_proportions():
    X, y = _tabular(N=1000)
    out = irregular_split(X, y, proportions=(0.0, 0.5, 1.0), seed=1)  # pool 100, regular-test 270
    assert out["capped"] and out["mixture_size_requested"] == 4000
    assert out["mixture_size"] == 100  # p = 1 needs 100 irregular rows: the whole pool
    assert out["n_irregular"][1.0] == 100 and out["n_irregular"][0.5] == 50
    again = irregular_split(X, y, proportions=(0.0, 0.5, 1.0), seed=1)
    other = irregular_split(X, y, proportions=(0.0, 0.5, 1.0), seed=2)
    for key in ("train", "regular_test", "irregular"):
        np.testing.assert_array_equal(out[key], again[key])
    for p in (0.0, 0.5, 1.0):
        np.testing.assert_array_equal(out["mixtures"][p], again["mixtures"][p])
    assert not np.array_equal(out["train"], other["train"])
    np.testing.assert_array_equal(out["irregular"], other["irregular"])  # the pool does not depend on seed
    for bad in [(0.0, 1.5), (-0.1,), (float("nan"),), (), (0.5, 0.5), ("a",)]:
        with pytest.raises(TelecliError, match="proportions"):
            irregular_split(X, y, proportions=bad)
    with pytest.raises(TelecliError):
        irregular_split(X, y[:-1])
    with pytest.raises(TelecliError, match="top"):
        irregular_split(X, y, top=1.2)
