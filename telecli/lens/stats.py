"""Statistics over seeds and pairs (numpy only): mean ± standard error, as every figure and summary
draws them (method.md §5.2, §6)."""

from __future__ import annotations

import numpy as np


def mean_se(rows, axis: int = 0, single: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error of the mean over seeds or pairs (axis ``axis``), ignoring NaN; the s.e. is
    ``single`` where only one value is finite (0 for figures, NaN in results files).

    >>> m, se = mean_se(np.array([[1.0, 2.0], [3.0, 4.0]]))
    >>> m.tolist(), se.tolist()
    ([2.0, 3.0], [1.0, 1.0])
    """
    v = np.moveaxis(np.asarray(rows, dtype=np.float64), axis, -1)
    ok = np.isfinite(v)
    n = ok.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # a diverging run's values square to inf
        mean = np.where(n > 0, np.nansum(np.where(ok, v, 0.0), axis=-1) / np.maximum(n, 1), np.nan)
        dev = np.where(ok, v - mean[..., None], 0.0)
        sd = np.sqrt((dev ** 2).sum(axis=-1) / np.maximum(n - 1, 1))
        se = np.where(n > 1, sd / np.sqrt(np.maximum(n, 1)), single)
    return mean, se
