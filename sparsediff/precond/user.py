"""Preconditioners supplied by the caller: matrices, operators, factorizations."""

import time

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .._dtypes import is_complex, real_dtype
from .._errors import NonFiniteInputError
from .._symmetry import is_exactly_hermitian
from .._validation import data_dtype
from ._base import Preconditioner

__all__ = ["UserPreconditioner"]


def _flag(obj, name):
    value = getattr(obj, name, False)
    return isinstance(value, (bool, np.bool_)) and bool(value)


class UserPreconditioner(Preconditioner):
    """A caller's preconditioner ``M ≈ A⁻¹`` behind the common protocol.

    Parameters
    ----------
    M : object
        One of

        - a SciPy sparse matrix or array, or a dense 2-D array: applied as
          ``M @ X``, with ``Mᴴ`` available; it is copied, so later changes to
          the caller's object have no effect;
        - a :class:`scipy.sparse.linalg.SuperLU` (``splu``/``spilu`` result):
          ``M X = solve(X)``, with ``trans="T"``/``"H"`` for the transposes;
        - any object with ``matvec``: a :class:`~scipy.sparse.linalg.LinearOperator`
          (``matmat``/``rmatmat`` are used when present) or an object whose
          ``matvec`` takes a 1-D vector (it is called column by column). The
          adjoint comes from ``rmatvec``, else ``.H.matvec``, else ``.T.matvec``
          (``Mᴴ x = conj(Mᵀ conj(x))``); without any of them ``has_adjoint`` is
          false and only forward solves can use it.
    n : int
        The order of ``A``.
    func : str
        Public function name used in error messages.

    Raises
    ------
    ValueError
        ``M.shape`` is not ``(n, n)``; an explicit matrix holds NaN or Inf
        (``NonFiniteInputError``).
    TypeError
        ``M`` is none of the above, or has a non-numeric dtype.

    Notes
    -----
    ``hermitian`` is true when the object has an attribute ``hermitian = True``
    (a promise by the caller that ``M = Mᴴ``; then ``rmatvec`` is ``matvec``
    and no adjoint needs to be supplied), or when ``M`` is an explicit matrix
    that equals its conjugate transpose exactly.

    ``X`` is handed to the caller's code as a copy, and the result is copied
    into a new array, so a ``matvec`` that writes into its argument or returns
    it (the identity) cannot corrupt the solver's vectors. An operator with a
    real ``dtype`` applied to a complex block is applied to the real and
    imaginary parts; one without ``dtype`` returns whatever dtype it computes,
    promoted with that of ``X``.

    :meth:`update` returns the same object: a caller's preconditioner does not
    follow new values of ``A``; pass a new one to rebuild it.
    """

    name = "user"

    def __init__(self, M, n, *, func="sparsediff.precond.UserPreconditioner"):
        t0 = time.perf_counter()
        self.func = func
        self.user = M
        self._kind = None
        shape = getattr(M, "shape", None)
        if isinstance(M, (list, tuple)):
            M = np.asarray(M)
        if sp.issparse(M) or isinstance(M, np.ndarray):
            self._init_matrix(M, n)
        elif isinstance(M, spla.SuperLU):
            self._init_superlu(M)
        elif hasattr(M, "matvec"):
            self._init_operator(M)
        else:
            hint = (" Wrap a function in scipy.sparse.linalg.LinearOperator."
                    if callable(M) else "")
            raise TypeError(
                f"`{func}`: `M` must be None, one of 'jacobi', 'ilu', 'amg', a "
                f"matrix, or an object with `matvec`; got "
                f"{type(M).__module__}.{type(M).__name__}.{hint}"
            )
        if shape is not None:
            shape = tuple(int(s) for s in shape)
        if shape is not None and shape != (n, n):
            raise ValueError(
                f"`{func}`: `M` must have the shape of `A`, ({n}, {n}); got {shape}."
            )
        self.shape = (n, n)
        if _flag(M, "hermitian"):
            self.hermitian = True
            self.has_adjoint = True
        self.setup_time = time.perf_counter() - t0

    # -- kinds --------------------------------------------------------------

    def _init_matrix(self, M, n):
        if isinstance(M, np.ndarray) and M.ndim != 2:
            raise ValueError(f"`{self.func}`: `M` must be 2-D; got shape {M.shape}.")
        dtype = data_dtype(M.dtype, self.func, "M")
        if sp.issparse(M):
            mat = sp.csr_array(M, dtype=dtype, copy=True)
            values = mat.data
        else:
            mat = np.array(M, dtype=dtype, copy=True)
            values = mat
        if not np.isfinite(values).all():
            raise NonFiniteInputError(
                f"`{self.func}`: `M` contains NaN or infinite values."
            )
        self._kind = "matrix"
        self._mat = mat
        self._mat_h = None
        self.dtype = dtype
        self.has_adjoint = True
        # bit for bit, not to rounding (the test on A, see sparsediff._symmetry):
        # a Hermitian M is applied as M for Mᴴ, so anything short of M = Mᴴ
        # exactly would make the adjoint solves use an operator other than the
        # adjoint of the caller's M
        self.hermitian = M.shape == (n, n) and is_exactly_hermitian(mat)

    def _init_superlu(self, lu):
        self._kind = "superlu"
        self._lu = lu
        self.dtype = np.dtype(lu.L.dtype)
        self.has_adjoint = True

    def _init_operator(self, M):
        self._kind = "operator"
        dtype = getattr(M, "dtype", None)
        self.dtype = None if dtype is None else data_dtype(dtype, self.func, "M")
        self._mv = M.matmat if hasattr(M, "matmat") else None
        self._rmv_block = None
        self._rmv = self._tmv = None
        if isinstance(M, spla.LinearOperator):
            self._rmv_block = M.rmatmat
            self._rmv = M.rmatvec
        elif hasattr(M, "rmatvec"):
            self._rmv = M.rmatvec
        elif hasattr(getattr(M, "H", None), "matvec"):
            self._rmv = M.H.matvec
        elif hasattr(getattr(M, "T", None), "matvec"):
            self._tmv = M.T.matvec
        self.has_adjoint = self._rmv is not None or self._tmv is not None
        if isinstance(M, spla.LinearOperator) and not _flag(M, "hermitian"):
            # a LinearOperator always has rmatvec; find out whether it works
            n = M.shape[0]
            try:
                M.rmatvec(np.zeros(n, dtype=self.dtype or np.float64))
            except NotImplementedError:
                self.has_adjoint = False
                self._rmv = self._rmv_block = None

    # -- application --------------------------------------------------------

    def _result_dtype(self, dtype):
        if self.dtype is None:
            # unknown dtype: X's, widened below by whatever the operator returns
            return np.result_type(dtype, np.float32)
        return super()._result_dtype(dtype)

    def _work_dtype(self, dtype):
        own = self.dtype
        if own is not None and not is_complex(own) and is_complex(dtype) \
                and self._kind != "matrix":
            # a real operator on a complex block: real and imaginary parts
            return real_dtype(dtype)
        if self._kind == "superlu":
            return np.result_type(own, dtype)
        return dtype

    def _apply_promoted(self, X, trans, out_dtype):
        work = np.dtype(self._work_dtype(out_dtype))
        if is_complex(out_dtype) and not is_complex(work):
            return super()._apply_promoted(X, trans, out_dtype)
        Y = np.asarray(self._apply(X.astype(work, copy=False), trans))
        # never drop an imaginary part the operator produced
        return np.asarray(Y, dtype=np.result_type(out_dtype, Y.dtype), order="C")

    def _apply(self, X, trans):
        kind = self._kind
        if kind == "matrix":
            if trans == "N":
                return np.asarray(self._mat @ X)
            if trans == "T":
                return np.asarray(self._mat.T @ X)
            if self._mat_h is None:
                mh = self._mat.conj().T
                self._mat_h = sp.csr_array(mh) if sp.issparse(mh) else mh.copy()
            return np.asarray(self._mat_h @ X)
        if kind == "superlu":
            return self._lu.solve(np.asfortranarray(X, dtype=self.dtype), trans=trans)
        # a caller's operator
        if trans == "H" and self.hermitian:
            trans = "N"  # the caller promised M = Mᴴ
        if trans == "T" and self.hermitian and self._tmv is None:
            return np.conj(self._apply(np.conj(X), "N"))
        if trans == "T" and self._tmv is None:
            return np.conj(self._apply(np.conj(X), "H"))
        if trans == "H" and self._rmv is None:
            return np.conj(self._apply(np.conj(X), "T"))
        block = {"N": self._mv, "H": self._rmv_block, "T": None}[trans]
        vec = {"N": self.user.matvec, "H": self._rmv, "T": self._tmv}[trans]
        return self._run(block, vec, X, trans)

    def _run(self, block, vec, X, trans):
        n, m = X.shape
        what = {"N": "matvec", "H": "rmatvec", "T": "T.matvec"}[trans]
        if block is not None:
            Y = np.asarray(block(X.copy()))
            if Y.shape != (n, m):
                Y = Y.reshape(n, m) if Y.size == n * m else Y
            self._check_out(Y, (n, m), what)
            return np.array(Y, copy=True)
        cols = []
        for j in range(m):
            y = np.asarray(vec(np.array(X[:, j], copy=True)))
            if y.shape == (n, 1):
                y = y.reshape(n)
            self._check_out(y, (n,), what)
            cols.append(y)
        dtype = np.result_type(X.dtype, *[c.dtype for c in cols])
        Y = np.empty((n, m), dtype=dtype)
        for j, y in enumerate(cols):
            Y[:, j] = y
        return Y

    def _check_out(self, Y, shape, what):
        if Y.shape != shape:
            raise ValueError(
                f"`{self.func}`: the preconditioner's `{what}` must return shape "
                f"{shape}; got {Y.shape}."
            )

    def update(self, mat):
        """The same preconditioner: a caller's ``M`` does not follow ``A``."""
        return self
