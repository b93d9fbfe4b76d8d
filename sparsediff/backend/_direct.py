"""Sparse direct factorizations from optional libraries (docs/direct.md).

SuiteSparse's CHOLMOD (``LLᴴ`` of a Hermitian positive definite matrix) and
UMFPACK (``LU`` with N, T and H solves), both reached through the ``kvxopt``
wheel, which bundles SuiteSparse (``pip install sparsediff[direct]``). Each
factor is built from the coordinates of ``A`` itself (``rows``, ``cols``,
``data``: canonical CSR, explicit zeros kept, so a later update with other
values on the same pattern reuses the symbolic analysis) and solves with
``op(A)`` for ``trans`` in ``"N"``, ``"T"``, ``"H"``.

The library calls are serialized by one lock per factor: the bindings share
CHOLMOD's workspace between calls, so two threads never run in it at once.
"""

import threading

import numpy as np

__all__ = ["EXTRA", "LIBRARIES", "LibraryMissingError", "NotPositiveDefiniteError",
           "available", "factorize", "require"]

#: The optional factorization libraries, in the order ``library="auto"`` tries them.
LIBRARIES = ("cholmod", "umfpack")

#: The extra that installs them.
EXTRA = "sparsediff[direct]"

#: The dtypes the libraries factor in (double precision, real and complex).
DTYPES = (np.dtype(np.float64), np.dtype(np.complex128))


class LibraryMissingError(ImportError):
    """An optional factorization library is not installed."""


class NotPositiveDefiniteError(ArithmeticError):
    """CHOLMOD met a pivot that is not positive: ``A`` is not positive definite."""


def _kvxopt():
    try:
        import kvxopt  # noqa: F401
        from kvxopt import cholmod, umfpack
    except ImportError:
        return None
    return cholmod, umfpack


_MODULES = None
_MODULES_LOCK = threading.Lock()


def require(library, func):
    """Raise :class:`LibraryMissingError` (naming the extra) if ``library`` is
    not installed."""
    _modules(func, library)


def _modules(func, library):
    global _MODULES
    if _MODULES is None:
        with _MODULES_LOCK:
            if _MODULES is None:
                _MODULES = _kvxopt() or False
    if not _MODULES:
        raise LibraryMissingError(
            f"`{func}`: the direct solver library {library!r} (SuiteSparse) is not "
            f"installed: `pip install {EXTRA}` (the kvxopt wheel, which bundles "
            f"SuiteSparse), or use library='superlu' (SciPy, always available).")
    return _MODULES


def available(library):
    """Whether ``library`` (``"cholmod"``, ``"umfpack"``) can be used here."""
    if library == "superlu":
        return True
    try:
        _modules("sparsediff", library)
    except LibraryMissingError:
        return False
    return library in LIBRARIES


def _spmatrix(n, rows, cols, data):
    from kvxopt import matrix, spmatrix

    return spmatrix(matrix(data), matrix(rows), matrix(cols), (n, n))


def _dense(b, dtype):
    from kvxopt import matrix

    return matrix(np.asfortranarray(b, dtype=dtype))


class _Factor:
    """Common parts: coordinates, dtype and the lock around library calls."""

    library = "base"

    def __init__(self, n, rows, cols, data):
        self.n = n
        self.dtype = np.dtype(data.dtype)
        if self.dtype not in DTYPES:
            raise TypeError(f"{self.library} factors float64 or complex128 values; "
                            f"got {self.dtype}")
        self._lock = threading.Lock()
        self._K = _spmatrix(n, rows, cols, data)

    def solve(self, b, trans="N"):
        """``op(A)⁻¹ b`` for a 1-D or 2-D ``b`` of the factor's dtype (a new array)."""
        b2 = b.reshape(self.n, -1)
        if b2.shape[1] == 0:
            return np.zeros(b.shape, dtype=self.dtype)
        B = _dense(b2, self.dtype)
        with self._lock:
            self._solve(B, trans)
        return np.array(B, dtype=self.dtype).reshape(b.shape)


class CholmodFactor(_Factor):
    """``P A Pᵀ = L Lᴴ`` of a Hermitian positive definite ``A`` (CHOLMOD).

    Only the lower triangle of ``A`` is read: the caller has checked that
    ``A`` is Hermitian. ``analysis`` is the fill-reducing permutation of an
    earlier factor of the same pattern (``self.analysis``), which is used as
    given. Raises :class:`NotPositiveDefiniteError` when a pivot is not
    positive (CHOLMOD stops there and leaves an incomplete factor: the binding
    does not raise, so the factor is probed by one solve).
    """

    library = "cholmod"

    def __init__(self, n, rows, cols, data, analysis=None, *, func):
        cholmod, _ = _modules(func, self.library)
        # CHOLMOD reads the lower triangle only: pass just that (half the
        # conversion; the analysis and the factor are the same)
        lower = rows >= cols
        super().__init__(n, rows[lower], cols[lower], data[lower])
        from kvxopt import matrix

        with self._lock:
            if analysis is None:
                F = cholmod.symbolic(self._K, uplo="L")
            else:
                F = cholmod.symbolic(self._K, p=matrix(analysis), uplo="L")
            try:
                cholmod.numeric(self._K, F)
                # an incomplete factor (a non-positive pivot) refuses to solve,
                # even with no right-hand side: the check costs no solve
                cholmod.solve(F, matrix(np.zeros((n, 0), dtype=self.dtype), (n, 0)))
            except ArithmeticError as exc:
                raise NotPositiveDefiniteError(
                    f"CHOLMOD: the matrix is not positive definite ({exc})") from None
        self._F = F
        self._cholmod = cholmod
        self._perm = analysis

    @property
    def analysis(self):
        """The fill-reducing permutation ``P`` (to analyse new values with)."""
        if self._perm is None:
            P = _dense(np.arange(self.n, dtype=np.float64)[:, None], self.dtype)
            with self._lock:
                self._cholmod.solve(self._F, P, sys=8)       # P·[0, 1, …, n−1]
            self._perm = np.array(P).real.ravel().astype(np.int64)
        return self._perm

    def solve(self, b, trans="N"):
        # Aᴴ = A; Aᵀ = conj(A): Aᵀ x = b ⇔ A conj(x) = conj(b)
        if trans == "T" and self.dtype.kind == "c":
            return np.conj(super().solve(np.conj(b), "N"))
        return super().solve(b, "N")

    def _solve(self, B, trans):
        self._cholmod.solve(self._F, B)


class UmfpackFactor(_Factor):
    """``P R A Q = L U`` (UMFPACK), solves with ``A``, ``Aᵀ`` and ``Aᴴ``.

    ``analysis`` is the symbolic object of an earlier factor of the same
    pattern (``self.analysis``): only the numeric factorization is redone.
    Raises ``ArithmeticError`` for a matrix singular to UMFPACK's pivoting.
    """

    library = "umfpack"

    def __init__(self, n, rows, cols, data, analysis=None, *, func):
        _, umfpack = _modules(func, self.library)
        super().__init__(n, rows, cols, data)
        with self._lock:
            if analysis is None:
                analysis = umfpack.symbolic(self._K)
            self._N = umfpack.numeric(self._K, analysis)
        self.analysis = analysis
        self._umfpack = umfpack

    def _solve(self, B, trans):
        self._umfpack.solve(self._K, self._N, B, trans={"N": "N", "T": "T",
                                                         "H": "C"}[trans])


def factorize(library, n, rows, cols, data, analysis=None, *, func):
    """A factor of ``library`` (see the module); ``analysis`` as its class says."""
    cls = {"cholmod": CholmodFactor, "umfpack": UmfpackFactor}[library]
    return cls(n, rows, cols, data, analysis, func=func)
