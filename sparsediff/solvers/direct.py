"""Direct solves, one factorization for N, T and H (docs/direct.md).

The factorization is the fastest one installed (``library="auto"``):
CHOLMOD's ``LLᴴ`` for a Hermitian matrix with a positive diagonal, MKL
Pardiso's ``LU`` for a real matrix whose graph is not two-dimensional (the
optional extra ``sparsediff[pardiso]``), UMFPACK's ``LU`` otherwise (CHOLMOD
and UMFPACK: SuiteSparse, the optional extra ``sparsediff[direct]``), and
SuperLU (SciPy, always there) without the extras, for single precision and
below ``LIBRARY_MIN_N`` unknowns, where SciPy's smaller overhead wins. The
forward solve factorizes once; the adjoint solve (``trans="H"``) runs on the
*same* factors, so a gradient costs two triangular solves and one pattern
kernel, not a second factorization. ``update`` keeps the symbolic analysis
(ordering, elimination tree) of the pattern: SuperLU's column ordering,
UMFPACK's symbolic object, CHOLMOD's permutation.

A Hermitian matrix that is not positive definite is found by CHOLMOD itself
(a pivot that is not positive stops the factorization): ``auto`` then
factorizes it by LU, an explicit ``library="cholmod"`` raises ``ValueError``
saying so. No answer ever comes from an incomplete Cholesky factor.

Conditioning: every solve reports ``info.condition_estimate``, an estimate
of the 1-norm condition number ``κ₁(op(A)) = ‖op(A)‖₁·‖op(A)⁻¹‖₁`` that does
not depend on the right-hand side: ``‖op(A)‖₁`` exactly (O(nnz), once) and
``‖op(A)⁻¹‖₁`` by Hager–Higham's estimator (a handful of solves on the
factors, see ``_conditioning``), computed on first use once per factorization
(per precision, and once for N and once for T/H unless ``A = Aᵀ`` or
``A = Aᴴ``, where ``‖A⁻ᵀ‖₁ = ‖A⁻¹‖₁``) and cached. A matrix singular
to working precision (``_conditioning.SINGULAR_BOUND``) is reported as
``reason="singular"`` with the computed ``x``.

Every solve also reports ``info.error_estimate``, LAPACK's forward error
bound (``xGERFS``' FERR, normwise in the 1-norm): with the computed residual
``r = b − op(A) x̂`` and ``w = |r| + (k+1)·eps·(|op(A)||x̂| + |b|)`` (the
true residual up to the rounding of computing ``r``, ``k`` the most stored
entries in a row or column), ``‖x − x̂‖₁ ≤ ‖op(A)⁻¹‖₁·‖w‖₁``, divided by
``‖x̂‖₁`` (largest over columns). It is as reliable as the estimate of
``‖op(A)⁻¹‖₁``, which is almost always exact or a slight underestimate.
"""

import threading

import numpy as np
import scipy.sparse as sp

from .._dtypes import real_dtype
from ._common import column_norms, make_info
from ._conditioning import (
    SINGULAR_BOUND,
    equilibration,
    inverse_norm1,
    positivity_margin,
)

__all__ = ["AUTO_CHOLMOD_MAX_N_2D", "AUTO_CHOLMOD_MAX_N_3D", "AUTO_PARDISO_SPD_MIN_N",
           "AUTO_SUPERLU_MAX_N_3D",
           "LIBRARIES", "LIBRARY_MIN_N", "DirectEngine", "graph_dimension",
           "local_graph_dimension",
           "spd_prefers_direct"]

#: ``library=`` values of ``method=("direct", {"library": ...})``
LIBRARIES = ("auto", "superlu", "cholmod", "umfpack", "pardiso")

#: ``library="auto"`` uses SuperLU below this many unknowns (measured in
#: docs/direct.md: about a tie on 2-D Poisson 32², while CHOLMOD is 4× faster
#: on 3-D Poisson 12³, n = 1,728; below, SciPy's smaller call overhead wins)
LIBRARY_MIN_N = 1_000

#: iterative refinement of UMFPACK's and Pardiso's solves stops once the
#: componentwise backward error ``maxᵢ |b − A x̂|ᵢ / (|A||x̂| + |b|)ᵢ`` is at
#: most this many ``eps`` (UMFPACK's default stops at one ``eps``: on complex
#: Helmholtz 256² one step gives 1.1 eps, and UMFPACK spends a second solve and
#: residual to find that the next step no longer halves it)
REFINE_BACKWARD_ERROR = 2

#: ``library="auto"`` factorizes a real Hermitian positive-diagonal matrix
#: whose graph does not look two-dimensional (``local_graph_dimension``) by MKL
#: Pardiso's LU from this many unknowns on, when it is installed, and by
#: CHOLMOD below (3-D Poisson, forward + gradient, docs/direct.md: about a tie
#: at 32³ = 32,768, Pardiso 14 % faster at 40³ and 36 % at 48³ = 110,592, its
#: two threads against CHOLMOD's one on a quiet 2-core machine)
AUTO_PARDISO_SPD_MIN_N = 48_000

#: what the optional libraries factor in; other precisions use SuperLU
_LIBRARY_DTYPES = (np.dtype(np.float64), np.dtype(np.complex128))


#: bits of the flags of :func:`matrix_facts` (those of the ``direct_facts`` kernels)
POSITIVE_DIAGONAL, Z_MATRIX, HERMITIAN, SYMMETRIC = 1, 2, 4, 8


def matrix_facts(mat):
    """``(‖A‖₁, ‖A‖∞, most stored entries in a row or column, flags)`` of a
    canonical matrix, in one pass (the backend's ``direct_facts`` kernel).

    ``flags`` has the bits ``POSITIVE_DIAGONAL`` (every diagonal entry stored,
    real and positive), ``Z_MATRIX`` (real values, such a diagonal and no
    positive off-diagonal entry), ``HERMITIAN`` (``A == Aᴴ`` exactly, pattern
    and values) and ``SYMMETRIC`` (``A == Aᵀ`` exactly). Computed once per
    matrix (``MatrixInput.memo``).
    """
    if mat.shape[0] == 0:
        return 0.0, 0.0, 0, 0
    memo = mat.memo
    facts = memo.get("direct_facts")
    if facts is None:
        norm1, norminf, most, flags = mat.backend.kernels.direct_facts(
            mat.indptr, mat.indices, mat.data)
        if mat.data.dtype.kind != "f":
            flags &= ~Z_MATRIX
        facts = memo["direct_facts"] = (float(norm1), float(norminf), int(most),
                                        int(flags))
    return facts


def hermitian_positive_diagonal(mat):
    """``A == Aᴴ`` exactly (pattern and values) with a real positive diagonal.

    The Cholesky precondition (O(nnz), once per matrix): CHOLMOD reads one
    triangle only, so a matrix Hermitian only to rounding is factorized by LU.
    """
    want = HERMITIAN | POSITIVE_DIAGONAL
    return mat.shape[0] > 0 and matrix_facts(mat)[3] & want == want


def _transpose_order(mat):
    """``p`` such that ``Aᵀ`` in canonical CSR is ``mat``'s pattern with values
    ``mat.data[p]``, when the pattern of A is symmetric; ``None`` otherwise.

    One pass gives both the structural test and the permutation that the
    value tests (``A = Aᴴ``, ``A = Aᵀ``) need. Small patterns: the sorting
    order of the keys ``j·n + i`` of Aᵀ, in a few NumPy calls (no SciPy
    constructors: small solves are overhead-bound). Large ones: SciPy's O(nnz)
    transpose of the entry numbers (a sort would be O(nnz log nnz)).
    """
    n = mat.shape[0]
    if mat.nnz <= 50_000:
        rows = mat.rows.astype(np.int64)
        cols = mat.indices.astype(np.int64)
        keys_t = cols * n + rows
        perm = np.argsort(keys_t, kind="stable")
        return perm if np.array_equal(rows * n + cols, keys_t[perm]) else None
    entries = sp.csr_array((np.arange(mat.nnz, dtype=np.int64), mat.indices,
                            mat.indptr), shape=mat.shape)
    t = entries.T.tocsr()        # SciPy's csr_tocsc: sorted indices per row
    t.sort_indices()
    if not (np.array_equal(t.indptr, mat.indptr)
            and np.array_equal(t.indices, mat.indices)):
        return None
    return t.data


#: ``method="auto"`` with CHOLMOD installed solves an exactly Hermitian
#: matrix with a positive diagonal whose graph looks two-dimensional
#: (:func:`graph_dimension` below ``AUTO_CHOLMOD_2D_DIMENSION``) directly up to
#: this many unknowns, instead of CG + AMG (measured in docs/direct.md: setup +
#: forward + gradient on 2-D Poisson, CHOLMOD ahead by 1.3× at 512², 2.9× at
#: 768² and 1.8× at 1024² = 1,048,576 unknowns, the largest size measured)
AUTO_CHOLMOD_MAX_N_2D = 1_100_000

#: ``method="auto"`` solves a matrix of the SPD heuristic whose graph does not
#: look two-dimensional by CG + AMG past this many unknowns: with CHOLMOD
#: (3-D Poisson: CHOLMOD ahead at 4,096, about even from 8,000 to 13,824,
#: 3.5× behind at 32,768) ...
AUTO_CHOLMOD_MAX_N_3D = 12_000
#: ... and with SuperLU (3-D Poisson: even at 1,000, 2.5× behind at 1,728,
#: 10× at 8,000)
AUTO_SUPERLU_MAX_N_3D = 1_000

#: graphs below this estimated dimension count as two-dimensional
AUTO_CHOLMOD_2D_DIMENSION = 2.0


def graph_dimension(mat):
    """``log n / log e``, ``e`` the eccentricity of a pseudo-peripheral node.

    About 1.8 for 2-D grids and 2.2–2.4 for 3-D grids at the sizes where the
    choice matters: the fill of a Cholesky factor grows like ``n log n`` in
    2-D and ``n^(4/3)`` in 3-D, so this says whether a direct solve keeps up
    with CG + AMG. Two breadth-first searches, O(nnz log n), once per
    pattern (``MatrixInput.pattern_memo``).
    """
    from scipy.sparse.csgraph import dijkstra

    memo = mat.pattern_memo
    if "graph_dimension" in memo:
        return memo["graph_dimension"]
    n = mat.shape[0]
    graph = sp.csr_array((np.ones(mat.nnz), mat.indices, mat.indptr), shape=mat.shape)
    dist = dijkstra(graph, unweighted=True, indices=0)
    far = int(np.argmax(np.where(np.isfinite(dist), dist, -1.0)))
    dist = dijkstra(graph, unweighted=True, indices=far)
    ecc = float(dist[np.isfinite(dist)].max(initial=0.0))
    memo["graph_dimension"] = dim = float(np.log(max(n, 2)) / np.log(max(ecc, 2.0)))
    return dim


def local_graph_dimension(mat, near=4, far=8):
    """The growth exponent ``log(N(far) / N(near)) / log(far / near)`` of the
    number ``N(r)`` of nodes within ``r`` hops of the middle node: about 1.7–1.8
    on 2-D grids and 2.2–2.7 on 3-D ones, whatever the numbering of the nodes
    (measured on 5- and 7-point stencils, natural and randomly permuted).

    A breadth-first search cut at ``far`` hops (about 2 ms at n = 65,536,
    against 25 ms for :func:`graph_dimension`'s two complete searches), for
    the choice between two factorizations, where a full search would cost a
    tenth of the factorization it helps to choose. Once per pattern.
    """
    from scipy.sparse.csgraph import dijkstra

    memo = mat.pattern_memo
    if "local_graph_dimension" in memo:
        return memo["local_graph_dimension"]
    n = mat.shape[0]
    graph = sp.csr_array((np.ones(mat.nnz), mat.indices, mat.indptr), shape=mat.shape)
    dist = dijkstra(graph, unweighted=True, indices=n // 2, limit=far + 0.5)
    inner = max(int(np.count_nonzero(dist <= near)), 1)
    outer = max(int(np.count_nonzero(dist <= far)), 1)
    memo["local_graph_dimension"] = dim = float(np.log(outer / inner)
                                               / np.log(far / near))
    return dim


def spd_prefers_direct(mat, max_n):
    """For a matrix of the SPD heuristic, whether ``method="auto"`` should
    factorize it (else CG + AMG); ``max_n`` is ``AUTO_DIRECT_MAX_N_SPD``.

    Direct up to ``max_n`` unknowns for graphs that look two-dimensional, and
    with CHOLMOD (exactly Hermitian, positive diagonal, installed) up to
    ``AUTO_CHOLMOD_MAX_N_2D``; other graphs (3-D) only up to
    ``AUTO_CHOLMOD_MAX_N_3D`` (CHOLMOD) or ``AUTO_SUPERLU_MAX_N_3D``.
    """
    n = mat.shape[0]
    cholmod = bool(n >= LIBRARY_MIN_N
                   and "cholmod" in mat.backend.direct_libraries()
                   and hermitian_positive_diagonal(mat))
    limit_3d = AUTO_CHOLMOD_MAX_N_3D if cholmod else AUTO_SUPERLU_MAX_N_3D
    if n <= min(limit_3d, max_n):
        return True
    if graph_dimension(mat) >= AUTO_CHOLMOD_2D_DIMENSION:
        return False
    return n <= max_n or (cholmod and n <= AUTO_CHOLMOD_MAX_N_2D)


def _auto_lu(mat, installed, dtype):
    """The LU library of ``library="auto"``: MKL Pardiso for a real matrix
    whose graph does not look two-dimensional (3-D problems: 1.3–1.7× faster
    than UMFPACK in forward + gradient, docs/direct.md), UMFPACK otherwise
    (2-D graphs, where its factorization is faster, and complex matrices,
    where Pardiso's solves are 2× slower), SuperLU without either."""
    pardiso = "pardiso" in installed and np.dtype(dtype).kind == "f"
    if "umfpack" not in installed:
        return "pardiso" if pardiso else "superlu"
    if pardiso and graph_dimension(mat) >= AUTO_CHOLMOD_2D_DIMENSION:
        return "pardiso"
    return "umfpack"


class _SuperLUFactor:
    """SuperLU's factors of ``B = Aᵀ`` seen as a factor of ``A`` (solve N/T/H)."""

    library = "superlu"

    def __init__(self, lu):
        self.lu = lu

    def solve(self, b, trans="N"):
        # we factor B = Aᵀ (see DirectEngine._factor): A x = b is Bᵀ x = b, ...
        if trans == "H":
            # Aᴴ = conj(B): solve B y = conj(b), x = conj(y)
            return np.conj(self.lu.solve(np.conj(b), trans="N"))
        return self.lu.solve(b, trans="T" if trans == "N" else "N")


def _diagonally_dominant(mat, absdata):
    """``|a_ii| ≥ Σ_{j≠i} |a_ij|`` for every row, with a nonzero diagonal (O(nnz))."""
    n = mat.shape[0]
    on_diag = mat.rows == mat.indices
    diag = np.zeros(n)
    np.add.at(diag, mat.indices[on_diag], absdata[on_diag])
    off = np.bincount(mat.rows[~on_diag], weights=absdata[~on_diag], minlength=n)
    return bool(np.all(diag > 0) and np.all(diag * (1 + 1e-12) >= off))


class _Background(threading.Thread):
    """``fn(*args)`` on a thread of its own; :meth:`result` joins and returns
    its value or raises its exception."""

    def __init__(self, fn, *args):
        super().__init__(daemon=True)
        self._call = (fn, args)
        self._value = self._error = None
        self.start()

    def run(self):
        fn, args = self._call
        try:
            self._value = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            self._error = exc

    def result(self):
        self.join()
        if self._error is not None:
            raise self._error
        return self._value


class DirectEngine:
    """A sparse factorization of one matrix, shared by forward and adjoint solves.

    Thread-safe: SuperLU's solves release the GIL and do not share scratch
    space, the optional libraries' calls are serialized per factor (see
    ``backend/_direct.py``); factorizations in other precisions are created
    under a lock.

    Parameters
    ----------
    mat : MatrixInput
        Validated matrix (canonical CSR); its dtype is the factor's dtype.
    permc_spec : str or None
        SuperLU column ordering. ``None`` picks ``"MMD_AT_PLUS_A"`` for a
        structurally symmetric, weakly row-diagonally-dominant matrix (about
        half the fill of COLAMD on 2-D Poisson, 2× faster) and ``"COLAMD"``
        otherwise. A symmetric ordering is only good if the diagonal pivots
        survive partial pivoting: diagonal dominance guarantees it (we factor
        ``B = Aᵀ``, which is then column-dominant, a property Gaussian
        elimination preserves), while on e.g. the indefinite ``I − 0.2·L``
        (2-D Laplacian L, 128²) pivoting wrecks the minimum-degree order:
        65 s and 50× the fill, against 0.15 s with COLAMD.
    library : str
        One of :data:`LIBRARIES` (see the module): ``"auto"`` picks CHOLMOD,
        Pardiso, UMFPACK or SuperLU; an explicit optional library that is not installed
        raises ``ImportError`` naming the extra; ``"cholmod"`` on a matrix that
        is not exactly Hermitian with a positive diagonal, or that CHOLMOD
        finds not positive definite, raises ``ValueError``.
    analysis : tuple or None
        ``(library, analysis)`` of an earlier engine on the same pattern
        (``update``): its symbolic analysis is reused.

    Attributes
    ----------
    library : str
        The library of the factor in the matrix's precision (``"superlu"``,
        ``"cholmod"``, ``"umfpack"`` or ``"pardiso"``).
    fallback : str or None
        Why the engine left its first choice (CHOLMOD found the matrix not
        positive definite under ``auto``; Pardiso perturbed pivots, under any
        ``library``).
    """

    method = "direct"
    iterative = False

    def __init__(self, mat, permc_spec=None, *, func="sparsediff.solve",
                 library="auto", analysis=None):
        self.mat = mat
        self.func = func
        self.dtype = mat.dtype
        n = mat.shape[0]
        if library not in LIBRARIES:
            raise ValueError(
                f"`{func}`: method='direct' option `library` must be one of "
                f"{LIBRARIES}; got {library!r}.")
        limit = np.iinfo(np.intc).max
        if n > limit or mat.nnz > limit:
            raise ValueError(
                f"SuperLU (SciPy's direct solver) supports at most {limit} rows and "
                f"stored entries (32-bit indices); got n = {n}, nnz = {mat.nnz}. "
                f"Use an iterative method.")
        self.requested = library
        self.fallback = None
        self._torder = None        # (transpose order or None,), once computed
        # one pass over the matrix: ‖A‖₁ (largest column sum) and ‖A‖∞ = ‖Aᵀ‖₁
        # (largest row sum), for the condition estimates of N and of T/H
        # solves; the most stored entries in a row or a column (rounding of a
        # residual); the diagonal, Z-matrix and transpose tests (flags)
        self._norm1, self._norminf, self._row_nnz, self._flags = matrix_facts(mat)
        self._absdata_cache = None
        self.library = self._choose(library)
        # SuperLU's column ordering, chosen on first use (the optional
        # libraries order by themselves: no O(nnz) checks for them)
        self._permc_spec = permc_spec
        self._analysis = analysis if analysis and analysis[0] == self.library else None
        self._lock = threading.Lock()
        self._factors = {}
        # condition estimates, by (factor dtype, "N" | "T" | "equilibrated")
        self._cond_lock = threading.Lock()
        self._inverse_norms = {}
        # op(A)⁻¹·(1, …, 1) by (factor dtype, op), shared by the estimates
        self._ones_products = {}
        self._symmetric = None
        self.singular = False
        self._factor(self.dtype)

    @property
    def permc_spec(self):
        """SuperLU's column ordering (see the class), chosen on first use."""
        if self._permc_spec is None:
            mat = self.mat
            symmetric_ok = (mat.shape[0] > 1
                            and _diagonally_dominant(mat, np.abs(mat.data))
                            and self._transpose_order() is not None)
            self._permc_spec = "MMD_AT_PLUS_A" if symmetric_ok else "COLAMD"
        return self._permc_spec

    def _choose(self, library):
        """The library for this matrix (see the class)."""
        mat, func = self.mat, self.func
        if library == "superlu":
            return "superlu"
        installed = mat.backend.direct_libraries()
        if library != "auto":
            if library not in installed:
                from ..backend._direct import require

                require(library, func)
            if library == "cholmod" and not hermitian_positive_diagonal(mat):
                raise ValueError(
                    f"`{func}`: library='cholmod' needs a Hermitian positive definite "
                    f"matrix, and this one is not exactly Hermitian with a real "
                    f"positive diagonal. Use library='umfpack' or 'auto'.")
            return library
        if (mat.shape[0] < LIBRARY_MIN_N or not installed
                or np.dtype(self.dtype) not in _LIBRARY_DTYPES):
            return "superlu"
        if "cholmod" in installed and hermitian_positive_diagonal(mat):
            if ("pardiso" in installed and np.dtype(self.dtype).kind == "f"
                    and mat.shape[0] >= AUTO_PARDISO_SPD_MIN_N
                    and local_graph_dimension(mat) >= AUTO_CHOLMOD_2D_DIMENSION):
                return "pardiso"
            return "cholmod"
        return _auto_lu(mat, installed, self.dtype)

    @property
    def _absdata(self):
        """``|A|`` (the values, float64), for the residuals' error bounds;
        computed on the first solve."""
        if self._absdata_cache is None:
            self._absdata_cache = np.abs(self.mat.data).astype(np.float64, copy=False)
        return self._absdata_cache

    def _factor(self, dtype):
        """The factorization in ``dtype`` (created on first use).

        Raises
        ------
        MemoryError
            The library ran out of memory (fill-in); the message gives n, nnz,
            the library and what to use instead. No factor is cached.
        """
        lu = self._factors.get(dtype)
        if lu is not None or self.singular:
            return lu
        with self._lock:
            lu = self._factors.get(dtype)
            if lu is not None:
                return lu
            mat = self.mat
            if mat.shape[0] == 0:
                lu = None
            elif mat.nnz == 0:
                self.singular = True
                return None
            else:
                library = (self.library if np.dtype(dtype) in _LIBRARY_DTYPES
                           else "superlu")
                try:
                    lu = self._new_factor(library, dtype)
                except ArithmeticError:
                    # an exactly singular matrix (SuperLU, UMFPACK)
                    self.singular = True
                    return None
                except MemoryError as exc:
                    # nothing is cached: a later call (or another dtype) retries
                    name = {"superlu": "SuperLU (SciPy's direct solver)",
                            "cholmod": "CHOLMOD", "umfpack": "UMFPACK",
                            "pardiso": "MKL Pardiso"}.get(library, library)
                    order = (f" (column ordering permc_spec={self.permc_spec!r})"
                             if library == "superlu" else "")
                    kind = "Cholesky" if library == "cholmod" else "LU"
                    raise MemoryError(
                        f"{name} ran out of memory factorizing the "
                        f"{np.dtype(dtype).name} matrix with n = {mat.shape[0]}, "
                        f"nnz = {mat.nnz}{order}: the fill-in of the {kind} factors "
                        f"did not fit in memory ({str(exc) or 'no message'}). Use "
                        f"an iterative method instead, e.g. method='cg' (Hermitian "
                        f"positive definite A) or method='gmres', with M='amg' or "
                        f"M='ilu'.") from exc
            self._factors[dtype] = lu
            return lu

    def _new_factor(self, library, dtype):
        """A new factor by ``library`` (under ``self._lock``); ``ArithmeticError``
        for an exactly singular matrix."""
        mat = self.mat
        if library == "superlu":
            # SuperLU wants CSC; the transpose trick avoids SciPy's conversion
            # copy: CSC of Aᵀ has A's CSR arrays, so factor Aᵀ and swap trans.
            csc = sp.csc_array(
                (mat.data.astype(dtype, copy=False), mat.indices, mat.indptr),
                shape=mat.shape)
            try:
                return _SuperLUFactor(mat.backend.lu(csc, permc_spec=self.permc_spec,
                                                     func=self.func))
            except RuntimeError as exc:
                if "singular" in str(exc).lower():
                    raise ArithmeticError(str(exc)) from None
                raise
        analysis = self._analysis[1] if self._analysis else None
        if library == "cholmod":
            # CHOLMOD reads the lower triangle only: read it off the upper
            # one in compressed-column order, the order CHOLMOD's matrix is
            # built in (A = Aᴴ exactly, checked)
            rows, cols, data = mat.backend.kernels.direct_lower(
                mat.indptr, mat.indices, mat.data.astype(dtype, copy=False))
        else:
            rows = mat.rows.astype(np.int64)
            cols = mat.indices.astype(np.int64)
            data = mat.data.astype(dtype, copy=False)
        from ..backend._direct import NotPositiveDefiniteError, PerturbedPivotsError

        try:
            return mat.backend.direct_factor(library, mat.shape[0], rows, cols, data,
                                             analysis, func=self.func)
        except PerturbedPivotsError as exc:
            # Pardiso's static pivoting replaced tiny pivots: factors of another
            # matrix, blind to singularity. Partial pivoting instead, and say why.
            installed = mat.backend.direct_libraries()
            self.library = "umfpack" if "umfpack" in installed else "superlu"
            self.fallback = (f"{exc} (static pivoting); factorized by "
                             f"{self.library} with partial pivoting")
            self._analysis = None
            return self._new_factor(self.library, dtype)
        except NotPositiveDefiniteError as exc:
            if self.requested == "cholmod":
                raise ValueError(
                    f"`{self.func}`: library='cholmod' needs a Hermitian positive "
                    f"definite matrix; {exc}: the matrix is indefinite or singular. "
                    f"Use library='umfpack' or 'auto' (LU).") from None
            # auto: LU for every precision of this matrix, and say why
            self.fallback = f"{exc}; factorized by LU"
            installed = mat.backend.direct_libraries()
            self.library = _auto_lu(mat, installed, self.dtype)
            self._analysis = None
            return self._new_factor(self.library, dtype)

    def analysis(self):
        """``(library, symbolic analysis)`` of this pattern, for ``update``."""
        lu = self._factors.get(np.dtype(self.dtype))
        if self.library == "superlu" or lu is None:
            return None
        return (self.library, lu.analysis)

    def solve(self, b, *, x0=None, trans="N", rtol=None, atol=None, maxiter=None,
              callback=None):
        """Solve ``op(A) x = b`` for a 2-D ``b``; returns ``(x, info)``.

        ``x0``, ``rtol``, ``atol``, ``maxiter`` and ``callback`` are accepted for
        a uniform engine interface and ignored: a direct solve is exact up to
        rounding (its true residual is still reported).
        """
        n, m = b.shape
        is_1d = False
        factor_dtype = np.result_type(self.dtype, real_dtype(b.dtype))
        lu = self._factor(factor_dtype)
        rhs_norm = column_norms(b)
        if n == 0:
            x = np.zeros_like(b)
            return x, make_info(np.ones(m, bool), np.zeros(m), np.zeros(m), rhs_norm,
                                self.method, [], is_1d, trans)
        if lu is None:
            x = np.full_like(b, np.nan)
            return x, make_info(np.zeros(m, bool), np.zeros(m), np.full(m, np.nan),
                                rhs_norm, self.method, ["singular"], is_1d, trans)
        kind = "N" if trans == "N" else "T"
        estimate = None
        if (getattr(lu, "concurrent_solves", False)
                and self._cached_inverse_norm(factor_dtype, kind) is None):
            # the first solve of this kind: the condition estimate's
            # sequential solves run beside the caller's solve and refinement
            # (the library's solves release the GIL and share the factor)
            estimate = _Background(self._inverse_norm, factor_dtype, kind)
        steps = getattr(lu, "refine_steps", 0)
        solve = lu.solve_unrefined if steps else lu.solve
        x = self._apply(solve, b, trans, factor_dtype)
        x, residual, wn, xn = self._refine(solve, steps, x, b, trans, factor_dtype)
        inv_norm = (estimate.result() if estimate is not None
                    else self._inverse_norm(factor_dtype, kind))
        kappa = (self._norm1 if kind == "N" else self._norminf) * inv_norm
        singular = self._singular_to_working_precision(factor_dtype, kappa)
        ferr = float(self._ferr(wn, xn, inv_norm).max(initial=0.0))
        finite = np.isfinite(x).all(axis=0) & ~singular
        reasons = ["converged" if f else "singular" for f in finite]
        return x, make_info(finite, np.zeros(m), residual, rhs_norm, self.method,
                            reasons, is_1d, trans, condition_estimate=kappa,
                            error_estimate=ferr)

    @staticmethod
    def _apply(solve, b, trans, factor_dtype):
        """``op(A)⁻¹ b`` by the factor's ``solve``, as a C-ordered array of
        ``b``'s dtype (a complex ``b`` with real factors: both parts at once)."""
        if np.iscomplexobj(b) and not np.iscomplexobj(np.empty(0, factor_dtype)):
            m = b.shape[1]
            bf = np.asfortranarray(np.concatenate([b.real, b.imag], axis=1),
                                   dtype=factor_dtype)
            y = solve(bf, trans)
            return (y[:, :m] + 1j * y[:, m:]).astype(b.dtype)
        x = solve(b.astype(factor_dtype, copy=False), trans)
        return np.ascontiguousarray(x, dtype=b.dtype)

    def _refine(self, solve, steps, x, b, trans, factor_dtype):
        """Iterative refinement in the manner of UMFPACK's default, with our
        one-pass residual: at most ``steps`` steps ``x ← x + op(A)⁻¹ r`` on
        the (unrefined) factor solves, while the componentwise backward error
        exceeds ``REFINE_BACKWARD_ERROR·eps`` and halves at each step; a step
        that makes it larger is undone. Returns ``(x, ‖r‖₂, ‖w‖₁, ‖x‖₁)`` per
        column (``w`` of LAPACK's forward error bound, see :meth:`_residual`).
        """
        residual, wn, xn, berr, res = self._residual(x, b, trans)
        target = REFINE_BACKWARD_ERROR * float(np.finfo(x.dtype).eps)
        active = np.isfinite(x).all(axis=0) & ~(berr <= target)
        for _ in range(steps):
            if not active.any():
                break
            cols = np.flatnonzero(active)
            x_new = x.copy()
            x_new[:, cols] += self._apply(solve, np.ascontiguousarray(res[:, cols]),
                                          trans, factor_dtype)
            new = self._residual(x_new, b, trans)
            better = active & (new[3] < berr)
            halved = better & (new[3] <= berr / 2)
            x[:, better] = x_new[:, better]
            res[:, better] = new[4][:, better]
            residual, wn, xn, berr = (np.where(better, new[k], old) for k, old in
                                      enumerate((residual, wn, xn, berr)))
            active = halved & ~(berr <= target)
        return x, residual, wn, xn

    # conditioning -------------------------------------------------------

    def _cached_inverse_norm(self, dtype, kind):
        """The cached estimate of :meth:`_inverse_norm`, or ``None``."""
        if kind == "T" and self._transpose_invariant():
            kind = "N"
        return self._inverse_norms.get((np.dtype(dtype), kind))

    def _inverse_norm(self, dtype, kind):
        """Cached estimate of ``‖A⁻¹‖₁`` (kind "N"), ``‖A⁻ᵀ‖₁`` ("T") or of
        ``‖Ã⁻¹‖₁`` for the equilibrated ``Ã = R A C`` ("equilibrated").

        Computed once per factorization and precision, under a lock (several
        threads share an engine); a new engine (``update``) starts afresh.
        """
        if kind == "T" and self._transpose_invariant():
            kind = "N"        # A = Aᵀ or A = Aᴴ exactly: ‖A⁻ᵀ‖₁ = ‖A⁻¹‖₁
        key = (np.dtype(dtype), kind)
        est = self._inverse_norms.get(key)
        if est is not None:
            return est
        with self._cond_lock:
            est = self._inverse_norms.get(key)
            if est is None:
                est = self._estimate_inverse_norm(dtype, kind)
                self._inverse_norms[key] = est
        return est

    def _transpose_invariant(self):
        """``A == Aᴴ`` or ``A == Aᵀ`` exactly (values and pattern); cached in
        ``self._symmetric`` as ``"hermitian"``, ``"symmetric"`` or ``""``.

        Then ``‖A⁻ᵀ‖₁ = ‖A⁻¹‖₁`` and one estimate serves every ``trans``
        (CHOLMOD's Hermitian matrices, real symmetric and complex symmetric
        ones such as Helmholtz), from the flags of :func:`matrix_facts`.
        """
        if self._symmetric is None:
            flags = self._flags if self.mat.shape[0] else 0
            self._symmetric = ("hermitian" if flags & HERMITIAN     # real symmetric too
                               else "symmetric" if flags & SYMMETRIC else "")
        return bool(self._symmetric)

    def _transpose_order(self):
        """:func:`_transpose_order` of the matrix, computed once per engine."""
        if self._torder is None:
            perm = _transpose_order(self.mat)
            self._torder = (perm,)
        return self._torder[0]

    def _estimate_inverse_norm(self, dtype, kind):
        lu = self._factor(dtype)
        n = self.mat.shape[0]
        if lu is None:
            return 0.0 if n == 0 else np.inf

        def sol(trans):
            return lambda v: self._estimator_solve(lu, dtype, trans, v)

        if kind != "equilibrated" and self._m_matrix(lu, dtype):
            # A⁻¹ ≥ 0 entrywise: ‖A⁻¹‖₁ = ‖A⁻ᵀ·1‖∞ and ‖A⁻ᵀ‖₁ = ‖A⁻¹·1‖∞,
            # exactly (up to rounding), from the cached ones-vector solves
            ones = np.ones(n, dtype=dtype)
            y = sol("H" if kind == "N" else "N")(ones)
            return float(np.abs(y).max()) if np.isfinite(y).all() else np.inf
        if kind == "N":       # B = A⁻¹, Bᴴ = A⁻ᴴ
            return inverse_norm1(sol("N"), sol("H"), n, dtype)
        if kind == "T":       # ‖A⁻ᵀ‖₁ = ‖A⁻ᴴ‖₁: B = A⁻ᴴ, Bᴴ = A⁻¹
            return inverse_norm1(sol("H"), sol("N"), n, dtype)
        r, c = self._equilibration()   # Ã⁻¹ = C⁻¹ A⁻¹ R⁻¹
        r, c = r.astype(dtype), c.astype(dtype)
        solve_n, solve_h = sol("N"), sol("H")
        return inverse_norm1(lambda v: solve_n(v / r) / c,
                             lambda v: solve_h(v / c) / r, n, dtype)

    def _m_matrix(self, lu, dtype):
        """Whether ``A`` is proven a nonsingular M-matrix, so ``A⁻¹ ≥ 0``.

        Real, with a positive diagonal and no positive off-diagonal entry (a
        Z-matrix: Poisson, upwind convection–diffusion, graph Laplacians plus
        a positive shift), and semipositive: ``ŷ = A⁻¹·1`` (the solve the
        estimator starts from anyway) is ``≥ 0`` with ``A ŷ > 0``, the
        product checked above its rounding bound. A Z-matrix with such a
        ``ŷ`` is a nonsingular M-matrix (Berman and Plemmons, *Nonnegative
        Matrices in the Mathematical Sciences*, ch. 6, condition I₂₇), whose
        inverse is nonnegative: its 1-norm is a largest column sum, read off
        one solve with the ones vector instead of Hager–Higham's iteration.
        Cached per precision.
        """
        key = (np.dtype(dtype), "m-matrix")
        known = self._ones_products.get(key)
        if known is not None:
            return known
        mat = self.mat
        ok = False
        if np.dtype(dtype).kind == "f" and self._flags & Z_MATRIX:
            y = self._estimator_solve(lu, dtype, "N", np.ones(mat.shape[0], dtype=dtype))
            ok = bool(mat.backend.kernels.direct_semipositive(
                mat.indptr, mat.indices, mat.data, np.asarray(y, np.float64).ravel(),
                positivity_margin(self._row_nnz)))
        self._ones_products[key] = ok
        return ok

    def _estimator_solve(self, lu, dtype, trans, v):
        """``op(A)⁻¹ v`` for the estimator (under ``self._cond_lock``).

        A constant ``v = c·(1, …, 1)`` is answered from one cached solve with
        the ones vector per op: the estimator starts from ``(1, …, 1)/n`` and,
        whenever ``op(A)⁻¹`` has an entrywise constant sign pattern (M-matrices
        such as Poisson and upwind convection–diffusion), its second step
        multiplies the *adjoint* with a constant sign vector, which is the
        first step of the estimate for the other op (and, for a Hermitian
        factor, the first step itself). Exact up to the rounding of the
        scaling.
        """
        dtype = np.dtype(dtype)
        # Pardiso: a solve without its iterative refinement (the estimate
        # needs no more digits), the others' plain solve
        solve = getattr(lu, "solve_unrefined", lu.solve)
        if not (v.size and np.all(v == v[0])):
            return solve(v, trans)
        if dtype.kind != "c" and trans == "T":
            trans = "H"
        conj = False
        if trans == "H" and self._transpose_invariant():
            # A = Aᴴ: A⁻ᴴ 1 = A⁻¹ 1; A = Aᵀ: A⁻ᴴ 1 = conj(A⁻¹ 1)
            trans, conj = "N", self._symmetric == "symmetric"
        key = (dtype, trans)
        ones = self._ones_products.get(key)
        if ones is None:
            ones = solve(np.ones(v.shape, dtype=dtype), trans)
            self._ones_products[key] = ones
        return v[0] * (np.conj(ones) if conj else ones)

    def _equilibration(self):
        """Row and column scalings of A (see ``_conditioning.equilibration``)."""
        return equilibration(self.mat, self.mat.data)

    def _equilibrated_norm1(self):
        mat = self.mat
        r, c = self._equilibration()
        vals = np.abs(mat.data).astype(np.float64) * r[mat.rows] * c[mat.indices]
        return float(np.bincount(mat.indices, weights=vals,
                                 minlength=mat.shape[0]).max(initial=0.0))

    def _singular_to_working_precision(self, dtype, kappa):
        """``κ·eps ≥ SINGULAR_BOUND`` for A as it is and equilibrated."""
        eps = float(np.finfo(dtype).eps)
        if not kappa * eps >= SINGULAR_BOUND:
            return False
        kappa_eq = (self._equilibrated_norm1()
                    * self._inverse_norm(dtype, "equilibrated"))
        return bool(kappa_eq * eps >= SINGULAR_BOUND)

    def condition_estimate(self, dtype=None, trans="N"):
        """``κ₁(op(A))`` estimate for the factorization in ``dtype``
        (default: the matrix's), cached; ``inf`` for an exactly singular A."""
        dtype = self.dtype if dtype is None else np.dtype(dtype)
        kind = "N" if trans == "N" else "T"
        norm = self._norm1 if kind == "N" else self._norminf
        return norm * self._inverse_norm(dtype, kind)

    def _residual(self, x, b, trans):
        """``(‖r‖₂, ‖w‖₁, ‖x‖₁, the componentwise backward error, all per
        column, and the residual r = b − op(A) x)``, ``w`` that of LAPACK's
        forward error bound (see the module).

        One pass of the ``direct_residual`` kernel where ``op(A)`` is ``A`` or
        ``conj(A)`` (every ``trans`` of a matrix with ``A = Aᴴ`` or
        ``A = Aᵀ``), of ``direct_residual_t`` (rows scattered) otherwise.
        """
        mat = self.mat
        coef = (self._row_nnz + 1) * float(np.finfo(x.dtype).eps)
        dtype = np.result_type(x.dtype, b.dtype)
        complex_ = mat.data.dtype.kind == "c"
        kernels = mat.backend.kernels
        if trans == "N" or self._transpose_invariant():
            # Aᴴ = A: op_T = conj(A); Aᵀ = A: op_H = conj(A): gathered by rows
            conj = (trans == "T") if self._symmetric == "hermitian" else (trans == "H")
            kernel, conj = kernels.direct_residual, conj and complex_
        else:           # Aᵀ or Aᴴ of a general matrix: scattered by rows
            kernel, conj = kernels.direct_residual_t, trans == "H" and complex_
        sums = np.empty((4, x.shape[1]), dtype=np.float64)
        res = np.empty(x.shape, dtype=dtype)
        kernel(mat.indptr, mat.indices, mat.data, self._absdata,
               np.ascontiguousarray(x, dtype), np.ascontiguousarray(b, dtype), conj, coef,
               res, sums)
        return np.sqrt(sums[0]), sums[1], sums[2], sums[3], res

    @staticmethod
    def _ferr(wn, xn, inv_norm):
        """``‖A⁻¹‖₁ ‖w‖₁ / ‖x̂‖₁`` per column (inf where undefined)."""
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            ferr = np.where(xn > 0, inv_norm * wn / np.where(xn > 0, xn, 1.0),
                            np.where(wn > 0, np.inf, 0.0))
        return np.where(np.isnan(ferr), np.inf, ferr)

    def update(self, mat):
        """A new engine for new values on the same pattern: the same ordering,
        the symbolic analysis of the optional libraries reused."""
        return DirectEngine(mat, permc_spec=self._permc_spec, func=self.func,
                            library=self.requested, analysis=self.analysis())
