"""Smoothed-aggregation AMG for every element of a batch on one pattern.

The hierarchy of each element is :class:`sparsediff.precond.AMG`, the
preconditioner of the single-system solvers (same options, same V-cycle,
same exact adjoint), so ``M_e`` of the first element is the one ``Solver``
builds. The aggregation (the strength graph and the aggregates of every
level, pyamg's ``AggOp``) is computed once, on the first finite element, and
handed to the others, whose tentative and smoothed prolongators,
restrictions and Galerkin coarse operators are rebuilt from their own values
(``AMG(..., aggregates=...)``, the path of ``AMG.update``).
``update`` (a new ``BatchedAMG`` with ``previous=``) hands the previous
batch's aggregation to the new first element as well, so no element
aggregates; only if that hierarchy fails or measures poorly against the
previous first element's ``ρ`` (the rule below) does it aggregate afresh.

Measured fallback. Shared aggregates fit an element whose strong couplings
are those of the first one; they fit badly when, say, the anisotropy turns
by 90°. Each element's hierarchy is therefore measured: the contraction
factor ``ρ_e`` of the stationary iteration ``x ← x + M_e (b − A_e x)`` over
``CONTRACTION_STEPS`` steps from ``x = 0`` on one fixed random ``b``
(``(‖r_k‖/‖b‖)^(1/k)``; a few V-cycles and products). The iterations such a
method needs scale with ``1/log(1/ρ)``; when ``log ρ_0 / log ρ_e`` (the
predicted iterations of element ``e`` over those of the first element)
exceeds ``FALLBACK_RATIO``, or ``ρ_e ≥ 1``, or the shared aggregation
leaves a zero diagonal on a coarse level of the element, the element gets
its own aggregation, and keeps whichever hierarchy measured the smaller
``ρ``.
``docs/batched.md`` gives the measurements behind the rule.

Application is a loop over the elements with live systems, one V-cycle per
column (the SpMV and vector updates of the Krylov loop stay batched).
Solves with ``Aᵀ``/``Aᴴ`` (the adjoints) apply ``Mᵀ``/``Mᴴ`` of the same
hierarchies (``Preconditioner.apply``).
"""

import numpy as np

from .._errors import SingularMatrixError
from ..precond import make_preconditioner
from ..precond.amg import AMG

__all__ = ["BatchedAMG"]

#: stationary steps measuring the contraction factor of a hierarchy
CONTRACTION_STEPS = 3
#: an element whose predicted iterations exceed this multiple of the first
#: element's (``log ρ_0 / log ρ_e``) gets its own aggregation
FALLBACK_RATIO = 1.5


def contraction(prec, mat):
    """``ρ``: the mean residual reduction per step of ``x ← x + M (b − A x)``."""
    n = mat.shape[0]
    A = mat.to_scipy()
    b = np.random.default_rng(0).standard_normal((n, 1))
    if mat.dtype.kind == "c":
        b = b + 1j * np.random.default_rng(1).standard_normal((n, 1))
    x = np.zeros_like(b)
    r = b
    with np.errstate(all="ignore"):
        for _ in range(CONTRACTION_STEPS):
            x = x + prec.matvec(r)
            r = b - A @ x
        rho = (np.linalg.norm(r) / np.linalg.norm(b)) ** (1.0 / CONTRACTION_STEPS)
    return float(rho) if np.isfinite(rho) else np.inf


def _poor(rho, rho0):
    """The fallback rule (see the module docstring)."""
    if not rho < 1:
        return True
    if not 0 < rho0 < 1 or rho == 0:
        return False
    return np.log(rho0) / np.log(rho) > FALLBACK_RATIO


class BatchedAMG:
    """One AMG hierarchy per finite element (see the module docstring).

    Attributes
    ----------
    precs : list
        ``AMG`` per element (``None`` for elements with non-finite values).
    shared : ndarray of bool, shape (B,)
        Whether the element uses the first element's aggregation.
    rho : ndarray, shape (B,)
        Measured contraction factor of the hierarchy in use.
    """

    def __init__(self, mat, data, finite, *, func, hermitian, previous=None):
        B = data.shape[0]
        self.func = func
        self.precs = [None] * B
        self.shared = np.zeros(B, bool)
        self.rho = np.full(B, np.nan)
        self.rho_shared = np.full(B, np.nan)
        self.aggregates = None
        self.rho0 = np.nan
        self.reused = False
        live = np.flatnonzero(finite)
        if mat.shape[0] == 0 or not live.size:
            return
        first = int(live[0])
        mat0 = mat.with_data(data[first])
        p0 = None
        if previous is not None and previous.aggregates is not None:
            p0, rho0 = self._reuse(mat0, first, previous, hermitian)
            self.reused = p0 is not None
        if p0 is None:
            p0 = self._build(mat0, first, None, hermitian)
            rho0 = contraction(p0, mat0)
        self.precs[first] = p0
        self.rho[first] = self.rho_shared[first] = self.rho0 = rho0
        self.shared[first] = True
        self.aggregates = aggs = p0._aggregates
        for e in live[1:]:
            e = int(e)
            me = mat.with_data(data[e])
            try:
                pe = self._build(me, e, aggs, hermitian)
                rho = contraction(pe, me)
            except SingularMatrixError:
                # the shared aggregation gives this element a zero diagonal on
                # a coarse level: its own aggregation may not
                pe, rho = None, np.inf
            self.rho_shared[e] = rho
            shared = True
            if _poor(rho, rho0):
                own = self._build(me, e, None, hermitian)
                rho_own = contraction(own, me)
                if pe is None or rho_own < rho:
                    pe, rho, shared = own, rho_own, False
            self.precs[e] = pe
            self.rho[e] = rho
            self.shared[e] = shared

    def _reuse(self, mat0, first, previous, hermitian):
        """The new first element's hierarchy on the previous batch's
        aggregation (``update``): kept unless it fails or measures poorly
        against the previous first element (the fallback rule); then
        ``(None, None)`` and the caller aggregates afresh."""
        try:
            p0 = self._build(mat0, first, previous.aggregates, hermitian)
            rho0 = contraction(p0, mat0)
        except SingularMatrixError:
            return None, None
        if _poor(rho0, previous.rho0):
            return None, None
        return p0, rho0

    def _build(self, mat, e, aggregates, hermitian):
        func = self.func
        try:
            if aggregates is None:
                prec = make_preconditioner("amg", mat, func)
            else:
                prec = AMG(mat, func=func, aggregates=aggregates)
        except (SingularMatrixError, ValueError) as exc:
            msg = str(exc).replace(f"`{func}`: ", f"`{func}`: batch element {e}: ", 1)
            raise type(exc)(msg) from None
        if hermitian and not prec.hermitian:
            raise ValueError(
                f"`{func}`: method='cg' needs a Hermitian preconditioner; the "
                f"'amg' hierarchy of batch element {e} is not. Use "
                f"method='bicgstab'.")
        return prec

    def report(self, e):
        """What element ``e`` uses, for ``SolveInfo.extra["amg"]``."""
        prec = self.precs[e]
        return {"aggregates": "shared" if self.shared[e] else "own",
                "contraction": float(self.rho[e]),
                "levels": None if prec is None else prec.levels}

    def apply(self, r, trans, live):
        """``op(M_e) r[:, e]`` for every element ``e`` with ``live[e]``
        (``r``: (n, B, m)); the other elements are copied unchanged."""
        out = r.copy()
        for e in np.flatnonzero(live):
            prec = self.precs[e]
            if prec is not None:
                out[:, e, :] = prec.apply(r[:, e, :], trans)
        return out
