"""`SolveInfo`: what a solve reports about itself."""

from dataclasses import dataclass, field
from typing import Any

__all__ = ["SolveInfo"]


@dataclass(frozen=True)
class SolveInfo:
    """Report of one forward, adjoint or tangent solve.

    Attributes
    ----------
    converged : bool
        Whether every right-hand side met its stopping test
        ``‖b − A x‖ ≤ max(rtol·‖b‖, atol)`` (judged on the true residual).
    iterations : int
        Krylov iterations (the largest over columns); 0 for a direct solve.
    residual_norm : float or ndarray
        Absolute true residual ``‖b − op(A) x‖₂``: a float for a 1-D ``b``,
        an array of shape ``(m,)`` for ``(n, m)``.
    method : str
        The method used (``"direct"``, ``"cg"``, ...), with the preconditioner
        after a ``+`` where there is one (``"cg+amg"``).
    reason : str
        ``"converged"``, ``"maxiter"``, ``"breakdown"``, ``"indefinite"``,
        ``"stagnation"``, ``"singular"`` or ``"nonfinite"``. With several
        right-hand sides, the first failure reason among the columns.
    rhs_norm : float or ndarray
        ``‖b‖₂`` per column (the scale of the stopping test).
    column_converged : ndarray of bool or None
        Per-column convergence for a 2-D right-hand side.
    column_iterations : ndarray of int or None
        Per-column iteration counts for a 2-D right-hand side (Krylov only).
    error_estimate : float or None
        Direct solves: a bound on the relative error of the result, LAPACK's
        forward error bound (``xGERFS``' FERR) in the 1-norm,
        ``‖op(A)⁻¹‖₁·‖|r| + (k+1)·eps·(|op(A)||x| + |b|)‖₁ / ‖x‖₁`` (``r`` the
        computed residual, ``k`` the most stored entries in a row or column),
        largest over columns; as reliable as the estimate of ``‖op(A)⁻¹‖₁``.
        In ``Solution.adjoint_info``: the bound ``e_x + e_λ + e_x·e_λ`` on
        the relative error of the gradients (see ``Solution.vjp``). ``None``
        for iterative solves.
    trans : str
        ``"N"``, ``"T"`` or ``"H"``: which of A, Aᵀ, Aᴴ was solved with.
    condition_estimate : float or None
        Direct solves: an estimate of the 1-norm condition number
        ``κ₁(op(A)) = ‖op(A)‖₁·‖op(A)⁻¹‖₁``, independent of the right-hand
        side (Hager–Higham's estimator, as LAPACK's ``xGECON``: a handful of
        solves once per factorization, cached). A lower bound in exact
        arithmetic, almost always within a factor 3 (usually exact); ``inf``
        for an exactly singular matrix. A matrix with ``κ·eps ≥ 1`` both as
        it is and with equilibrated rows and columns is singular to working
        precision (``reason="singular"``). ``None`` for iterative solves.
    backward_error : float or None
        ``Solution.adjoint_info`` only: the sum of the relative residuals
        ``‖r‖₂/‖b‖₂`` of the forward and the adjoint solves (largest over
        columns): the first-order relative error of the gradients is at most
        about a condition number times this. Not itself an error bound.
    """

    converged: bool
    iterations: int
    residual_norm: Any
    method: str
    reason: str
    rhs_norm: Any = None
    column_converged: Any = None
    column_iterations: Any = None
    error_estimate: Any = None
    trans: str = "N"
    condition_estimate: Any = None
    backward_error: Any = None
    extra: dict = field(default_factory=dict, repr=False, compare=False)


_FIELDS = frozenset(SolveInfo.__dataclass_fields__)


def replace_info(info, **changes):
    """``dataclasses.replace(info, **changes)`` without its per-field
    machinery (a copy of the instance dictionary: several times faster, and
    the batched solvers make one report per element). ``SolveInfo`` has no
    ``__post_init__`` to skip; unknown field names are refused as there."""
    unknown = changes.keys() - _FIELDS
    if unknown:
        raise TypeError(f"SolveInfo has no field(s) {sorted(unknown)}")
    new = object.__new__(SolveInfo)
    new.__dict__.update(info.__dict__)
    new.__dict__.update(changes)
    return new
