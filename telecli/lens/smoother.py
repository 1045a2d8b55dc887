"""Smoother-form quantities shared by every model (method.md §1.5, §3.1).

A model in smoother form predicts f(x) = s(x)·y + c(x), with s(x) a 1×n row of weights on the
training targets. The effective-parameter metric p⁰ (method.md §3.1, from Curth, Jeffares &
van der Schaar 2023) measures how concentrated those weights are; the intercept c(x) is ignored.
This module holds the one definition of p⁰ in the project.
"""

from __future__ import annotations

import numpy as np
import torch

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


# --------------------------------------------------------------------------------------------------
# The telescoping model as a smoother (method.md §1.5–1.6), squared loss ½‖f − y‖², batch mean.
#
# With k outputs the targets are flattened to vec(y) ∈ R^{nk} (point-major); the smoother row of a
# point is the k × nk block s(x) with f̃(x) = s(x) vec(y) + c(x). For k = 1 this is the paper's s(x).
# Parameters are tracked as affine functions of vec(y): θ ≈ Θ^S vec(y) + Θ^C (Θ^S is P × nk), and so
# is the optimiser's momentum M ≈ M^S vec(y) + M^C. Residuals are taken from f̃ (Eq. 7).
# --------------------------------------------------------------------------------------------------


def effective_parameters_k(sq_norms, n: int, k: int = 1) -> float:
    """p⁰ for k outputs: (n/|I₀|) Σ_{j∈I₀} ‖s(x_j)‖²_F / k, with ‖s(x_j)‖²_F summed over the k × nk
    block. It equals §3.1's p⁰ for k = 1, and an interpolating smoother (S_train = I) has p_train = n
    for any k (docs/effective-parameters.md)."""
    return effective_parameters_from_sq_norms(np.asarray(sq_norms, dtype=np.float64) / k, n)


def batch_rows(batch: torch.Tensor, k: int) -> torch.Tensor:
    """Row indices in vec(y) of the training points in B_t."""
    return (batch[:, None] * k + torch.arange(k, device=batch.device)[None]).reshape(-1)


def residual_parts(S_train: torch.Tensor, c_train: torch.Tensor, rows: torch.Tensor):
    """Residuals on the batch, y_B − f̃_B = R^S vec(y) + R^C, with R^S = E_B − S_{t−1}[B], R^C = −c_{t−1}[B]."""
    RS = -S_train[rows]
    RS[torch.arange(len(rows), device=rows.device), rows] += 1.0
    return RS, -c_train[rows]


class Columns:
    """The columns the S-part is carried on (method.md §10.1).

    The recursion is linear in the columns of S: every quantity of the S-part (S_t, s_t(x), Θ^S_t, M^S_t)
    evolves column by column with shared kernels. So for an nk × C matrix E the same recursion started
    from E instead of I carries S_t E, at a cost ∝ C:

    * ``exact(nk)``: E = I, every column — the smoother itself;
    * ``shard(y, i, N)``: E = [I[:, J_i], y], the i-th of N blocks J_i of columns: row norms ‖s(x)‖² and
      trace S are sums over columns, so the shards' partial sums add up to the single run's;
    * ``sketch(y, R, seed)``: E = [Z, y] with Z an nk × R matrix of Rademacher (±1) probes (or given
      ``probes`` with E[z zᵀ] = I): ‖s(x)‖² ≈ ‖s(x) Z‖²/R and tr S ≈ tr(Zᵀ S Z)/R (Hutchinson), unbiased;
      split over shards the probes divide the same way.

    Carrying y as the last column keeps s(x)·y exact whatever E is.

    >>> S = torch.tensor([[0.5, 0.2], [0.1, 0.4]], dtype=torch.float64)
    >>> y = torch.tensor([1.0, -1.0], dtype=torch.float64)
    >>> sk = Columns.sketch(y, 2, probes=2**0.5 * torch.eye(2, dtype=torch.float64))  # Z Zᵀ/R = I
    >>> SE = S @ sk.basis
    >>> torch.allclose(sk.sq_norms(SE), (S**2).sum(1)), torch.allclose(sk.times_y(SE, y), S @ y)
    (True, True)
    """

    def __init__(self, basis: torch.Tensor | None, width: int, *, probes: int = 0, identity: range | None = None):
        self.basis = basis  # None: the identity (exact single run)
        self.width = width  # C, the columns carried
        self.probes = probes  # R of the whole sketch (0: not a sketch)
        self.identity = identity  # the identity columns a shard carries

    @classmethod
    def exact(cls, nk: int) -> "Columns":
        return cls(None, nk)

    @classmethod
    def shard(cls, y: torch.Tensor, i: int, N: int) -> "Columns":
        nk = y.numel()
        block = np.array_split(np.arange(nk), N)[i]
        cols = range(int(block[0]), int(block[-1]) + 1) if len(block) else range(0)
        E = torch.zeros(nk, len(cols) + 1, dtype=y.dtype, device=y.device)
        E[torch.as_tensor(cols, device=y.device), torch.arange(len(cols), device=y.device)] = 1.0
        E[:, -1] = y
        return cls(E, len(cols) + 1, identity=cols)

    @classmethod
    def sketch(cls, y: torch.Tensor, R: int, seed: int = 0, shard: tuple[int, int] = (0, 1),
               probes: torch.Tensor | None = None) -> "Columns":
        nk = y.numel()
        if probes is None:
            g = torch.Generator().manual_seed(int(seed))
            probes = (torch.randint(0, 2, (nk, R), generator=g) * 2 - 1).to(y.dtype)
        E = torch.cat([probes[:, cls.probe_share(R, shard)].to(y.device, y.dtype), y.reshape(-1, 1)], dim=1)
        return cls(E, E.shape[1], probes=R)

    @staticmethod
    def probe_share(R: int, shard: tuple[int, int]) -> np.ndarray:
        """The probes shard i of N carries (the R split as evenly as possible)."""
        return np.array_split(np.arange(R), shard[1])[shard[0]]

    @classmethod
    def of(cls, spec, y: torch.Tensor) -> tuple["Columns", str]:
        """The columns of a job's spec — "exact", ("shard", i, N) or ("sketch", R, seed, i, N) — and a
        one-line description for the results file."""
        if spec == "exact":
            return cls.exact(y.numel()), "exact"
        if spec[0] == "shard":
            return cls.shard(y, spec[1], spec[2]), f"shard {spec[1]}/{spec[2]} of the columns"
        _, R, seed, i, N = spec
        return (cls.sketch(y, R, seed, shard=(i, N)),
                f"sketch: {R} Rademacher probes, seed {seed}, share {i}/{N}")

    def residual_parts(self, S_train: torch.Tensor, c_train: torch.Tensor, rows: torch.Tensor):
        """y_B − f̃_B on the carried columns: R^S = E[B] − (S_{t−1} E)[B], R^C = −c_{t−1}[B]."""
        if self.basis is None:
            return residual_parts(S_train, c_train, rows)
        return self.basis[rows] - S_train[rows], -c_train[rows]

    def times_y(self, A: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """A·y from a carried A·E (rows of S, Θ^S, R^S): exact for every E, y being carried."""
        return A @ y if self.basis is None else A[:, -1]

    def sq_norms(self, S_rows: torch.Tensor) -> torch.Tensor:
        """‖s(x)‖² per row: exact, a shard's partial sum, or the sketch's unbiased estimate."""
        if self.basis is None:
            return (S_rows**2).sum(dim=1)
        sq = (S_rows[:, :-1] ** 2).sum(dim=1)
        return sq / self.probes if self.probes else sq

    def probe_sq_norms(self, S_rows: torch.Tensor) -> torch.Tensor:
        """(s(x)·z_r)² per row and probe r (sketch only): the per-probe values behind the standard error."""
        return S_rows[:, :-1] ** 2

    def trace(self, S_train: torch.Tensor) -> float:
        """tr S: exact, a shard's partial sum over its identity columns, or tr(Zᵀ S Z)/R."""
        if self.basis is None:
            return float(torch.diagonal(S_train).sum())
        if self.probes:
            return float((self.basis[:, :-1] * S_train[:, :-1]).sum()) / self.probes
        a, b = self.identity.start, self.identity.stop
        return float(torch.diagonal(S_train[a:b, : b - a]).sum())


def sgd_kernel_step(S_rows: torch.Tensor, c_rows: torch.Tensor, K_rows: torch.Tensor, RS: torch.Tensor,
                    RC: torch.Tensor, lr: float, batch_size: int) -> None:
    """Plain SGD (method.md §1.5 recursion), in place: s(x) += γ k_t(x)(E_B − S_{t−1}[B]) and
    c(x) −= γ k_t(x) c_{t−1}[B], with k_t(x) = K(x, B)/|B| (Eq. 3; batch indicator and 1/|B_t| folded in).
    ``K_rows`` is (rows × |B|k); ``S_rows``/``c_rows`` the rows it updates."""
    scale = lr / batch_size
    S_rows.addmm_(K_rows, RS, alpha=scale)
    c_rows.addmv_(K_rows, RC, alpha=scale)


class ParameterState:
    """Θ^S, Θ^C and the momentum parts M^S, M^C of the self-consistent derivation (method.md §1.6).
    The optimiser's module (telecli.optim) turns the pseudo-gradient G_t into the direction U_t and
    updates M; :func:`advance_parameters` applies Θ_t = Θ_{t−1} + γ_t U_t."""

    def __init__(self, theta0: torch.Tensor, width: int, momentum: torch.Tensor | None, need_momentum: bool):
        P = theta0.numel()  # width: the columns carried (nk, or fewer: Columns)
        self.theta_S = torch.zeros(P, width, dtype=theta0.dtype, device=theta0.device)
        self.theta_C = theta0.clone()
        self.M_S = torch.zeros(P, width, dtype=theta0.dtype, device=theta0.device) if need_momentum else None
        self.M_C = (momentum.clone() if momentum is not None else torch.zeros_like(theta0)) if need_momentum else None


def advance_parameters(state: ParameterState, U_S: torch.Tensor, U_C: torch.Tensor, lr: float) -> None:
    state.theta_S.add_(U_S, alpha=lr)
    state.theta_C.add_(U_C, alpha=lr)


def pseudo_gradient(J_B, RS: torch.Tensor, RC: torch.Tensor, rho: float, batch_size: int,
                    out: torch.Tensor | None = None):
    """G_t = ρ_t T_t (y − f̃_{t−1}) as affine parts (G^S, G^C) (method.md §1.6): J_Bᵀ R^S ρ/|B|, J_Bᵀ R^C ρ/|B|,
    with J_B the batch rows of the Jacobian — a tensor, or lens.products.Products on the batch — and ρ_t
    the recorded gradient scale. ``out`` (P × C) takes G^S, so a step allocates no P × C array."""
    scale = rho / batch_size
    if not isinstance(J_B, torch.Tensor):
        G = J_B.tmm(torch.cat([RS, RC[:, None]], dim=1))
        G_S = out.copy_(G[:, :-1]) if out is not None else G[:, :-1]
        return G_S.mul_(scale), G[:, -1].mul_(scale)
    G_S = torch.mm(J_B.T, RS, out=out) if out is not None else J_B.T @ RS
    return G_S.mul_(scale), (J_B.T @ RC).mul_(scale)


def parameter_space_step(S_rows: torch.Tensor, c_rows: torch.Tensor, J, U_S: torch.Tensor,
                         U_C: torch.Tensor, lr: float) -> None:
    """In place: s_t(x) = s_{t−1}(x) + γ_t ∇f_{θ_{t−1}}(x)ᵀ U^S_t and c_t(x) = c_{t−1}(x) + γ_t ∇f_{θ_{t−1}}(x)ᵀ U^C_t
    (Eq. 16) for the rows of J (a tensor, or lens.products.Products on those points)."""
    if not isinstance(J, torch.Tensor):
        JU = J.mm(torch.cat([U_S, U_C[:, None]], dim=1))
        S_rows.add_(JU[:, :-1], alpha=lr)
        c_rows.add_(JU[:, -1], alpha=lr)
        return
    S_rows.addmm_(J, U_S, alpha=lr)
    c_rows.addmv_(J, U_C, alpha=lr)


def sgd_parameter_step(pulled_residual: torch.Tensor, lr: float, rho: float, batch_size: int) -> torch.Tensor:
    """θ̃_t − θ̃_{t−1} = γ_t ρ_t T_t (y − f̃_{t−1}) for plain SGD, from J_Bᵀ(y_B − f̃_B) (one VJP on the batch)."""
    return (lr * rho / batch_size) * pulled_residual


def kernel_rows(K: torch.Tensor) -> torch.Tensor:
    """(n1, n2, k, k) kernel → (n1·k, n2·k) matrix in point-major order (the order of vec(y))."""
    n1, n2, k, _ = K.shape
    return K.permute(0, 2, 1, 3).reshape(n1 * k, n2 * k)


def kernel_row_norms(K_rows: torch.Tensor, n_points: int, k: int, batch_size: int) -> torch.Tensor:
    """‖k_t(x)‖ per point, k_t(x) = K(x, B_t)/|B_t| (Eq. 3: batch indicator and 1/|B_t| folded in),
    Frobenius over the point's k × |B|k block; ``K_rows`` is (n_points·k) × (|B|·k)."""
    return (K_rows.reshape(n_points, k * batch_size * k) / batch_size).norm(dim=1)

