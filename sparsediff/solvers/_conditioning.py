"""Condition estimates, the ill-conditioning warning and forward error bounds.

The 1-norm condition number ``κ₁(A) = ‖A‖₁·‖A⁻¹‖₁`` is estimated with
Hager's method as refined by Higham (LAPACK's ``xLACN2``, used by ``xGECON``):
a handful of solves with ``A`` and ``Aᴴ`` on the existing factors, never the
``n`` solves of an explicit inverse. The estimate does not depend on any
right-hand side. It is a lower bound on ``‖A⁻¹‖₁`` in exact arithmetic and in
practice almost always within a factor 3 of it (usually exact).

Deterministic: no random starting vectors (SciPy's ``onenormest`` draws from
NumPy's global random state), so two runs on the same factors agree.
"""

import warnings

import numpy as np

from .._errors import IllConditionedWarning

__all__ = ["ILL_CONDITIONED_BOUND", "SINGULAR_BOUND", "inverse_norm1",
           "warn_ill_conditioned"]

#: A direct solve (and every ``vjp``/``jvp`` after it) warns
#: (:class:`IllConditionedWarning`) when its condition estimate ``κ`` gives a
#: first-order relative error bound ``κ·eps`` above this: fewer than about
#: three correct digits can be expected. float64: κ > 4.5e12; float32:
#: κ > 8.4e3.
ILL_CONDITIONED_BOUND = 1e-3

#: A matrix whose condition estimate reaches ``SINGULAR_BOUND / eps``, both as
#: it is and with rows and columns equilibrated (scaled by powers of two to a
#: largest entry of about one, as LAPACK's ``xGEEQU``), is singular to working
#: precision: a relative perturbation of the size of the rounding of its
#: entries can make it exactly singular, and the first-order error bound
#: ``κ·eps`` of the result is 100 % or more. Direct solves report it as
#: ``reason="singular"`` (:class:`SingularMatrixError` under the default
#: policy). The equilibrated test keeps badly scaled but well-determined
#: matrices such as ``diag(1, 1e-17)`` (whose solves are accurate) merely
#: ill-conditioned.
SINGULAR_BOUND = 1.0

_MAX_STEPS = 5  # as LAPACK's xLACN2


def _sign(y):
    """``y/|y|`` entrywise, 1 where ``y == 0`` (real: ±1)."""
    if np.iscomplexobj(y):
        a = np.abs(y)
        out = np.ones_like(y)
        nz = a > 0
        out[nz] = y[nz] / a[nz]
        return out
    return np.where(y >= 0, 1.0, -1.0).astype(y.dtype)


def inverse_norm1(solve, solve_h, n, dtype):
    """Estimate ``‖B‖₁`` of an ``n × n`` operator from products with B and Bᴴ.

    ``solve(v)`` returns ``B v`` and ``solve_h(v)`` returns ``Bᴴ v`` for 1-D
    ``v`` of ``dtype``. Hager–Higham iteration (LAPACK ``xLACN2``): at most
    ``2 + 2·4 + 1`` products, typically 4 or 5. Returns ``inf`` when a
    product is not finite (B = A⁻¹ of a matrix singular in floating point).
    """
    if n == 0:
        return 0.0
    x = np.full(n, 1.0 / n, dtype=dtype)
    y = solve(x)
    if not np.isfinite(y).all():
        return np.inf
    est = float(np.abs(y).sum())
    if n == 1:
        return est
    xi = _sign(y)
    z = solve_h(xi)
    if not np.isfinite(z).all():
        return np.inf
    j = int(np.argmax(np.abs(z)))
    for _ in range(_MAX_STEPS - 1):
        x = np.zeros(n, dtype=dtype)
        x[j] = 1.0
        y = solve(x)
        if not np.isfinite(y).all():
            return np.inf
        old, est = est, float(np.abs(y).sum())
        new_xi = _sign(y)
        if est <= old or (not np.iscomplexobj(y) and np.array_equal(new_xi, xi)):
            est = max(est, old)
            break
        xi = new_xi
        z = solve_h(xi)
        if not np.isfinite(z).all():
            return np.inf
        az = np.abs(z)
        j_last, j = j, int(np.argmax(az))
        if az[j_last] == az[j]:
            break
    # Higham's alternative vector guards against the rare cases where the
    # iteration stops at a poor local maximum: x_i = (−1)^i (1 + i/(n−1))
    i = np.arange(n)
    x = ((-1.0) ** i * (1.0 + i / (n - 1))).astype(dtype)
    y = solve(x)
    if not np.isfinite(y).all():
        return np.inf
    return max(est, 2.0 * float(np.abs(y).sum()) / (3.0 * n))


def z_matrix(mat, data):
    """Whether ``A`` (canonical ``mat``'s pattern, values ``data``) is a real
    Z-matrix with a positive diagonal: no positive off-diagonal entry (Poisson,
    upwind convection–diffusion, graph Laplacians plus a positive shift).
    ``data`` of shape ``(B, nnz)`` (a batch on one pattern) gives one answer
    per element."""
    batched = data.ndim > 1
    n = mat.shape[0]
    on = mat.rows == mat.indices
    # canonical: at most one stored diagonal entry per row; a row without one
    # has a zero diagonal
    if not n or data.dtype.kind != "f" or np.count_nonzero(on) != n:
        return np.zeros(data.shape[0], bool) if batched else False
    ok = np.all((data <= 0) | on, axis=-1) & np.all(data[..., on] > 0, axis=-1)
    return ok if batched else bool(ok)


def positivity_margin(row_nnz):
    """The factor ``2 (k+1) eps`` of :func:`semipositive`'s test
    ``A y > 2 (k+1) eps |A| y`` (``k``: most stored entries in a row or column)."""
    return 2 * (row_nnz + 1) * float(np.finfo(np.float64).eps)


def semipositive(mat, data, y, row_nnz):
    """Whether ``y = A⁻¹·1`` proves the Z-matrix ``A`` a nonsingular M-matrix.

    ``y ≥ 0`` with ``A y > 0``, the product checked above its rounding bound
    ``2 (k+1) eps |A| y`` (``k``: most stored entries in a row or column). A
    Z-matrix with such a ``y`` is a nonsingular M-matrix (Berman and
    Plemmons, *Nonnegative Matrices in the Mathematical Sciences*, ch. 6,
    condition I₂₇), whose inverse is entrywise nonnegative: then
    ``‖A⁻¹‖₁ = ‖A⁻ᵀ·1‖∞`` and ``‖A⁻ᵀ‖₁ = ‖A⁻¹·1‖∞`` exactly.
    """
    if not (np.isfinite(y).all() and np.all(y >= 0)):
        return False
    y = np.asarray(y, dtype=np.float64).ravel()
    vals = np.asarray(data, dtype=np.float64)
    # two compiled CSR products (SciPy's), not gathers and weighted bincounts
    ay = _csr_product(mat, vals, y)
    bound = _csr_product(mat, np.abs(vals), y)
    return bool(np.all(ay > positivity_margin(row_nnz) * bound))


def _csr_product(mat, vals, y):
    """``A y`` for the pattern of the canonical ``mat`` with values ``vals``."""
    import scipy.sparse as sp

    return sp.csr_array((vals, mat.indices, mat.indptr), shape=mat.shape) @ y


def warn_ill_conditioned(info, dtype, func, stacklevel, kappa=None):
    """Issue :class:`IllConditionedWarning` if ``κ·eps > ILL_CONDITIONED_BOUND``.

    ``κ`` is ``kappa`` if given, else ``info.condition_estimate`` (set by
    direct solves only: nothing happens for iterative ones). ``dtype`` is the
    working precision.
    """
    if kappa is None:
        kappa = getattr(info, "condition_estimate", None)
    if kappa is None:
        return
    kappa = np.asarray(kappa, dtype=np.float64).ravel()
    kappa = kappa[~np.isnan(kappa)]
    if not kappa.size:
        return
    kappa = float(kappa.max())
    eps = float(np.finfo(dtype).eps)
    if kappa * eps > ILL_CONDITIONED_BOUND:
        digits = int(-np.log10(kappa * eps)) if kappa * eps < 1 else 0
        expect = (f"fewer than {digits} correct digits" if digits else
                  "no correct digit")
        warnings.warn(
            f"`{func}`: ill-conditioned matrix (1-norm condition number estimate "
            f"{kappa:.3g}); the result may have {expect} in "
            f"{np.dtype(dtype).name}.", IllConditionedWarning,
            stacklevel=stacklevel)


def equilibration(mat, data):
    """Row and column scalings (powers of two, as LAPACK's ``xGEEQU``) that
    bring every row's and then every column's largest entry of the canonical
    matrix ``mat`` with values ``data`` near one. Returns ``(r, c)``."""
    n = mat.shape[0]
    absdata = np.abs(data).astype(np.float64)

    def scale(idx, vals):
        big = np.zeros(n)
        np.maximum.at(big, idx, vals)
        out = np.ones(n)
        nz = big > 0
        out[nz] = np.exp2(-np.round(np.log2(big[nz])))
        return out

    r = scale(mat.rows, absdata)
    c = scale(mat.indices, absdata * r[mat.rows])
    return r, c
