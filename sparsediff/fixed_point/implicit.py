"""Fixed points ``x* = f(x*, θ)`` and their implicit derivatives.

Differentiating ``x* = f(x*, θ)`` (eq. 2 of the design note on
differentiating iterative solvers) gives ``(I − ∂f/∂x) dx* = ∂f/∂θ dθ``, so
for a cotangent ``v`` of ``x*`` (eqs. 8–12)::

    wᵀ = vᵀ + wᵀ ∂f/∂x          i.e.   (I − ∂f/∂x)ᵀ w = v
    grad_θ = wᵀ ∂f/∂θ

``w`` needs only VJPs of ``f`` at ``x*``: no forward iterate is kept, so the
memory is that of one state, whatever the number of forward iterations.
Two ways to solve for ``w``:

``adjoint_solver="fixed_point"``
    iterate eq. 12 as written (Richardson). Converges exactly when the
    forward iteration is a contraction at ``x*`` (spectral radius of ∂f/∂x
    below 1), and then at the forward rate; it is stopped, and the failure
    reported, when the residual stops decreasing.
``adjoint_solver="gmres"`` (default)
    solve ``(I − ∂f/∂x)ᵀ w = v`` with GMRES on VJP products: converges
    whenever ``I − ∂f/∂x`` is nonsingular, usually in far fewer products.

The adjoint solve is scale-invariant: ``v`` is normalized, solved for and
the result rescaled, so the stopping test does not depend on the loss scale.
"""

from dataclasses import dataclass

import numpy as np

from .._validation import check_on_failure, check_tolerances
from ..solvers._info import SolveInfo
from ..solvers.gmres import gmres
from ._common import (
    add_leaves,
    call_f,
    call_vjp,
    check_callable,
    check_cotangent,
    check_x0,
    fail,
    namespace,
    nan_like_tree,
    norm,
)
from ._params import flatten

__all__ = ["FixedPointInfo", "FixedPointResult", "fixed_point"]

ADJOINTS = ("implicit", "unrolled")
ADJOINT_SOLVERS = ("gmres", "fixed_point")

_FUNC = "sparsediff.fixed_point"


@dataclass(frozen=True)
class FixedPointInfo:
    """Report of the forward iteration of :func:`fixed_point`.

    Attributes
    ----------
    iterations : int
        Steps taken from ``x0`` to the returned ``x``.
    residual_norm : float
        ``‖x − f(x)‖₂`` of the returned ``x``.
    converged : bool
        Whether ``‖x − f(x)‖ ≤ max(tol·‖f(x)‖, atol)``.
    reason : str
        ``"converged"``, ``"maxiter"`` or ``"nonfinite"``.
    """

    iterations: int
    residual_norm: float
    converged: bool
    reason: str


class _AdjointOperator:
    """``W ↦ W − (∂f/∂x)ᵀ W`` on flattened columns, for the Krylov solver."""

    def __init__(self, f_vjp, x, params, tree, func):
        self._f_vjp = f_vjp
        self._x = x
        self._params = params
        self._tree = tree
        self._func = func
        n = x.size
        self.shape = (n, n)
        self.dtype = np.dtype(x.dtype)
        self.products = 0

    def matvec(self, W):
        W = W.reshape(self.shape[0], -1)
        out = np.empty_like(W)
        for c in range(W.shape[1]):
            w = np.ascontiguousarray(W[:, c]).reshape(self._x.shape)
            v_x, _ = call_vjp(self._f_vjp, self._x, self._params, w, self._tree,
                              self._func)
            out[:, c] = (w - v_x).reshape(-1)
            self.products += 1
        return out


class FixedPointResult:
    """The result of :func:`fixed_point`: ``x ≈ x*``, its report and its VJP.

    Attributes
    ----------
    x : ndarray
        The fixed point (a copy: yours to modify).
    info : FixedPointInfo
    adjoint_info : SolveInfo or None
        Report of the latest adjoint solve (after :meth:`vjp`): method
        (``"gmres"``, ``"fixed_point"`` or ``"unrolled"``), iterations (VJP
        products), ``residual_norm`` ``‖v̂ − (I − ∂f/∂x)ᵀ ŵ‖`` for the
        normalized ``v̂ = v/‖v‖``.
    """

    def __init__(self, x, info, *, f, f_vjp, params, tree, adjoint, adjoint_solver,
                 rtol, atol, maxiter, on_failure, iterates, func=_FUNC):
        self._func = func
        self._x = x
        self.x = x.copy()
        self.info = info
        self.adjoint_info = None
        self._f = f
        self._f_vjp = f_vjp
        self._params = params
        self._tree = tree
        self._adjoint = adjoint
        self._adjoint_solver = adjoint_solver
        self._tol = dict(rtol=rtol, atol=atol, maxiter=maxiter)
        self._on_failure = on_failure
        self._iterates = iterates

    def __repr__(self):
        return f"FixedPointResult(shape={self.x.shape}, info={self.info})"

    def vjp(self, v, *, rtol=None, atol=None, maxiter=None):
        """``grad_params = wᵀ ∂f/∂θ`` with ``(I − ∂f/∂x)ᵀ w = v``.

        Parameters
        ----------
        v : ndarray
            Cotangent of ``x``, same shape.
        rtol, atol, maxiter : optional
            The adjoint solve's stopping test ``‖v − (I − ∂f/∂x)ᵀ w‖ ≤
            max(rtol·‖v‖, atol·‖v‖)`` (``atol`` is relative to ``‖v‖`` as
            ``v`` is normalized first) and its budget of VJP products; default
            the forward ``tol``, ``atol`` and ``maxiter``.

        Returns
        -------
        grad_params : like ``params``
            ``None`` leaves stay ``None``; scalar leaves are floats.

        Raises
        ------
        ConvergenceError
            The adjoint solve failed (``on_failure="raise"``): the gradient is
            never returned silently wrong (nor zero).
        """
        func = ("FixedPointResult.vjp" if self._func == _FUNC
                else f"{self._func} (backward)")
        rtol, atol, maxiter = check_tolerances(rtol, atol, maxiter, func,
                                               allow_none=True)
        rtol = self._tol["rtol"] if rtol is None else rtol
        atol = self._tol["atol"] if atol is None else atol
        maxiter = self._tol["maxiter"] if maxiter is None else maxiter
        x = self._x
        v = check_cotangent(v, x, func)
        xp = namespace(x)
        dtype = np.result_type(x.dtype, v.dtype)
        tree = self._tree
        if not self.info.converged and self._on_failure == "nan":
            return tree.unflatten(nan_like_tree(tree, dtype))
        if self._adjoint == "unrolled":
            return self._vjp_unrolled(v, dtype)
        scale = norm(xp, v)
        if scale == 0.0:
            self.adjoint_info = SolveInfo(True, 0, 0.0, self._adjoint_solver,
                                          "converged", rhs_norm=0.0)
            return tree.unflatten(tree.zeros(dtype))
        vn = xp.asarray(v, dtype=dtype) / scale
        op = _AdjointOperator(self._f_vjp, x, self._params, tree, self._func)
        if self._adjoint_solver == "gmres":
            W, sinfo = gmres(op, vn.reshape(-1, 1), rtol=rtol, atol=atol,
                             maxiter=maxiter)
            w = W[:, 0].reshape(x.shape)
            ok = bool(sinfo.converged)
            reason = sinfo.reason
            resid = norm(xp, vn - op.matvec(W)[:, 0].reshape(x.shape))
        else:
            w, ok, reason, resid = self._richardson(vn, op, rtol, atol, maxiter)
        # grad = wᵀ ∂f/∂θ at x*, rescaled
        _, leaves = call_vjp(self._f_vjp, x, self._params, w, tree, self._func)
        self.adjoint_info = SolveInfo(
            converged=ok, iterations=op.products, residual_norm=resid,
            method=self._adjoint_solver, reason=reason, rhs_norm=1.0)
        if not ok:
            msg = (f"`{func}`: the adjoint solve (I − ∂f/∂x)ᵀ w = v by "
                   f"{self._adjoint_solver} failed (reason: {reason}; "
                   f"{op.products} VJP products; relative residual {resid:.3g}, "
                   f"rtol {rtol:.3g}).")
            if self._adjoint_solver == "fixed_point":
                msg += (" The iteration is not a contraction at x* (spectral "
                        "radius of ∂f/∂x >= 1); use adjoint_solver='gmres'.")
            fail(self._on_failure, msg, self.adjoint_info, stacklevel=3)
            if self._on_failure == "nan":
                return tree.unflatten(nan_like_tree(tree, dtype))
        acc = tree.zeros(dtype)
        add_leaves(acc, leaves)
        for a in acc:
            if a is not None:
                a *= scale
        return tree.unflatten(acc)

    def _richardson(self, vn, op, rtol, atol, maxiter):
        """Eq. 12 iterated: ``w ← v + (∂f/∂x)ᵀ w``; stops when not contracting."""
        xp = namespace(vn)
        target = max(rtol, atol)          # ‖v̂‖ = 1
        w = vn
        history = []
        n = vn.size
        for _ in range(maxiter):
            # w_new − w = v − (I − Jᵀ) w: the residual of w
            Aw = op.matvec(w.reshape(n, 1))[:, 0].reshape(vn.shape)
            r = vn - Aw
            rn = norm(xp, r)
            w_new = w + r
            history.append(rn)
            if not np.isfinite(rn):
                return w, False, "nonfinite", rn
            if rn <= target:
                return w_new, True, "converged", rn
            # a contraction's residual shrinks geometrically; growth, or no
            # progress over 20 steps, means the spectral radius is >= 1
            if rn > 1e6 * history[0] or (len(history) > 20 and rn >= history[-21]):
                return w, False, "noncontractive", rn
            w = w_new
        return w, False, "maxiter", history[-1] if history else np.inf

    def _vjp_unrolled(self, v, dtype):
        """Reverse sweep over the forward iterates (for comparison only)."""
        tree = self._tree
        acc = tree.zeros(dtype)
        v = np.array(v, dtype=dtype, copy=True)
        for x_i in reversed(self._iterates):
            v, leaves = call_vjp(self._f_vjp, x_i, self._params, v, tree, self._func)
            add_leaves(acc, leaves)
        self.adjoint_info = SolveInfo(True, len(self._iterates), 0.0, "unrolled",
                                      "converged")
        return tree.unflatten(acc)


def fixed_point(f, x0, params, *, f_vjp, tol=1e-10, atol=0.0, maxiter=1000,
                adjoint="implicit", adjoint_solver="gmres", on_failure="raise"):
    """Iterate ``x ← f(x, params)`` to its fixed point; differentiate implicitly.

    Parameters
    ----------
    f : callable
        ``f(x, params) -> x_next`` (an array of ``x``'s shape); must not modify
        its arguments.
    x0 : ndarray
        Starting iterate (any shape).
    params : array, number, None, or tuple / list / dict of these (nested)
        Passed to ``f``; the gradient has the same structure.
    f_vjp : callable
        ``f_vjp(x, params, v) -> (v_x, v_params)``, ``v_x = vᵀ ∂f/∂x``,
        ``v_params = vᵀ ∂f/∂params`` structured like ``params``.
    tol, atol : float
        Stop when ``‖x − f(x)‖₂ ≤ max(tol·‖f(x)‖₂, atol)``; also the adjoint
        solve's default tolerances.
    maxiter : int
        Most forward steps (and default budget of adjoint VJP products).
    adjoint : {"implicit", "unrolled"}
        ``"implicit"`` (eq. 12; memory independent of the number of steps)
        or ``"unrolled"``: store the forward iterates and differentiate the
        steps actually taken (memory ``O(iterations · n)``; for comparison).
    adjoint_solver : {"gmres", "fixed_point"}
        How ``(I − ∂f/∂x)ᵀ w = v`` is solved (module docstring).
    on_failure : {"raise", "warn", "nan"}
        Forward non-convergence (maxiter, non-finite iterate) and adjoint
        failure: raise :class:`ConvergenceError`, warn with
        :class:`ConvergenceWarning` and go on with the unconverged result,
        or return NaN.

    Returns
    -------
    FixedPointResult
        ``.x``, ``.info`` (:class:`FixedPointInfo`), ``.vjp(v) -> grad_params``.

    Raises
    ------
    ConvergenceError
        Forward or adjoint failure under ``on_failure="raise"``.
    ValueError, TypeError
        Bad options or arguments; ``f``/``f_vjp`` returning the wrong shape or
        structure.

    See Also
    --------
    iterate : a fixed number of steps, differentiated by a backward sweep.
    scipy.optimize.fixed_point

    Notes
    -----
    The returned ``x`` is the last iterate whose residual was measured,
    ``x_j`` with ``‖x_j − f(x_j)‖`` as reported; the gradient is that of the
    exact fixed point linearized there (eq. 7), with an error of the order of
    the forward residual times ``‖(I − ∂f/∂x)⁻¹‖``.

    Examples
    --------
    >>> import numpy as np
    >>> from sparsediff.fixed_point import fixed_point
    >>> f = lambda x, c: 0.5 * x + c                # x* = 2c
    >>> f_vjp = lambda x, c, v: (0.5 * v, v.copy())
    >>> res = fixed_point(f, np.zeros(2), np.array([1.0, 3.0]), f_vjp=f_vjp)
    >>> np.allclose(res.x, [2.0, 6.0])
    True
    >>> np.allclose(res.vjp(np.array([1.0, 0.0])), [2.0, 0.0])
    True
    """
    return run_fixed_point(f, x0, params, f_vjp=f_vjp, tol=tol, atol=atol,
                           maxiter=maxiter, adjoint=adjoint,
                           adjoint_solver=adjoint_solver, on_failure=on_failure,
                           func=_FUNC)


def run_fixed_point(f, x0, params, *, f_vjp, func, tol=1e-10, atol=0.0,
                    maxiter=1000, adjoint="implicit", adjoint_solver="gmres",
                    on_failure="raise"):
    """:func:`fixed_point`, with ``func`` naming the public entry point (a glue
    module's) in messages."""
    check_callable(f, func, "f")
    check_callable(f_vjp, func, "f_vjp")
    check_on_failure(on_failure, func)
    tol, atol, maxiter = check_tolerances(tol, atol, maxiter, func)
    if maxiter is None:
        maxiter = 1000
    if adjoint not in ADJOINTS:
        raise ValueError(f"`{func}`: `adjoint` must be one of {ADJOINTS}; got {adjoint!r}.")
    if adjoint_solver not in ADJOINT_SOLVERS:
        raise ValueError(
            f"`{func}`: `adjoint_solver` must be one of {ADJOINT_SOLVERS}; "
            f"got {adjoint_solver!r}.")
    tree = flatten(params, func)
    xp, x = check_x0(x0, func, on_failure)
    iterates = [] if adjoint == "unrolled" else None

    reason, converged, j, r = "maxiter", False, 0, np.inf
    if not bool(xp.isfinite(x).all()):
        reason, r = "nonfinite", np.nan
    else:
        for j in range(maxiter + 1):
            fx = call_f(f, x, params, func)
            if not bool(xp.isfinite(fx).all()):
                reason, r = "nonfinite", np.nan
                break
            r = norm(xp, fx - x)
            size = norm(xp, fx)
            # an overflowing norm is divergence, never convergence
            if r <= max(tol * size, atol) and size < np.inf:
                reason, converged = "converged", True
                break
            if j == maxiter:
                break
            if iterates is not None:
                iterates.append(x)
            x = fx
    info = FixedPointInfo(iterations=j, residual_norm=r, converged=converged,
                          reason=reason)
    if not converged:
        msg = (f"`{func}`: the iteration did not converge (reason: {reason}; "
               f"{j} steps; ‖x − f(x)‖ = {r:.3g}, tol {tol:.3g}).")
        fail(on_failure, msg, info, stacklevel=3)
        if on_failure == "nan":
            x = xp.full(x.shape, np.nan, dtype=x.dtype)
    if iterates is not None and len(iterates) > j:
        iterates = iterates[:j]
    return FixedPointResult(x, info, f=f, f_vjp=f_vjp, params=params, tree=tree,
                            adjoint=adjoint, adjoint_solver=adjoint_solver,
                            rtol=tol, atol=atol, maxiter=maxiter,
                            on_failure=on_failure, iterates=iterates, func=func)

