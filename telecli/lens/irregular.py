"""Irregularity protocol of case study 2 (method.md §4.2): irregular pool and test mixtures.

An example's irregularity is its absolute distance to the median along the first principal
component of the standardised features (App. C.2). The top 10 % most irregular examples form the
irregular pool; the rest ("regular") is split into train and regular-test; for each proportion p a
test mixture holds round(p·size) irregular examples and the rest from regular-test.

Choices the paper leaves open (method.md §8.7), made here [I]: proportions (0, .25, .5, .75, 1);
the regular train/test split (``test_size``, default 0.3); round half up; one permutation of the
pool and one of regular-test shared by all proportions, so mixtures are nested (the irregular part
of a smaller p is contained in that of a larger p), which lowers the variance of trends across p.
"""

from __future__ import annotations

import numpy as np

from telecli.errors import TelecliError

DEFAULT_PROPORTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)


def irregularity_scores(X) -> np.ndarray:
    """|z − median(z)| with z the first-principal-component projection of standardised X (§4.2).

    Features are standardised with the statistics of X itself (constant features are centred and
    left unscaled). The sign of the component is arbitrary; the score does not depend on it.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 2 or X.shape[1] < 1:
        raise TelecliError(f"irregularity scores need a 2-D array with ≥ 2 rows and ≥ 1 feature, got {X.shape}")
    if not np.all(np.isfinite(X)):
        raise TelecliError("irregularity scores got non-finite features; impute or drop them first")
    std = X.std(axis=0)
    Z = (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)
    _, _, vt = np.linalg.svd(Z, full_matrices=False)
    z = Z @ vt[0]
    return np.abs(z - np.median(z))


def irregular_split(
    X,
    y,
    *,
    top: float = 0.1,
    test_size: float | int = 0.3,
    proportions=DEFAULT_PROPORTIONS,
    mixture_size: int = 4000,
    seed: int = 0,
) -> dict:
    """Split rows into train, regular-test, irregular pool and test mixtures (method.md §4.2).

    ``top``: fraction of rows in the irregular pool (the most irregular, exactly; ties broken by row
    order). ``test_size``: fraction (0 < f < 1) or count of the regular rows held out as regular-test.
    ``mixture_size``: requested size of every mixture; it is capped to the largest size at which
    *every* proportion can be filled without replacement, and the cap is reported.

    Returns a dict with index arrays into X: ``train``, ``regular_test``, ``irregular`` (the pool),
    ``mixtures`` ({p: indices}, the irregular rows first), and ``n_irregular`` ({p: count}),
    ``mixture_size`` (used), ``mixture_size_requested``, ``capped`` (bool), ``proportions``,
    ``scores`` (irregularity of every row).
    """
    X = np.asarray(X)
    N = X.shape[0] if X.ndim == 2 else -1
    if N < 0 or np.shape(y)[:1] != (N,):
        raise TelecliError(f"X must be 2-D with one row per target; got X {X.shape} and y {np.shape(y)}")
    props = check_proportions(proportions)
    if not 0 < top < 1:
        raise TelecliError(f"top must be a fraction in (0, 1), got {top}")
    if int(mixture_size) != mixture_size or mixture_size < 1:
        raise TelecliError(f"mixture_size must be a positive integer, got {mixture_size}")
    scores = irregularity_scores(X)

    k = _round_half_up(top * N)
    n_regular = N - k
    if isinstance(test_size, (int, np.integer)) and not isinstance(test_size, bool):
        n_test = int(test_size)
    elif isinstance(test_size, float) and 0 < test_size < 1:
        n_test = _round_half_up(test_size * n_regular)
    else:
        raise TelecliError(f"test_size must be a fraction in (0, 1) or a row count, got {test_size!r}")
    if k < 1 or n_test < 1 or n_regular - n_test < 1:
        raise TelecliError(
            f"{N} rows are too few for top={top}, test_size={test_size}: pool {k}, regular-test {n_test}, "
            f"train {n_regular - n_test}"
        )

    order = np.argsort(-scores, kind="stable")  # most irregular first; ties by row order
    pool, regular = np.sort(order[:k]), order[k:]
    rng = np.random.default_rng(seed)
    regular = rng.permutation(np.sort(regular))
    regular_test, train = regular[:n_test], np.sort(regular[n_test:])

    size = _mixture_cap(int(mixture_size), k, n_test, props)
    if size < 1:
        raise TelecliError(
            f"no mixture size fits every proportion with pool {k} and regular-test {n_test}; "
            "raise top or test_size"
        )
    pool_perm, reg_perm = rng.permutation(pool), rng.permutation(regular_test)
    mixtures, n_irr = {}, {}
    for p in props:
        a = _round_half_up(p * size)
        mixtures[p] = np.concatenate([pool_perm[:a], reg_perm[: size - a]])
        n_irr[p] = a
    return {
        "train": train,
        "regular_test": np.sort(regular_test),
        "irregular": pool,
        "mixtures": mixtures,
        "n_irregular": n_irr,
        "mixture_size": size,
        "mixture_size_requested": int(mixture_size),
        "capped": size < mixture_size,
        "proportions": props,
        "scores": scores,
    }


def check_proportions(proportions, what: str = "proportions") -> tuple[float, ...]:
    """Shares p of irregular rows: numbers in [0, 1], at least one, no duplicates (TelecliError naming
    ``what`` otherwise)."""
    try:
        props = tuple(float(p) for p in proportions)
    except (TypeError, ValueError):
        raise TelecliError(f"{what} must be numbers in [0, 1] separated by commas, got {proportions!r}") from None
    if not props:
        raise TelecliError(f"{what} is empty; give values in [0, 1], e.g. 0,0.25,0.5,0.75,1")
    bad = [p for p in props if not (np.isfinite(p) and 0.0 <= p <= 1.0)]
    if bad:
        raise TelecliError(f"{what}: {bad[0]:g} is outside [0, 1]; each proportion p is the share of "
                           "irregular examples in a test mixture")
    if len(set(props)) != len(props):
        raise TelecliError(f"{what} has duplicates: {', '.join(f'{p:g}' for p in props)}")
    return props


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def _mixture_cap(requested: int, n_pool: int, n_regular_test: int, props) -> int:
    """Largest size ≤ requested with round(p·size) ≤ n_pool and size − round(p·size) ≤ n_regular_test ∀p."""
    for size in range(min(requested, n_pool + n_regular_test), 0, -1):
        if all(
            _round_half_up(p * size) <= n_pool and size - _round_half_up(p * size) <= n_regular_test for p in props
        ):
            return size
    return 0
