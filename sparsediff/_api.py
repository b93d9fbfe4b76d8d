"""Public entry points: `solve`, `Solver`, `sparse_outer`."""

import dataclasses
import numbers
import threading

import numpy as np

from ._dtypes import real_dtype
from ._validation import (
    as_matrix,
    as_rhs,
    as_vector_pair,
    check_callback,
    check_on_failure,
    check_stopping,
    check_tolerances,
    check_trans,
    data_dtype,
    nonfinite_error,
    result_dtype,
)
from .backend import _csr, get_backend
from .solvers import make_engine, update_engine
from .solvers._common import apply_policy, column_norms, make_info, squeeze_info
from .solvers._conditioning import ILL_CONDITIONED_BOUND  # noqa: F401 (public name)
from .solvers._conditioning import warn_ill_conditioned as _warn_ill_conditioned
from .solvers._solution import Solution

__all__ = ["Solver", "solve", "sparse_outer"]


@dataclasses.dataclass(frozen=True)
class _State:
    """What :meth:`Solver.update` swaps as one: the validated matrix, its
    engine (``None`` for a non-finite matrix under ``on_failure="nan"``) and
    the caller's dtype of ``A``."""

    mat: object
    engine: object
    a_dtype: np.dtype


def _check_backend(backend, other, func):
    """Refuse arguments of another backend than the solver's matrix."""
    if other is not backend:
        raise TypeError(
            f"`{func}`: `A` is on the {backend.name} backend but `b`/`x0` are on "
            f"the {other.name} backend; move them to one place.")


def _solver_for(A, func, **options):
    """A :class:`Solver` for a matrix built by a glue module; ``func`` names
    that module's entry point in messages."""
    mat = as_matrix(A, func, "A", backend=get_backend(A, func=func))
    return Solver._from_validated(mat, func=func, a_dtype=mat.dtype, **options)


class Solver:
    """Factorize (or build the preconditioner for) ``A`` once; solve many times.

    Parameters
    ----------
    A : sparse matrix or array, or dense 2-D array
        The square system matrix. CSR is used as is; other formats are
        converted on a private copy. The caller's ``A`` is never modified.
    method : {"auto", "direct", "cg", "minres", "gmres", "bicgstab"}
        ``"direct"`` is SuperLU (through SciPy); ``"auto"`` picks by size,
        symmetry and device.
    M : None, str or object
        Preconditioner for iterative methods.
    rtol, atol, maxiter
        Stopping test ``‖b − A x‖ ≤ max(rtol·‖b‖, atol)`` as in SciPy; default
        ``maxiter`` is ``10 n``. Ignored by direct solves.
    on_failure : {"raise", "warn", "nan"}
        What a failed solve (forward, adjoint or tangent) does: raise
        :class:`ConvergenceError` / :class:`SingularMatrixError`, warn with
        :class:`ConvergenceWarning` and return the unconverged result, or
        return NaN.

    Notes
    -----
    Thread-safe: several threads may call :meth:`solve` and the derivatives of
    its solutions concurrently. :meth:`update` swaps in a new factorization
    atomically; solutions made before it keep differentiating with the
    factorization they were solved with.

    See Also
    --------
    scipy.sparse.linalg.splu, scipy.sparse.linalg.factorized

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp, sparsediff as sd
    >>> A = sp.csr_array(np.array([[4.0, 1.0], [1.0, 3.0]]))
    >>> solver = sd.Solver(A)
    >>> sol = solver.solve(np.array([1.0, 2.0]))
    >>> np.allclose(A @ sol.x, [1.0, 2.0])
    True
    >>> sol_t = solver.solve(np.array([1.0, 2.0]), trans="T")
    >>> grad_A, grad_b = sol.vjp(np.ones(2))
    """

    def __init__(self, A, *, method="auto", M=None, rtol=1e-8, atol=0.0,
                 maxiter=None, on_failure="raise"):
        func = "sparsediff.Solver"
        mat = as_matrix(A, func, "A", backend=get_backend(A, func=func))
        self._setup(mat, func=func, a_dtype=mat.dtype, method=method, M=M,
                    rtol=rtol, atol=atol, maxiter=maxiter, on_failure=on_failure)

    @classmethod
    def _from_validated(cls, mat, *, func, a_dtype, method="auto", M=None,
                        rtol=1e-8, atol=0.0, maxiter=None, on_failure="raise"):
        """A solver for an already validated matrix (``as_matrix``'s output).

        ``func`` names the public entry point in messages; ``a_dtype`` is the
        caller's dtype of ``A`` (``mat`` may have been promoted for ``b``).
        """
        self = cls.__new__(cls)
        self._setup(mat, func=func, a_dtype=a_dtype, method=method, M=M,
                    rtol=rtol, atol=atol, maxiter=maxiter, on_failure=on_failure)
        return self

    def _setup(self, mat, *, func, a_dtype, method, M, rtol, atol, maxiter,
               on_failure):
        check_on_failure(on_failure, func)
        self._tol = dict(zip(("rtol", "atol", "maxiter"),
                             check_tolerances(rtol, atol, maxiter, func)))
        self._on_failure = on_failure
        self._method = method
        self._M = M
        self._func = func
        self._lock = threading.Lock()
        self._adjoint_memory = {}
        self._state = _State(mat, self._build(mat), a_dtype)
        check_stopping(self._tol, self._state.engine, func)

    def _build(self, mat):
        if not mat.finite:
            if self._on_failure != "nan":
                raise nonfinite_error(self._func, "A")
            return None
        return make_engine(self._method, mat, self._M, func=self._func)

    @property
    def shape(self):
        """``(n, n)``, the shape of ``A``."""
        return self._state.mat.shape

    @property
    def dtype(self):
        """The dtype of ``A``'s values (after SciPy's promotion of integers)."""
        return self._state.a_dtype

    @property
    def method(self):
        """The method in use (``"direct"``, ``"cg"``, ...)."""
        engine = self._state.engine
        return engine.method if engine is not None else self._method

    def __repr__(self):
        return (f"Solver(shape={self.shape}, dtype={self.dtype}, "
                f"method={self.method!r})")

    def update(self, data):
        """Refactorize for new values on the same pattern.

        Parameters
        ----------
        data : array_like or sparse matrix
            New stored values, one per entry of the original ``A`` in its
            order (length ``A.nnz``, duplicates included: duplicates are
            summed, as in SciPy), or a matrix with the same structure (a dense
            array of ``A``'s shape for a dense ``A``). Never modified.

        Returns
        -------
        Solver
            ``self``. Solutions made before the update keep the factorization
            (and values) they were solved with.

        Raises
        ------
        ValueError
            Wrong length or structure; NaN or Inf in ``data``
            (:class:`NonFiniteInputError`, unless ``on_failure="nan"``).

        Examples
        --------
        >>> import numpy as np, scipy.sparse as sp, sparsediff as sd
        >>> A = sp.csr_array(np.array([[4.0, 1.0], [1.0, 3.0]]))
        >>> solver = sd.Solver(A)
        >>> x_old = solver.solve(np.ones(2)).x
        >>> _ = solver.update(2.0 * A.data)        # A -> 2 A, same pattern
        >>> np.allclose(solver.solve(np.ones(2)).x, x_old / 2)
        True
        """
        func = "Solver.update"
        state = self._state
        mat, old_engine, a_dtype = state.mat, state.engine, state.a_dtype
        values, _ = mat.check_caller_data(data, func, "data")
        new = mat.with_data(values.astype(
            result_dtype(values.dtype, mat.dtype), copy=False))
        if not new.finite and self._on_failure != "nan":
            raise nonfinite_error(func, "data")
        if new.finite and old_engine is not None:
            engine = update_engine(old_engine, self._method, new, self._M)
        else:
            engine = self._build(new)
        state = _State(new, engine, result_dtype(a_dtype, values.dtype))
        with self._lock:
            self._state = state
            self._adjoint_memory.clear()
        return self

    def solve(self, b, *, x0=None, trans="N", callback=None):
        """Solve ``op(A) x = b`` with ``op`` = identity, transpose or adjoint.

        Parameters
        ----------
        b : array_like, shape (n,) or (n, m)
        x0 : array_like, optional
            Initial guess (iterative methods; ignored by direct solves).
        trans : {"N", "T", "H"}
            Solve with A, Aᵀ or Aᴴ (as ``scipy.sparse.linalg.SuperLU.solve``).
            The solution's derivatives are with respect to the entries of
            ``A`` itself.
        callback : callable, optional
            Called as ``callback(xk)`` after each iteration (iterative methods;
            a direct solve never calls it).

        Returns
        -------
        Solution
            ``x`` has the shape of ``b``; its derivatives are with respect to
            ``b`` and the stored entries of ``A`` (not of ``op(A)``).

        Raises
        ------
        SingularMatrixError, ConvergenceError
            Under ``on_failure="raise"``.
        NonFiniteInputError
            NaN or Inf in ``b`` or ``x0`` (unless ``on_failure="nan"``).

        Warns
        -----
        IllConditionedWarning
            A direct solve whose condition estimate leaves fewer than about
            three correct digits (see ``ILL_CONDITIONED_BOUND``).

        Examples
        --------
        >>> import numpy as np, scipy.sparse as sp, sparsediff as sd
        >>> A = sp.csr_array(np.array([[2.0, 1.0], [0.0, 1.0]]))
        >>> solver = sd.Solver(A)
        >>> solver.solve(np.array([3.0, 1.0])).x
        array([1., 1.])
        >>> solver.solve(np.array([2.0, 2.0]), trans="T").x      # Aᵀ x = b
        array([1., 1.])
        """
        func = "Solver.solve"
        backend = self._state.mat.backend
        _check_backend(backend, get_backend(b, x0, func=func), func)
        rhs = as_rhs(b, self.shape[0], func, "b", backend)
        return self._solve(rhs, x0=x0, trans=trans, callback=callback, func=func)

    def _solve(self, rhs, *, x0, trans, callback, func):
        """Solve for an already validated right-hand side ``rhs = as_rhs(b)``."""
        check_trans(trans, func)
        check_callback(callback, func)
        state = self._state
        mat, engine, a_dtype = state.mat, state.engine, state.a_dtype
        n = mat.shape[0]
        b2, b_dtype, is_1d, finite = rhs
        dtype = result_dtype(mat.dtype, b_dtype)
        b2 = b2.astype(dtype, copy=False)
        x02 = None
        if x0 is not None:
            x02, x0_dtype, x0_1d, x0_finite = as_rhs(x0, n, func, "x0", mat.backend)
            if x02.shape != b2.shape or x0_1d != is_1d:
                raise ValueError(
                    f"`{func}`: `x0` must have the shape of `b`, "
                    f"{(n,) if is_1d else b2.shape}; got {np.shape(x0)}.")
            if x0_dtype.kind == "c" and dtype.kind != "c":
                raise TypeError(
                    f"`{func}`: `x0` is complex ({x0_dtype.name}) but the solution is "
                    f"real ({dtype.name}, from `A` and `b`); pass a real `x0`.")
            finite &= x0_finite
            x02 = x02.astype(dtype, copy=False)
        if not finite and self._on_failure != "nan":
            raise nonfinite_error(func, "b" if not np.isfinite(b2).all() else "x0")
        m = b2.shape[1]
        if engine is None or not finite:
            x2 = np.full_like(b2, np.nan)
            info = make_info(np.zeros(m, bool), np.zeros(m), np.full(m, np.nan),
                             mat.backend.to_host(column_norms(b2)), self.method,
                             ["nonfinite"], is_1d,
                             trans)
        else:
            x2, info = engine.solve(b2, x0=x02, trans=trans, callback=callback,
                                    **self._tol)
            if is_1d:
                info = squeeze_info(info)
        x2 = apply_policy(x2, info, self._on_failure, f"`{func}`", stacklevel=4)
        if info.converged:
            _warn_ill_conditioned(info, dtype, func, stacklevel=4)
        return Solution(x2, info, engine=engine, mat=mat, trans=trans,
                        is_1d=is_1d, a_dtype=a_dtype, b_dtype=b_dtype,
                        on_failure=self._on_failure, owner=self, **self._tol)

    # warm starts for the adjoint solves of iterative methods
    def _remember_adjoint(self, lam, trans):
        with self._lock:
            self._adjoint_memory[trans] = lam.copy()

    def _previous_adjoint(self, trans, shape):
        prev = self._adjoint_memory.get(trans)
        return prev if prev is not None and prev.shape == shape else None


def solve(A, b, *, method="auto", M=None, x0=None, rtol=1e-8, atol=0.0,
          maxiter=None, callback=None, on_failure="raise"):
    """Solve ``A x = b`` and return a differentiable :class:`Solution`.

    Parameters
    ----------
    A : sparse matrix or array, or dense 2-D array, shape (n, n)
        Any ``scipy.sparse`` format (CSR used as is; others converted on a
        private copy) or a dense array (every entry is then stored).
    b : array_like, shape (n,) or (n, m)
        One or several right-hand sides; ``x`` has the same shape.
    method : {"auto", "direct", "cg", "minres", "gmres", "bicgstab"}
    M : None, {"jacobi", "ilu", "amg"} or object with ``matvec``
        Preconditioner (iterative methods).
    x0 : array_like, optional
        Initial guess (iterative methods).
    rtol, atol, maxiter : float, float, int
        SciPy's stopping test ``‖b − A x‖ ≤ max(rtol·‖b‖, atol)`` on the true
        residual, column by column.
    callback : callable, optional
        ``callback(xk)`` after each iteration.
    on_failure : {"raise", "warn", "nan"}
        Failure policy, in the forward solve and in every derivative solve.

    Returns
    -------
    Solution
        ``sol.x``, ``sol.info``, ``sol.vjp(g)``, ``sol.jvp(dA, db)``.

    Raises
    ------
    SingularMatrixError
        The matrix is singular (``on_failure="raise"``).
    ConvergenceError
        An iterative solve did not converge (``on_failure="raise"``).
    NonFiniteInputError
        ``A``, ``b`` or ``x0`` holds NaN or Inf (a ``ValueError``; under
        ``on_failure="nan"`` the result is NaN instead).
    ValueError, TypeError
        Bad shapes, structure, dtypes or options: the message names the
        argument, what was expected and what came.

    Warns
    -----
    IllConditionedWarning
        Direct solves whose 1-norm condition estimate
        (``info.condition_estimate``, from the factors, independent of ``b``)
        leaves fewer than about three correct digits; the gradients of such a
        solve (``vjp``, ``jvp``) warn as well.
    ConvergenceWarning
        A failed solve under ``on_failure="warn"``.

    Notes
    -----
    With ``λ = A⁻ᴴ g``: ``∂L/∂b = λ`` and ``∂L/∂A.data[k] = −λ[i_k]·conj(x[j_k])``
    for every stored entry ``k = (i_k, j_k)`` (docs/design.md). Unlike
    ``scipy.sparse.linalg.spsolve``, the caller's matrix is never canonicalized
    in place and a ``(n, 1)`` right-hand side gives a ``(n, 1)`` solution.

    See Also
    --------
    scipy.sparse.linalg.spsolve, scipy.sparse.linalg.cg, Solver

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp, sparsediff as sd
    >>> A = sp.csr_array(np.array([[4.0, 1.0], [1.0, 3.0]]))
    >>> sol = sd.solve(A, np.array([1.0, 2.0]))
    >>> grad_A, grad_b = sol.vjp(np.array([1.0, 0.0]))   # gradient of x[0]
    >>> np.allclose(grad_b, np.linalg.solve(A.toarray().T, [1.0, 0.0]))
    True
    """
    func = "sparsediff.solve"
    backend = get_backend(A, b, x0, func=func)
    check_on_failure(on_failure, func)
    check_callback(callback, func)
    mat = as_matrix(A, func, "A", backend=backend)
    rhs = as_rhs(b, mat.shape[0], func, "b", backend)
    # factorize once, in the precision the right-hand side needs (a real
    # matrix stays real for a complex b: its parts are solved separately)
    a_dtype = mat.dtype
    want = result_dtype(mat.dtype, real_dtype(rhs[1]))
    if want != mat.dtype:
        mat = mat.with_data(mat.data.astype(want))
    solver = Solver._from_validated(
        mat, func=func, a_dtype=a_dtype, method=method, M=M, rtol=rtol, atol=atol,
        maxiter=maxiter, on_failure=on_failure)
    return solver._solve(rhs, x0=x0, trans="N", callback=callback, func=func)


def sparse_outer(A, u, v, alpha=1.0):
    """Pattern-restricted outer product: ``data[k] = alpha·Σ_m u[i_k,m]·v[j_k,m]``.

    The gradient kernel of every sparse solve: ``∂L/∂A.data = −sparse_outer(A,
    λ, conj(x))``. O(nnz) work and memory; never forms the dense ``u vᵀ``.

    Parameters
    ----------
    A : sparse matrix or array, or dense 2-D array, shape (p, q)
        Supplies the structure only (its values are not read).
    u : array_like, shape (p,) or (p, m)
    v : array_like, shape (q,) or (q, m)
    alpha : scalar

    Returns
    -------
    sparse matrix or array, or ndarray
        Same class and format as ``A``, with its structure (index arrays
        copied) and the values above, entry for entry in the caller's order
        (duplicates each get the full value of their position; stored zeros
        get a value too). A dense ``A`` gives a dense array. The dtype is the
        promotion of ``u``'s and ``v``'s (complex if ``alpha`` is complex).

    Raises
    ------
    ValueError
        ``u`` or ``v`` of the wrong length, different column counts, corrupt
        structure of ``A``.
    TypeError
        Unsupported container or dtype; ``alpha`` not a number.

    Notes
    -----
    Nothing is conjugated: pass ``np.conj(x)`` for ``−λ xᴴ`` restricted to the
    pattern, as the gradients of :func:`solve` do.

    See Also
    --------
    scipy.sparse.csr_array.multiply : the same values from a dense ``u vᵀ``
        (O(n²) memory).

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp, sparsediff as sd
    >>> A = sp.csr_array(np.array([[1.0, 0.0], [2.0, 3.0]]))
    >>> sd.sparse_outer(A, np.array([1.0, 2.0]), np.array([10.0, 100.0])).data
    array([ 10.,  20., 200.])
    >>> U, V = np.ones((2, 3)), np.arange(6.0).reshape(2, 3)  # several columns
    >>> sd.sparse_outer(A, U, V, alpha=0.5).data
    array([1.5, 1.5, 6. ])
    """
    func = "sparsediff.sparse_outer"
    backend = get_backend(A, u, v, func=func)
    mat = as_matrix(A, func, "A", square=False, backend=backend)
    u, v = as_vector_pair(u, v, mat.shape, func, backend)
    if (np.ndim(alpha) != 0 or isinstance(alpha, (bool, np.bool_))
            or not isinstance(alpha, (numbers.Number, np.generic))
            or np.asarray(alpha).dtype.kind not in "iufc"):
        raise TypeError(
            f"`{func}`: `alpha` must be a real or complex scalar; got {alpha!r}.")
    dtype = result_dtype(data_dtype(u.dtype, func, "u"), data_dtype(v.dtype, func, "v"))
    if np.iscomplexobj(alpha):
        dtype = result_dtype(dtype, np.complex64)
    # (p,) -> (p, 1) also for p = 0 (reshape(0, -1) is ambiguous)
    u2 = u[:, None] if u.ndim == 1 else u
    v2 = v[:, None] if v.ndim == 1 else v
    return mat.wrap(_csr.pattern_product(mat, u2, v2, alpha, dtype))
