"""Helpers shared by every solver: operator products, residuals, reports, policy."""

import warnings

import numpy as np

from .._errors import ConvergenceError, ConvergenceWarning, SingularMatrixError
from ..backend import _csr
from ..backend._csr import column_norms
from ._info import SolveInfo, replace_info

__all__ = [
    "apply_policy",
    "column_norms",
    "enforce",
    "make_info",
    "squeeze_info",
    "op_matvec",
    "true_residual",
]


def op_matvec(mat, x, trans="N", data=None):
    """``op(A) @ x`` for a :class:`MatrixInput` and 2-D ``x`` (a new array).

    ``data`` replaces the canonical values (used for tangents ``Ȧ x``). The
    kernels are those of ``mat.backend``.
    """
    return _csr.matvec(mat, x, trans, data)


def true_residual(mat, x, b, trans="N"):
    """``‖b − op(A) x‖₂`` per column, recomputed from scratch."""
    return column_norms(b - op_matvec(mat, x, trans))


def make_info(converged, iterations, residual, rhs_norm, method, reasons, is_1d,
              trans="N", **extra):
    """Assemble a :class:`SolveInfo` from per-column arrays."""
    converged = np.asarray(converged, dtype=bool)
    iterations = np.asarray(iterations, dtype=np.int64)
    reason = "converged"
    for r in reasons:
        if r != "converged":
            reason = r
            break
    if is_1d:
        return SolveInfo(
            converged=bool(converged.all()),
            iterations=int(iterations.max(initial=0)),
            residual_norm=float(residual[0]) if residual.size else 0.0,
            method=method, reason=reason,
            rhs_norm=float(rhs_norm[0]) if rhs_norm.size else 0.0,
            trans=trans, **extra,
        )
    return SolveInfo(
        converged=bool(converged.all()),
        iterations=int(iterations.max(initial=0)),
        residual_norm=np.asarray(residual, dtype=np.float64),
        method=method, reason=reason,
        rhs_norm=np.asarray(rhs_norm, dtype=np.float64),
        column_converged=converged, column_iterations=iterations,
        trans=trans, **extra,
    )


_OP = {"N": "A", "T": "Aᵀ", "H": "Aᴴ"}

_ADVICE = {
    "maxiter": "raise `maxiter`, or add a preconditioner (M='jacobi', 'ilu', "
               "'amg').",
    "breakdown": "try another method (method='gmres'), a preconditioner, or "
                 "method='direct'.",
    "indefinite": "A (or M) is not positive definite: use method='minres' for "
                  "a Hermitian indefinite A, 'gmres', or method='direct'.",
    "nonfinite": "the iteration produced NaN or Inf: check A, b and M for "
                 "huge or non-finite values.",
}


def _residual_report(info):
    """What a failed solve reached against what it had to reach, in numbers.

    Returns ``(status, numbers)``: the reason and iterations in parentheses,
    and for one failing column (the first; the count is given for several)
    the true residual, the target ``max(rtol·‖b‖, atol)`` with its parts and
    advice; for ``"stagnation"`` the smallest true residual reached (the
    attainable accuracy).
    """
    residual = np.atleast_1d(np.asarray(info.residual_norm, dtype=np.float64))
    bnorm = np.atleast_1d(np.asarray(info.rhs_norm, dtype=np.float64))
    extra = info.extra
    target = extra.get("target")
    if info.column_converged is not None:
        failed = np.flatnonzero(~np.asarray(info.column_converged))
    else:
        failed = np.arange(residual.size)
    c = int(failed[0]) if failed.size else 0
    its = (info.iterations if info.column_iterations is None
           else int(np.asarray(info.column_iterations)[c]))
    op = _OP.get(info.trans, "A")
    where = ""
    if residual.size > 1:
        where = (f"; column {c}, {failed.size} of {residual.size} columns "
                 f"failed")
    status = f"(reason: {info.reason}, after {its} iterations{where})"
    res, bn = float(residual[c]), float(bnorm[c])
    if target is None:
        return status, f"‖b − {op} x‖ = {res:.2e} with ‖b‖ = {bn:.4g}."
    tol = float(np.atleast_1d(target)[c])
    rtol, atol = extra["rtol"], extra["atol"]
    msg = (f"‖b − {op} x‖ = {res:.2e} > target {tol:.2e} = max(rtol·‖b‖, atol) "
           f"with rtol={rtol:.3g}, atol={atol:.3g}, ‖b‖={bn:.4g}.")
    if info.reason == "stagnation":
        best = float(np.atleast_1d(extra.get("attainable", residual))[c])
        best = min(best, res)
        rel = best / bn if bn > 0 else float("inf")
        # a power of ten at least twice the attainable relative residual
        loose = 10.0 ** np.ceil(np.log10(2 * rel)) if 0 < rel < np.inf else rel
        msg += (f" The true residual stopped decreasing: the smallest reached, "
                f"‖b − {op} x‖ = {best:.2e} (‖b − {op} x‖/‖b‖ = {rel:.1e}), is "
                f"the attainable accuracy of {info.method} on this system in this "
                f"precision. Loosen rtol to {loose:.0e} or more, add a "
                f"preconditioner (M='jacobi', 'ilu', 'amg'), or use "
                f"method='direct'.")
    elif info.reason in _ADVICE:
        msg += " Advice: " + _ADVICE[info.reason]
    return status, msg


def squeeze_info(info, **changes):
    """Engines report per-column arrays; a 1-D right-hand side (or cotangent)
    gets scalars. ``changes``: other fields to replace in the same copy."""
    if np.ndim(info.residual_norm) == 0:
        return replace_info(info, **changes) if changes else info
    cond = getattr(info, "condition_estimate", None)
    return replace_info(
        info,
        residual_norm=float(np.asarray(info.residual_norm).reshape(-1)[0]),
        rhs_norm=float(np.asarray(info.rhs_norm).reshape(-1)[0]),
        column_converged=None, column_iterations=None,
        condition_estimate=None if cond is None else float(np.max(cond)),
        **changes,
    )


def apply_policy(x, info, on_failure, what, stacklevel=3):
    """Enforce ``on_failure`` on a finished solve; returns the array to hand out.

    ``what`` names the solve in messages ("`sparsediff.solve`", "adjoint solve
    of `Solution.vjp`", ...).
    """
    if info.converged:
        return x
    if info.reason == "singular":
        msg = f"{what}: the matrix is singular ({info.method}); no unique solution."
        kappa = getattr(info, "condition_estimate", None)
        if kappa is not None and np.isfinite(kappa):
            msg = (f"{what}: the matrix is singular to working precision (1-norm "
                   f"condition number estimate {float(kappa):.3g}); no reliable "
                   f"solution.")
        if info.extra.get("target") is not None:
            status, numbers = _residual_report(info)
            msg += f" {status[1:-1].capitalize()}: {numbers}"
    else:
        status, numbers = _residual_report(info)
        msg = f"{what}: {info.method} did not converge {status}: {numbers}"
    return enforce(on_failure, msg, info, x, singular=info.reason == "singular",
                   suffix=" Returning the unconverged result.",
                   stacklevel=stacklevel + 1)


def enforce(on_failure, message, info, x=None, *, singular=False, suffix="",
            stacklevel=4):
    """The ``on_failure`` policy itself, for every failed solve or iteration.

    ``"raise"``: :class:`SingularMatrixError` (``singular``) or
    :class:`ConvergenceError` with ``message`` and ``info``; ``"warn"``: a
    :class:`ConvergenceWarning` (``message + suffix``) and ``x`` as it is;
    ``"nan"``: ``x`` filled with NaN (``None`` when there is no ``x``: the
    caller makes its own NaN result).
    """
    if on_failure == "raise":
        raise (SingularMatrixError if singular else ConvergenceError)(message, info)
    if on_failure == "warn":
        warnings.warn(message + suffix, ConvergenceWarning, stacklevel=stacklevel)
        return x
    return None if x is None else np.full_like(x, np.nan)
