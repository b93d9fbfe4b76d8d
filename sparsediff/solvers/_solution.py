"""`Solution`: the result of a solve, and everything its derivatives need."""

import dataclasses
import warnings

import numpy as np

from .._errors import ConvergenceWarning
from .._validation import as_rhs, check_stopping, check_tolerances, nonfinite_error
from ..adjoint.linear import adjoint_solve, pattern_gradient, tangent_rhs
from ._common import apply_policy, column_norms, squeeze_info
from ._conditioning import warn_ill_conditioned

__all__ = ["Solution"]


def _like_input(arr, dtype):
    """Cast a gradient to an input's dtype: real inputs get the real part."""
    if arr.dtype.kind == "c" and np.dtype(dtype).kind != "c":
        arr = arr.real
    return arr.astype(dtype, copy=True)


def _unit_scale(a):
    """Column norms of ``a`` with zeros replaced by one (for normalizing)."""
    scale = column_norms(a)
    scale[scale == 0] = 1.0
    return scale.astype(a.real.dtype)


class Solution:
    """The solution of ``op(A) x = b`` with its derivatives.

    Returned by :func:`sparsediff.solve` and :meth:`sparsediff.Solver.solve`;
    not created directly.

    Attributes
    ----------
    x : ndarray
        The solution, same shape as ``b`` (``(n,)`` or ``(n, m)``), dtype the
        promotion of A's and b's dtypes. Yours to modify: the derivatives use a
        private copy.
    info : SolveInfo
        Report of the forward solve.
    adjoint_info : SolveInfo or None
        Report of the latest adjoint solve (after :meth:`vjp`), for the
        cotangent scaled to unit 2-norm per column (so ``rhs_norm`` is 1 and
        ``residual_norm`` is relative): scalars for a 1-D cotangent, arrays of
        shape ``(m,)`` for ``(n, m)``. After a direct solve,
        ``condition_estimate`` and ``error_estimate`` (a bound on the relative
        error of the gradients, see :meth:`vjp`) are set; ``backward_error``
        always.

    Notes
    -----
    A solution keeps private copies of everything its derivatives need (the
    values of ``A``, ``x``, the factorization or preconditioner): changing the
    caller's ``A``, ``b`` or ``sol.x`` afterwards, or ``Solver.update``, does
    not change its gradients. Its methods are safe to call from several
    threads at once.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp, sparsediff as sd
    >>> A = sp.csr_array(np.array([[2.0, 0.0], [1.0, 4.0]]))
    >>> sol = sd.solve(A, np.array([2.0, 5.0]))
    >>> sol.x
    array([1., 1.])
    >>> sol.info.converged, sol.info.method
    (True, 'direct')
    """

    def __init__(self, x2, info, *, engine, mat, trans, is_1d, a_dtype, b_dtype,
                 rtol, atol, maxiter, on_failure, owner=None):
        self._x2 = x2
        self.x = (x2[:, 0] if is_1d else x2).copy()
        self.info = info
        self.adjoint_info = None
        self._engine = engine
        self._mat = mat
        self._trans = trans
        self._is_1d = is_1d
        self._a_dtype = a_dtype
        self._b_dtype = b_dtype
        self._tol = dict(rtol=rtol, atol=atol, maxiter=maxiter)
        self._on_failure = on_failure
        self._owner = owner

    def __repr__(self):
        return f"Solution(shape={self.x.shape}, dtype={self.x.dtype}, info={self.info})"

    # ------------------------------------------------------------------

    def _check_cotangent(self, arr, func, name):
        shape = self.x.shape
        backend = self._mat.backend
        a = backend.array(arr, func, name)
        if getattr(a, "shape", None) != shape:
            raise ValueError(
                f"`{func}`: `{name}` must have the shape of `x`, {shape}; "
                f"got {getattr(a, 'shape', None)}."
            )
        n = shape[0]
        a2, dtype, _, finite = as_rhs(a, n, func, name, backend)
        return a2, dtype, finite

    def _failed_forward(self, func):
        """Gradient of a failed forward solve: raise, or NaN (policy)."""
        policy = self._on_failure
        if self.info.converged:
            return False
        if policy == "raise":
            # the forward solve raised already unless the caller changed policy;
            # still never differentiate a failed solve silently
            apply_policy(self._x2, self.info, "raise", f"`{func}` (forward solve)")
        if policy == "warn":
            warnings.warn(
                f"`{func}`: differentiating a forward solve that did not converge "
                f"(reason: {self.info.reason}); the gradient is that of the "
                f"unconverged iterate.", ConvergenceWarning, stacklevel=3)
            if self._numerically_singular():
                return False  # a computed x: differentiate it, with warnings
            return self.info.reason in ("singular", "nonfinite")
        return True

    def _numerically_singular(self):
        """A direct solve that computed ``x`` but found A singular to working
        precision (an exactly singular A gives NaN and is not this)."""
        return (self.info.reason == "singular" and self.info.method == "direct"
                and self._engine_ok() and bool(np.isfinite(self._x2).all()))

    def vjp(self, g, *, rtol=None, atol=None, maxiter=None):
        """Reverse mode: gradients of ``L`` with cotangent ``g = ∂L/∂x``.

        One adjoint solve ``λ = op(A)⁻ᴴ g`` with the forward factorization or
        preconditioner, then the pattern kernel.

        Parameters
        ----------
        g : array_like
            Cotangent, the shape of ``x``. For complex ``x`` the convention is
            ``g = ∂L/∂Re(x) + i ∂L/∂Im(x)`` (PyTorch's).
        rtol, atol, maxiter : optional
            Tolerances of the adjoint solve (iterative methods), applied to the
            normalized cotangent; default: the forward solve's.

        Returns
        -------
        grad_A
            The class and format of ``A``, with its structure; ``grad_A.data``
            (or the dense array) is ``∂L/∂A.data`` entry for entry in the
            caller's order (duplicates share the merged entry's gradient).
        grad_b : ndarray
            ``∂L/∂b``, shaped and typed like ``b``.

        Raises
        ------
        ConvergenceError, SingularMatrixError
            The adjoint solve failed, or the forward solve had failed
            (``on_failure="raise"``). Under ``"nan"`` the gradients are then
            all NaN; under ``"warn"`` a :class:`ConvergenceWarning` is issued
            (and a singular forward still gives NaN): never finite numbers
            from a failed solve.
        NonFiniteInputError
            NaN or Inf in ``g`` (unless ``on_failure="nan"``: NaN gradients).

        Warns
        -----
        IllConditionedWarning
            After a direct solve, as the forward solve: when the condition
            estimate of A leaves fewer than about three correct digits. A
            matrix singular to working precision is a failure
            (``SingularMatrixError`` under ``on_failure="raise"``; under
            ``"warn"`` a :class:`ConvergenceWarning` and the computed
            gradients).

        Notes
        -----
        After a direct solve ``adjoint_info.error_estimate`` is a bound ``e``
        on the relative error of both gradients, from LAPACK's forward error
        bounds ``e_x`` of ``x`` and ``e_λ`` of ``λ`` (1-norm, relative to the
        computed vectors, largest over columns; see ``SolveInfo``):
        ``e = e_x + e_λ + e_x·e_λ``. Then ``‖δ grad_b‖₁ ≤ e·‖grad_b‖₁`` and,
        entrywise over the pattern, ``Σ_k |δ grad_A[k]| ≤ e·Σ_c ‖λ_c‖₁‖x_c‖₁``
        (the sum norm of the outer products ``λ xᴴ`` the pattern samples). It
        is as reliable as the estimate of ``‖A⁻¹‖₁``. Iterative solves set it
        to ``None`` (no condition estimate); their ``backward_error`` is the
        sum of the forward and adjoint relative residuals.

        With ``λ = A⁻ᴴ g`` (for ``trans="N"``): ``grad_b = λ`` and
        ``grad_A.data[k] = −λ[i_k]·conj(x[j_k])`` (summed over columns for a
        2-D ``b``). A real ``A`` (or ``b``) gets the real part of its complex
        gradient, the gradient with respect to a real parameter. See
        ``sparsediff.adjoint.linear`` for ``trans="T"`` and ``"H"``.

        Examples
        --------
        >>> import numpy as np, scipy.sparse as sp, sparsediff as sd
        >>> A = sp.csr_array(np.array([[2.0, 0.0], [1.0, 4.0]]))
        >>> sol = sd.solve(A, np.array([2.0, 5.0]))      # x = [1, 1]
        >>> grad_A, grad_b = sol.vjp(np.array([1.0, 0.0]))  # L = x[0]
        >>> grad_b + 0.0                                 # A⁻ᵀ e₀ (+0.0: no -0.)
        array([0.5, 0. ])
        >>> grad_A.data + 0.0                            # −λ[i]·x[j], A's entries
        array([-0.5,  0. ,  0. ])
        """
        func = "Solution.vjp"
        rtol, atol, maxiter = check_tolerances(rtol, atol, maxiter, func,
                                               allow_none=True)
        tol = {k: (v if v is not None else self._tol[k])
               for k, v in dict(rtol=rtol, atol=atol, maxiter=maxiter).items()}
        check_stopping(tol, self._engine, func)
        g2, g_dtype, finite = self._check_cotangent(g, func, "g")
        mat = self._mat
        dtype = np.result_type(self._x2.dtype, g_dtype)
        poison = self._failed_forward(func)
        if not finite:
            if self._on_failure != "nan":
                raise nonfinite_error(func, "g")
            poison = True
        if poison or not self._engine_ok():
            xp = mat.backend.xp
            lam = xp.full(g2.shape, np.nan, dtype=dtype)
            grad = xp.full(mat.nnz, np.nan, dtype=dtype)
        else:
            g2 = g2.astype(dtype, copy=False)
            x0 = self._warm_start(g2)
            lam, info, live, scale = adjoint_solve(self._engine, g2, self._trans,
                                                   x0=x0, **tol)
            info = self._with_estimate(info)
            self.adjoint_info = info
            lam = apply_policy(lam, info, self._on_failure,
                               f"`{func}`: adjoint solve", stacklevel=3)
            if info.converged:
                warn_ill_conditioned(info, dtype, func, stacklevel=3,
                                     kappa=self._kappa(info))
            if self._owner is not None and getattr(self._engine, "iterative", False):
                # a warm start for the next adjoint solve (direct solves need none)
                # (normalized per column, like the solve itself, so that the
                # warm start is right whatever the scale of the next cotangent)
                self._owner._remember_adjoint(lam / _unit_scale(g2), self._trans)
            grad = pattern_gradient(mat, self._x2.astype(dtype, copy=False), lam,
                                    self._trans)
        grad_A = mat.wrap(_like_input(grad, self._a_dtype), owned=True)
        grad_b = _like_input(lam[:, 0] if self._is_1d else lam, self._b_dtype)
        return grad_A, grad_b

    def jvp(self, dA=None, db=None):
        """Forward mode: the tangent ``ẋ = op(A)⁻¹ (ḃ − op(Ȧ) x)``.

        Parameters
        ----------
        dA : sparse matrix with A's structure, or 1-D array, or None
            Tangent of A's stored entries (a length-nnz array is in the
            caller's ``A.data`` order).
        db : array_like or None
            Tangent of ``b``, shaped like ``b``.

        Returns
        -------
        ndarray
            ``ẋ``, shaped like ``x``.

        Raises
        ------
        ValueError
            ``dA`` without A's structure or length, ``db`` not shaped like
            ``b``, NaN or Inf in a tangent (:class:`NonFiniteInputError`, unless
            ``on_failure="nan"``).
        ConvergenceError, SingularMatrixError
            The forward or the tangent solve failed (``on_failure="raise"``;
            NaN under ``"nan"``), e.g. A singular to working precision.

        Warns
        -----
        IllConditionedWarning
            After a direct solve, as the forward solve.

        Examples
        --------
        >>> import numpy as np, scipy.sparse as sp, sparsediff as sd
        >>> A = sp.csr_array(np.array([[2.0, 0.0], [1.0, 4.0]]))
        >>> sol = sd.solve(A, np.array([2.0, 5.0]))      # x = [1, 1]
        >>> sol.jvp(db=np.array([2.0, 0.0]))             # A⁻¹ ḃ
        array([ 1.  , -0.25])
        >>> sol.jvp(dA=np.array([1.0, 0.0, 0.0]))        # −A⁻¹ Ȧ x, Ȧ = e₀e₀ᵀ
        array([-0.5  ,  0.125])
        """
        func = "Solution.jvp"
        mat = self._mat
        dA_data = None
        dtype = self._x2.dtype
        finite = True
        if dA is not None:
            dA_data, ok = mat.check_caller_data(dA, func, "dA")
            finite &= ok
            dtype = np.result_type(dtype, dA_data.dtype)
        db2 = None
        if db is not None:
            db2, db_dtype, ok = self._check_cotangent(db, func, "db")
            finite &= ok
            dtype = np.result_type(dtype, db_dtype)
            db2 = db2.astype(dtype, copy=False)
        if not finite and self._on_failure != "nan":
            bad = "dA" if dA is not None and not np.isfinite(dA_data).all() else "db"
            raise nonfinite_error(func, bad)
        m = self._x2.shape[1]
        rhs = tangent_rhs(mat, self._x2.astype(dtype, copy=False), dA_data, db2,
                          self._trans)
        xp = mat.backend.xp
        if rhs is None:
            rhs = xp.zeros((mat.shape[0], m), dtype=dtype)
        if self._failed_forward(func) or not finite or not self._engine_ok():
            dx = xp.full(rhs.shape, np.nan, dtype=dtype)
        else:
            scale = column_norms(rhs)
            live = mat.backend.to_host(scale > 0)
            dx = xp.zeros_like(rhs)
            if live.any():
                sub = rhs[:, live] / scale[live].astype(rhs.real.dtype)
                sol, info = self._engine.solve(xp.ascontiguousarray(sub),
                                               trans=self._trans, **self._tol)
                sol = apply_policy(sol, info, self._on_failure,
                                   f"`{func}`: tangent solve", stacklevel=3)
                if info.converged:
                    warn_ill_conditioned(info, dtype, func, stacklevel=3)
                dx[:, live] = sol * scale[live].astype(rhs.real.dtype)
        return dx[:, 0].copy() if self._is_1d else dx

    # ------------------------------------------------------------------

    def _engine_ok(self):
        return not getattr(self._engine, "singular", False)

    def _warm_start(self, g2):
        owner = self._owner
        if owner is None or not getattr(self._engine, "iterative", False):
            return None
        prev = owner._previous_adjoint(self._trans, g2.shape)
        if prev is None:
            return None
        # the previous adjoint for a unit-norm cotangent: the adjoint solve
        # runs on the normalized cotangent, so it is a starting guess there
        return prev.astype(g2.dtype, order="C", copy=False)

    def _kappa(self, info):
        """The larger of the forward and adjoint condition estimates (the
        gradient of A depends on both ``x`` and ``λ``)."""
        ks = [k for k in (self.info.condition_estimate, info.condition_estimate)
              if k is not None]
        return max(float(np.max(k)) for k in ks) if ks else None

    def _with_estimate(self, info):
        """The adjoint report with the gradient's error bound and backward
        error, squeezed to scalars for a 1-D cotangent.

        ``error_estimate``: ``e_x + e_λ + e_x·e_λ`` from the forward error
        bounds of the forward and adjoint direct solves (see :meth:`vjp`);
        ``None`` when either solve has none (iterative). ``backward_error``:
        the sum of the relative residuals of the two solves (the adjoint's is
        already relative: it solves with unit-norm cotangents), a bound on the
        error only after multiplication by a condition number.
        """
        fwd = np.max(np.atleast_1d(self.info.residual_norm)
                     / np.maximum(np.atleast_1d(self.info.rhs_norm), 1e-300),
                     initial=0.0)
        adj = np.max(np.atleast_1d(info.residual_norm), initial=0.0)  # unit-scale g
        e_x, e_lam = self.info.error_estimate, info.error_estimate
        bound = None
        if e_x is not None and e_lam is not None:
            bound = float(e_x + e_lam + e_x * e_lam)
        info = dataclasses.replace(info, error_estimate=bound,
                                   backward_error=float(fwd + adj))
        return squeeze_info(info) if self._is_1d else info
