"""Reverse- and forward-mode rules of the linear solve ``op(A) x = b``.

Derivation (docs/design.md). Let ``op(A) x = b`` with ``op`` one of identity (N),
transpose (T) or conjugate transpose (H), and a real loss with cotangent ``g``
(``δL = Re(gᴴ δx)``). Differentiating, ``op(A) δx = δb − op(δA) x``, so with
the adjoint ``λ = op(A)⁻ᴴ g``::

    δL = Re(λᴴ δb) − Re(λᴴ op(δA) x).

Reading off the cotangent of every stored entry ``a_k`` at ``(i_k, j_k)``
(``δL = Re(conj(grad_k) δa_k)``):

    N:  λᴴ δA x    = Σ conj(λ_i) δa_k x_j        → grad_k = −λ_i · conj(x_j)
    T:  λᴴ δAᵀ x   = Σ conj(λ_j) δa_k x_i        → grad_k = −conj(x_i) · λ_j
    H:  λᴴ δAᴴ x   = Σ conj(λ_j) conj(δa_k) x_i  → grad_k = −x_i · conj(λ_j)

and ``grad_b = λ``. The adjoint matrix ``op(A)ᴴ`` is Aᴴ, conj(A), A for
N, T, H; the solve with conj(A) is ``conj(A⁻¹ conj(g))``. For real data every
conj is the identity and H equals T.

Forward mode: ``δx = op(A)⁻¹ (δb − op(δA) x)``.
"""

import numpy as np

from ..backend import _csr

__all__ = ["adjoint_solve", "pattern_gradient", "tangent_rhs"]

# op(A)ᴴ expressed as (trans of A, conjugate in and out)
_ADJOINT = {"N": ("H", False), "T": ("N", True), "H": ("N", False)}


def adjoint_solve(engine, g, trans, x0=None, **tolerances):
    """``λ = op(A)⁻ᴴ g`` with the forward engine's state.

    The solve is scale-invariant in ``g`` (jax#40254, jaxopt#466): each column
    is divided by its norm, solved at unit scale with the given (relative and
    absolute) tolerances, and scaled back; zero columns give zero exactly with
    no solve. ``x0`` is a warm start for the normalized columns (iterative
    engines). Returns ``(lam, info, live, scale)`` (``live``: a host mask).
    """
    backend = engine.mat.backend
    xp = backend.xp
    t, conj = _ADJOINT[trans]
    scale = _csr.column_norms(g)
    live = backend.to_host(scale > 0)
    lam = xp.zeros_like(g)
    if not live.any() and g.shape[1]:
        live[0] = True  # still run (and report) one solve on a zero column
        scale[0] = 1.0
    rhs = g[:, live] / scale[live].astype(g.real.dtype)
    if x0 is not None:
        x0 = xp.ascontiguousarray(np.conj(x0[:, live]) if conj else x0[:, live])
    if conj:
        rhs = np.conj(rhs)
    sol, info = engine.solve(xp.ascontiguousarray(rhs), x0=x0, trans=t,
                             **tolerances)
    if conj:
        sol = np.conj(sol)
    lam[:, live] = sol * scale[live].astype(g.real.dtype)
    return lam, info, live, scale


def pattern_gradient(mat, x, lam, trans):
    """Canonical-order ``∂L/∂data`` from the primal ``x`` and adjoint ``λ``.

    Runs the pattern kernel of ``mat.backend``.
    """
    if trans == "N":
        u, v = lam, np.conj(x)
    elif trans == "T":
        u, v = np.conj(x), lam
    else:
        u, v = x, np.conj(lam)
    return _csr.pattern_product(mat, u, v, -1)


def tangent_rhs(mat, x, dA_data, db, trans):
    """``δb − op(δA) x`` for the forward mode (``None`` tangents are zero)."""
    rhs = None
    if db is not None:
        rhs = db
    if dA_data is not None:
        prod = _csr.matvec(mat, x, trans, dA_data)
        rhs = -prod if rhs is None else rhs - prod
    return rhs
