"""The direct-solver contract on every installed factorization library.

``method=("direct", {"library": L})`` for L in SuperLU (always), CHOLMOD and
UMFPACK (the optional extra ``sparsediff[direct]``; skipped when it is not
installed): forward against a dense oracle (real, complex, multi-RHS, trans
N/T/H), gradients by central finite differences and by the dot-product test,
stored duplicates / unsorted indices / explicit zeros, ``Solver.update`` with
symbolic reuse, singular and indefinite matrices, a shared ``Solver`` across
threads, and the ``auto`` choice (docs/direct.md).
"""

import threading

import numpy as np
import pytest
import scipy.sparse as sp

import sparsediff as sd
import sparsediff.solvers.direct as direct
from sparsediff.backend import NUMBA
from sparsediff.backend import _direct as libs

INSTALLED = ("superlu", *NUMBA.direct_libraries())


def _engine_param(name):
    extra = libs.PARDISO_EXTRA if name == "pardiso" else libs.EXTRA
    marks = () if name in INSTALLED else pytest.mark.skip(
        reason=f"{name} is not installed (pip install {extra})")
    return pytest.param(name, marks=marks, id=name)


#: every library, for Hermitian positive definite matrices
ALL = [_engine_param(n) for n in ("superlu", "cholmod", "umfpack", "pardiso")]
#: the LU libraries, for every square matrix
LU = [_engine_param(n) for n in ("superlu", "umfpack", "pardiso")]
DTYPES = [np.float64, np.complex128]


def _randn(rng, shape, dtype):
    x = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dtype)


def _dense(rng, n, dtype, hermitian):
    """A well-conditioned random sparse matrix as a dense array (κ of order 10)."""
    mask = rng.random((n, n)) < 0.3
    if hermitian:
        mask |= mask.T
    np.fill_diagonal(mask, True)
    D = _randn(rng, (n, n), dtype) * mask
    if hermitian:
        D = np.triu(D, 1)
        D = D + D.conj().T
    D[np.arange(n), np.arange(n)] = np.abs(D).sum(axis=1) + 1.0
    if not hermitian and np.dtype(dtype).kind == "c":
        D[np.arange(n), np.arange(n)] *= np.exp(1j * rng.uniform(0, 2 * np.pi, n))
    return D, mask


def _stored(D, mask, fmt, rng):
    """``D`` (pattern ``mask``) as CSR / unsorted CSR / COO with duplicates /
    CSR with explicit zeros. Duplicates split values in halves (exact in binary,
    so a Hermitian matrix stays exactly Hermitian); explicit zeros come in
    symmetric pairs."""
    n = D.shape[0]
    A = sp.csr_array(D * mask)
    A.sort_indices()
    if fmt == "csr":
        return A
    if fmt == "csr_unsorted":
        B = A.copy()
        for i in range(n):
            s, e = B.indptr[i], B.indptr[i + 1]
            p = rng.permutation(e - s)
            B.indices[s:e], B.data[s:e] = B.indices[s:e][p], B.data[s:e][p]
        B.has_sorted_indices = False
        return B
    C = A.tocoo()
    if fmt == "coo_dup":
        r = np.concatenate([C.row, C.row])
        c = np.concatenate([C.col, C.col])
        v = np.concatenate([C.data / 2, C.data / 2])
        p = rng.permutation(r.size)
        return sp.coo_array((v[p], (r[p], c[p])), shape=A.shape)
    assert fmt == "csr_zeros"
    free = np.argwhere(~mask)
    i, j = free[0]
    r = np.concatenate([C.row, [i, j]])
    c = np.concatenate([C.col, [j, i]])
    v = np.concatenate([C.data, np.zeros(2, D.dtype)])
    Z = sp.csr_array((v, (r, c)), shape=A.shape)
    Z.sort_indices()
    assert Z.nnz == A.nnz + 2
    return Z


def _entries(A):
    A = sp.coo_array(A) if A.format != "coo" else A
    return A.row, A.col


def _with(A, data):
    if A.format == "coo":
        return sp.coo_array((data, (A.row, A.col)), shape=A.shape)
    B = sp.csr_array((data, A.indices, A.indptr), shape=A.shape)
    B.has_sorted_indices = A.has_sorted_indices
    return B


def _method(library):
    return ("direct", {"library": library})


def _solve(A, b, method, trans="N", **options):
    return sd.Solver(A, method=method, **options).solve(b, trans=trans)


def _op(D, trans):
    return {"N": D, "T": D.T, "H": D.conj().T}[trans]


def _problem(rng, library, dtype, fmt="csr", n=12):
    hermitian = library == "cholmod"
    D, mask = _dense(rng, n, dtype, hermitian=hermitian)
    return _stored(D, mask, fmt, rng), D


# ---------------------------------------------------------------------------
# forward
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("library", ALL)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("trans", ["N", "T", "H"])
@pytest.mark.parametrize("m", [None, 3])
def test_forward_matches_dense_oracle(rng, library, dtype, trans, m):
    A, D = _problem(rng, library, dtype)
    b = _randn(rng, (12,) if m is None else (12, m), dtype)
    solver = sd.Solver(A, method=_method(library))
    assert solver._state.engine.library == library
    sol = solver.solve(b, trans=trans)
    want = np.linalg.solve(_op(D, trans), b)
    np.testing.assert_allclose(sol.x, want, rtol=1e-11, atol=1e-12)
    assert sol.x.dtype == np.dtype(dtype) and sol.x.shape == b.shape
    assert sol.info.converged and sol.info.method == "direct"


@pytest.mark.parametrize("library", ALL)
def test_real_matrix_complex_rhs_and_single_precision(rng, library):
    A, D = _problem(rng, library, np.float64)
    b = _randn(rng, (12, 2), np.complex128)
    for trans in "NTH":
        x = _solve(A, b, _method(library), trans).x
        np.testing.assert_allclose(x, np.linalg.solve(_op(D, trans), b), rtol=1e-11)
    # single precision is factorized by SuperLU whatever the library
    A32 = A.astype(np.float32)
    x32 = sd.solve(A32, b.real.astype(np.float32), method=_method(library)).x
    assert x32.dtype == np.float32
    np.testing.assert_allclose(x32, np.linalg.solve(D, b.real), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("library", ALL)
@pytest.mark.parametrize("fmt", ["csr", "csr_unsorted", "coo_dup", "csr_zeros"])
@pytest.mark.parametrize("trans", ["N", "T", "H"])
def test_gradient_finite_differences(rng, library, fmt, trans):
    """Central differences in float64 on every stored entry (in the caller's
    order: duplicates and explicit zeros included) and on b."""
    n = 8
    A, D = _problem(rng, library, np.float64, fmt=fmt, n=n)
    b, g = rng.standard_normal(n), rng.standard_normal(n)
    method = _method("superlu" if library == "cholmod" else library)
    # a perturbed Hermitian matrix is not Hermitian: finite differences run on
    # LU, the analytic gradient on the library under test (same contract)

    def loss(data, rhs):
        return float(g @ _solve(_with(A, data), rhs, method, trans).x)

    sol = _solve(A, b, _method(library), trans)
    gA, gb = sol.vjp(g)
    data = A.data.copy()
    h = 1e-6
    fd_A = np.array([(loss(data + h * e, b) - loss(data - h * e, b)) / (2 * h)
                     for e in np.eye(data.size)])
    fd_b = np.array([(loss(data, b + h * e) - loss(data, b - h * e)) / (2 * h)
                     for e in np.eye(n)])
    np.testing.assert_allclose(gA.data, fd_A, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gb, fd_b, rtol=1e-6, atol=1e-8)
    # dense oracle: ∂L/∂A[i, j] = −λ_i x_j for every stored (i, j)
    x = np.linalg.solve(_op(D, trans), b)
    lam = np.linalg.solve(_op(D, trans).conj().T, g)
    rows, cols = _entries(A)
    if trans == "N":
        want = -lam[rows] * x[cols]
    else:   # op(A) = Aᵀ (real): ∂/∂A[i, j] = −λ_j x_i
        want = -lam[cols] * x[rows]
    np.testing.assert_allclose(gA.data if fmt != "coo_dup" else gA.data, want,
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("library", ALL)
@pytest.mark.parametrize("trans", ["N", "T", "H"])
def test_dot_product_test_complex(rng, library, trans):
    """Re⟨v, J u⟩ = Re⟨u, Jᴴ v⟩ with J the Jacobian of x in (A.data, b)."""
    A, _ = _problem(rng, library, np.complex128, fmt="coo_dup")
    b = _randn(rng, (12, 2), np.complex128)
    sol = _solve(A, b, _method(library), trans)
    u_A = _randn(rng, A.nnz, np.complex128)
    u_b = _randn(rng, b.shape, np.complex128)
    v = _randn(rng, b.shape, np.complex128)
    Ju = sol.jvp(u_A, u_b)
    gA, gb = sol.vjp(v)
    lhs = np.real(np.vdot(v, Ju))
    rhs = np.real(np.vdot(u_A, gA.data) + np.vdot(u_b, gb))
    assert abs(lhs - rhs) <= 1e-12 * max(abs(lhs), 1.0)


# ---------------------------------------------------------------------------
# update: numeric refactorization on the reused symbolic analysis
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("library", ALL)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_update_equals_fresh_solve_and_reuses_analysis(rng, library, dtype):
    A, D = _problem(rng, library, dtype, fmt="csr_zeros")
    solver = sd.Solver(A, method=_method(library))
    old = solver._state.engine
    b = _randn(rng, 12, dtype)
    x_old = solver.solve(b).x
    sol_old = solver.solve(b, trans="T")
    g = _randn(rng, 12, dtype)
    grads_old = [np.array(getattr(a, "data", a)) for a in sol_old.vjp(g)]
    # new values on the same pattern: the explicit zeros become nonzeros
    new = A.data * 1.5
    new[new == 0] = 0.25
    solver.update(new)
    eng = solver._state.engine
    assert eng is not old and eng.library == library
    if library != "superlu":
        assert eng._analysis is not None and eng._analysis[0] == library
        if library == "umfpack":          # the very symbolic object
            assert eng._analysis[1] is old.analysis()[1]
    else:
        assert eng.permc_spec == old.permc_spec
    D_new = _with(A, new).toarray()
    for trans in "NTH":
        x = solver.solve(b, trans=trans).x
        np.testing.assert_allclose(x, np.linalg.solve(_op(D_new, trans), b),
                                   rtol=1e-11, atol=1e-12)
        fresh = sd.Solver(_with(A, new), method=_method(library)).solve(b, trans=trans)
        np.testing.assert_allclose(x, fresh.x, rtol=1e-12, atol=1e-13)
    # a solution made before the update keeps its own factorization
    np.testing.assert_allclose(x_old, np.linalg.solve(D, b), rtol=1e-11)
    for a, c in zip(grads_old, sol_old.vjp(g)):
        np.testing.assert_array_equal(a, np.array(getattr(c, "data", c)))


def test_update_from_cholesky_to_lu_when_values_stop_being_hermitian(rng):
    if "cholmod" not in INSTALLED:
        pytest.skip("cholmod is not installed")
    A, D = _problem(rng, "cholmod", np.float64, n=10)
    solver = sd.Solver(A, method=("direct", {"library": "auto"}))
    new = A.data.copy()
    off = np.flatnonzero(A.indices != np.repeat(np.arange(10), np.diff(A.indptr)))
    new[off[0]] += 0.5                               # no longer symmetric
    solver.update(new)
    D_new = _with(A, new).toarray()
    b = rng.standard_normal(10)
    np.testing.assert_allclose(solver.solve(b).x, np.linalg.solve(D_new, b), rtol=1e-11)


# ---------------------------------------------------------------------------
# singular, indefinite and ill-conditioned matrices
# ---------------------------------------------------------------------------

SINGULAR = sp.csr_array(np.array([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 0.0, 1.0]]))


@pytest.mark.parametrize("library", LU)
@pytest.mark.parametrize("trans", ["N", "T", "H"])
def test_singular_follows_the_policy(library, trans):
    method = _method(library)
    with pytest.raises(sd.SingularMatrixError, match="singular"):
        _solve(SINGULAR, np.ones(3), method, trans)
    with pytest.warns(sd.ConvergenceWarning, match="singular"):
        sol = _solve(SINGULAR, np.ones(3), method, trans, on_failure="warn")
    assert sol.info.reason == "singular" and not np.isfinite(sol.x).any()
    sol = _solve(SINGULAR, np.ones(3), method, on_failure="nan")
    assert np.isnan(sol.x).all() and np.isnan(sol.vjp(np.ones(3))[1]).all()


def test_pardiso_perturbed_pivots_fall_back_to_partial_pivoting():
    """Pardiso's static pivoting perturbs the zero pivot of a singular matrix
    (a Neumann Laplacian) instead of failing: sparsediff refactorizes by
    partial pivoting, which finds the matrix singular, and says why."""
    if "pardiso" not in INSTALLED:
        pytest.skip(f"pardiso is not installed (pip install {libs.PARDISO_EXTRA})")
    k = 12
    T = sp.diags_array([-np.ones(k - 1), 2 * np.ones(k), -np.ones(k - 1)],
                       offsets=[-1, 0, 1]).tolil()
    T[0, 0] = T[k - 1, k - 1] = 1.0
    A = sp.csr_array(sp.kron(T, sp.eye_array(k)) + sp.kron(sp.eye_array(k), T))
    solver = sd.Solver(A, method=_method("pardiso"), on_failure="nan")
    engine = solver._state.engine
    assert engine.library in ("umfpack", "superlu")
    assert "perturbed" in engine.fallback and "partial pivoting" in engine.fallback
    sol = solver.solve(np.ones(k * k))
    assert sol.info.reason == "singular" and np.isnan(sol.x).all()
    with pytest.raises(sd.SingularMatrixError, match="singular"):
        sd.solve(A, np.ones(k * k), method=_method("pardiso"))


def _require(name):
    if name not in INSTALLED:
        extra = libs.PARDISO_EXTRA if name == "pardiso" else libs.EXTRA
        pytest.skip(f"{name} is not installed (pip install {extra})")


def _berr(M, x, b):
    """Componentwise backward error ``maxᵢ |b − M x|ᵢ / (|M||x| + |b|)ᵢ``."""
    r = b - M @ x
    return float(np.max(np.abs(r) / (np.abs(M) @ np.abs(x) + np.abs(b))))


def _spy_refinement(monkeypatch, library):
    """Count the library's refined and unrefined solves."""
    calls = {"refined": 0, "plain": 0}
    if library == "umfpack":
        if not libs._umfpack_c():
            pytest.skip("UMFPACK's C library is not reachable here (refined fallback)")
        refined, plain = libs._Factor.solve, libs.UmfpackFactor.solve_unrefined

        def spy_refined(factor, b, trans="N"):
            calls["refined"] += 1
            return refined(factor, b, trans)

        def spy_plain(factor, b, trans="N"):
            calls["plain"] += 1
            return plain(factor, b, trans)

        monkeypatch.setattr(libs._Factor, "solve", spy_refined)
        monkeypatch.setattr(libs.UmfpackFactor, "solve_unrefined", spy_plain)
        return calls, plain
    real = libs.PardisoFactor.solve

    def spy(factor, b, trans="N", *, refine=True):
        calls["refined" if refine else "plain"] += 1
        return real(factor, b, trans, refine=refine)

    monkeypatch.setattr(libs.PardisoFactor, "solve", spy)
    return calls, lambda factor, b, trans: real(factor, b, trans, refine=False)


@pytest.mark.parametrize("library", ["umfpack", "pardiso"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("trans", ["N", "H"])
def test_lu_solves_unrefined_and_the_engine_refines(monkeypatch, rng, library, dtype,
                                                    trans):
    """Every UMFPACK or Pardiso solve of the engine is unrefined (their own
    refinement costs 2–4× one solve: UMFPACK's residual, Pardiso's two fixed
    steps); the engine refines the caller's solves with its one-pass residual
    as UMFPACK's default does (while the componentwise backward error exceeds
    eps and halves, at most two steps), so the answer is as backward stable as
    the libraries' refined ones; the estimate still brackets the true 1-norm
    condition number."""
    _require(library)
    calls, plain = _spy_refinement(monkeypatch, library)
    D, mask = _dense(rng, 30, dtype, hermitian=False)
    # κ about 1e6 and more, rows of very different sizes: the first solve is
    # not backward stable to eps componentwise, so refinement has work to do
    D = np.diag(np.logspace(0, 8, 30)) @ D @ np.diag(np.logspace(0, -6, 30))
    M = D * mask
    A = sp.csr_array(M)
    b = _randn(rng, 30, dtype) * np.logspace(0, 8, 30)
    solver = sd.Solver(A, method=_method(library))
    sol = solver.solve(b, trans=trans)
    sol.vjp(_randn(rng, 30, dtype))
    assert calls["refined"] == 0 and calls["plain"] >= 7
    eps = np.finfo(np.float64).eps
    op = M if trans == "N" else M.conj().T
    x0 = plain(solver._state.engine._factor(np.dtype(dtype)), b, trans)
    target = direct.REFINE_BACKWARD_ERROR * eps
    before, after = _berr(op, x0, b), _berr(op, sol.x, b)
    assert after <= before * 1.01
    if before > target:                       # something to refine (most cases)
        assert after <= max(target * 1.01, before / 2)
    for info, Mk in ((sol.info, op), (sol.adjoint_info, op.conj().T)):
        kappa = np.linalg.cond(Mk, 1)
        assert kappa / 3 <= info.condition_estimate <= kappa * (1 + 1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_engine_refinement_undoes_a_step_that_does_not_help(monkeypatch, rng, dtype):
    """A refinement step that makes the backward error larger is undone and
    ends the refinement (UMFPACK's rule): with a solve that returns garbage
    after the first call, the engine keeps the first answer."""
    _require("umfpack")
    if not libs._umfpack_c():
        pytest.skip("UMFPACK's C library is not reachable here (refined fallback)")
    D, mask = _dense(rng, 20, dtype, hermitian=False)
    M = np.diag(np.logspace(0, 8, 20)) @ (D * mask)
    A = sp.csr_array(M)
    b = _randn(rng, 20, dtype) * np.logspace(0, 8, 20)
    solver = sd.Solver(A, method=_method("umfpack"))
    solver.solve(b)                      # the estimate is computed and cached
    plain = libs.UmfpackFactor.solve_unrefined
    seen = []

    def noisy(factor, rhs, trans="N"):
        seen.append(1)
        x = plain(factor, rhs, trans)
        return x if len(seen) == 1 else x + 1e3 * np.abs(x).max()

    monkeypatch.setattr(libs.UmfpackFactor, "solve_unrefined", noisy)
    x = solver.solve(b).x
    first = plain(solver._state.engine._factor(np.dtype(dtype)), b, "N")
    if _berr(M, first, b) > np.finfo(np.float64).eps:
        assert len(seen) == 2            # one step tried, then undone
    np.testing.assert_array_equal(x, first)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("trans", ["N", "T", "H"])
def test_umfpack_unrefined_solve_matches_dense(rng, dtype, trans):
    """The unrefined solve (its own C call on kvxopt's numeric object) solves
    with op(A) for 1-D and 2-D right-hand sides, caller's array untouched."""
    _require("umfpack")
    D, mask = _dense(rng, 25, dtype, hermitian=False)
    A = sp.csr_array(D * mask)
    A.sort_indices()
    rows = np.repeat(np.arange(25), np.diff(A.indptr)).astype(np.int64)
    factor = libs.UmfpackFactor(25, rows, A.indices.astype(np.int64), A.data,
                                func="test")
    M = _op(D * mask, trans)
    for shape in ((25,), (25, 3)):
        b = _randn(rng, shape, dtype)
        keep = b.copy()
        x = factor.solve_unrefined(b, trans)
        assert x.shape == b.shape and x.dtype == np.dtype(dtype)
        np.testing.assert_allclose(M @ x, b, atol=1e-10 * np.abs(b).max())
        np.testing.assert_array_equal(b, keep)


def test_umfpack_estimate_without_the_c_library_uses_the_refined_solve(monkeypatch, rng):
    """Where UMFPACK's C library cannot be found (another platform or build),
    the estimator's solves fall back to kvxopt's refined solve: same
    estimates, no failure."""
    _require("umfpack")
    D, mask = _dense(rng, 20, np.complex128, hermitian=False)
    A = sp.csr_array(D * mask)
    b = _randn(rng, 20, np.complex128)
    want = sd.Solver(A, method=_method("umfpack")).solve(b).info.condition_estimate
    monkeypatch.setattr(libs, "_UMFPACK_C", False)
    calls = []
    refined = libs._Factor.solve
    monkeypatch.setattr(libs._Factor, "solve",
                        lambda f, v, trans="N": calls.append(trans) or refined(f, v, trans))
    got = sd.Solver(A, method=_method("umfpack")).solve(b).info.condition_estimate
    assert len(calls) >= 5            # the caller's solve and the estimator's
    np.testing.assert_allclose(got, want, rtol=1e-8)
    assert np.linalg.cond(D * mask, 1) / 3 <= got <= np.linalg.cond(D * mask, 1) * 1.000001


def _pattern(A):
    """What ``_transpose_order`` reads of a validated matrix (canonical CSR)."""
    from types import SimpleNamespace

    rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
    return SimpleNamespace(rows=rows, indices=A.indices, indptr=A.indptr, nnz=A.nnz,
                           shape=A.shape, data=A.data)


@pytest.mark.parametrize("nnz_large", [False, True])
def test_transpose_order_finds_symmetry_in_one_pass(rng, monkeypatch, nnz_large):
    """``_transpose_order`` gives Aᵀ's values in A's pattern when the pattern is
    symmetric (small patterns by sorting keys, large ones by SciPy's
    transpose), ``None`` otherwise; the engine computes it once and uses it
    for both the Cholesky precondition and the one-estimate-for-every-trans
    test (the build did up to three transposes)."""
    monkeypatch.setattr(direct, "LIBRARY_MIN_N", 0)
    k = 240 if nnz_large else 12                       # nnz 286,080 or 672
    T = sp.diags_array([-np.ones(k - 1), 2 * np.ones(k), -np.ones(k - 1)],
                       offsets=[-1, 0, 1])
    L = sp.csr_array(sp.kron(T, sp.eye_array(k)) + sp.kron(sp.eye_array(k), T))
    L.sort_indices()
    assert (L.nnz > 50_000) == nnz_large
    values = _randn(rng, L.nnz, np.complex128)
    A = sp.csr_array((values, L.indices, L.indptr), shape=L.shape)
    perm = direct._transpose_order(_pattern(A))
    At = sp.csr_array((A.data[perm], A.indices, A.indptr), shape=A.shape)
    assert abs(At - A.T).max() == 0
    # structurally nonsymmetric: one more entry above the diagonal
    C = sp.lil_array(A)
    C[0, k + 1] = 1.0
    C = sp.csr_array(C)
    C.sort_indices()
    assert direct._transpose_order(_pattern(C)) is None
    calls = []
    real = direct._transpose_order
    monkeypatch.setattr(direct, "_transpose_order",
                        lambda m: calls.append(1) or real(m))
    sym = sp.csr_array((L.data * (1 + 0.5j), L.indices, L.indptr), shape=L.shape)
    herm = sp.csr_array(L * 2.0)                       # real symmetric
    for B, library in ((sym, "umfpack"), (herm, "auto")):
        calls.clear()
        solver = sd.Solver(B, method="direct")
        engine = solver._state.engine
        if library == "umfpack" and "umfpack" in INSTALLED:
            assert engine.library == "umfpack"
        sol = solver.solve(np.ones(L.shape[0]))
        sol.vjp(np.ones(L.shape[0]))
        assert len(calls) <= 1
        assert engine._transpose_invariant()
        assert engine._symmetric == ("symmetric" if B is sym else "hermitian")


def _indefinite(n=40):
    """Hermitian, positive diagonal, indefinite: 2-D Laplacian shifted past λ_min."""
    k = int(np.sqrt(n))
    T = sp.diags_array([-np.ones(k - 1), 2 * np.ones(k), -np.ones(k - 1)],
                       offsets=[-1, 0, 1])
    L = sp.kron(T, sp.eye_array(k)) + sp.kron(sp.eye_array(k), T)
    A = sp.csr_array(L - 1.0 * sp.eye_array(k * k))
    A.sort_indices()
    return A


def test_cholmod_refuses_indefinite_and_nonhermitian_with_the_reason(rng):
    if "cholmod" not in INSTALLED:
        pytest.skip("cholmod is not installed")
    A = _indefinite(36)
    assert np.linalg.eigvalsh(A.toarray()).min() < 0 < A.diagonal().min()
    with pytest.raises(ValueError, match="not positive definite"):
        sd.Solver(A, method=_method("cholmod"))
    with pytest.raises(ValueError, match="real positive diagonal"):
        sd.Solver(-sp.eye_array(5, format="csr"), method=_method("cholmod"))
    N, _ = _dense(rng, 8, np.float64, hermitian=False)
    with pytest.raises(ValueError, match="exactly Hermitian"):
        sd.Solver(sp.csr_array(N), method=_method("cholmod"))
    # a singular positive semidefinite matrix is not positive definite either
    P = sp.csr_array(np.array([[1.0, 1.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="not positive definite"):
        sd.Solver(P, method=_method("cholmod"))


def test_auto_falls_back_to_lu_for_indefinite_hermitian(monkeypatch, rng):
    if "cholmod" not in INSTALLED:
        pytest.skip("cholmod is not installed")
    monkeypatch.setattr(direct, "LIBRARY_MIN_N", 0)
    A = _indefinite(36)
    b = rng.standard_normal(36)
    solver = sd.Solver(A, method="direct")
    eng = solver._state.engine
    assert eng.library in ("umfpack", "superlu") and "not positive definite" in eng.fallback
    sol = solver.solve(b)
    np.testing.assert_allclose(sol.x, np.linalg.solve(A.toarray(), b), rtol=1e-10)
    gA, gb = sol.vjp(b)
    np.testing.assert_allclose(gb, np.linalg.solve(A.toarray().T, b), rtol=1e-10)


@pytest.mark.parametrize("library", ALL)
def test_ill_conditioned_reports_condition_and_singular_to_precision(rng, library):
    n = 10
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    s = np.logspace(0, -8, n)
    D = (Q * s) @ Q.T
    D = (D + D.T) / 2
    A = sp.csr_array(D)
    sol = sd.solve(A, rng.standard_normal(n), method=_method(library))
    kappa = np.linalg.cond(D, 1)
    assert kappa / 10 <= sol.info.condition_estimate <= kappa * (1 + 1e-6)
    # κ·eps ≫ 1: "singular to working precision", never a silent answer
    s[-1] = 1e-19
    D = (Q * s) @ Q.T
    A = sp.csr_array((D + D.T) / 2)
    try:
        sol = _solve(A, np.ones(n), _method(library), on_failure="nan")
    except ValueError as exc:                    # CHOLMOD: not positive definite
        assert library == "cholmod" and "not positive definite" in str(exc)
    else:
        assert not sol.info.converged and sol.info.reason == "singular"


# ---------------------------------------------------------------------------
# threads, auto, missing library
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("library", ALL)
def test_shared_solver_across_threads(rng, library):
    A, D = _problem(rng, library, np.complex128, n=30)
    solver = sd.Solver(A, method=_method(library))
    rhs = [_randn(rng, (30, 2), np.complex128) for _ in range(16)]
    want = [np.linalg.solve(_op(D, "NTH"[i % 3]), b) for i, b in enumerate(rhs)]
    got = [None] * len(rhs)

    def work(i):
        sol = solver.solve(rhs[i], trans="NTH"[i % 3])
        sol.vjp(rhs[i])
        got[i] = sol.x

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(rhs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for x, w in zip(got, want):
        np.testing.assert_allclose(x, w, rtol=1e-10)


def test_auto_library_choice(monkeypatch, rng):
    monkeypatch.setattr(direct, "LIBRARY_MIN_N", 20)
    H, _ = _dense(rng, 30, np.float64, hermitian=True)
    N, _ = _dense(rng, 30, np.float64, hermitian=False)
    lib = {name: sd.Solver(sp.csr_array(M)).__dict__["_state"].engine.library
           for name, M in (("spd", H), ("nonsym", N))}
    small = sd.Solver(sp.csr_array(H[:10, :10]))._state.engine.library
    single = sd.Solver(sp.csr_array(H.astype(np.float32)))._state.engine.library
    assert small == "superlu" and single == "superlu"
    if "cholmod" in INSTALLED:
        assert lib["spd"] == "cholmod"
    if "pardiso" in INSTALLED:        # a random graph is not two-dimensional
        assert lib["nonsym"] == "pardiso"
    elif "umfpack" in INSTALLED:
        assert lib["nonsym"] == "umfpack"
    if INSTALLED == ("superlu",):
        assert lib == {"spd": "superlu", "nonsym": "superlu"}


def _convection(k, dim, dtype=np.float64, stencil=(-1.5, 2.0, -0.5)):
    """Non-symmetric convection–diffusion stencil on a k^dim grid (CSR);
    ``stencil=(-1, 2, -1)`` gives Poisson."""
    lower, diag, upper = stencil
    T = sp.diags_array([np.full(k - 1, lower), np.full(k, diag), np.full(k - 1, upper)],
                       offsets=[-1, 0, 1])
    eye = sp.eye_array(k)
    if dim == 2:
        A = sp.kron(T, eye) + sp.kron(eye, T)
    else:
        A = (sp.kron(sp.kron(T, eye), eye) + sp.kron(sp.kron(eye, T), eye)
             + sp.kron(sp.kron(eye, eye), T))
    return sp.csr_array(A.astype(dtype))


def test_auto_lu_is_pardiso_for_real_3d_and_umfpack_otherwise(monkeypatch):
    """Measured (docs/direct.md): Pardiso's LU wins on real 3-D graphs,
    UMFPACK's on 2-D graphs and on complex matrices."""
    monkeypatch.setattr(direct, "LIBRARY_MIN_N", 100)

    def chosen(A):
        return sd.Solver(A)._state.engine.library

    lu = "umfpack" if "umfpack" in INSTALLED else "superlu"
    real3d = "pardiso" if "pardiso" in INSTALLED else lu
    assert chosen(_convection(8, 3)) == real3d
    assert chosen(_convection(8, 3, np.complex128)) == lu
    if "umfpack" in INSTALLED:
        assert chosen(_convection(24, 2)) == "umfpack"
    # without UMFPACK, Pardiso takes every real non-Hermitian matrix
    if "pardiso" in INSTALLED:
        monkeypatch.setattr(libs, "_MODULES", False)
        assert chosen(_convection(24, 2)) == "pardiso"
        assert chosen(_convection(8, 3, np.complex128)) == "superlu"


def test_auto_spd_is_pardiso_on_large_3d_graphs(monkeypatch):
    """Measured (docs/direct.md): from ``AUTO_PARDISO_SPD_MIN_N`` unknowns on,
    a real Hermitian positive-diagonal matrix with a 3-D graph factors faster
    by Pardiso's LU than by CHOLMOD; 2-D graphs, complex matrices and smaller
    ones keep CHOLMOD. The answer and its gradient do not depend on it."""
    if not {"cholmod", "pardiso"} <= set(INSTALLED):
        pytest.skip("needs CHOLMOD and Pardiso")
    monkeypatch.setattr(direct, "LIBRARY_MIN_N", 100)

    def chosen(A):
        return sd.Solver(A, method="direct")._state.engine.library

    def poisson(k, dim, dtype=np.float64):
        return _convection(k, dim, dtype, stencil=(-1.0, 2.0, -1.0))

    A3, A2 = poisson(10, 3), poisson(40, 2)
    assert chosen(A3) == "cholmod"             # 1,000 unknowns: below the limit
    monkeypatch.setattr(direct, "AUTO_PARDISO_SPD_MIN_N", 500)
    assert chosen(A3) == "pardiso"
    assert chosen(A2) == "cholmod"             # 2-D graph
    assert chosen(poisson(10, 3, np.complex128)) == "cholmod"
    b = np.linspace(1.0, 2.0, A3.shape[0])
    sol = sd.Solver(A3, method="direct").solve(b)
    ref = sd.Solver(A3, method=_method("cholmod")).solve(b)
    np.testing.assert_allclose(sol.x, ref.x, rtol=1e-12)
    g = np.cos(np.arange(A3.shape[0]))
    np.testing.assert_allclose(sol.vjp(g)[0].data, ref.vjp(g)[0].data,
                               rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("permute", [False, True])
def test_local_graph_dimension_tells_2d_from_3d(permute):
    """The cut breadth-first search gives below 2 on 2-D grids and above 2 on
    3-D ones, whatever the numbering of the nodes (random permutations)."""
    rng = np.random.default_rng(3)
    for k, dim, stencil in ((40, 2, (-1.0, 2.0, -1.0)), (100, 2, (-1.5, 2.0, -0.5)),
                            (12, 3, (-1.0, 2.0, -1.0)), (20, 3, (-1.5, 2.0, -0.5))):
        A = _convection(k, dim, stencil=stencil)
        if permute:
            p = rng.permutation(A.shape[0])
            A = sp.csr_array(A[p][:, p])
        mat = sd.Solver(A, method=_method("superlu"))._state.engine.mat
        d = direct.local_graph_dimension(mat)
        assert (d < 2.0) if dim == 2 else (d > 2.0), (k, dim, d)


def test_missing_library_names_the_extra(monkeypatch):
    monkeypatch.setattr(libs, "_MODULES", False)
    monkeypatch.setattr(libs, "_PARDISO", False)
    assert NUMBA.direct_libraries() == ()
    A = sp.csr_array(np.eye(3) * 2)
    for name in ("cholmod", "umfpack"):
        with pytest.raises(ImportError, match=r"pip install sparsediff\[direct\]"):
            sd.Solver(A, method=_method(name))
    with pytest.raises(ImportError, match=r"'pardiso'.*pip install sparsediff\[pardiso\]"):
        sd.Solver(A, method=_method("pardiso"))
    # auto and superlu work without it
    np.testing.assert_allclose(sd.solve(A, np.ones(3), method="direct").x, 0.5)
    np.testing.assert_allclose(sd.solve(A, np.ones(3), method=_method("superlu")).x,
                               0.5)


def test_bad_library_option():
    A = sp.csr_array(np.eye(3))
    with pytest.raises(ValueError, match="`library` must be one of"):
        sd.Solver(A, method=("direct", {"library": "mumps"}))
    with pytest.raises(ValueError, match="only the option 'library'"):
        sd.Solver(A, method=("direct", {"ordering": "amd"}))


def _grid(k, dim):
    T = sp.diags_array([-np.ones(k - 1), 2 * np.ones(k), -np.ones(k - 1)],
                       offsets=[-1, 0, 1])
    eye = sp.eye_array(k)
    A = sp.kron(T, eye) + sp.kron(eye, T) if dim == 2 else (
        sp.kron(sp.kron(T, eye), eye) + sp.kron(sp.kron(eye, T), eye)
        + sp.kron(sp.kron(eye, eye), T))
    A = sp.csr_array(A)
    A.sort_indices()
    return A


def test_graph_dimension_separates_2d_from_3d():
    from sparsediff._validation import as_matrix

    d2 = direct.graph_dimension(as_matrix(_grid(40, 2), "A"))
    d3 = direct.graph_dimension(as_matrix(_grid(12, 3), "A"))
    assert 1.5 < d2 < direct.AUTO_CHOLMOD_2D_DIMENSION < d3 < 2.6


def test_auto_spd_past_the_threshold_by_dimension(monkeypatch, rng):
    """Past AUTO_DIRECT_MAX_N_SPD: CHOLMOD for a 2-D-looking SPD graph, CG + AMG
    for a 3-D one (and always CG + AMG without CHOLMOD)."""
    import sparsediff.solvers as solvers

    monkeypatch.setattr(solvers, "AUTO_DIRECT_MAX_N_SPD", 100)
    monkeypatch.setattr(direct, "LIBRARY_MIN_N", 100)
    A2, A3 = _grid(30, 2), _grid(10, 3)
    m2 = sd.Solver(A2, rtol=1e-10).method
    m3 = sd.Solver(A3, rtol=1e-10).method
    assert m3 == "cg+amg"
    assert m2 == ("direct" if "cholmod" in INSTALLED else "cg+amg")
    if "cholmod" in INSTALLED:
        s = sd.Solver(A2)
        assert s._state.engine.library == "cholmod"
        b = rng.standard_normal(900)
        np.testing.assert_allclose(s.solve(b).x, np.linalg.solve(A2.toarray(), b),
                                   rtol=1e-10)


@pytest.mark.parametrize("hide", [False, True], ids=["installed", "hidden"])
def test_auto_spd_3d_goes_iterative_earlier(monkeypatch, hide):
    """3-D SPD graphs leave the direct solver past AUTO_SUPERLU_MAX_N_3D = 1,000
    unknowns with SuperLU, past AUTO_CHOLMOD_MAX_N_3D with CHOLMOD; 2-D ones
    of the same size stay direct."""
    if hide:
        monkeypatch.setattr(libs, "_MODULES", False)
        monkeypatch.setattr(libs, "_PARDISO", False)
    cholmod = "cholmod" in NUMBA.direct_libraries()
    A3, A2 = _grid(12, 3), _grid(42, 2)           # n = 1,728 and 1,764
    assert sd.Solver(A2).method == "direct"
    assert sd.Solver(A3, rtol=1e-10).method == ("direct" if cholmod else "cg+amg")
    assert sd.Solver(_grid(5, 3)).method == "direct"   # n = 125
