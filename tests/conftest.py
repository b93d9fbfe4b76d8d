"""Shared fixtures and builders for the core tests.

The builders make the *same* mathematical matrix in every storage the public
API accepts: canonical CSR, unsorted CSR, CSR with
duplicates, CSR with explicit zeros (one on the diagonal), CSC, COO with
duplicates, BSR, LIL, DOK and dense. ``caller_entries`` reads the caller's
entry order back *independently of sparsediff*, so the tests can align
gradients with the caller's ``A.data`` without trusting the code under test.

Test modules import the helpers with ``from conftest import ...``.
"""

import hashlib
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

DTYPES = [np.float32, np.float64, np.complex64, np.complex128]
INDEX_DTYPES = [np.int32, np.int64]
FORMATS = ["csr", "csr_unsorted", "csr_dup", "csr_zeros", "csc", "coo_dup", "bsr",
           "lil", "dok", "dense"]
TRANS = ["N", "T", "H"]
RHS_SHAPES = ["n", "n1", "nk", "n0"]


@pytest.fixture
def rng():
    """A seeded generator: every test is reproducible."""
    return np.random.default_rng(20240611)


#: Public entry points that choose a backend (module paths holding ``get_backend``).
BACKEND_CHOOSERS = ("sparsediff._api", "sparsediff.fixed_point.steps._common")


@pytest.fixture(params=["numba", "reference"])
def backend(request, monkeypatch):
    """Run the test on the CPU backend and on the reference backend.

    For ``"reference"`` every public entry point's ``get_backend`` returns
    ``sparsediff.backend.REFERENCE`` (after the usual argument checks), so the
    validated matrix carries it and every kernel below runs the NumPy twins,
    with ``check_every = 8`` in the Krylov loops. Returns the backend object.
    """
    import importlib

    from sparsediff import backend as be

    if request.param == "numba":
        return be.NUMBA

    def reference(*args, func):
        be.get_backend(*args, func=func)  # same refusals (GPU arrays, mixing)
        return be.REFERENCE

    for name in BACKEND_CHOOSERS:
        monkeypatch.setattr(importlib.import_module(name), "get_backend", reference)
    return be.REFERENCE


# ---------------------------------------------------------------------------
# values
# ---------------------------------------------------------------------------

def is_complex(dtype):
    return np.dtype(dtype).kind == "c"


def real_dtype(dtype):
    return np.dtype(np.finfo(dtype).dtype)


def randn(rng, shape, dtype):
    """Standard normal values of ``dtype`` (complex parts both random)."""
    out = rng.standard_normal(shape)
    if is_complex(dtype):
        out = out + 1j * rng.standard_normal(shape)
    return out.astype(dtype)


def rhs_shape(n, kind, k=3):
    return {"n": (n,), "n1": (n, 1), "nk": (n, k), "n0": (n, 0)}[kind]


def dense_system(rng, n, dtype, density=0.35, zero_diag=False):
    """A well-conditioned dense matrix with a random sparsity pattern.

    Diagonally dominant (κ of order 10). With ``zero_diag`` the (0, 0) entry is
    0 but stays *in the pattern* (stored zero), and a strong (0, 1)/(1, 0) pair
    keeps the matrix nonsingular (SuperLU has to pivot).
    """
    mask = rng.random((n, n)) < density
    np.fill_diagonal(mask, True)
    vals = randn(rng, (n, n), dtype) * mask
    D = vals.astype(np.result_type(dtype, np.float64))
    D[np.arange(n), np.arange(n)] = (np.abs(D).sum(axis=1) + 1.0) * (
        1.0 if not is_complex(dtype) else np.exp(1j * rng.uniform(0, 2 * np.pi, n)))
    if zero_diag and n >= 2:
        D[0, 0] = 0.0
        D[0, 1] = D[1, 0] = np.abs(D[1, 1]) + 2.0
        mask[0, 1] = mask[1, 0] = True
        D[1, 1] = D[1, 1] + np.abs(D[0, 1])  # keep row 1 dominant
    return D.astype(dtype), mask


# ---------------------------------------------------------------------------
# storage formats
# ---------------------------------------------------------------------------

def _idx(A, idx):
    if hasattr(A, "indices"):
        A.indices = A.indices.astype(idx)
        A.indptr = A.indptr.astype(idx)
    elif hasattr(A, "coords"):
        A.coords = tuple(c.astype(idx) for c in A.coords)
    return A


def build(fmt, D, mask, rng, idx=np.int32, cls="array"):
    """The matrix ``D`` (pattern ``mask``) stored in format ``fmt``.

    Formats with duplicates split entries into parts that sum to the value;
    ``csr_zeros`` adds explicit zeros to the pattern (including the diagonal
    (0, 0) when it is zero in ``D``).
    """
    n = D.shape[0]
    spcls = {"csr": sp.csr_array, "csc": sp.csc_array, "coo": sp.coo_array,
             "bsr": sp.bsr_array, "lil": sp.lil_array, "dok": sp.dok_array}
    if cls == "matrix":
        spcls = {"csr": sp.csr_matrix, "csc": sp.csc_matrix, "coo": sp.coo_matrix,
                 "bsr": sp.bsr_matrix, "lil": sp.lil_matrix, "dok": sp.dok_matrix}
    rows, cols = np.nonzero(mask)
    vals = D[rows, cols]
    if fmt == "dense":
        return D.copy()
    if fmt in ("csr", "csr_unsorted", "csr_dup", "csr_zeros"):
        r, c, v = rows, cols, vals
        if fmt == "csr_zeros":
            extra = rng.random((n, n)) < 0.15
            extra &= ~mask
            er, ec = np.nonzero(extra)
            r = np.concatenate([r, er])
            c = np.concatenate([c, ec])
            v = np.concatenate([v, np.zeros(er.shape[0], D.dtype)])
            o = np.lexsort((c, r))
            r, c, v = r[o], c[o], v[o]
        if fmt == "csr_dup":
            pick = rng.random(r.shape[0]) < 0.4
            pick[:1] = True
            frac = rng.uniform(0.2, 0.8, pick.sum())
            r = np.concatenate([r, r[pick]])
            c = np.concatenate([c, c[pick]])
            v2 = v.copy()
            part = (v[pick] * frac).astype(D.dtype)
            v2[pick] = v[pick] - part
            v = np.concatenate([v2, part])
        if fmt in ("csr_unsorted", "csr_dup"):
            o = np.lexsort((rng.random(r.shape[0]), r))  # rows kept, shuffled within
            r, c, v = r[o], c[o], v[o]
        indptr = np.zeros(n + 1, dtype=idx)
        np.cumsum(np.bincount(r, minlength=n), out=indptr[1:])
        A = spcls["csr"]((v, c.astype(idx), indptr), shape=D.shape)
        return _idx(A, idx)
    if fmt == "csc":
        return _idx(spcls["csc"]((vals, (rows, cols)), shape=D.shape), idx)
    if fmt == "coo_dup":
        pick = rng.random(rows.shape[0]) < 0.5
        pick[:1] = True
        frac = rng.uniform(0.2, 0.8, pick.sum())
        part = (vals[pick] * frac).astype(D.dtype)
        v = vals.copy()
        v[pick] = vals[pick] - part
        r = np.concatenate([rows, rows[pick]])
        c = np.concatenate([cols, cols[pick]])
        v = np.concatenate([v, part])
        o = rng.permutation(r.shape[0])
        return _idx(spcls["coo"]((v[o], (r[o].astype(idx), c[o].astype(idx))),
                                 shape=D.shape), idx)
    if fmt == "bsr":
        # 2x2 blocks over the pattern's blocks (n even): stored zeros inside blocks
        B = sp.bsr_array(sp.csr_array((vals, (rows, cols)), shape=D.shape),
                         blocksize=(2, 2) if n % 2 == 0 else (1, 1))
        return _idx(spcls["bsr"](B), idx)
    if fmt in ("lil", "dok"):
        M = spcls[fmt](D.shape, dtype=D.dtype)
        for i, j, x in zip(rows, cols, vals):
            M[i, j] = x
        return M
    raise ValueError(fmt)


def caller_entries(A):
    """Row and column of every entry of ``A.data`` in the caller's order.

    Written independently of sparsediff: CSR/CSC from ``indptr``; COO from its
    coordinates; BSR block by block; LIL/DOK (which have no ``data`` array) in
    the order of ``A.tocoo()``; dense row-major.
    """
    if not sp.issparse(A):
        n, m = A.shape
        return np.repeat(np.arange(n), m), np.tile(np.arange(m), n)
    f = A.format
    if f == "csr":
        return np.repeat(np.arange(A.shape[0]), np.diff(A.indptr)), A.indices.astype(int)
    if f == "csc":
        return A.indices.astype(int), np.repeat(np.arange(A.shape[1]), np.diff(A.indptr))
    if f == "coo":
        return A.row.astype(int), A.col.astype(int)
    if f == "bsr":
        R, C = A.blocksize
        br = np.repeat(np.arange(A.shape[0] // R), np.diff(A.indptr))
        rows, cols = [], []
        for i, j in zip(br, A.indices):
            for r in range(R):
                for c in range(C):
                    rows.append(i * R + r)
                    cols.append(j * C + c)
        return np.array(rows, dtype=int), np.array(cols, dtype=int)
    coo = A.tocoo()
    return coo.row.astype(int), coo.col.astype(int)


def caller_data(A):
    """The caller's stored values, in the caller's order (a copy)."""
    if not sp.issparse(A):
        return np.array(A, copy=True).ravel()
    if A.format in ("lil", "dok"):
        return A.tocoo().data.copy()
    return np.array(A.data, copy=True).ravel()


def with_data(A, data):
    """``A`` with the same storage and entry order but values ``data``."""
    if not sp.issparse(A):
        return np.asarray(data).reshape(A.shape)
    f = A.format
    if f in ("csr", "csc"):
        B = type(A)((data, A.indices.copy(), A.indptr.copy()), shape=A.shape)
    elif f == "bsr":
        B = type(A)((data.reshape(A.data.shape), A.indices.copy(), A.indptr.copy()),
                    shape=A.shape)
    elif f == "coo":
        B = type(A)((data, (A.row.copy(), A.col.copy())), shape=A.shape)
    else:
        coo = A.tocoo()
        B = type(A)(sp.coo_array((data, (coo.row, coo.col)), shape=A.shape))
        assert np.array_equal(caller_data(B), data)
    return B


def dense_of(A):
    """Dense value of A (duplicates summed), for oracles."""
    return A.toarray() if sp.issparse(A) else np.array(A, copy=True)


def op(D, trans):
    return {"N": D, "T": D.T, "H": D.conj().T}[trans]


# ---------------------------------------------------------------------------
# input fingerprints (E5)
# ---------------------------------------------------------------------------

def _arrays_of(obj):
    if obj is None:
        return []
    if sp.issparse(obj):
        out = []
        for name in ("data", "indices", "indptr", "row", "col", "offsets"):
            a = getattr(obj, name, None)
            if isinstance(a, np.ndarray):
                out.append(a)
        if obj.format == "lil":
            out += [np.array(r, dtype=object) for r in obj.rows]
            out += [np.array(d) for d in obj.data]
        if obj.format == "dok":
            out.append(np.array(sorted(obj.items(), key=lambda t: t[0]), dtype=object))
        return out
    return [np.asarray(obj)]


def fingerprint(*objs):
    """sha256 of the bytes, dtype, shape and flags of every array (and SciPy's
    canonical-format flags), to prove that a call left its inputs untouched."""
    h = hashlib.sha256()
    for obj in objs:
        for a in _arrays_of(obj):
            h.update(repr((a.dtype, a.shape, a.strides, a.flags.writeable)).encode())
            h.update(np.ascontiguousarray(a).tobytes() if a.dtype != object
                     else repr(a.tolist()).encode())
        if sp.issparse(obj):
            for flag in ("_has_sorted_indices", "_has_canonical_format",
                         "has_canonical_format"):
                h.update(repr(obj.__dict__.get(flag, "unset")).encode())
            h.update(repr((obj.format, obj.shape, obj.dtype)).encode())
    return h.hexdigest()


def readonly(obj):
    """Mark every array of ``obj`` read-only (in place) and return ``obj``."""
    for a in _arrays_of(obj):
        if a.dtype != object:
            a.setflags(write=False)
    return obj


def shares(a, b):
    """Whether two (possibly sparse) objects share any memory."""
    return any(np.shares_memory(x, y) for x in _arrays_of(a) for y in _arrays_of(b)
               if x.size and y.size)


def tol(dtype):
    """Comparison tolerance against float64 oracles for well-conditioned tests."""
    return 2e-4 if np.dtype(dtype) in (np.float32, np.complex64) else 1e-10


def ref_solve(D, b, trans="N"):
    """Dense float64/complex128 reference of ``op(D)⁻¹ b``."""
    M = op(np.asarray(D, dtype=np.result_type(D.dtype, np.float64)), trans)
    b = np.asarray(b, dtype=np.result_type(b.dtype, np.float64))
    if b.ndim == 2 and b.shape[1] == 0:
        return np.zeros(b.shape, np.result_type(M.dtype, b.dtype))
    return np.linalg.solve(M, b)


def make_problem(rng, fmt="csr", dtype=np.float64, n=6, shape="n", idx=np.int32,
                 b_dtype=None, cls="array"):
    """(A, b, D) for a random well-conditioned system in format ``fmt``."""
    D, mask = dense_system(rng, n, dtype, zero_diag=(fmt == "csr_zeros"))
    A = build(fmt, D, mask, rng, idx=idx, cls=cls)
    b = randn(rng, rhs_shape(n, shape), b_dtype or dtype)
    return A, b, dense_of(A)


def traced_peak(fn):
    """Peak bytes traced by :mod:`tracemalloc` while ``fn()`` runs."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def random_pattern(rng, n, extra):
    """``(indptr, cols, rows)`` of an ``n × n`` CSR pattern as assembly makes
    it: a full diagonal, ``extra`` more columns per row drawn at random
    (repeats are duplicates) and unsorted columns (int64)."""
    rows, cols = [], []
    for i in range(n):
        cs = [i, *rng.integers(0, n, size=extra)]   # may repeat: duplicates
        rng.shuffle(cs)
        rows += [i] * len(cs)
        cols += cs
    rows, cols = np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return indptr, cols, rows


def count_batched(monkeypatch):
    """Count :class:`sparsediff.BatchedSolver` builds (with their batch sizes)
    and solves: ``{"build": int, "sizes": [B, ...], "solve": int}``."""
    from sparsediff.batched import _api

    count = {"build": 0, "sizes": [], "solve": 0}
    init, solve = _api.BatchedSolver.__init__, _api.BatchedSolver.solve

    def spy_init(self, *a, **k):
        init(self, *a, **k)
        count["build"] += 1
        count["sizes"].append(self.batch_size)

    def spy_solve(self, *a, **k):
        count["solve"] += 1
        return solve(self, *a, **k)

    monkeypatch.setattr(_api.BatchedSolver, "__init__", spy_init)
    monkeypatch.setattr(_api.BatchedSolver, "solve", spy_solve)
    return count
