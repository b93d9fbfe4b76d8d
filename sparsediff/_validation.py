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

from ._entries import ENTRY_BUILDERS, expand, other_entries
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
    maxiter = check_int(maxiter, func, "maxiter", 0, allow_none=True)
    return rtol, atol, maxiter


def check_int(value, func, name, minimum, *, allow_none=False, strict=False):
    """An integer option ``>= minimum`` (anything with ``__index__``), as an int.

    ``allow_none``: ``None`` passes (and is returned). ``strict``: a ``bool`` is
    not accepted as an integer.
    """
    if value is None and allow_none:
        return None
    what = "an integer or None" if allow_none else "an integer"
    try:
        if strict and isinstance(value, (bool, np.bool_)):
            raise TypeError
        index = operator.index(value)
    except TypeError:
        raise TypeError(f"`{func}`: `{name}` must be {what}; got {value!r}.") from None
    if index < minimum:
        raise ValueError(f"`{func}`: `{name}` must be >= {minimum}; got {index}.")
    return index


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
        # O(nnz) facts computed once by the layers that need them: of the
        # values (``memo``, cleared by ``with_data``) and of the pattern
        # (``pattern_memo``, shared with ``with_data``'s copies)
        self.memo = {}
        self.pattern_memo = {}

    @property
    def nnz(self):
        return self.indices.shape[0]

    @property
    def rows(self):
        """Row index of every canonical entry (computed once, on demand)."""
        if self._rows is None:
            self._rows = expand(self.indptr, self.shape[0])
        return self._rows

    @property
    def symmetry(self):
        """How far the values are from Hermitian (:class:`Symmetry`, computed once)."""
        if self._symmetry is None:
            # measured on the host (a one-time transfer for a device matrix)
            host = self.backend.to_host
            self._symmetry = measure_symmetry(host(self.indptr), host(self.indices),
                                              host(self.data), self.shape)
        return self._symmetry

    def with_data(self, data):
        """A copy sharing the structure but holding new canonical values."""
        new = object.__new__(MatrixInput)
        new.__dict__.update(self.__dict__)
        new.data = data
        new.dtype = data.dtype
        new.finite = bool(np.isfinite(data).all())
        new._symmetry = None
        new.memo = {}
        return new

    def to_scipy(self):
        """The canonical matrix as a SciPy CSR array (shares our private arrays)."""
        return sp.csr_array((self.data, self.indices, self.indptr), shape=self.shape)

    # -- caller order <-> canonical order ----------------------------------

    def to_canonical(self, values):
        """Sum caller-ordered entry values into canonical entries (a new array)."""
        xp = self.backend.xp
        if self._perm is None:
            return xp.array(values, copy=True)
        out = xp.empty(self.nnz, dtype=values.dtype)
        if self._starts is None:
            out[self._perm] = values
            return out
        return self.backend.kernels.segment_sum(values[self._order], self._starts, out)

    def from_canonical(self, values, owned=False):
        """Caller-ordered copy of canonical values (duplicates share a value);
        ``owned``: ``values`` is a fresh array nobody else holds, returned
        as it is where the orders agree (no second copy)."""
        if self._perm is None:
            return values if owned else self.backend.xp.array(values, copy=True)
        return values[self._perm]

    def check_caller_data(self, data, func, name):
        """Validate a length-``nnz_caller`` array of entry values (caller order).

        Returns ``(values, finite)``: canonical values on the matrix's backend.
        """
        backend = self.backend
        if backend.issparse(data):
            host = backend.matrix_to_host(data, func, name)
            other = as_matrix(host, func, name, square=False)
            if other.shape != self.shape or other.nnz != self.nnz or not (
                np.array_equal(other.indptr, self.indptr)
                and np.array_equal(other.indices, self.indices)
            ):
                raise ValueError(
                    f"`{func}`: `{name}` must have the sparsity structure of `A`."
                )
            return backend.from_host(other.data), other.finite
        data = backend.array(data, func, name)
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

    def wrap(self, values, owned=False):
        """Caller-class/format object holding canonical ``values`` per entry.

        Index arrays are fresh copies; the result shares no memory with the
        caller's matrix. ``owned``: ``values`` is a fresh array the result may
        keep (see :meth:`from_canonical`).
        """
        lay = self._layout
        kind = lay["kind"]
        data = self.from_canonical(values, owned)
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
    if backend is not None and backend.device:
        # validated on the host, then moved to the device once (backends.md)
        host = backend.matrix_to_host(A, func, name)
        return backend.adopt(_as_matrix(host, func, name, square), A)
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
    dtype = data_dtype(A.dtype, func, name)
    layout["kind"] = fmt
    build = ENTRY_BUILDERS.get(fmt, other_entries)
    indptr, indices, data, perm, order, starts, nnz = build(A, shape, dtype, layout,
                                                            func, name)
    return _finish(shape, indptr, indices, data, perm, order, starts, layout, nnz,
                   name, func)


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
    """A host argument as a NumPy array (``Backend.array`` of the CPU)."""
    return NUMBA.array(b, func, name)


def as_rhs(b, n, func, name="b", backend=None):
    """Validate a right-hand side of shape ``(n,)`` or ``(n, m)``.

    Returns ``(b2, dtype, is_1d, finite)`` where ``b2`` is a private, C-ordered
    2-D ``(n, m)`` copy in the checked floating dtype, an array of ``backend``
    (default: the CPU's).
    """
    backend = NUMBA if backend is None else backend
    arr = backend.array(b, func, name)
    if arr.ndim not in (1, 2) or arr.shape[0] != n:
        raise ValueError(
            f"`{func}`: `{name}` must have shape (n,) or (n, m) with n = {n}; "
            f"got {arr.shape}."
        )
    dtype = data_dtype(arr.dtype, func, name)
    is_1d = arr.ndim == 1
    b2 = backend.xp.array(arr.reshape(n, 1) if is_1d else arr, dtype=dtype,
                          order="C", copy=True)
    finite = bool(backend.xp.isfinite(b2).all())
    return b2, dtype, is_1d, finite


def as_vector_pair(u, v, shape, func, backend=None):
    """Validate ``u`` (rows of A) and ``v`` (columns) for :func:`sparse_outer`."""
    backend = NUMBA if backend is None else backend
    out = []
    for arr, n, name in ((u, shape[0], "u"), (v, shape[1], "v")):
        arr = backend.array(arr, func, name)
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
