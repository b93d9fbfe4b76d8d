"""The batched Cholesky kernels and the direct batch engine built on them:
one ordering and symbolic analysis per pattern, every element's numeric
factorization and solves in one pass over the indices."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import sparsediff as sd
from sparsediff._validation import as_matrix
from sparsediff.batched import _direct
from sparsediff.batched._cholesky import BatchedCholesky, CholeskyAnalysis


def grid_pattern(k, dims=2):
    """Canonical CSR of the 2-D 5-point or 3-D 7-point stencil on k^dims nodes."""
    T = sp.diags_array([np.ones(k - 1), np.ones(k), np.ones(k - 1)], offsets=[-1, 0, 1])
    eye = sp.identity(k)
    if dims == 2:
        A = sp.kron(T, eye) + sp.kron(eye, T)
    else:
        A = (sp.kron(sp.kron(T, eye), eye) + sp.kron(sp.kron(eye, T), eye)
             + sp.kron(sp.kron(eye, eye), T))
    A = sp.csr_array(A)
    A.sort_indices()
    return A


def hermitian_batch(A, B, rng, dtype=np.float64, shift=0.5):
    """B Hermitian positive definite value sets on A's (symmetric) pattern:
    random off-diagonal couplings, diagonal = row sums of |off| + shift."""
    n = A.shape[0]
    rows = np.repeat(np.arange(n), np.diff(A.indptr))
    cols = A.indices
    mirror = sp.csr_array((np.arange(A.nnz) + 1.0, (cols, rows)), shape=A.shape)
    mirror.sort_indices()
    pos = mirror.data.astype(np.int64) - 1      # entry of (j, i) for entry (i, j)
    data = np.zeros((B, A.nnz), dtype=dtype)
    upper = rows < cols
    vals = -rng.uniform(0.2, 2.0, (B, A.nnz))
    if np.dtype(dtype).kind == "c":
        vals = vals * np.exp(1j * rng.uniform(0, 2 * np.pi, (B, A.nnz)))
    data[:, upper] = vals[:, upper]
    lower = rows > cols
    data[:, lower] = np.conj(data[:, pos[lower]])
    off = np.zeros((B, n))
    for e in range(B):
        off[e] = np.bincount(rows, weights=np.abs(data[e]), minlength=n)
    on = rows == cols
    data[:, on] = off[:, rows[on]] + shift
    return data


def dense(A, values):
    return sp.csr_array((values, A.indices, A.indptr), shape=A.shape).toarray()


@pytest.mark.parametrize("dtype", [np.float64, np.complex128, np.float32])
def test_factor_matches_dense_cholesky(rng, dtype):
    """L of every element equals LAPACK's Cholesky factor of P A Pᵀ."""
    A = grid_pattern(6)
    data = hermitian_batch(A, 5, rng, dtype)
    analysis = CholeskyAnalysis(as_matrix(A, "t"))
    chol = BatchedCholesky(analysis, data, np.ones(5, bool), dtype, workers=2)
    assert chol.ok.all()
    p = analysis.perm
    n = A.shape[0]
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for e in range(5):
        C = dense(A, data[e])[np.ix_(p, p)]
        L_ref = np.linalg.cholesky(C.astype(np.complex128 if np.iscomplexobj(C)
                                            else np.float64))
        s, col = next((s, e - b0) for s, (b0, b1) in enumerate(chol.slices)
                      if b0 <= e < b1)
        L = np.zeros((n, n), dtype=L_ref.dtype)
        Lx = chol._L[s][:, col]
        for j in range(n):
            for q in range(analysis.Lp[j], analysis.Lp[j + 1]):
                L[analysis.Li[q], j] = Lx[q]
        np.testing.assert_allclose(L, L_ref, rtol=tol, atol=tol * np.abs(L_ref).max())
    # the fill of the ordering is that of a minimum-degree ordering, far below
    # the natural ordering's band
    assert analysis.fill < n * 6


def test_not_positive_definite_element_alone(rng):
    """An indefinite element is flagged; the others are bitwise what they
    are when factored without it."""
    A = grid_pattern(5)
    data = hermitian_batch(A, 4, rng)
    bad = data.copy()
    on = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr)) == A.indices
    bad[2, on] = -1.0
    analysis = CholeskyAnalysis(as_matrix(A, "t"))
    chol = BatchedCholesky(analysis, bad, np.ones(4, bool), np.float64, workers=1)
    assert chol.ok.tolist() == [True, True, False, True]
    assert chol.element(2) is None
    ref = BatchedCholesky(analysis, data[[0, 1, 3]], np.ones(3, bool), np.float64,
                          workers=1)
    b = rng.standard_normal((4, A.shape[0], 2))
    x = chol.solve_batch(b, "N", workers=1)
    x_ref = ref.solve_batch(b[[0, 1, 3]], "N", workers=1)
    np.testing.assert_array_equal(x[[0, 1, 3]], x_ref)


def test_solve_does_not_depend_on_slices(rng):
    """Slice widths (workers, batch size) change nothing: bitwise."""
    A = grid_pattern(7)
    data = hermitian_batch(A, 9, rng, np.complex128)
    analysis = CholeskyAnalysis(as_matrix(A, "t"))
    b = rng.standard_normal((9, A.shape[0], 1)) + 1j * rng.standard_normal(
        (9, A.shape[0], 1))
    out = []
    for workers in (1, 2, 9):
        chol = BatchedCholesky(analysis, data, np.ones(9, bool), np.complex128, workers)
        out.append([chol.solve_batch(b, t, workers) for t in "NT"])
        one = chol.element(4).solve(b[4], "T")
        np.testing.assert_array_equal(one, out[-1][1][4])
    for other in out[1:]:
        for a, c in zip(out[0], other):
            np.testing.assert_array_equal(a, c)
    for e in range(9):
        M = dense(A, data[e])
        np.testing.assert_allclose(M @ out[0][0][e], b[e], atol=1e-10)
        np.testing.assert_allclose(M.T @ out[0][1][e], b[e], atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128, np.float32])
def test_engine_uses_batched_cholesky(rng, dtype):
    """A Hermitian positive-diagonal batch on a 2-D pattern takes the batched
    kernels (old code: CHOLMOD or SuperLU per element); each element equals its
    own solve, gradients included."""
    A = grid_pattern(6)
    data = hermitian_batch(A, 3, rng, dtype)
    solver = sd.BatchedSolver(A, data)
    assert solver._engine.library == "cholesky"
    b = rng.standard_normal((3, A.shape[0])).astype(dtype)
    g = rng.standard_normal((3, A.shape[0])).astype(dtype)
    rtol = 2e-4 if dtype == np.float32 else 1e-10
    for trans in "NTH":
        sol = solver.solve(b, trans=trans)
        gd, gb = sol.vjp(g)
        for e in range(3):
            M = dense(A, data[e]).astype(np.complex128)
            op = {"N": M, "T": M.T, "H": M.conj().T}[trans]
            x = np.linalg.solve(op, b[e])
            np.testing.assert_allclose(sol.x[e], x, rtol=rtol, atol=rtol * abs(x).max())
            lam = np.linalg.solve(op.conj().T, g[e])
            np.testing.assert_allclose(gb[e], lam, rtol=rtol, atol=rtol * abs(lam).max())
            assert np.isfinite(sol.info[e].condition_estimate)


def test_m_matrix_certificate_batched(rng):
    """Diffusion batches: every element's ‖A⁻¹‖₁ is exact (the M-matrix
    certificate, from one batched ones-vector solve), equal to the dense value."""
    A = grid_pattern(5)
    data = hermitian_batch(A, 4, rng)
    solver = sd.BatchedSolver(A, data)
    sol = solver.solve(rng.standard_normal((4, A.shape[0])))
    for e in range(4):
        M = dense(A, data[e])
        kappa = np.abs(M).sum(0).max() * np.abs(np.linalg.inv(M)).sum(0).max()
        assert sol.info[e].condition_estimate == pytest.approx(kappa, rel=1e-10)
        assert solver._engine._m_matrices[(e, np.dtype(np.float64))][0]
    # a non-M-matrix element (a positive coupling) is not certified
    data2 = data.copy()
    rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
    data2[1, (rows != A.indices)] *= -1          # still diagonally dominant
    solver = sd.BatchedSolver(A, data2)
    solver.solve(np.ones((4, A.shape[0])))
    certified = [solver._engine._m_matrices[(e, np.dtype(np.float64))][0]
                 for e in range(4)]
    assert certified == [True, False, True, True]


def test_deep_patterns_go_to_cholmod(rng, monkeypatch):
    """3-D patterns (deep elimination) take CHOLMOD when it is installed, and
    the batched kernels when it is not."""
    from sparsediff.backend import NUMBA

    A = grid_pattern(11, dims=3)
    data = hermitian_batch(A, 2, rng)
    analysis = CholeskyAnalysis(as_matrix(A, "t"))
    assert analysis.flops > _direct.CHOLESKY_MAX_DEPTH * analysis.fill
    if "cholmod" in getattr(NUMBA, "direct_libraries", lambda: ())():
        assert sd.BatchedSolver(A, data)._engine.library == "cholmod"
    monkeypatch.setattr(type(NUMBA), "direct_libraries", lambda self: (), raising=False)
    solver = sd.BatchedSolver(A, data)
    assert solver._engine.library == "cholesky"
    b = rng.standard_normal((2, A.shape[0]))
    x = solver.solve(b).x
    for e in range(2):
        np.testing.assert_allclose(dense(A, data[e]) @ x[e], b[e], atol=1e-10)
    small = grid_pattern(8)
    an2 = CholeskyAnalysis(as_matrix(small, "t"))
    assert an2.flops <= _direct.CHOLESKY_MAX_DEPTH * an2.fill


def test_update_keeps_the_analysis(rng):
    A = grid_pattern(6)
    data = hermitian_batch(A, 3, rng)
    solver = sd.BatchedSolver(A, data)
    analysis = solver._engine._analysis
    solver.update(data * 2.0)
    assert solver._engine.library == "cholesky"
    assert solver._engine._analysis is analysis
    b = rng.standard_normal((3, A.shape[0]))
    np.testing.assert_allclose(solver.solve(b).x[1],
                               np.linalg.solve(dense(A, 2.0 * data[1]), b[1]), rtol=1e-10)


# -- non-Hermitian batches: the LU library of sparsediff.solve, one analysis --

def convection_batch(A, B, rng, dtype=np.float64):
    """Non-symmetric, diagonally dominant values on A's pattern."""
    n = A.shape[0]
    rows = np.repeat(np.arange(n), np.diff(A.indptr))
    data = -rng.uniform(0.1, 2.0, (B, A.nnz)).astype(dtype)
    if np.dtype(dtype).kind == "c":
        data = data * np.exp(1j * rng.uniform(0, 2 * np.pi, (B, A.nnz)))
    on = rows == A.indices
    for e in range(B):
        off = np.bincount(rows, weights=np.abs(data[e]) * ~on, minlength=n)
        data[e, on] = off[rows[on]] + 0.3
    return data


def _installed():
    from sparsediff.backend import NUMBA

    return getattr(NUMBA, "direct_libraries", lambda: ())()


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_non_hermitian_batch_on_umfpack(rng, dtype):
    """From 1,000 unknowns a 2-D non-Hermitian batch takes UMFPACK with one
    symbolic analysis (old code: SuperLU); each element equals its own solve
    in N, T and H, gradients included; ``update`` keeps the analysis."""
    if "umfpack" not in _installed():
        pytest.skip("UMFPACK not installed")
    A = grid_pattern(32)
    data = convection_batch(A, 3, rng, dtype)
    solver = sd.BatchedSolver(A, data)
    engine = solver._engine
    assert engine.library == "umfpack"
    assert [f.library for f in engine.factors(engine.dtype)] == ["umfpack"] * 3
    shape = (3, A.shape[0])
    b = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    if np.dtype(dtype).kind == "c":
        b = b + 1j * rng.standard_normal(shape)
        g = g + 1j * rng.standard_normal(shape)
    for trans in "NTH":
        sol = solver.solve(b, trans=trans)
        gd, gb = sol.vjp(g)
        for e in range(3):
            one = sd.Solver(sp.csr_array((data[e], A.indices, A.indptr), shape=A.shape),
                            method="direct").solve(b[e], trans=trans)
            gA, gbe = one.vjp(g[e])
            np.testing.assert_allclose(sol.x[e], one.x, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(gb[e], gbe, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(gd[e], gA.data, rtol=1e-9, atol=1e-11)
            assert sol.info[e].condition_estimate == pytest.approx(
                one.info.condition_estimate, rel=1e-6)
    analysis = engine._analysis
    solver.update(data * 2.0)
    assert solver._engine.library == "umfpack" and solver._engine._analysis is analysis
    x = solver.solve(b).x
    np.testing.assert_allclose(x[2], np.linalg.solve(dense(A, 2.0 * data[2]), b[2]),
                               rtol=1e-10)


def test_singular_element_on_umfpack(rng):
    """An exactly singular element (a zero row) is reported alone."""
    if "umfpack" not in _installed():
        pytest.skip("UMFPACK not installed")
    A = grid_pattern(32)
    data = convection_batch(A, 3, rng)
    data[1, A.indptr[5]:A.indptr[6]] = 0.0
    b = rng.standard_normal((3, A.shape[0]))
    sol = sd.BatchedSolver(A, data, on_failure="nan").solve(b)
    assert sol.info[1].reason == "singular" and np.isnan(sol.x[1]).all()
    for e in (0, 2):
        assert sol.info[e].converged
        np.testing.assert_allclose(sol.x[e], np.linalg.solve(dense(A, data[e]), b[e]),
                                   rtol=1e-10)
    with pytest.raises(sd.SingularMatrixError, match="batch element 1"):
        sd.BatchedSolver(A, data).solve(b)


def test_three_dimensional_batch_on_pardiso(rng):
    """A real non-symmetric 3-D batch takes MKL Pardiso when installed (the
    rule of sparsediff.solve), and every element is its own solve."""
    libs = _installed()
    if "pardiso" not in libs:
        pytest.skip("MKL Pardiso not installed")
    A = grid_pattern(11, dims=3)
    data = convection_batch(A, 3, rng)
    solver = sd.BatchedSolver(A, data)
    assert solver._engine.library == "pardiso"
    b = rng.standard_normal((3, A.shape[0]))
    for trans in "NT":
        sol = solver.solve(b, trans=trans)
        gd, gb = sol.vjp(b)
        for e in range(3):
            M = dense(A, data[e])
            op = M if trans == "N" else M.T
            np.testing.assert_allclose(sol.x[e], np.linalg.solve(op, b[e]), rtol=1e-9)
            np.testing.assert_allclose(gb[e], np.linalg.solve(op.T, b[e]), rtol=1e-9)


@pytest.mark.parametrize("shape", [(5, 7, 1), (70, 3, 1), (3, 130, 2), (0, 4, 1)])
@pytest.mark.parametrize("dtype", [np.float64, np.complex128, np.float32])
def test_swap01_matches_twin(rng, shape, dtype):
    """The tiled batch-first ↔ batch-last copy equals its NumPy twin, also
    for a strided source."""
    from sparsediff.backend import NUMBA, REFERENCE

    src = rng.standard_normal(shape).astype(dtype)
    for a in (src, np.concatenate([src, src], axis=1)[:, ::2]):
        out = np.full((a.shape[1], a.shape[0], a.shape[2]), np.nan, dtype=dtype)
        ref = np.empty_like(out)
        NUMBA.kernels.batched_swap01(a, out)
        REFERENCE.kernels.batched_swap01(a, ref)
        np.testing.assert_array_equal(out, ref)
        np.testing.assert_array_equal(out, a.transpose(1, 0, 2))


@pytest.mark.parametrize("dtype", [np.float64, np.complex128, np.float32])
def test_residual_stats_matches_twin(rng, dtype):
    """The fused per-column sums of a direct batch's report equal their
    NumPy twin and their definitions."""
    from sparsediff.backend import NUMBA, REFERENCE

    shape = (37, 5, 2)

    def draw():
        a = rng.standard_normal(shape)
        if np.dtype(dtype).kind == "c":
            a = a + 1j * rng.standard_normal(shape)
        return a.astype(dtype)

    x, b, r = draw(), draw(), draw()
    ax = np.abs(rng.standard_normal(shape)).astype(np.float64)
    out, ref = np.empty((4, 5, 2)), np.empty((4, 5, 2))
    NUMBA.kernels.batched_residual_stats(x, b, r, ax, 1e-3, out)
    REFERENCE.kernels.batched_residual_stats(x, b, r, ax, 1e-3, ref)
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(out, ref, rtol=rtol)
    np.testing.assert_allclose(out[0], np.linalg.norm(r.astype(complex), axis=0) ** 2,
                               rtol=rtol)
    np.testing.assert_allclose(out[3], np.abs(x).sum(axis=0), rtol=rtol)


def test_replace_info_is_dataclasses_replace():
    """The fast report copy gives what ``dataclasses.replace`` gives, refuses
    unknown fields, and leaves the original alone."""
    import dataclasses

    from sparsediff.solvers._info import SolveInfo, replace_info

    info = SolveInfo(converged=True, iterations=3, residual_norm=np.ones(2),
                     method="direct", reason="converged", rhs_norm=np.ones(2),
                     condition_estimate=5.0, extra={"k": 1})
    a = replace_info(info, residual_norm=1.5, error_estimate=2.0)
    b = dataclasses.replace(info, residual_norm=1.5, error_estimate=2.0)
    assert type(a) is SolveInfo and a == b and a.extra == b.extra
    assert repr(a) == repr(b)
    assert info.residual_norm.shape == (2,) and info.error_estimate is None
    with pytest.raises(TypeError, match="no field"):
        replace_info(info, nonsense=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.converged = False


def _library_case(rng, library, dtype=np.float64):
    """A pattern and values that take ``library``, with a perturbation that
    keeps it (Hermitian directions for the Cholesky kernels)."""
    if library == "cholesky":
        A = grid_pattern(6)
        data = hermitian_batch(A, 2, rng, dtype)
        dA = hermitian_batch(A, 2, rng, dtype) - hermitian_batch(A, 2, rng, dtype)
        return A, data, dA
    if library not in _installed():
        pytest.skip(f"{library} not installed")
    A = grid_pattern(32) if library == "umfpack" else grid_pattern(11, dims=3)
    data = convection_batch(A, 2, rng, dtype)
    return A, data, rng.standard_normal(data.shape).astype(dtype)


@pytest.mark.parametrize("trans", ["N", "T", "H"])
@pytest.mark.parametrize("library", ["cholesky", "umfpack", "pardiso"])
def test_library_gradients_fd_dot_product_and_oracle(rng, library, trans):
    """Each factorization of the batch: central finite differences (float64),
    the dot-product test between jvp and vjp, and the dense oracle of
    grad_data = −λ_i conj(x_j) (for trans N) on every stored entry."""
    A, data, dA = _library_case(rng, library)
    B, n = data.shape[0], A.shape[0]
    b = rng.standard_normal((B, n))
    g = rng.standard_normal((B, n))
    db = rng.standard_normal((B, n))
    solver = sd.BatchedSolver(A, data)
    assert solver._engine.library == library
    sol = solver.solve(b, trans=trans)
    grad_data, grad_b = sol.vjp(g)
    h = 1e-6

    def loss(t):
        s = sd.BatchedSolver(A, data + t * dA)
        assert s._engine.library == library
        return np.sum(g * s.solve(b + t * db, trans=trans).x)

    fd = (loss(h) - loss(-h)) / (2 * h)
    exact = np.sum(grad_data * dA) + np.sum(grad_b * db)
    assert fd == pytest.approx(exact, rel=1e-6)
    assert np.vdot(g, sol.jvp(dA, db)).real == pytest.approx(exact, rel=1e-9)
    rows = np.repeat(np.arange(n), np.diff(A.indptr))
    for e in range(B):
        M = dense(A, data[e])
        op = {"N": M, "T": M.T, "H": M.conj().T}[trans]
        x = np.linalg.solve(op, b[e])
        lam = np.linalg.solve(op.conj().T, g[e])
        np.testing.assert_allclose(grad_b[e], lam, rtol=1e-9, atol=1e-12)
        if trans == "N":
            np.testing.assert_allclose(grad_data[e], -lam[rows] * x[A.indices],
                                       rtol=1e-8, atol=1e-12)


def test_cholesky_batch_as_codes_assemble_it(rng):
    """Duplicates in the caller's entries (gradients per caller entry), a badly
    scaled Hermitian batch (D A D, D from 1e-6 to 1e6) still on the kernels,
    and a batch symmetric only to rounding, which goes to an LU."""
    A = grid_pattern(6)
    n = A.shape[0]
    data = hermitian_batch(A, 2, rng)
    rows = np.repeat(np.arange(n), np.diff(A.indptr))
    # the caller assembles with every entry split in two halves
    coo_r = np.concatenate([rows, rows])
    coo_c = np.concatenate([A.indices, A.indices])
    vals = np.concatenate([data / 2, data / 2], axis=1)
    P = sp.coo_array((np.ones(coo_r.size), (coo_r, coo_c)), shape=A.shape)
    b = rng.standard_normal((2, n))
    g = rng.standard_normal((2, n))
    sol = sd.BatchedSolver(P, vals).solve(b)
    gd, gb = sol.vjp(g)
    ref = sd.BatchedSolver(A, data).solve(b)
    rgd, rgb = ref.vjp(g)
    np.testing.assert_allclose(sol.x, ref.x, rtol=1e-12)
    np.testing.assert_allclose(gd, np.concatenate([rgd, rgd], axis=1), rtol=1e-12)
    # badly scaled: D A D stays Hermitian positive definite
    d = np.logspace(-6, 6, n)
    scaled = data * (d[rows] * d[A.indices])      # bitwise symmetric scaling
    s = sd.BatchedSolver(A, scaled)
    assert s._engine.library == "cholesky"
    # κ₁ ~ 1e24 is reported as such, and the scaled solve is still accurate
    # (Cholesky is invariant under symmetric diagonal scaling)
    with pytest.warns(sd.IllConditionedWarning):
        sol = s.solve(b)
    with pytest.warns(sd.IllConditionedWarning):
        gd, gb = sol.vjp(g)
    assert all(i.converged for i in sol.info)
    for e in range(2):
        M = dense(A, scaled[e])
        x = np.linalg.solve(M, b[e])
        lam = np.linalg.solve(M.T, g[e])
        np.testing.assert_allclose(sol.x[e], x, rtol=1e-6)
        np.testing.assert_allclose(gd[e], -lam[rows] * x[A.indices], rtol=1e-5,
                                   atol=1e-12 * np.abs(lam[rows] * x[A.indices]).max())
    # symmetric only to rounding: not bitwise Hermitian, an LU takes it
    rounded = data.copy()
    upper = rows < A.indices
    rounded[:, upper] *= 1 + 1e-15
    s = sd.BatchedSolver(A, rounded)
    assert s._engine.library != "cholesky"
    np.testing.assert_allclose(s.solve(b).x[0], np.linalg.solve(dense(A, rounded[0]), b[0]),
                               rtol=1e-10)


# -- the gradient's batch-first kernels and reports ----------------------------


def _sequential_row_sums(A, values, x):
    """``Σ_k values[k]·x[j_k]`` per row, added in the order of the entries
    from zero (the kernels' order), for ``x`` of shape (n, m)."""
    n = A.shape[0]
    lengths = np.diff(A.indptr)
    s = np.zeros((n, x.shape[1]), dtype=np.result_type(values, x))
    for t in range(lengths.max(initial=0)):
        has = t < lengths
        k = A.indptr[:-1][has] + t
        a, y = values[k][:, None], x[A.indices[k]]
        if np.iscomplexobj(s):          # the textbook product, no fused steps
            a, y = a.astype(s.dtype), y.astype(s.dtype)
            s[has] += ((a.real * y.real - a.imag * y.imag)
                       + 1j * (a.real * y.imag + a.imag * y.real))
        else:
            s[has] += a * y
    return s


def _sequential_sum(a):
    """Σ over axis 0 in order (``np.cumsum`` adds sequentially)."""
    return np.cumsum(a, axis=0)[-1] if a.shape[0] else np.zeros(a.shape[1:])


@pytest.mark.parametrize("dtype", [np.float64, np.complex128, np.float32])
@pytest.mark.parametrize("m", [1, 3])
def test_residual_report_kernel_from_first_principles(rng, dtype, m):
    """The batch-first residual report: ‖b − A_e x‖², ‖b‖², the forward error
    numerator and Σ|x| per column, bitwise the sums taken in order, on any
    range of elements; and equal to the batch-last path it replaces."""
    A = grid_pattern(5)
    B = 5
    data = hermitian_batch(A, B, rng, dtype)
    x = rng.standard_normal((B, A.shape[0], m)).astype(dtype)
    b = rng.standard_normal((B, A.shape[0], m)).astype(dtype)
    if np.dtype(dtype).kind == "c":
        x = x + 1j * rng.standard_normal(x.shape)
        b = b + 1j * rng.standard_normal(b.shape)
    kern = sd.backend.NUMBA.batched_cholesky(func="t")
    real = np.empty(0, dtype).real.dtype
    out = np.full((4, B, m), -1.0)
    coef = 1e-3
    kern.residual_report(A.indptr, A.indices, data, x, b, coef, np.empty(m, dtype),
                         np.empty(m, real), out, 1, 4)
    assert (out[:, [0, 4]] == -1).all()                # outside the range: untouched
    for e in range(1, 4):
        r = b[e] - _sequential_row_sums(A, data[e], x[e])
        ax = _sequential_row_sums(A, np.abs(data[e]), np.abs(x[e]))
        assert r.dtype == dtype and ax.dtype == real      # the working precision
        ar, ab = np.abs(r), np.abs(b[e])
        want = [_sequential_sum((ar * ar).astype(np.float64)),
                _sequential_sum((ab * ab).astype(np.float64)),
                _sequential_sum(ar + coef * (ax + ab)),
                _sequential_sum(np.abs(x[e]).astype(np.float64))]
        for q in range(4):
            np.testing.assert_allclose(out[q, e], want[q], rtol=1e-5 if
                                       dtype == np.float32 else 1e-14)
    # the engine: the new kernel and the batch-last path agree bitwise
    eng = sd.BatchedSolver(A, data)._engine
    assert isinstance(eng._analysis, CholeskyAnalysis)
    fast = eng._residual_stats(x, b, "N")
    eng._analysis = None
    np.testing.assert_array_equal(fast, eng._residual_stats(x, b, "N"))


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("trans", ["N", "T", "H"])
@pytest.mark.parametrize("m", [1, 2])
def test_pattern_product_kernel(rng, dtype, trans, m):
    """The batch-first pattern product of the Cholesky engine equals the
    generic batch-last one (bitwise) and its definition."""
    from sparsediff.batched._common import pattern_products

    A = grid_pattern(5)
    B = 4
    data = hermitian_batch(A, B, rng, dtype)
    shape = (B, A.shape[0], m)
    x = rng.standard_normal(shape) + (1j * rng.standard_normal(shape)
                                      if dtype == np.complex128 else 0)
    lam = rng.standard_normal(shape) + (1j * rng.standard_normal(shape)
                                        if dtype == np.complex128 else 0)
    eng = sd.BatchedSolver(A, data)._engine
    mat = sd.BatchedSolver(A, data)._mat
    got = eng.pattern_products(x, lam, trans)
    np.testing.assert_array_equal(got, pattern_products(mat, x, lam, trans))
    rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
    u, v = {"N": (lam, np.conj(x)), "T": (np.conj(x), lam),
            "H": (x, np.conj(lam))}[trans]
    want = -np.einsum("bkc,bkc->bk", u[:, rows], v[:, A.indices])
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("trans", ["N", "T", "H"])
@pytest.mark.parametrize("m", [1, 3])
def test_reports_built_on_access_from_first_principles(rng, dtype, trans, m):
    """The engine's reports, built from the batch's arrays on first access,
    are what each element's report is by definition (the residual summed in
    order, the condition estimate, LAPACK's error bound); an element left out
    has none; a not positive definite element (SuperLU) and a singular one
    are reported as such."""
    A = grid_pattern(5)
    B = 5
    data = hermitian_batch(A, B, rng, dtype)
    data[3] = hermitian_batch(A, 1, rng, shift=0.0)[0]      # singular (real)
    eng = sd.BatchedSolver(A, data, on_failure="nan")._engine
    assert eng.library == "cholesky"
    b = rng.standard_normal((B, A.shape[0], m)).astype(dtype)
    elements = np.array([True, True, False, True, True])
    x, reps = eng.solve_batch(b, trans=trans, elements=elements)
    assert isinstance(reps, _direct.DirectReports) and len(reps) == B
    assert reps[2] is None and reps[-3] is None
    assert reps.solved.tolist() == elements.tolist()
    assert reps.converged.tolist() == [True, True, False, False, True]
    kind = "N" if trans == "N" else "T"
    norm = eng._norm1 if kind == "N" else eng._norminf
    coef = (eng._row_nnz + 1) * np.finfo(np.float64).eps
    for e in (0, 1, 4):
        info = reps[e]
        assert info is reps[e]                       # made once
        assert info.converged and info.reason == "converged"
        assert info.iterations == 0 and info.method == "direct"
        assert info.trans == trans
        assert info.column_converged.tolist() == [True] * m
        assert info.column_iterations.tolist() == [0] * m
        # Hermitian: op(A_e) = A_e for N and H, conj(A_e) on the same pattern
        # for T (complex T goes through the batch-last path)
        vals = np.conj(data[e]) if trans == "T" else data[e]
        opA = sp.csr_array((vals, A.indices, A.indptr), shape=A.shape)
        r = b[e] - _sequential_row_sums(A, opA.data, x[e])
        np.testing.assert_allclose(info.residual_norm,
                                   np.sqrt(_sequential_sum(np.abs(r) ** 2)),
                                   rtol=1e-12, atol=1e-30)
        np.testing.assert_array_equal(info.rhs_norm,
                                      np.sqrt(_sequential_sum(np.abs(b[e]) ** 2)))
        assert info.residual_norm.max() < 1e-12 * info.rhs_norm.max()
        inv = eng._inverse_norm(e, eng.dtype, kind)
        assert info.condition_estimate == norm[e] * inv
        ax = _sequential_row_sums(A, np.abs(opA.data), np.abs(x[e]))
        wn = _sequential_sum(np.abs(r) + coef * (ax + np.abs(b[e])))
        ferr = inv * wn / _sequential_sum(np.abs(x[e]))
        np.testing.assert_allclose(info.error_estimate, ferr.max(), rtol=1e-12)
    assert reps[3].reason == "singular" and not reps[3].converged
    assert reps[3].column_converged.tolist() == [False] * m
    assert reps[0:2] == (reps[0], reps[1])


def test_adjoint_info_made_on_access(rng):
    """``adjoint_info`` is None before a vjp, made once on first access (the
    reports of the gradient: backward error and error bound), and replaced
    whole by the next vjp."""
    A = grid_pattern(5)
    data = hermitian_batch(A, 3, rng)
    sol = sd.BatchedSolver(A, data).solve(rng.standard_normal((3, A.shape[0])))
    assert sol.adjoint_info is None
    sol.vjp(rng.standard_normal((3, A.shape[0])))
    first = sol.adjoint_info
    assert isinstance(first, tuple) and len(first) == 3 and sol.adjoint_info is first
    for e, info in enumerate(first):
        fwd = sol.info[e]
        assert info.converged and info.reason == "converged"
        assert np.ndim(info.residual_norm) == 0          # b was (B, n): scalars
        assert info.condition_estimate == pytest.approx(fwd.condition_estimate,
                                                        rel=1e-12)
        f_rel = fwd.residual_norm / fwd.rhs_norm
        assert f_rel <= info.backward_error < f_rel + 1e-12
        assert info.error_estimate >= fwd.error_estimate
    sol.vjp(rng.standard_normal((3, A.shape[0])))
    assert sol.adjoint_info is not first


def _singular_element_batch(rng):
    """Four Hermitian positive-diagonal elements; element 2 a graph Laplacian
    (singular: the batched kernels refuse it, SuperLU finds it singular to
    working precision)."""
    A = grid_pattern(5)
    data = hermitian_batch(A, 4, rng)
    data[2] = hermitian_batch(A, 1, rng, shift=0.0)[0]
    return A, data


def test_adjoint_policy_per_element_warn(rng):
    """Under "warn" the failed element warns for its forward solve and for
    its adjoint solve (naming it, pointing at the caller); the others'
    gradients are those of the batch without it, bitwise."""
    A, data = _singular_element_batch(rng)
    n = A.shape[0]
    b = rng.standard_normal((4, n))
    g = rng.standard_normal((4, n))
    with pytest.warns(sd.ConvergenceWarning, match="batch element 2"):
        sol = sd.BatchedSolver(A, data, on_failure="warn").solve(b)
    assert sd.BatchedSolver(A, data, on_failure="warn")._engine.library == "cholesky"
    with pytest.warns(sd.ConvergenceWarning) as record:
        grad_data, grad_b = sol.vjp(g)
    messages = [str(w.message) for w in record]
    assert any("(forward solve), batch element 2" in s for s in messages)
    assert any("adjoint solve, batch element 2: the matrix is singular" in s
               for s in messages)
    assert all("batch element 2" in s for s in messages)
    assert all(w.filename == __file__ for w in record)
    assert sol.adjoint_info[2].reason == "singular"
    keep = [0, 1, 3]
    ref = sd.BatchedSolver(A, data[keep]).solve(b[keep])
    ref_data, ref_b = ref.vjp(g[keep])
    np.testing.assert_array_equal(grad_data[keep], ref_data)
    np.testing.assert_array_equal(grad_b[keep], ref_b)


def test_adjoint_policy_per_element_nan_and_raise(rng):
    """Under "nan" a failed element (singular, or a non-finite cotangent) gets
    NaN gradients and no adjoint report; the others are exact. Under "raise"
    a non-finite cotangent raises naming its element."""
    A, data = _singular_element_batch(rng)
    n = A.shape[0]
    b = rng.standard_normal((4, n))
    g = rng.standard_normal((4, n))
    g[0, 3] = np.nan
    sol = sd.BatchedSolver(A, data, on_failure="nan").solve(b)
    assert [i.reason for i in sol.info] == ["converged", "converged", "singular",
                                             "converged"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grad_data, grad_b = sol.vjp(g)
    assert sol.adjoint_info[0] is None and sol.adjoint_info[2] is None
    assert sol.adjoint_info[1].converged and sol.adjoint_info[3].converged
    for e in (0, 2):
        assert np.isnan(grad_data[e]).all() and np.isnan(grad_b[e]).all()
    for e in (1, 3):
        one = sd.solve(sp.csr_array((data[e], A.indices, A.indptr), shape=A.shape),
                       b[e], method="direct")
        gA, gb = one.vjp(g[e])
        np.testing.assert_allclose(grad_data[e], gA.data, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(grad_b[e], gb, rtol=1e-10, atol=1e-13)
    good = hermitian_batch(A, 3, rng)
    sol = sd.BatchedSolver(A, good).solve(b[:3])
    gg = rng.standard_normal((3, n))
    gg[1, 0] = np.inf
    with pytest.raises(sd.NonFiniteInputError, match=r"`g\[1\]`"):
        sol.vjp(gg)
    with pytest.raises(sd.SingularMatrixError, match="batch element 2"):
        sd.BatchedSolver(A, data).solve(b)
