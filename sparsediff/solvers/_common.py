"""Helpers shared by every solver: operator products, residuals, reports, policy."""

import warnings

import numpy as np

from .._errors import ConvergenceError, ConvergenceWarning, SingularMatrixError
from ..kernels import numba as kernels
from ._info import SolveInfo

__all__ = [
    "apply_policy",
    "column_norms",
    "make_info",
    "op_matvec",
    "true_residual",
]


def op_matvec(mat, x, trans="N", data=None):
    """``op(A) @ x`` for a :class:`MatrixInput` and 2-D ``x`` (a new array).

    ``data`` replaces the canonical values (used for tangents ``Ȧ x``).
    """
    data = mat.data if data is None else data
    dtype = np.result_type(data.dtype, x.dtype)
    x = np.ascontiguousarray(x, dtype=dtype)
    data = data.astype(dtype, copy=False)
    if trans == "N":
        out = np.empty((mat.shape[0], x.shape[1]), dtype=dtype)
        return kernels.csr_matvec(mat.indptr, mat.indices, data, x, out)
    out = np.empty((mat.shape[1], x.shape[1]), dtype=dtype)
    return kernels.csr_rmatvec(mat.indptr, mat.indices, data, x, out, trans == "H")


def column_norms(a):
    """2-norm of every column of a 2-D array (float64, no overflow for f32)."""
    if a.shape[0] == 0:
        return np.zeros(a.shape[1])
    return np.linalg.norm(a.astype(np.result_type(a.dtype, np.float64), copy=False),
                          axis=0)


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


def apply_policy(x, info, on_failure, what, stacklevel=3):
    """Enforce ``on_failure`` on a finished solve; returns the array to hand out.

    ``what`` names the solve in messages ("`sparsediff.solve`", "adjoint solve
    of `Solution.vjp`", ...).
    """
    if info.converged:
        return x
    if info.reason == "singular":
        msg = f"{what}: the matrix is singular ({info.method}); no unique solution."
    else:
        msg = (
            f"{what}: {info.method} did not converge (reason: {info.reason}; "
            f"{info.iterations} iterations; residual norm {info.residual_norm} "
            f"against tolerance target with rhs norm {info.rhs_norm})."
        )
    if on_failure == "raise":
        cls = SingularMatrixError if info.reason == "singular" else ConvergenceError
        raise cls(msg, info)
    if on_failure == "warn":
        warnings.warn(msg + " Returning the unconverged result.", ConvergenceWarning,
                      stacklevel=stacklevel)
        return x
    return np.full_like(x, np.nan)
