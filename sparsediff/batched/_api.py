"""`BatchedSolver`, `BatchedSolution`, `batched_solve`: B systems on one pattern."""

import threading
import warnings

import numpy as np
import scipy.sparse as sp

from .._errors import ConvergenceWarning
from .._validation import (
    as_matrix,
    check_on_failure,
    check_stopping,
    check_tolerances,
    check_trans,
    data_dtype,
    nonfinite_error,
    result_dtype,
)
from ..backend import get_backend
from ..solvers._common import apply_policy, squeeze_info
from ..solvers._conditioning import warn_ill_conditioned
from ..solvers._info import replace_info
from ._common import (
    batch_matvec,
    batch_norms,
    caller_order,
    canonical_order,
    default_workers,
    pattern_products,
)
from ._direct import BatchedDirect, DirectReports

__all__ = ["BatchedSolution", "BatchedSolver", "batched_solve"]

METHODS = ("auto", "direct", "cg", "bicgstab", "gmres", "minres")
PRECONDITIONERS = (None, "jacobi", "ilu", "amg")
#: the methods that take ``M="ilu"`` (not symmetric: no CG or MINRES)
ILU_METHODS = ("auto", "bicgstab", "gmres")


def accepts(method, M=None):
    """Whether :class:`BatchedSolver` takes ``method`` and ``M`` (the glue
    sends values of shape ``(B, nnz)`` to one batched solver only then, and
    solves one system per element otherwise)."""
    if isinstance(method, tuple):
        if len(method) != 2 or method[0] != "gmres":
            return False
        method = "gmres"
    return (isinstance(method, str) and method in METHODS and M in PRECONDITIONERS
            and not (method == "direct" and M is not None)
            and (M != "ilu" or method in ILU_METHODS))

# op(A)ᴴ as (trans of A, conjugate in and out): adjoint/linear.py
_ADJOINT = {"N": ("H", False), "T": ("N", True), "H": ("N", False)}


def _as_array(a, func, name):
    if sp.issparse(a):
        raise TypeError(f"`{func}`: `{name}` must be a dense array; got a sparse "
                        f"{type(a).__name__}.")
    mod = type(a).__module__.split(".")[0]
    if mod in ("cupy", "cupyx", "torch", "jax", "jaxlib", "tensorflow"):
        raise TypeError(
            f"`{func}`: `{name}` must be a NumPy array; got "
            f"{type(a).__module__}.{type(a).__name__} (use the glue module: "
            f"`sparsediff.torch`, `sparsediff.jax`, `sparsediff.tensorflow`).")
    return np.asarray(a)


def as_pattern(pattern, func):
    """The validated pattern (:class:`MatrixInput`) of a SciPy matrix or a
    CSR pair ``(indptr, indices)`` / triple ``(indptr, indices, shape)``."""
    if sp.issparse(pattern):
        if pattern.dtype.kind not in "iufc":
            pattern = pattern.astype(np.float64)
        return as_matrix(pattern, func, "pattern",
                         backend=get_backend(pattern, func=func))
    if isinstance(pattern, tuple) and len(pattern) in (2, 3):
        indptr = _as_array(pattern[0], func, "pattern[0] (indptr)")
        indices = _as_array(pattern[1], func, "pattern[1] (indices)")
        for arr, what in ((indptr, "indptr"), (indices, "indices")):
            if arr.ndim != 1 or arr.dtype.kind not in "iu":
                raise TypeError(
                    f"`{func}`: `pattern` {what} must be a 1-D integer array; got "
                    f"shape {arr.shape}, dtype {arr.dtype.name}.")
        n = indptr.shape[0] - 1
        if n < 0:
            raise ValueError(f"`{func}`: `pattern` indptr must not be empty.")
        if len(pattern) == 3:
            shape = tuple(int(s) for s in pattern[2])
            if shape != (n, n):
                raise ValueError(
                    f"`{func}`: `pattern` is inconsistent: `indptr` has length "
                    f"{n + 1} (n = {n} rows) but `shape` is {shape}; a square "
                    f"({n}, {n}) matrix was expected.")
        if indptr[0] != 0 or indptr[-1] != indices.shape[0]:
            raise ValueError(
                f"`{func}`: `pattern` is inconsistent: `indptr` must run from 0 to "
                f"len(indices) = {indices.shape[0]}; got {indptr[0]} to "
                f"{indptr[-1]}.")
        csr = sp.csr_array((np.zeros(indices.shape[0]), indices, indptr),
                           shape=(n, n))
        return as_matrix(csr, func, "pattern", backend=get_backend(csr, func=func))
    raise TypeError(
        f"`{func}`: `pattern` must be a scipy.sparse matrix or array, or a CSR "
        f"pair (indptr, indices); got {type(pattern).__module__}."
        f"{type(pattern).__name__}.")


def as_batch_data(mat, data, func, name="data"):
    """``(B, nnz_caller)`` values in the pattern's entry order -> canonical
    ``(B, nnz)`` (a private copy), their dtype and per-element finiteness."""
    arr = _as_array(data, func, name)
    if arr.ndim != 2 or arr.shape[1] != mat.nnz_caller:
        raise ValueError(
            f"`{func}`: `{name}` must have shape (B, nnz) with nnz = "
            f"{mat.nnz_caller} (one row of values per batch element, in the order "
            f"of the pattern's stored entries); got {arr.shape}.")
    dtype = data_dtype(arr.dtype, func, name)
    values = canonical_order(mat, arr.astype(dtype, copy=False))
    finite = np.isfinite(values).all(axis=1) if values.size else np.ones(
        values.shape[0], bool)
    return values, dtype, finite


def as_batch_rhs(b, batch, n, func, name="b"):
    """``b`` of shape (B, n) or (B, n, m) -> private (B, n, m) copy."""
    arr = _as_array(b, func, name)
    if arr.ndim not in (2, 3) or arr.shape[1] != n:
        raise ValueError(
            f"`{func}`: `{name}` must have shape (B, n) or (B, n, m) with n = {n}; "
            f"got {arr.shape}.")
    if arr.shape[0] != batch:
        raise ValueError(
            f"`{func}`: `{name}` has batch size {arr.shape[0]} but `data` has "
            f"{batch}; they must agree (shape {arr.shape} against data's "
            f"({batch}, nnz)).")
    dtype = data_dtype(arr.dtype, func, name)
    is_2d = arr.ndim == 2
    b3 = np.array(arr[:, :, None] if is_2d else arr, dtype=dtype, order="C",
                  copy=True)
    return b3, dtype, is_2d


def _like_input(arr, dtype, fresh=False):
    """``arr`` in the caller's dtype; a copy unless ``fresh`` (a private
    array nothing else holds, returned as is when the dtype already fits)."""
    if np.iscomplexobj(arr) and np.dtype(dtype).kind != "c":
        arr = arr.real
    if fresh:
        return np.ascontiguousarray(arr, dtype=dtype)
    return np.array(arr, dtype=dtype, copy=True)


def _finite(a):
    """``a`` with NaN and infinities as 0 (no copy when already finite)."""
    return a if np.isfinite(a).all() else np.nan_to_num(a)


def _element_info(info, is_2d):
    return squeeze_info(info) if (is_2d and info is not None) else info


class BatchedSolver:
    """Factorize B matrices that share one sparsity pattern; solve many times.

    The analysis of the pattern (validation, canonical order, the
    fill-reducing ordering of a direct solve) is done once; each element
    then gets its own numeric factorization (or Jacobi preconditioner),
    spread over ``workers`` threads.

    Parameters
    ----------
    pattern : sparse matrix or array, or tuple
        The common structure: any ``scipy.sparse`` square matrix (its values
        are ignored; its entry order is the order of ``data``'s columns,
        duplicates and explicit zeros included), or a CSR pair
        ``(indptr, indices)`` or triple ``(indptr, indices, shape)``.
    data : array_like, shape (B, nnz)
        The stored values of every element, row ``e`` in the pattern's entry
        order. Never modified.
    method : {"auto", "direct", "cg", "bicgstab", "gmres", "minres"} or tuple
        ``"direct"`` (the default under ``"auto"``): CHOLMOD on one symbolic
        analysis for Hermitian positive-diagonal elements when installed,
        else SuperLU on one ordering (docs/batched.md); ``"cg"``
        (Hermitian positive definite elements), ``"minres"`` (Hermitian
        elements, Hermitian ``M``), ``"bicgstab"`` or ``"gmres"``
        (restarted, right-preconditioned; its basis size as
        ``method=("gmres", {"restart": 50})``, default 20), run in lockstep
        over the batch with per-element convergence.
    M : None, "jacobi", "ilu" or "amg"
        Preconditioner of the iterative methods, one per element.
        ``"ilu"`` (BiCGSTAB, GMRES) is ``sd.Solver``'s ILU of each element; an
        element whose ILU fails is handled by ``on_failure``. ``"amg"``
        is smoothed aggregation with the first element's aggregates shared by
        the others, and an element's own aggregation where the shared one
        measures poorly (docs/batched.md).
    rtol, atol, maxiter
        SciPy's stopping test on the true residual, per element and column.
    on_failure : {"raise", "warn", "nan"}
        Applied to each element on its own: a singular, non-converged or
        non-finite element raises (naming it), warns, or becomes NaN, and
        the other elements keep their results.
    workers : int, optional
        Threads for the per-element factorizations and solves (default: the
        cores available).

    See Also
    --------
    sparsediff.Solver : one matrix.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp, sparsediff as sd
    >>> A = sp.csr_array(np.array([[4.0, 1.0], [1.0, 3.0]]))
    >>> data = np.stack([A.data, 2 * A.data])          # two elements
    >>> solver = sd.BatchedSolver(A, data)
    >>> sol = solver.solve(np.ones((2, 2)))
    >>> np.allclose(sol.x[1], sol.x[0] / 2)
    True
    >>> grad_data, grad_b = sol.vjp(np.ones((2, 2)))
    >>> grad_data.shape
    (2, 3)
    """

    def __init__(self, pattern, data, *, method="auto", M=None, rtol=1e-8,
                 atol=0.0, maxiter=None, on_failure="raise", workers=None):
        func = "sparsediff.BatchedSolver"
        self._func = func
        check_on_failure(on_failure, func)
        self._tol = dict(zip(("rtol", "atol", "maxiter"),
                             check_tolerances(rtol, atol, maxiter, func)))
        options = {}
        if isinstance(method, tuple) and len(method) == 2 and method[0] == "gmres":
            from ..solvers._krylov import parse_options
            from ..solvers.gmres import GMRESEngine, check_restart

            method, options = method
            options = parse_options(GMRESEngine, options, func)
            if "restart" in options:
                options["restart"] = check_restart(options["restart"], func)
        if not isinstance(method, str) or method not in METHODS:
            raise ValueError(f"`{func}`: `method` must be one of {METHODS} (or "
                             f"('gmres', {{'restart': k}})); got {method!r}.")
        self._options = options
        if M not in (None, "jacobi", "ilu", "amg"):
            raise ValueError(f"`{func}`: `M` must be None, 'jacobi', 'ilu' or 'amg' "
                             f"for a batch; got {M!r}.")
        if method == "direct" and M is not None:
            raise ValueError(f"`{func}`: `M` is for iterative methods; got "
                             f"method='direct' with M={M!r}.")
        if workers is None:
            workers = default_workers()
        elif not isinstance(workers, (int, np.integer)) or workers < 1:
            raise ValueError(f"`{func}`: `workers` must be a positive integer or "
                             f"None; got {workers!r}.")
        self._workers = int(workers)
        self._on_failure = on_failure
        self._method = "direct" if method == "auto" and M is None else method
        if self._method == "auto":
            self._method = "bicgstab"
        self._M = M
        self._mat = as_pattern(pattern, func)
        self._lock = threading.Lock()
        values, dtype, finite = as_batch_data(self._mat, data, func)
        self._a_dtype = dtype
        self._engine = self._build(values, finite, func)
        check_stopping(self._tol, self._engine, func)

    def _build(self, values, finite, func, old=None):
        bad = np.flatnonzero(~finite)
        if bad.size and self._on_failure != "nan":
            raise nonfinite_error(func, f"data[{int(bad[0])}]")
        if old is not None:
            return old.update(values, finite)
        if self._method == "direct":
            return BatchedDirect(self._mat, values, finite, workers=self._workers,
                                 func=func)
        from ._krylov import BatchedKrylov

        return BatchedKrylov(self._mat, values, finite, method=self._method,
                             M=self._M, func=func, options=self._options,
                             workers=self._workers, on_failure=self._on_failure)

    @property
    def shape(self):
        """``(n, n)``, the shape of every element."""
        return self._mat.shape

    @property
    def batch_size(self):
        """B, the number of elements."""
        return self._engine.batch

    @property
    def nnz(self):
        """Stored entries of the pattern, in the caller's count."""
        return self._mat.nnz_caller

    @property
    def dtype(self):
        """The dtype of the values."""
        return self._a_dtype

    @property
    def method(self):
        return self._method

    def __repr__(self):
        return (f"BatchedSolver(batch_size={self.batch_size}, shape={self.shape}, "
                f"dtype={self.dtype}, method={self.method!r})")

    def update(self, data):
        """New values on the same pattern (the direct ordering is reused).

        Parameters
        ----------
        data : array_like, shape (B', nnz)
            The batch size may change. Never modified.

        Returns
        -------
        BatchedSolver
            ``self``; solutions made earlier keep their factorizations.
        """
        func = "BatchedSolver.update"
        values, dtype, finite = as_batch_data(self._mat, data, func)
        engine = self._build(values, finite, func, old=self._engine)
        with self._lock:
            self._engine = engine
            self._a_dtype = dtype
        return self

    def solve(self, b, *, x0=None, trans="N"):
        """Solve ``op(A_e) x_e = b[e]`` for every element ``e``.

        Parameters
        ----------
        b : array_like, shape (B, n) or (B, n, m)
        x0 : array_like, optional
            Initial guesses, shaped like ``b`` (iterative methods).
        trans : {"N", "T", "H"}

        Returns
        -------
        BatchedSolution

        Raises
        ------
        SingularMatrixError, ConvergenceError
            An element failed, under ``on_failure="raise"`` (the message names
            the element; ``.info`` is its report).
        NonFiniteInputError
            NaN or Inf in ``b`` (unless ``on_failure="nan"``: that element
            is NaN).
        """
        func = "BatchedSolver.solve"
        check_trans(trans, func)
        engine = self._engine
        n = self.shape[0]
        b3, b_dtype, is_2d = as_batch_rhs(b, engine.batch, n, func)
        dtype = result_dtype(self._a_dtype, b_dtype)
        b3 = b3.astype(dtype, copy=False)
        x03 = None
        if x0 is not None:
            x03, _, _ = as_batch_rhs(x0, engine.batch, n, func, "x0")
            if x03.shape != b3.shape:
                raise ValueError(f"`{func}`: `x0` must have the shape of `b`; got "
                                 f"{np.shape(x0)}.")
            x03 = x03.astype(dtype, copy=False)
        ok = np.isfinite(b3).all(axis=(1, 2))
        if x03 is not None:
            ok &= np.isfinite(x03).all(axis=(1, 2))
        if not ok.all() and self._on_failure != "nan":
            raise nonfinite_error(func, f"b[{int(np.flatnonzero(~ok)[0])}]")
        x3, infos = engine.solve_batch(b3, trans=trans, elements=engine.finite & ok,
                                       x0=x03, **self._tol)
        infos = _fill_nonfinite(infos, b3, engine.method, trans)
        infos = [_element_info(i, is_2d) for i in infos]
        x3 = _apply(x3, infos, self._on_failure, f"`{func}`")
        kappa = [float(np.max(i.condition_estimate)) for i in infos
                 if i.converged and i.condition_estimate is not None]
        if kappa:
            warn_ill_conditioned(infos[0], dtype, func, stacklevel=2,
                                 kappa=max(kappa))
        return BatchedSolution(x3, infos, engine=engine, mat=self._mat, trans=trans,
                               is_2d=is_2d, a_dtype=self._a_dtype, b_dtype=b_dtype,
                               on_failure=self._on_failure, tol=self._tol, func=func)


def _fill_nonfinite(infos, b3, method, trans):
    """Reports for elements that were not solved (non-finite data or b)."""
    from ..solvers._common import column_norms, make_info

    out = []
    m = b3.shape[2]
    for e, info in enumerate(infos):
        if info is None:
            with np.errstate(over="ignore", invalid="ignore"):
                norms = column_norms(b3[e])
            info = make_info(np.zeros(m, bool), np.zeros(m), np.full(m, np.nan),
                             norms, method,
                             ["nonfinite"], False, trans)
        out.append(info)
    return out


def _outcomes(infos):
    """Which elements an engine solved (a report) and which converged, as
    boolean arrays (read from the batch's arrays when the engine has them)."""
    if isinstance(infos, DirectReports):
        return infos.solved, infos.converged
    solved = np.array([i is not None for i in infos], bool)
    converged = np.array([i is not None and i.converged for i in infos], bool)
    return solved, converged


def _apply(x3, infos, on_failure, what):
    """The failure policy, element by element (others untouched)."""
    stack = 4
    for e, info in enumerate(infos):
        if not info.converged:
            x3[e] = apply_policy(x3[e], info, on_failure,
                                 f"{what}, batch element {e}", stacklevel=stack)
    return x3


class BatchedSolution:
    """The solutions of a batch and their derivatives (from
    :meth:`BatchedSolver.solve` or :func:`batched_solve`).

    Attributes
    ----------
    x : ndarray, shape (B, n) or (B, n, m)
        The solutions, shaped like ``b``. Yours to modify.
    info : tuple of SolveInfo
        One report per element, as :func:`sparsediff.solve` gives.
    adjoint_info : tuple of SolveInfo or None
        Reports of the latest :meth:`vjp`'s adjoint solves.
    converged : ndarray of bool, shape (B,)
    """

    def __init__(self, x3, infos, *, engine, mat, trans, is_2d, a_dtype, b_dtype,
                 on_failure, tol, func):
        self._x3 = x3
        self.x = (x3[:, :, 0] if is_2d else x3).copy()
        self.info = tuple(infos)
        self._adjoint = None        # [the engine's reports, adjoint_info once made]
        self._engine = engine
        self._mat = mat
        self._trans = trans
        self._is_2d = is_2d
        self._a_dtype = a_dtype
        self._b_dtype = b_dtype
        self._on_failure = on_failure
        self._tol = tol

    @property
    def converged(self):
        return np.array([i.converged for i in self.info], dtype=bool)

    def __repr__(self):
        return (f"BatchedSolution(shape={self.x.shape}, dtype={self.x.dtype}, "
                f"converged={int(self.converged.sum())}/{len(self.info)})")

    def _cotangent(self, g, func, name):
        arr = _as_array(g, func, name)
        if arr.shape != self.x.shape:
            raise ValueError(f"`{func}`: `{name}` must have the shape of `x`, "
                             f"{self.x.shape}; got {arr.shape}.")
        dtype = data_dtype(arr.dtype, func, name)
        # read only (every use makes its own array): no copy of the caller's
        g3 = np.asarray(arr[:, :, None] if self._is_2d else arr, dtype=dtype)
        return g3, dtype

    def _poisoned(self, func):
        """Elements whose derivatives are NaN because their forward solve
        failed (the policy of ``Solution``, element by element)."""
        poison = np.zeros(len(self.info), bool)
        for e, info in enumerate(self.info):
            if info.converged:
                continue
            what = f"`{func}` (forward solve), batch element {e}"
            if self._on_failure == "raise":
                apply_policy(self._x3[e], info, "raise", what)
            if self._on_failure == "warn":
                warnings.warn(
                    f"{what}: differentiating a forward solve that did not "
                    f"converge (reason: {info.reason}); the gradient is that of "
                    f"the unconverged iterate.", ConvergenceWarning, stacklevel=3)
                numerically = (info.reason == "singular"
                               and np.isfinite(self._x3[e]).all())
                poison[e] = (not numerically
                             and info.reason in ("singular", "nonfinite"))
            else:
                poison[e] = True
        return poison

    def _solve(self, rhs3, trans, live, func, what, tol):
        """Scale-invariant solves of ``op(A_e) y = rhs3[e]`` for ``live``
        elements (each column at unit norm, zero columns give zero)."""
        scale = batch_norms(rhs3)
        scale[scale == 0] = 1.0
        scale = scale.astype(rhs3.real.dtype)[:, None, :]
        y3, infos = self._engine.solve_batch(np.ascontiguousarray(rhs3 / scale),
                                             trans=trans, elements=live, **tol)
        y3 *= scale                    # the engine's fresh array
        solved, converged = _outcomes(infos)
        y3[~solved] = np.nan
        for e in np.flatnonzero(solved & ~converged):
            y3[e] = apply_policy(y3[e], infos[e], self._on_failure,
                                 f"`{func}`: {what}, batch element {e}",
                                 stacklevel=4)
        return y3, infos

    def _tolerances(self, rtol, atol, maxiter, func):
        rtol, atol, maxiter = check_tolerances(rtol, atol, maxiter, func,
                                               allow_none=True)
        tol = {k: (v if v is not None else self._tol[k])
               for k, v in dict(rtol=rtol, atol=atol, maxiter=maxiter).items()}
        check_stopping(tol, self._engine, func)
        return tol

    def vjp(self, g, *, rtol=None, atol=None, maxiter=None):
        """Reverse mode for every element: one adjoint solve each, reusing
        its factorization (or preconditioner), then one pattern kernel for
        the whole batch.

        Parameters
        ----------
        g : array_like
            Cotangents, the shape of ``x``.
        rtol, atol, maxiter : optional
            Adjoint tolerances (iterative methods); default the forward ones.

        Returns
        -------
        grad_data : ndarray, shape (B, nnz)
            ``∂L/∂data``, row ``e`` in the pattern's entry order (duplicates
            share their merged entry's gradient; stored zeros get one).
        grad_b : ndarray
            ``∂L/∂b``, shaped and typed like ``b``.

        Notes
        -----
        For element ``e`` with ``λ_e = op(A_e)⁻ᴴ g_e``: ``grad_b[e] = λ_e``
        and ``grad_data[e, k] = −λ_e[i_k]·conj(x_e[j_k])`` for ``trans="N"``
        (docs/design.md 2.1 for T and H). A failed element gets NaN (or
        raises, or warns) by the policy; the others are exact.
        """
        func = "BatchedSolution.vjp"
        tol = self._tolerances(rtol, atol, maxiter, func)
        g3, g_dtype = self._cotangent(g, func, "g")
        dtype = np.result_type(self._x3.dtype, g_dtype)
        poison = self._poisoned(func)
        ok = np.isfinite(g3).all(axis=(1, 2))
        if not ok.all():
            if self._on_failure != "nan":
                raise nonfinite_error(func, f"g[{int(np.flatnonzero(~ok)[0])}]")
            poison |= ~ok
        live = ~poison
        t, conj = _ADJOINT[self._trans]
        rhs = g3.astype(dtype, copy=False)
        rhs = np.conj(rhs) if conj else rhs
        lam3, infos = self._solve(rhs, t, live, func, "adjoint solve", tol)
        lam3 = np.conj(lam3) if conj else lam3
        self._adjoint = [infos, None]       # adjoint_info made on first access
        solved, converged = _outcomes(infos)
        kappa = self._condition_estimates(infos, np.flatnonzero(solved & converged))
        if kappa.size:
            warn_ill_conditioned(infos[0], dtype, func, stacklevel=2,
                                 kappa=max(np.max(kappa), 0.0))
        x3 = self._x3.astype(dtype, copy=False)
        products = getattr(self._engine, "pattern_products", None)
        if products is None:
            grad = pattern_products(self._mat, _finite(x3), _finite(lam3),
                                    self._trans)
        else:
            grad = products(_finite(x3), _finite(lam3), self._trans)
        grad = caller_order(self._mat, grad, copy=False)
        grad[~live] = np.nan
        lam3[~live] = np.nan
        grad_data = _like_input(grad, self._a_dtype, fresh=True)
        grad_b = _like_input(lam3[:, :, 0] if self._is_2d else lam3, self._b_dtype,
                             fresh=True)
        return grad_data, grad_b

    @property
    def adjoint_info(self):
        """Reports of the latest :meth:`vjp`'s adjoint solves (``None`` before
        one), one per element, with the error bound and backward error of
        the gradient; built on first access."""
        state = self._adjoint          # one read: a later vjp replaces it whole
        if state is None:
            return None
        if state[1] is None:
            state[1] = tuple(self._with_estimate(e, i) for e, i in enumerate(state[0]))
        return state[1]

    def _condition_estimates(self, infos, elements):
        """The condition estimates (adjoint and forward) of ``elements``, as
        one flat float array."""
        if isinstance(infos, DirectReports):
            ks = [infos.condition_estimates(elements)]
        else:
            ks = [np.ravel(k) for e in elements
                  if (k := infos[e].condition_estimate) is not None]
        fwd = [self.info[e].condition_estimate for e in elements]
        if all(isinstance(k, (float, np.floating)) for k in fwd):
            ks.append(np.array(fwd, np.float64))
        else:
            ks += [np.ravel(k) for k in fwd if k is not None]
        return np.concatenate(ks) if ks else np.zeros(0)

    def _with_estimate(self, e, info):
        if info is None:
            return None
        fwd = self.info[e]
        e_x, e_lam = fwd.error_estimate, info.error_estimate
        bound = None
        if e_x is not None and e_lam is not None:
            bound = float(e_x + e_lam + e_x * e_lam)
        if self._is_2d:          # one column: plain floats (B small numpy calls saved)
            f_rel = float(fwd.residual_norm) / max(float(fwd.rhs_norm), 1e-300)
            adj = float(np.asarray(info.residual_norm).reshape(-1)[0])
        else:
            f_rel = np.max(np.atleast_1d(fwd.residual_norm)
                           / np.maximum(np.atleast_1d(fwd.rhs_norm), 1e-300),
                           initial=0.0)
            adj = np.max(np.atleast_1d(info.residual_norm), initial=0.0)
        changes = dict(error_estimate=bound, backward_error=float(f_rel + adj))
        if self._is_2d:
            return squeeze_info(info, **changes)          # one copy, not two
        return replace_info(info, **changes)

    def jvp(self, dA=None, db=None):
        """Forward mode: ``ẋ_e = op(A_e)⁻¹ (ḃ_e − op(Ȧ_e) x_e)`` for every element.

        Parameters
        ----------
        dA : array_like, shape (B, nnz), optional
            Tangents of the values, in the pattern's entry order.
        db : array_like, optional
            Tangents of ``b``, shaped like ``b``.

        Returns
        -------
        ndarray
            ``ẋ``, shaped like ``x``.
        """
        func = "BatchedSolution.jvp"
        B = self._x3.shape[0]
        dtype = self._x3.dtype
        rhs = np.zeros_like(self._x3)
        poison = self._poisoned(func)
        ok = np.ones(B, bool)
        if dA is not None:
            values, d_dtype, fin = as_batch_data(self._mat, dA, func, "dA")
            if values.shape[0] != B:
                raise ValueError(f"`{func}`: `dA` has batch size {values.shape[0]}; "
                                 f"the solution has {B}.")
            dtype = np.result_type(dtype, d_dtype)
            ok &= fin
            x3 = _finite(self._x3.astype(dtype, copy=False))
            rhs = -batch_matvec(self._mat, np.ascontiguousarray(values.T), x3,
                                self._trans)
        if db is not None:
            db3, db_dtype = self._cotangent(db, func, "db")
            dtype = np.result_type(dtype, db_dtype)
            ok &= np.isfinite(db3).all(axis=(1, 2))
            rhs = rhs.astype(dtype) + db3
        if not ok.all():
            if self._on_failure != "nan":
                name = "dA" if dA is not None else "db"
                raise nonfinite_error(func, f"{name}[{int(np.flatnonzero(~ok)[0])}]")
            poison |= ~ok
        rhs = np.ascontiguousarray(rhs, dtype=dtype)
        dx, infos = self._solve(rhs, self._trans, ~poison, func, "tangent solve",
                                self._tol)
        dx[poison] = np.nan
        return dx[:, :, 0].copy() if self._is_2d else dx


def batched_solve(pattern, data, b, *, method="auto", M=None, x0=None, rtol=1e-8,
                  atol=0.0, maxiter=None, on_failure="raise", workers=None):
    """Solve B systems with one sparsity pattern: ``A_e x_e = b[e]``.

    Shorthand for ``BatchedSolver(pattern, data, ...).solve(b, x0=x0)``; see
    :class:`BatchedSolver` for the parameters.

    Returns
    -------
    BatchedSolution

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp, sparsediff as sd
    >>> A = sp.csr_array(np.array([[2.0, 0.0], [1.0, 4.0]]))
    >>> sol = sd.batched_solve(A, np.stack([A.data, 2 * A.data]),
    ...                        np.array([[2.0, 5.0], [4.0, 10.0]]))
    >>> sol.x
    array([[1., 1.],
           [1., 1.]])
    """
    solver = BatchedSolver(pattern, data, method=method, M=M, rtol=rtol, atol=atol,
                           maxiter=maxiter, on_failure=on_failure, workers=workers)
    sol = solver.solve(b, x0=x0)
    return sol
