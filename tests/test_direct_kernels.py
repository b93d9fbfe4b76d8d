"""The single-pass kernels around a direct factorization: ``direct_facts``,
``direct_lower``, ``direct_residual`` and ``direct_semipositive``, compiled
(Numba) against their NumPy twins and against first principles (dense
matrices, SciPy), on canonical CSR matrices as the engine holds them."""

import numpy as np
import pytest
import scipy.sparse as sp

import sparsediff as sd
from sparsediff.kernels import _reference as ref
from sparsediff.kernels.numba import _direct as nb_direct
from sparsediff.solvers import direct as direct_mod

IMPLS = {"numba": nb_direct, "reference": ref}
HERM, SYMM, POS, ZMAT = (direct_mod.HERMITIAN, direct_mod.SYMMETRIC,
                         direct_mod.POSITIVE_DIAGONAL, direct_mod.Z_MATRIX)


def canonical(A, idx=np.int32):
    A = sp.csr_matrix(A)
    A.sum_duplicates()
    A.sort_indices()
    return (A.indptr.astype(idx), A.indices.astype(idx), A.data, A)


def first_principles(A):
    """The facts from the dense matrix and SciPy (no CSR tricks)."""
    D = A.toarray()
    n = D.shape[0]
    pattern = sp.csr_matrix((np.ones(A.nnz), A.indices, A.indptr), shape=A.shape)
    struct_sym = (abs(pattern - pattern.T) != 0).nnz == 0
    diag_stored = all(A[i, i] != 0 or _stored(A, i, i) for i in range(n))
    d = np.diag(D)
    diag_ok = diag_stored and np.all(d.real > 0) and np.all(d.imag == 0)
    off = D - np.diag(d)
    zmat = (diag_ok and A.dtype.kind == "f" and np.all(off <= 0))
    herm = struct_sym and np.array_equal(D, D.conj().T)
    symm = struct_sym and np.array_equal(D, D.T)
    norm1 = np.abs(D).sum(axis=0).max(initial=0.0)
    norminf = np.abs(D).sum(axis=1).max(initial=0.0)
    most = max(np.diff(A.indptr).max(initial=0),
               np.bincount(A.indices, minlength=1).max(initial=0))
    flags = (POS if diag_ok else 0) | (ZMAT if zmat else 0) | \
        (HERM if herm else 0) | (SYMM if symm else 0)
    return norm1, norminf, most, flags


def _stored(A, i, j):
    row = A.indices[A.indptr[i]:A.indptr[i + 1]]
    return j in row


def cases(rng):
    n = 12
    R = sp.random(n, n, density=0.3, random_state=rng, format="csr") + 3 * sp.eye(n)
    C = R + 1j * sp.random(n, n, density=0.3, random_state=rng, format="csr")
    L = sp.diags([-1.0, 4.0, -1.0], [-1, 0, 1], shape=(n, n), format="csr")
    yield "general", R
    yield "symmetric", R + R.T
    yield "hermitian", C + C.conj().T
    yield "complex symmetric", C + C.T
    yield "z-matrix", L
    # symmetric with an explicit zero kept on both sides of the diagonal
    Z = sp.lil_matrix(L)
    Z[0, 5] = Z[5, 0] = 1e-300
    Z = sp.csr_matrix(Z)
    Z.data[Z.data == 1e-300] = 0.0
    yield "explicit zeros", Z
    # as many strictly lower as strictly upper entries, not paired: not symmetric
    yield "unpaired", sp.csr_matrix(sp.eye(n) + sp.csr_matrix(
        ([1.0, 1.0], ([0, 5], [3, 2])), shape=(n, n)))
    # symmetric pattern, one value off by one ulp
    S = sp.csr_matrix(R + R.T)
    k = np.flatnonzero(S.indices > np.repeat(np.arange(n), np.diff(S.indptr)))[0]
    S.data[k] = np.nextafter(S.data[k], np.inf)
    yield "symmetric to rounding", S
    # a missing and a negative diagonal entry
    M = sp.lil_matrix(L)
    M[3, 3] = 0.0
    M = sp.csr_matrix(M)
    M.eliminate_zeros()
    yield "missing diagonal", M
    yield "negative diagonal", -L
    yield "Z-matrix, complex storage", L.astype(np.complex128)
    yield "empty pattern", sp.csr_matrix((n, n))


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("idx", [np.int32, np.int64])
def test_facts_match_first_principles(rng, impl, idx):
    for name, A in cases(rng):
        indptr, indices, data, A = canonical(A, idx)
        norm1, norminf, most, flags = IMPLS[impl].direct_facts(indptr, indices, data)
        want = first_principles(A)
        # the kernels' Z-matrix bit needs real values; the engine masks it for
        # complex storage (``matrix_facts``): compare the engine's view
        if data.dtype.kind == "c":
            flags &= ~ZMAT
        assert norm1 == pytest.approx(want[0], rel=1e-14), name
        assert norminf == pytest.approx(want[1], rel=1e-14), name
        assert int(most) == want[2], name
        assert int(flags) == want[3], (name, int(flags), want[3])


def test_engine_facts_mask_complex_z_matrix(rng):
    L = sp.diags([-1.0, 4.0, -1.0], [-1, 0, 1], shape=(5, 5), format="csr")
    mat = sd.Solver(L.astype(np.complex128), method="direct")._state.engine.mat
    assert not direct_mod.matrix_facts(mat)[3] & ZMAT
    mat = sd.Solver(L, method="direct")._state.engine.mat
    assert direct_mod.matrix_facts(mat)[3] & ZMAT


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("dtype", [np.float64, np.complex128, np.float32])
def test_lower_is_the_lower_triangle_in_column_order(rng, impl, dtype):
    n = 15
    R = sp.random(n, n, density=0.3, random_state=rng, format="csr") + n * sp.eye(n)
    if np.dtype(dtype).kind == "c":
        R = R + 1j * sp.random(n, n, density=0.3, random_state=rng, format="csr")
    H = (R + R.conj().T).astype(dtype)
    indptr, indices, data, H = canonical(H)
    rows, cols, vals = IMPLS[impl].direct_lower(indptr, indices, data)
    assert rows.dtype == cols.dtype == np.int64 and vals.dtype == np.dtype(dtype)
    T = sp.tril(H).tocsc()
    T.sort_indices()
    # column-major: sorted by column, then row
    assert np.array_equal(cols, np.repeat(np.arange(n), np.diff(T.indptr)))
    assert np.array_equal(rows, T.indices)
    assert np.array_equal(vals, T.data)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("kind", ["real", "complex", "real matrix, complex block"])
@pytest.mark.parametrize("conj", [False, True])
@pytest.mark.parametrize("transposed", [False, True])
def test_residual_sums(rng, impl, kind, conj, transposed):
    n, m = 20, 3
    A = sp.random(n, n, density=0.3, random_state=rng, format="csr") + sp.eye(n)
    if kind == "complex":
        A = A + 1j * sp.random(n, n, density=0.3, random_state=rng, format="csr")
    indptr, indices, data, A = canonical(A)
    dtype = np.float64 if kind == "real" else np.complex128
    x = rng.standard_normal((n, m)).astype(dtype)
    b = rng.standard_normal((n, m)).astype(dtype)
    if dtype is np.complex128:
        x = x + 1j * rng.standard_normal((n, m))
        b = b + 1j * rng.standard_normal((n, m))
    coef = 1e-3
    sums = np.full((4, m), np.nan)
    res = np.full((n, m), np.nan, dtype=dtype)
    kernel = IMPLS[impl].direct_residual_t if transposed else IMPLS[impl].direct_residual
    kernel(indptr, indices, data, np.abs(data), x, b, conj, coef, res, sums)
    D = A.toarray()
    D = D.T if transposed else D
    D = D.conj() if conj else D
    r = b - D @ x
    den = np.abs(D) @ np.abs(x) + np.abs(b)
    w = np.abs(r) + coef * den
    np.testing.assert_allclose(res, r, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sums[0], (np.abs(r) ** 2).sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sums[1], w.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sums[2], np.abs(x).sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sums[3], (np.abs(r) / den).max(axis=0), rtol=1e-12)


@pytest.mark.parametrize("impl", list(IMPLS))
def test_residual_backward_error_edge_rows(impl):
    """A row with ``|A||x| + |b| = 0`` (an empty row, ``b_i = 0``) counts 0,
    not NaN; a NaN in ``x`` gives ``inf``. (``|r| ≤ |A||x| + |b|``, so a
    zero denominator with a nonzero residual needs a NaN.)"""
    A = sp.csr_matrix(np.array([[0.0, 0.0], [0.0, 2.0]]))
    A.eliminate_zeros()
    indptr, indices, data, A = canonical(A)
    x = np.array([[5.0, 5.0, 1.0], [1.0, 1.0, np.nan]])
    b = np.array([[0.0, 1.0, 0.0], [2.0, 2.0, 2.0]])
    sums = np.empty((4, 3))
    res = np.empty_like(x)
    IMPLS[impl].direct_residual(indptr, indices, data, np.abs(data), x, b, False, 1e-16,
                                res, sums)
    assert sums[3, 0] == 0.0          # exact, with an empty row
    assert sums[3, 1] == 1.0          # row 0: r = 1 against |b| = 1
    assert sums[3, 2] == np.inf


@pytest.mark.parametrize("impl", list(IMPLS))
def test_semipositive(impl):
    n = 30
    L = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n), format="csr")
    indptr, indices, data, L = canonical(L)
    y = np.linalg.solve(L.toarray(), np.ones(n))
    margin = direct_mod.positivity_margin(3)
    semi = IMPLS[impl].direct_semipositive
    assert semi(indptr, indices, data, y, margin)
    bad = y.copy()
    bad[4] = -1e-30
    assert not semi(indptr, indices, data, bad, margin)
    bad[4] = np.nan
    assert not semi(indptr, indices, data, bad, margin)
    # A y = 0 in a row (singular: the shifted Laplacian's null vector)
    S = sp.csr_matrix(L - sp.diags(np.r_[1.0, np.zeros(n - 2), 1.0]))
    indptr, indices, data, S = canonical(S)
    assert not semi(indptr, indices, data, np.ones(n), margin)


def test_engine_uses_the_facts(rng):
    """The engine's choices read the flags: CHOLMOD only for an exactly
    Hermitian matrix with a positive diagonal, one estimate for N and T/H of
    a transpose-invariant matrix."""
    n = 1200
    k = int(np.sqrt(n))
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(k, k))
    A = sp.csr_matrix(sp.kron(sp.eye(k), T) + sp.kron(T, sp.eye(k)))
    eng = sd.Solver(A, method="direct")._state.engine
    if "cholmod" in eng.mat.backend.direct_libraries():
        assert eng.library == "cholmod"
    assert eng._transpose_invariant() and eng._symmetric == "hermitian"
    B = A.copy()
    B.data = B.data.copy()
    rows = np.repeat(np.arange(B.shape[0]), np.diff(B.indptr))
    j = np.flatnonzero(B.indices > rows)[0]
    B.data[j] = np.nextafter(B.data[j], -np.inf)
    eng = sd.Solver(B, method="direct")._state.engine
    assert eng.library != "cholmod"
    assert not eng._transpose_invariant()
