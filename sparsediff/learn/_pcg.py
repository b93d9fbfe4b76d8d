"""Preconditioned conjugate gradients unrolled in PyTorch (and a NumPy twin).

``pcg_unrolled`` runs CG as plain differentiable tensor operations, so that
autograd can differentiate the iterate ``x_k`` with respect to everything that
enters it: the matrix values, ``b``, per-iteration step multipliers and the
parameters of a preconditioner. This is *unrolled* differentiation — the
derivative of the algorithm after ``k`` steps, not of the exact solution; its
memory grows linearly with ``k`` (see ``UnrolledCG.tape_memory_bytes``).

``pcg_numpy`` is the plain NumPy algorithm used to count iterations to a
tolerance when :func:`sparsediff.solve` has no ``"cg"`` method.
"""

import numpy as np
import torch

from ._spmv import CSRPattern, csr_matvec

__all__ = ["as_matvec", "pcg_numpy", "pcg_unrolled"]


def as_matvec(A, *, dtype=None, device=None, func="UnrolledCG"):
    """Return ``(matvec, n, dtype)`` for the accepted matrix descriptions.

    ``A`` is a ``(values, pattern)`` pair (values differentiable, possibly
    batched ``(B, nnz)``), a ``scipy.sparse`` matrix (constant), or a dense
    2-D tensor.
    """
    import scipy.sparse as sp

    if isinstance(A, tuple) and len(A) == 2:
        values, pattern = A
        if not isinstance(pattern, CSRPattern):
            raise TypeError(
                f"`{func}`: `A` given as a pair must be (values, CSRPattern); got "
                f"({type(values).__name__}, {type(pattern).__name__}).")
        if not torch.is_tensor(values):
            raise TypeError(
                f"`{func}`: `values` must be a torch.Tensor; got {type(values).__name__}.")
        if pattern.shape[0] != pattern.shape[1]:
            raise ValueError(f"`{func}`: `A` must be square; got shape {pattern.shape}.")
        return (lambda x: csr_matvec(values, pattern, x)), pattern.shape[0], values.dtype
    if sp.issparse(A):
        pattern, values = CSRPattern.from_scipy(
            A, dtype=dtype or torch.float64, device=device)
        return as_matvec((values, pattern), func=func)
    if torch.is_tensor(A) and A.dim() == 2 and A.layout == torch.strided:
        if A.shape[0] != A.shape[1]:
            raise ValueError(f"`{func}`: `A` must be square; got shape {tuple(A.shape)}.")
        return (lambda x: x @ A.transpose(-1, -2)), A.shape[0], A.dtype
    raise TypeError(
        f"`{func}`: `A` must be a (values, CSRPattern) pair, a scipy.sparse matrix or "
        f"a dense 2-D tensor; got {type(A).__name__}.")


def _dot(u, v):
    return (u * v).sum(-1, keepdim=True)


def _safe_div(num, den):
    # a zero denominator means the residual is already exactly zero: take a zero
    # step. The `where` on the denominator keeps the unused branch finite, so
    # its (discarded) gradient is not NaN.
    zero = den == 0
    return torch.where(zero, torch.zeros_like(num), num / torch.where(zero, 1, den))


def pcg_unrolled(matvec, b, k, *, M=None, x0=None, steps=None, rtol=None,
                 residuals=None):
    """``k`` iterations of (preconditioned) CG as differentiable tensor operations.

    Parameters
    ----------
    matvec : callable
        ``matvec(x) -> A x`` for ``x`` of shape ``(..., n)``; ``A`` symmetric
        positive definite.
    b : torch.Tensor, shape (..., n)
    k : int
        Number of iterations (the maximum when ``rtol`` is given).
    M : callable, optional
        ``M(r) -> M⁻¹ r``, the preconditioner applied to residuals (SPD).
    x0 : torch.Tensor, optional
        Initial guess; zero by default.
    steps : torch.Tensor, shape (k,), optional
        Multipliers ``s_i`` of the CG step lengths: ``x ← x + s_i α_i p_i``,
        ``r ← r − s_i α_i A p_i`` (``r`` stays the true residual). ``s = 1``
        is plain CG.
    rtol : float, optional
        Stop early once ``‖r‖ ≤ rtol·‖b‖`` for every vector of the batch.
    residuals : list, optional
        If given, the residual norms ``‖r_i‖`` (detached, shape (...,)) are
        appended to it, ``r_0`` first.

    Returns
    -------
    torch.Tensor, shape (..., n)
        The iterate ``x_k``.
    """
    x = torch.zeros_like(b) if x0 is None else x0
    r = b - matvec(x) if x0 is not None else b
    z = M(r) if M is not None else r
    p = z
    rz = _dot(r, z)
    tol = None
    if rtol is not None:
        tol = rtol * torch.linalg.vector_norm(b.detach(), dim=-1)
    if residuals is not None:
        residuals.append(torch.linalg.vector_norm(r.detach(), dim=-1))
    for i in range(k):
        if tol is not None and bool(
                (torch.linalg.vector_norm(r.detach(), dim=-1) <= tol).all()):
            break
        Ap = matvec(p)
        alpha = _safe_div(rz, _dot(p, Ap))
        if steps is not None:
            alpha = alpha * steps[i]
        x = x + alpha * p
        r = r - alpha * Ap
        if residuals is not None:
            residuals.append(torch.linalg.vector_norm(r.detach(), dim=-1))
        if i == k - 1:
            break
        z = M(r) if M is not None else r
        rz_new = _dot(r, z)
        beta = _safe_div(rz_new, rz)
        p = z + beta * p
        rz = rz_new
    return x


def pcg_numpy(A, b, M=None, *, rtol=1e-6, atol=0.0, maxiter=None):
    """Plain preconditioned CG in NumPy; returns ``(x, iterations, converged)``.

    The stopping test is SciPy's, ``‖b − A x‖ ≤ max(rtol·‖b‖, atol)``, on the
    recursively updated residual, confirmed on the true residual at the end.
    ``M`` is an object with ``matvec`` applying ``M⁻¹`` (or None).
    """
    b = np.asarray(b, dtype=np.float64)
    n = b.shape[0]
    maxiter = 10 * n if maxiter is None else maxiter
    tol = max(rtol * np.linalg.norm(b), atol)
    x = np.zeros_like(b)
    r = b.copy()
    if np.linalg.norm(r) <= tol:
        return x, 0, True
    z = np.asarray(M.matvec(r)).reshape(n) if M is not None else r
    p = z.copy()
    rz = r @ z
    for it in range(1, maxiter + 1):
        Ap = A @ p
        alpha = rz / (p @ Ap)
        x += alpha * p
        r -= alpha * Ap
        if np.linalg.norm(r) <= tol:
            converged = np.linalg.norm(b - A @ x) <= 10 * tol
            return x, it, bool(converged)
        z = np.asarray(M.matvec(r)).reshape(n) if M is not None else r
        rz_new = r @ z
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x, maxiter, False
