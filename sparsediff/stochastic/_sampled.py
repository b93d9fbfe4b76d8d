"""`sampled_rhs_gradient`: an unbiased gradient of a loss summed over columns.

For ``X = A⁻¹ B`` with ``m`` columns and ``L = Σ_c ℓ_c(x_c)``, the gradient
with respect to the stored entries is a sum of per-column terms
``t_c[k] = −λ_c[i_k]·conj(x_c[j_k])`` with ``λ_c = A⁻ᴴ ∇ℓ_c(x_c)``. Solving
for a uniformly random subset ``S`` of ``s`` columns (without replacement)
and rescaling by ``m/s`` gives an unbiased estimate of ``Σ_c t_c``; its
variance is ``m²(1 − s/m)·σ²/s`` with ``σ²`` the variance of ``t_c`` over the
columns (the finite-population correction: zero when ``s = m``), which is
estimated from the sampled terms.

This is the honest form of "gradient from a sample": every sampled column is
solved with the *full* matrix, so only the column sum is sampled. Sampling
rows of ``A`` instead (``compare_gradients(..., methods=("sampled_rows",))``)
changes the operator and is biased.
"""

import dataclasses

import numpy as np

from .._api import Solver
from .._validation import as_matrix, as_rhs, check_int, check_on_failure, result_dtype
from ..backend import get_backend

__all__ = ["SampledGradient", "sampled_rhs_gradient"]

_FUNC = "sparsediff.sampled_rhs_gradient"


@dataclasses.dataclass(frozen=True)
class SampledGradient:
    """The result of :func:`sampled_rhs_gradient`.

    Attributes
    ----------
    grad_A : sparse matrix or array, or ndarray
        Unbiased estimate of ``∂L/∂A.data`` in ``A``'s class, format and order.
    grad_A_stderr : same as ``grad_A``
        Its per-entry standard error (NaN with one sampled column; 0 when every
        column was sampled).
    columns : ndarray of int
        The sampled columns, sorted.
    grad_B_columns : ndarray, shape (n, s)
        ``∂L/∂B[:, c]`` for the sampled columns ``c`` (exact, unscaled).
    scale : float
        ``m / s``.
    """

    grad_A: object = dataclasses.field(repr=False)
    grad_A_stderr: object = dataclasses.field(repr=False)
    columns: np.ndarray
    grad_B_columns: np.ndarray = dataclasses.field(repr=False)
    scale: float


def sampled_rhs_gradient(A, B, loss_grad, *, num_columns, seed=None, method="auto",
                         M=None, rtol=1e-8, atol=0.0, maxiter=None, on_failure="raise"):
    """Unbiased gradient of ``Σ_c ℓ_c(x_c)`` over ``X = A⁻¹ B`` from sampled columns.

    Parameters
    ----------
    A : sparse matrix or array, or dense 2-D array, shape (n, n)
    B : array_like, shape (n, m)
    loss_grad : callable
        ``loss_grad(X_s, columns) -> G_s``: the cotangents ``∂ℓ_c/∂x_c`` of the
        sampled columns (``X_s`` and ``G_s`` of shape ``(n, s)``).
    num_columns : int
        ``s``, the columns sampled without replacement (``1 <= s <= m``).
    seed : None, int or numpy.random.Generator
    method, M, rtol, atol, maxiter, on_failure
        As in :class:`sparsediff.Solver` (one factorization or preconditioner
        for the forward and adjoint solves of every sampled column).

    Returns
    -------
    SampledGradient

    Raises
    ------
    ValueError
        ``B`` not 2-D with ``n`` rows; ``num_columns`` outside ``[1, m]``;
        ``loss_grad`` returning the wrong shape.

    Notes
    -----
    ``E[(m/s)·Σ_{c∈S} t_c] = Σ_c t_c`` for a uniform sample ``S`` without
    replacement, with ``Var = m²(1 − s/m)σ²/s`` per entry (module docstring).

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp, sparsediff as sd
    >>> A = sp.csr_array(np.array([[4.0, 1.0], [1.0, 3.0]]))
    >>> B = np.ones((2, 10))
    >>> res = sd.sampled_rhs_gradient(A, B, lambda X, c: X, num_columns=10)
    >>> exact = sd.solve(A, B).vjp(sd.solve(A, B).x)[0]
    >>> np.allclose(res.grad_A.data, exact.data), float(res.grad_A_stderr.data.max())
    (True, 0.0)
    """
    backend = get_backend(A, B, func=_FUNC)
    check_on_failure(on_failure, _FUNC)
    mat = as_matrix(A, _FUNC, "A", backend=backend)
    n = mat.shape[0]
    B2, b_dtype, is_1d, _ = as_rhs(B, n, _FUNC, "B")
    if is_1d:
        raise ValueError(f"`{_FUNC}`: `B` must have shape (n, m) with n = {n}; got "
                         f"{np.shape(B)}.")
    m = B2.shape[1]
    s = check_int(num_columns, _FUNC, "num_columns", 1, strict=True)
    if s > m:
        raise ValueError(f"`{_FUNC}`: `num_columns` must be <= m = {m} (the columns of "
                         f"`B`); got {s}.")
    if not callable(loss_grad):
        raise TypeError(f"`{_FUNC}`: `loss_grad` must be callable; got {loss_grad!r}.")
    rng = np.random.default_rng(seed)
    columns = np.sort(rng.choice(m, size=s, replace=False))
    solver = Solver._from_validated(mat, func=_FUNC, a_dtype=mat.dtype, method=method,
                                    M=M, rtol=rtol, atol=atol, maxiter=maxiter,
                                    on_failure=on_failure)
    X = solver.solve(B2[:, columns]).x
    G = np.asarray(loss_grad(X.copy(), columns.copy()))
    if G.shape != X.shape:
        raise ValueError(f"`{_FUNC}`: `loss_grad(X_s, columns)` must return an array "
                         f"of shape {X.shape}; got {G.shape}.")
    lam = solver.solve(G, trans="H").x
    dtype = result_dtype(mat.dtype, b_dtype, G.dtype)
    rows, cols = mat.rows, mat.indices
    mean = np.zeros(mat.nnz, dtype)
    m2 = np.zeros(mat.nnz)
    for c in range(s):
        t = -lam[rows, c] * np.conj(X[cols, c])
        delta = t - mean
        mean += delta / (c + 1)
        m2 += (np.conj(delta) * (t - mean)).real
    scale = m / s
    if s > 1:
        var = m2 / (s - 1)
        stderr = m * np.sqrt(np.maximum(1.0 - s / m, 0.0) * var / s)
    else:
        stderr = np.full(mat.nnz, np.nan)
    est = m * mean
    if mat.dtype.kind != "c":
        est = est.real
    return SampledGradient(mat.wrap(est.astype(mat.dtype, copy=False)),
                           mat.wrap(stderr), columns, lam, float(scale))
