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
        Adjoint solves only: an a-posteriori bound on the relative error of
        the gradient from the forward and adjoint residuals (see
        ``Solution.vjp``).
    trans : str
        ``"N"``, ``"T"`` or ``"H"``: which of A, Aᵀ, Aᴴ was solved with.
    condition_estimate : float, ndarray or None
        Direct solves: a lower bound on the 1-norm condition number of
        ``op(A)``, ``‖op(A)‖₁·‖x‖₁/‖b‖₁`` (per column for a 2-D ``b``; NaN
        for a zero column). O(n) per solve; it never overestimates, so a
        large value is certain, a small one is not a proof of good
        conditioning. ``None`` for iterative solves.
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
    extra: dict = field(default_factory=dict, repr=False, compare=False)
