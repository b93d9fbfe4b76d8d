"""The one place where public inputs are checked and normalized.

Every public function calls into this module once, at its boundary; solver and
kernel code below it never validates again (the `scipy.sparse.linalg`
``make_system`` pattern).

The central object is :class:`MatrixInput`: a private, canonical CSR copy of the
caller's matrix (sorted indices, duplicates summed, stored zeros kept) together
with the map from the caller's entry order to the canonical entries, so that
gradients can be handed back *entry for entry* in the caller's class, format and
order.
"""

import numbers
import operator

import numpy as np
import scipy.sparse as sp

from ._errors import NonFiniteInputError
from ._symmetry import measure_symmetry
from .backend import NUMBA

__all__ = [
    "MatrixInput",
    "as_matrix",
    "as_rhs",
    "as_vector_pair",
    "check_on_failure",
    "check_tolerances",
    "check_trans",
    "data_dtype",
    "result_dtype",
]

ON_FAILURE = ("raise", "warn", "nan")
TRANS = ("N", "T", "H")

_SUPPORTED = (np.float32, np.float64, np.complex64, np.complex128)


def _name(dtype):
    return np.dtype(dtype).name


def data_dtype(dtype, func, name):
    """The floating dtype values of ``dtype`` are computed in.

    Integers and unsigned integers promote to float64 and float16 to float32
    (SciPy's rule, never a downcast); bool, object, extended precision and
    anything else raise ``TypeError``.
    """
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        return np.dtype(np.float64)
    if dtype == np.float16:
        return np.dtype(np.float32)
    if dtype.type in _SUPPORTED:
        return dtype
    raise TypeError(
        f"`{func}`: `{name}` must have a numeric dtype (integer, float32, float64, "
        f"complex64 or complex128); got {_name(dtype)}."
    )


def result_dtype(*dtypes):
    """Promoted dtype of several already-checked floating dtypes."""
    return np.dtype(np.result_type(*dtypes))


def check_on_failure(on_failure, func):
    if on_failure not in ON_FAILURE:
        raise ValueError(
            f"`{func}`: `on_failure` must be one of {ON_FAILURE}; got {on_failure!r}."
        )
    return on_failure


def check_trans(trans, func):
    if trans not in TRANS:
        raise ValueError(f"`{func}`: `trans` must be one of {TRANS}; got {trans!r}.")
    return trans


def _check_real(value, func, name, allow_none=False):
    if value is None and allow_none:
        return None
    if value is None or isinstance(value, str):
        # SciPy raises ValueError for atol=None / atol="legacy" (test_invalid_atol)
        raise ValueError(
            f"`{func}`: `{name}` must be a finite number >= 0; got {value!r}."
        )
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{func}`: `{name}` must be a real number; got {value!r}.")
    value = float(value)
    if not value >= 0.0 or value == np.inf:
        raise ValueError(
            f"`{func}`: `{name}` must be a finite number >= 0; got {value!r}."
        )
    return value


def check_tolerances(rtol, atol, maxiter, func, allow_none=False):
    """Check SciPy-style tolerances; returns ``(rtol, atol, maxiter)``.

    ``allow_none`` lets each be ``None`` ("use the forward solve's value").
    """
    rtol = _check_real(rtol, func, "rtol", allow_none)
    atol = _check_real(atol, func, "atol", allow_none)
    if maxiter is not None:
        try:
            maxiter = operator.index(maxiter)
        except TypeError:
            raise TypeError(
                f"`{func}`: `maxiter` must be an integer or None; got {maxiter!r}."
            ) from None
        if maxiter < 0:
            raise ValueError(f"`{func}`: `maxiter` must be >= 0; got {maxiter}.")
    return rtol, atol, maxiter


def check_stopping(tol, engine, func):
    """``rtol = atol = 0`` with no ``maxiter`` can never stop an iterative solve.

    ``tol`` is a dict with ``rtol``, ``atol``, ``maxiter``; direct engines
    (``engine.iterative`` false) ignore tolerances and pass.
    """
    if (getattr(engine, "iterative", False) and not tol["rtol"] and not tol["atol"]
            and tol["maxiter"] is None):
        raise ValueError(
            f"`{func}`: `rtol` and `atol` are both 0 and `maxiter` is None: the "
            f"iterative solve could never meet its stopping test; give a positive "
            f"tolerance or a `maxiter`.")


def check_callback(callback, func):
    if callback is not None and not callable(callback):
        raise TypeError(
            f"`{func}`: `callback` must be callable or None; got {callback!r}."
        )
    return callback


# ---------------------------------------------------------------------------
# Matrices
# ---------------------------------------------------------------------------


def _index_dtype(*arrays, func, name):
    for a in arrays:
        if a.dtype.kind not in "iu":
            raise TypeError(
                f"`{func}`: the index arrays of `{name}` must be integers; "
                f"got {_name(a.dtype)}."
            )
    need64 = any(a.dtype.itemsize > 4 or a.dtype == np.uint32 for a in arrays)
    return np.dtype(np.int64 if need64 else np.int32)


def _expand(indptr, nmajor):
    """Major index of every stored entry (row of a CSR, column of a CSC)."""
    return np.repeat(np.arange(nmajor, dtype=indptr.dtype), np.diff(indptr))


def _check_compressed(indptr, indices, ndata, nmajor, nminor, func, name, fmt):
    """Full structural check of CSR/CSC/BSR arrays, before any native call."""
    where = f"`{func}`: `{name}` ({fmt})"
    if indptr.ndim != 1 or indices.ndim != 1:
        raise ValueError(f"{where} has index arrays that are not 1-D.")
    if indptr.shape[0] != nmajor + 1:
        raise ValueError(
            f"{where}: `indptr` must have length {nmajor + 1}; got {indptr.shape[0]}."
        )
    if indptr[0] != 0:
        raise ValueError(f"{where}: `indptr[0]` must be 0; got {indptr[0]}.")
    if indptr[-1] != indices.shape[0]:
        raise ValueError(
            f"{where}: `indptr[-1]` must equal len(indices) = {indices.shape[0]}; "
            f"got {indptr[-1]}."
        )
    if ndata != indices.shape[0]:
        raise ValueError(
            f"{where}: `data` and `indices` must have the same length; "
            f"got {ndata} and {indices.shape[0]}."
        )
    if nmajor and np.any(np.diff(indptr) < 0):
        raise ValueError(f"{where}: `indptr` must be non-decreasing.")
    if indices.shape[0]:
        lo, hi = indices.min(), indices.max()
        if lo < 0 or hi >= nminor:
            raise ValueError(
                f"{where}: indices must lie in [0, {nminor}); got values in [{lo}, {hi}]."
            )


def _check_data(data, ndim, func, name, fmt):
    if np.ndim(data) != ndim:
        raise ValueError(
            f"`{func}`: `{name}` ({fmt}) must have a {ndim}-D `data` array; "
            f"got shape {np.shape(data)}.")


def _is_canonical_csr(indptr, indices):
    """True when column indices are strictly increasing within every row."""
    if indices.shape[0] < 2:
        return True
    inc = np.diff(indices) > 0
    # positions where a new row starts do not need to increase
    starts = indptr[1:-1]
    starts = starts[(starts > 0) & (starts < indices.shape[0])]
    inc[starts - 1] = True
    return bool(inc.all())


class MatrixInput:
    """A validated matrix: canonical CSR copy plus the caller's layout.

    Attributes
    ----------
    shape : tuple of int
    dtype : numpy.dtype
        The floating dtype values are computed in (after promotion).
    indptr, indices : ndarray
        Canonical CSR structure (sorted, no duplicates), private copies.
    data : ndarray
        Canonical values (duplicates summed), private copy, ``dtype``.
    nnz_caller : int
        Number of stored entries in the caller's object (the length of every
        caller-ordered array: ``grad_A.data``, ``Solver.update(data)``...).
    finite : bool
        Whether every stored value is finite.
    backend : Backend
        The backend chosen at the public boundary; everything below the
        public layer takes its array namespace and kernels from it.
    """

    backend = NUMBA

    def __init__(self, shape, indptr, indices, data, perm, order, starts,
                 layout, finite):
        self.shape = shape
        self.indptr = indptr
        self.indices = indices
        self.data = data
        self.dtype = data.dtype
        self._perm = perm        # caller entry -> canonical entry (None: identity)
        self._order = order      # caller entries sorted canonically (for sums)
        self._starts = starts    # group starts within `order` (None: no duplicates)
        self._layout = layout    # how to rebuild the caller's format
        self.nnz_caller = layout["nnz"]
        self.finite = finite
        self._rows = None
        self._symmetry = None

    @property
    def nnz(self):
        return self.indices.shape[0]

    @property
    def rows(self):
        """Row index of every canonical entry (computed once, on demand)."""
        if self._rows is None:
            self._rows = _expand(self.indptr, self.shape[0])
        return self._rows

    @property
    def symmetry(self):
        """How far the values are from Hermitian (:class:`Symmetry`, computed once)."""
        if self._symmetry is None:
            self._symmetry = measure_symmetry(self.indptr, self.indices, self.data,
                                              self.shape)
        return self._symmetry

    def with_data(self, data):
        """A copy sharing the structure but holding new canonical values."""
        new = object.__new__(MatrixInput)
        new.__dict__.update(self.__dict__)
        new.data = data
        new.dtype = data.dtype
        new.finite = bool(np.isfinite(data).all())
        new._symmetry = None
        return new

    def to_scipy(self):
        """The canonical matrix as a SciPy CSR array (shares our private arrays)."""
        return sp.csr_array((self.data, self.indices, self.indptr), shape=self.shape)

    # -- caller order <-> canonical order ----------------------------------

    def to_canonical(self, values):
        """Sum caller-ordered entry values into canonical entries (a new array)."""
        if self._perm is None:
            return np.array(values, copy=True)
        if self._starts is None:
            out = np.empty(self.nnz, dtype=values.dtype)
            out[self._perm] = values
            return out
        return np.add.reduceat(values[self._order], self._starts)

    def from_canonical(self, values):
        """Caller-ordered copy of canonical values (duplicates share a value)."""
        if self._perm is None:
            return np.array(values, copy=True)
        return values[self._perm]

    def check_caller_data(self, data, func, name):
        """Validate a length-``nnz_caller`` array of entry values (caller order)."""
        if sp.issparse(data):
            other = as_matrix(data, func, name, square=False)
            if other.shape != self.shape or other.nnz != self.nnz or not (
                np.array_equal(other.indptr, self.indptr)
                and np.array_equal(other.indices, self.indices)
            ):
                raise ValueError(
                    f"`{func}`: `{name}` must have the sparsity structure of `A`."
                )
            return other.data, other.finite
        data = _as_array(data, func, name)
        if self._layout["kind"] == "dense" and data.shape == self.shape:
            data = data.reshape(-1)  # a dense A takes a dense tangent/update
        if data.ndim != 1 or data.shape[0] != self.nnz_caller:
            raise ValueError(
                f"`{func}`: `{name}` must be a 1-D array of length nnz = "
                f"{self.nnz_caller} (one value per stored entry of `A`, in its "
                f"order); got shape {data.shape}."
            )
        dtype = data_dtype(data.dtype, func, name)
        values = self.to_canonical(data.astype(dtype, copy=False))
        return values, bool(np.isfinite(values).all())

    def wrap(self, values):
        """Caller-class/format object holding canonical ``values`` per entry.

        Index arrays are fresh copies; the result shares no memory with the
        caller's matrix.
        """
        lay = self._layout
        kind = lay["kind"]
        data = self.from_canonical(values)
        if kind == "dense":
            return data.reshape(self.shape)
        cls = lay["cls"]
        if kind in ("csr", "csc"):
            return cls((data, lay["indices"].copy(), lay["indptr"].copy()),
                       shape=self.shape)
        if kind == "bsr":
            return cls((data.reshape(lay["blockshape"]), lay["indices"].copy(),
                        lay["indptr"].copy()), shape=self.shape)
        if kind == "coo":
            return cls((data, (lay["row"].copy(), lay["col"].copy())),
                       shape=self.shape)
        # lil, dok, dia: entry order is that of ``A.tocoo()``
        coo = sp.coo_array((data, (lay["row"].copy(), lay["col"].copy())),
                           shape=self.shape)
        out = coo.asformat(kind)
        return cls(out) if cls is not type(out) else out


def _coo_entries(A, func, name):
    """Row, column and values of a COO object, with checks."""
    row, col = np.asarray(A.row), np.asarray(A.col)
    if row.shape != col.shape or row.shape != A.data.shape:
        raise ValueError(
            f"`{func}`: `{name}` (coo) has row, col and data of different lengths."
        )
    _index_dtype(row, col, func=func, name=name)
    if row.shape[0]:
        for arr, lim, what in ((row, A.shape[0], "row"), (col, A.shape[1], "column")):
            lo, hi = arr.min(), arr.max()
            if lo < 0 or hi >= lim:
                raise ValueError(
                    f"`{func}`: `{name}` (coo) {what} indices must lie in [0, {lim}); "
                    f"got values in [{lo}, {hi}]."
                )
    return row, col


def _not_a_matrix(A, func, name):
    mod = type(A).__module__.split(".")[0]
    hint = ""
    if mod == "torch":
        hint = " For torch tensors use `sparsediff.torch.solve`."
    elif mod in ("jax", "jaxlib"):
        hint = " For JAX arrays use `sparsediff.jax.solve`."
    elif mod == "scipy":
        hint = " (A LinearOperator has no stored entries to differentiate.)"
    return TypeError(
        f"`{func}`: `{name}` must be a scipy.sparse matrix or array, or a dense "
        f"2-D NumPy array; got {type(A).__module__}.{type(A).__name__}.{hint}"
    )


def as_matrix(A, func, name="A", square=True, backend=None):
    """Validate ``A`` and return its :class:`MatrixInput`, carrying ``backend``.

    Raises
    ------
    TypeError
        Unsupported container, index or value dtype.
    ValueError
        Wrong shape, corrupt structure.
    """
    mat = _as_matrix(A, func, name, square)
    if backend is not None:
        mat.backend = backend
    return mat


def _as_matrix(A, func, name, square):
    layout = {}
    if sp.issparse(A):
        fmt = A.format
        shape = tuple(int(s) for s in A.shape)
        layout["cls"] = type(A)
    elif isinstance(A, (np.ndarray, list, tuple)):
        fmt = "dense"
        A = np.asarray(A)
        shape = A.shape
    else:
        raise _not_a_matrix(A, func, name)

    if len(shape) != 2:
        raise ValueError(f"`{func}`: `{name}` must be 2-D; got shape {shape}.")
    if square and shape[0] != shape[1]:
        raise ValueError(f"`{func}`: `{name}` must be square; got shape {shape}.")
    nrows, ncols = shape
    dtype = data_dtype(A.dtype, func, name)
    layout["kind"] = fmt

    perm = order = starts = None
    if fmt == "csr":
        indptr, indices = np.asarray(A.indptr), np.asarray(A.indices)
        idx_t = _index_dtype(indptr, indices, func=func, name=name)
        _check_data(A.data, 1, func, name, fmt)
        _check_compressed(indptr, indices, A.data.shape[0], nrows, ncols, func, name, fmt)
        if _is_canonical_csr(indptr, indices):
            # fast path (the common case): O(nnz), three copies and no sort
            values = np.array(A.data, dtype=dtype, copy=True)
            indptr_c = indptr.astype(idx_t, copy=True)
            indices_c = indices.astype(idx_t, copy=True)
            # the caller's layout is the canonical one; keep the caller's index
            # dtypes (private arrays, never written; `wrap` copies them again)
            layout.update(
                indptr=indptr_c if indptr.dtype == idx_t else indptr.copy(),
                indices=indices_c if indices.dtype == idx_t else indices.copy())
            nnz = values.shape[0]
            return _finish(shape, indptr_c, indices_c, values, None, None, None,
                           layout, nnz, name, func)
        # private copies: a caller changing A's arrays after the call must not
        # change the structure of the gradients we hand back later
        layout.update(indptr=indptr.copy(), indices=indices.copy())
        rows, cols, values = _expand(indptr, nrows), indices, A.data
    elif fmt == "csc":
        indptr, indices = np.asarray(A.indptr), np.asarray(A.indices)
        idx_t = _index_dtype(indptr, indices, func=func, name=name)
        _check_data(A.data, 1, func, name, fmt)
        _check_compressed(indptr, indices, A.data.shape[0], ncols, nrows, func, name, fmt)
        layout.update(indptr=indptr.copy(), indices=indices.copy())
        rows, cols, values = indices, _expand(indptr, ncols), A.data
    elif fmt == "bsr":
        R, C = A.blocksize
        indptr, indices = np.asarray(A.indptr), np.asarray(A.indices)
        idx_t = _index_dtype(indptr, indices, func=func, name=name)
        _check_data(A.data, 3, func, name, fmt)
        if A.data.shape[1:] != (R, C) or nrows % R or ncols % C:
            raise ValueError(
                f"`{func}`: `{name}` (bsr) has blocks of shape {A.data.shape[1:]} "
                f"for blocksize {(R, C)} and shape {shape}.")
        _check_compressed(indptr, indices, A.data.shape[0], nrows // R, ncols // C,
                          func, name, fmt)
        layout.update(indptr=indptr.copy(), indices=indices.copy(),
                      blockshape=A.data.shape)
        brow = _expand(indptr, nrows // R).astype(np.int64)
        bcol = indices.astype(np.int64)
        r = np.arange(R)[None, :, None]
        c = np.arange(C)[None, None, :]
        rows = (brow[:, None, None] * R + r + 0 * c).ravel()
        cols = (bcol[:, None, None] * C + c + 0 * r).ravel()
        values = A.data.ravel()
    elif fmt == "dense":
        values = A.ravel()
        rows = cols = None
        idx_t = np.dtype(np.int64 if nrows * ncols > np.iinfo(np.int32).max
                         else np.int32)
        indptr_c = np.arange(0, nrows * ncols + 1, max(ncols, 1), dtype=idx_t)
        if ncols == 0:
            indptr_c = np.zeros(nrows + 1, dtype=idx_t)
        indices_c = np.tile(np.arange(ncols, dtype=idx_t), nrows)
        values = np.array(values, dtype=dtype, copy=True)
        return _finish(shape, indptr_c, indices_c, values, None, None, None,
                       layout, values.shape[0], name, func)
    else:
        if fmt == "coo":
            coo = A
        else:  # lil, dok, dia: the entry order is that of A.tocoo()
            coo = A.tocoo(copy=True)
        rows, cols = _coo_entries(coo, func, name)
        idx_t = _index_dtype(rows, cols, func=func, name=name)
        layout.update(row=np.array(rows, copy=True), col=np.array(cols, copy=True))
        values = coo.data

    # general path: sort the caller's entries into canonical CSR order
    nnz = values.shape[0]
    if max(nrows, ncols, nnz) > np.iinfo(np.int32).max:
        idx_t = np.dtype(np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    order = np.lexsort((cols, rows))
    r_s, c_s = rows[order], cols[order]
    new = np.empty(nnz, dtype=bool)
    if nnz:
        new[0] = True
        new[1:] = (r_s[1:] != r_s[:-1]) | (c_s[1:] != c_s[:-1])
    group = np.cumsum(new) - 1
    perm = np.empty(nnz, dtype=np.int64)
    perm[order] = group
    vals = np.asarray(values).astype(dtype, copy=False)
    if new.all():
        starts = None
        data_c = vals[order]
        r_u, c_u = r_s, c_s
    else:
        starts = np.flatnonzero(new)
        data_c = np.add.reduceat(vals[order], starts) if nnz else vals[:0].copy()
        r_u, c_u = r_s[starts], c_s[starts]
    indptr_c = np.zeros(nrows + 1, dtype=idx_t)
    np.cumsum(np.bincount(r_u, minlength=nrows), out=indptr_c[1:])
    indices_c = c_u.astype(idx_t)
    return _finish(shape, indptr_c, indices_c, np.array(data_c, copy=True), perm,
                   order, starts, layout, nnz, name, func)


def _finish(shape, indptr, indices, data, perm, order, starts, layout, nnz, name,
            func):
    layout["nnz"] = nnz
    finite = bool(np.isfinite(data).all())
    return MatrixInput(shape, indptr, indices, data, perm, order, starts, layout,
                       finite)


# ---------------------------------------------------------------------------
# Right-hand sides and vectors
# ---------------------------------------------------------------------------


def _as_array(b, func, name):
    if sp.issparse(b):
        raise TypeError(
            f"`{func}`: `{name}` must be a dense array; got a sparse "
            f"{type(b).__name__}."
        )
    mod = type(b).__module__.split(".")[0]
    if mod in ("cupy", "cupyx", "torch", "jax", "jaxlib", "tensorflow"):
        raise TypeError(
            f"`{func}`: `{name}` must be a NumPy array here (the other arguments "
            f"are NumPy/SciPy); got {type(b).__module__}.{type(b).__name__}."
        )
    try:
        arr = np.asarray(b)
    except Exception as exc:  # noqa: BLE001 - re-raised with context
        raise TypeError(f"`{func}`: `{name}` is not array-like: {exc}") from exc
    return arr


def as_rhs(b, n, func, name="b"):
    """Validate a right-hand side of shape ``(n,)`` or ``(n, m)``.

    Returns ``(b2, dtype, is_1d, finite)`` where ``b2`` is a private, C-ordered
    2-D ``(n, m)`` copy in the checked floating dtype.
    """
    arr = _as_array(b, func, name)
    if arr.ndim not in (1, 2) or arr.shape[0] != n:
        raise ValueError(
            f"`{func}`: `{name}` must have shape (n,) or (n, m) with n = {n}; "
            f"got {arr.shape}."
        )
    dtype = data_dtype(arr.dtype, func, name)
    is_1d = arr.ndim == 1
    b2 = np.array(arr.reshape(n, 1) if is_1d else arr, dtype=dtype, order="C",
                  copy=True)
    finite = bool(np.isfinite(b2).all())
    return b2, dtype, is_1d, finite


def as_vector_pair(u, v, shape, func):
    """Validate ``u`` (rows of A) and ``v`` (columns) for :func:`sparse_outer`."""
    out = []
    for arr, n, name in ((u, shape[0], "u"), (v, shape[1], "v")):
        arr = _as_array(arr, func, name)
        if arr.ndim not in (1, 2) or arr.shape[0] != n:
            raise ValueError(
                f"`{func}`: `{name}` must have shape ({n},) or ({n}, m); got {arr.shape}."
            )
        out.append(arr)
    u, v = out
    if u.ndim != v.ndim or (u.ndim == 2 and u.shape[1] != v.shape[1]):
        raise ValueError(
            f"`{func}`: `u` and `v` must have the same number of columns; "
            f"got shapes {u.shape} and {v.shape}."
        )
    return u, v


def nonfinite_error(func, name):
    return NonFiniteInputError(
        f"`{func}`: `{name}` contains NaN or infinite values; sparsediff never "
        f"returns a finite answer for non-finite input (use on_failure='nan' to "
        f"get NaN instead of this error)."
    )
