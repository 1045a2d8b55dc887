"""Smoother-form quantities shared by every model (method.md §1.5, §3.1).

A model in smoother form predicts f(x) = s(x)·y + c(x), with s(x) a 1×n row of weights on the
training targets. The effective-parameter metric p⁰ (method.md §3.1, from Curth, Jeffares &
van der Schaar 2023) measures how concentrated those weights are; the intercept c(x) is ignored.
This module holds the one definition of p⁰ in the project.
"""

from __future__ import annotations

import numpy as np

from telecli.errors import TelecliError


def effective_parameters_from_sq_norms(sq_norms, n: int) -> float:
    """p⁰ = (n/|I₀|) Σ_{j∈I₀} ‖s(x_j)‖² from squared row norms ‖s(x_j)‖², j ∈ I₀ (method.md §3.1).

    ``n`` is always the number of *training* points (the length of each row s(x)), whatever I₀ is.
    """
    sq = np.asarray(sq_norms, dtype=np.float64).reshape(-1)
    if sq.size == 0:
        raise TelecliError("effective parameters need at least one evaluation row (I₀ is empty)")
    if n < 1:
        raise TelecliError(f"effective parameters need n ≥ 1 training points, got n={n}")
    return float(n * sq.mean())


def effective_parameters(S_rows, n: int) -> float:
    """Effective parameters p⁰ = (n/|I₀|) Σ_{j∈I₀} ‖s(x_j)‖²₂ of smoother rows (method.md §3.1).

    ``S_rows`` is |I₀|×n: row j is s(x_j) for x_j ∈ I₀. With I₀ the training set this is
    p^train = Σ_i ‖s(x_i)‖²; with I₀ a test set it is p^test = (n/m) Σ_j ‖s(x_j)‖² (no labels needed).
    """
    S = np.asarray(S_rows, dtype=np.float64)
    if S.ndim != 2 or S.shape[1] != n:
        raise TelecliError(f"smoother rows must be a 2-D array with n={n} columns, got shape {S.shape}")
    return effective_parameters_from_sq_norms(np.einsum("ij,ij->i", S, S), n)
