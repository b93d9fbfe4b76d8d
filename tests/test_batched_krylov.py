"""Batched Krylov solves: the stagnation test per element, AMG per element
(shared aggregation with a measured fallback), each element against its own
`sd.Solver`, exact gradients, failures kept in their element."""

import contextlib
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import sparsediff as sd
from sparsediff.backend import NUMBA, REFERENCE
from sparsediff.batched import _amg
from sparsediff.kernels import _reference
from sparsediff.precond.amg import AMG
from sparsediff.precond.ilu import ILU
from sparsediff.solvers import _state


def poisson2d(m):
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m))
    eye = sp.identity(m)
    A = sp.csr_array(sp.kron(T, eye) + sp.kron(eye, T))
    A.sort_indices()
    return A


def rows_of(A):
    return np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))


def spd_batch(rng, m=6, B=3, dtype=np.float64):
    """B SPD diffusion-like matrices on the 5-point pattern: symmetric
    positive edge weights, diagonal = row sum + a positive shift."""
    A = poisson2d(m)
    r, c = rows_of(A), A.indices
    data = np.empty((B, A.nnz), dtype=dtype)
    for e in range(B):
        W = sp.triu(sp.csr_array((rng.uniform(0.5, 2.0, A.nnz), (r, c)),
                                 shape=A.shape), 1)
        if np.dtype(dtype).kind == "c":
            W = W.astype(complex)
            W.data = W.data * np.exp(0.3j * rng.standard_normal(W.nnz))
        W = W + W.conj().T
        D = sp.diags(np.asarray(abs(W).sum(axis=1)).ravel() + 0.1)
        M = sp.csr_array(D - W)
        data[e] = np.asarray(M[r, c]).ravel()
    return A, data


def convdiff_batch(rng, m=6, B=3):
    """Non-symmetric convection-diffusion values on the 5-point pattern."""
    A = poisson2d(m)
    r, c = rows_of(A), A.indices
    data = np.empty((B, A.nnz))
    for e in range(B):
        w = rng.uniform(0.0, 0.8)
        up = np.where(c == r + 1, -w, 0.0) + np.where(c == r - 1, w, 0.0)
        data[e] = A.data * rng.uniform(0.8, 1.2) + up
    return A, data


def with_values(A, values):
    return sp.csr_array((values, A.indices, A.indptr), shape=A.shape)


def entries(A, gA):
    """The values of a sparse gradient at the stored entries of ``A``."""
    if sp.issparse(gA):
        return np.asarray(sp.csr_array(gA)[rows_of(A), A.indices]).ravel()
    return np.asarray(gA)


@contextlib.contextmanager
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sd.ConvergenceWarning)
        yield


# ---------------------------------------------------------------------------
# stagnation, per element
# ---------------------------------------------------------------------------


def stagnating_batch(rng, m=20):
    """Element 0 and 2: 2-D Poisson m² (rtol = 1e-20 is unreachable there);
    element 1: 4·I on the same pattern (off-diagonals stored as zeros), which
    CG and BiCGSTAB solve exactly (powers of two) in one step."""
    A = poisson2d(m)
    n = A.shape[0]
    diag = np.where(rows_of(A) == A.indices, 4.0, 0.0)
    data = np.stack([A.data, diag, 3.0 * A.data])
    b = rng.standard_normal((3, n))
    return A, data, b


@pytest.mark.parametrize("method", ["cg", "bicgstab"])
@pytest.mark.parametrize("M", [None, "jacobi"])
def test_stagnation_stops_only_its_element(rng, method, M):
    # fails before: no stagnation test, the stuck elements ran to
    # maxiter = 10 n = 4000 with reason "maxiter"
    A, data, b = stagnating_batch(rng)
    n = A.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sd.ConvergenceWarning)
        sol = sd.BatchedSolver(A, data, method=method, M=M, rtol=1e-20,
                               on_failure="warn").solve(b)
        one = sd.Solver(A, method=method, M=M, rtol=1e-20,
                        on_failure="warn").solve(b[0])
    for e in (0, 2):
        info = sol.info[e]
        assert info.reason == "stagnation", info
        assert info.iterations < 0.1 * 10 * n
        best = float(info.extra["attainable"][0])
        assert best <= info.residual_norm <= 4 * best
        assert info.residual_norm < 1e-10 * info.rhs_norm
    # the single solver stops for the same reason, at the same accuracy
    assert one.info.reason == "stagnation"
    np.testing.assert_allclose(sol.x[0], one.x, rtol=1e-10, atol=1e-10)
    # the element that converges is untouched by the others' iterations
    assert sol.info[1].converged and sol.info[1].iterations == 1
    np.testing.assert_array_equal(sol.x[1], b[1] / 4)


def test_stagnation_policies(rng):
    A, data, b = stagnating_batch(rng)
    data, b = data[:2], b[:2]
    with pytest.raises(sd.ConvergenceError, match=r"batch element 0.*stagnation"):
        sd.BatchedSolver(A, data, method="cg", rtol=1e-20).solve(b)
    with pytest.warns(sd.ConvergenceWarning, match=r"batch element 0.*stagnation"):
        sd.BatchedSolver(A, data, method="cg", rtol=1e-20,
                         on_failure="warn").solve(b)
    sol = sd.BatchedSolver(A, data, method="cg", rtol=1e-20,
                           on_failure="nan").solve(b)
    assert np.isnan(sol.x[0]).all()
    np.testing.assert_array_equal(sol.x[1], b[1] / 4)
    g = rng.standard_normal(b.shape)
    grad_data, grad_b = sol.vjp(g)
    assert np.isnan(grad_data[0]).all() and np.isnan(grad_b[0]).all()
    # element 1 (4·I): λ = g/4 and ∂L/∂a_ij = −λ_i x_j (the adjoint solve
    # scales g to unit norm and back: rounding)
    lam = g[1] / 4
    np.testing.assert_allclose(grad_b[1], lam, rtol=1e-15)
    np.testing.assert_allclose(grad_data[1], -lam[rows_of(A)] * sol.x[1][A.indices],
                               rtol=1e-15)


@pytest.mark.parametrize("method", ["cg", "bicgstab"])
def test_stagnation_check_leaves_converging_iterates_alone(rng, method,
                                                           monkeypatch):
    A, data = spd_batch(rng, m=12, B=3)
    b = rng.standard_normal((3, A.shape[0], 2))
    sol = sd.BatchedSolver(A, data, method=method, rtol=1e-12).solve(b)
    monkeypatch.setattr(_state, "STAGNATION_WINDOW", 10**9)
    unchecked = sd.BatchedSolver(A, data, method=method, rtol=1e-12).solve(b)
    assert sol.converged.all() and unchecked.converged.all()
    for e in range(3):
        np.testing.assert_array_equal(sol.info[e].column_iterations,
                                      unchecked.info[e].column_iterations)
    np.testing.assert_array_equal(sol.x, unchecked.x)


# ---------------------------------------------------------------------------
# AMG per element
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("trans", ["N", "H"])
def test_cg_amg_each_element_is_its_own_solve(rng, dtype, trans):
    A, data = spd_batch(rng, m=10, B=3, dtype=dtype)
    b = rng.standard_normal((3, A.shape[0], 2)).astype(dtype)
    solver = sd.BatchedSolver(A, data, method="cg", M="amg", rtol=1e-10)
    sol = solver.solve(b, trans=trans)
    g = rng.standard_normal(b.shape).astype(dtype)
    grad_data, grad_b = sol.vjp(g)
    for e in range(3):
        Ae = with_values(A, data[e])
        one = sd.Solver(Ae, method="cg", M="amg", rtol=1e-10).solve(b[e],
                                                                     trans=trans)
        gA, gb = one.vjp(g[e])
        gA = entries(A, gA)
        assert sol.info[e].converged and sol.info[e].method == "cg+amg"
        assert abs(sol.info[e].iterations - one.info.iterations) <= 1
        scale = np.abs(one.x).max()
        np.testing.assert_allclose(sol.x[e], one.x, rtol=0, atol=1e-8 * scale)
        np.testing.assert_allclose(grad_b[e], gb, rtol=0,
                                   atol=1e-8 * np.abs(gb).max())
        np.testing.assert_allclose(grad_data[e], gA, rtol=0,
                                   atol=1e-8 * np.abs(gA).max())
    # the shared aggregation fits these elements: no fallback
    assert solver._engine.amg.shared.all()


@pytest.mark.parametrize("trans", ["N", "T", "H"])
def test_bicgstab_amg_nonsymmetric_is_its_own_solve(rng, trans):
    A, data = convdiff_batch(rng, m=10)
    b = rng.standard_normal((3, A.shape[0]))
    sol = sd.BatchedSolver(A, data, method="bicgstab", M="amg",
                           rtol=1e-10).solve(b, trans=trans)
    g = rng.standard_normal(b.shape)
    grad_data, grad_b = sol.vjp(g)
    for e in range(3):
        one = sd.Solver(with_values(A, data[e]), method="bicgstab", M="amg",
                        rtol=1e-10).solve(b[e], trans=trans)
        gA, gb = one.vjp(g[e])
        gA = entries(A, gA)
        assert sol.info[e].converged and sol.info[e].method == "bicgstab+amg"
        np.testing.assert_allclose(sol.x[e], one.x, rtol=0,
                                   atol=1e-8 * np.abs(one.x).max())
        np.testing.assert_allclose(grad_data[e], gA, rtol=0,
                                   atol=1e-8 * np.abs(gA).max())
        np.testing.assert_allclose(grad_b[e], gb, rtol=0,
                                   atol=1e-8 * np.abs(gb).max())
    # the adjoint solves converge as fast as the forward ones (exact Mᴴ)
    for fwd, adj in zip(sol.info, sol.adjoint_info):
        assert adj.converged and adj.iterations <= 2 * fwd.iterations + 2


def check_gradients(rng, A, data, kw, symmetric=False, oracle=(1,)):
    """Central finite differences (float64), the dot-product test against the
    forward mode, and a dense oracle for the elements in ``oracle``, of a
    batched solve with options ``kw`` (``symmetric``: perturb the values only
    along symmetric directions, for Hermitian-only methods)."""
    B, n = data.shape[0], A.shape[0]
    b = rng.standard_normal((B, n))
    g = rng.standard_normal((B, n))

    def loss(d, bb):
        return float(np.sum(g * sd.batched_solve(A, d, bb, **kw).x))

    sol = sd.batched_solve(A, data, b, **kw)
    grad_data, grad_b = sol.vjp(g)
    h = 1e-6
    dA = rng.standard_normal(data.shape)
    if symmetric:
        S = rng.standard_normal((B, n, n))
        S = S + S.transpose(0, 2, 1)
        dA = S[:, rows_of(A), A.indices]
    db = rng.standard_normal(b.shape)
    fd = (loss(data + h * dA, b + h * db) - loss(data - h * dA, b - h * db)) / (2 * h)
    exact = np.sum(grad_data * dA) + np.sum(grad_b * db)
    assert fd == pytest.approx(exact, rel=1e-6, abs=1e-9)
    # dot-product test <J u, v> = <u, Jᵀ v> with the forward mode
    dx = sol.jvp(dA=dA, db=db)
    assert np.sum(dx * g) == pytest.approx(exact, rel=1e-8)
    for e in oracle:
        Ad = with_values(A, data[e]).toarray()
        x = np.linalg.solve(Ad, b[e])
        lam = np.linalg.solve(Ad.T, g[e])
        np.testing.assert_allclose(grad_b[e], lam, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(grad_data[e], -lam[rows_of(A)] * x[A.indices],
                                   rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize("method", ["cg", "bicgstab", "minres"])
def test_amg_gradients_finite_differences_and_dot_product(rng, method):
    if method in ("cg", "minres"):
        A, data = spd_batch(rng, m=5, B=2)
    else:
        A, data = convdiff_batch(rng, m=5, B=2)
    check_gradients(rng, A, data, dict(method=method, M="amg", rtol=1e-13),
                    symmetric=method != "bicgstab")


class _Damaged(AMG):
    """An AMG V-cycle plus 1000·I: Hermitian, but a poor preconditioner
    (about no preconditioner at all)."""

    def _apply(self, X, trans):
        return super()._apply(X, trans) + 1000.0 * X


def test_amg_fallback_rebuilds_poor_elements(rng, monkeypatch):
    # the hierarchies built on the shared aggregation measure poorly here:
    # the elements get their own (the one sd.Solver builds) and its speed
    monkeypatch.setattr(_amg, "AMG", _Damaged)
    A, data = spd_batch(rng, m=10, B=3)
    b = rng.standard_normal((3, A.shape[0]))
    solver = sd.BatchedSolver(A, data, method="cg", M="amg", rtol=1e-10)
    sol = solver.solve(b)
    amg = solver._engine.amg
    np.testing.assert_array_equal(amg.shared, [True, False, False])
    assert (amg.rho_shared[1:] > 1).all() and (amg.rho[1:] < 0.5).all()
    assert sol.info[1].extra["amg"]["aggregates"] == "own"
    for e in range(3):
        one = sd.Solver(with_values(A, data[e]), method="cg", M="amg",
                        rtol=1e-10).solve(b[e])
        assert sol.info[e].iterations == one.info.iterations
        np.testing.assert_allclose(sol.x[e], one.x, rtol=0,
                                   atol=1e-8 * np.abs(one.x).max())
    # without the fallback the damaged hierarchies cost many more iterations
    monkeypatch.setattr(_amg, "_poor", lambda rho, rho0: False)
    kept = sd.BatchedSolver(A, data, method="cg", M="amg", rtol=1e-10)
    assert kept._engine.amg.shared.all()
    slow = kept.solve(b)
    assert slow.info[1].iterations > 2 * sol.info[1].iterations


def test_amg_fallback_rule():
    assert not _amg._poor(0.1, 0.1)
    assert not _amg._poor(0.2, 0.1)        # log 0.1 / log 0.2 = 1.43
    assert _amg._poor(0.25, 0.1)           # 1.66 > 1.5
    assert _amg._poor(1.0, 0.1) and _amg._poor(np.inf, 0.1)
    assert not _amg._poor(0.05, 0.1)


def test_amg_failing_element_stays_in_its_element(rng):
    A, data = spd_batch(rng, m=8, B=3)
    b = rng.standard_normal((3, A.shape[0]))
    ref = sd.BatchedSolver(A, data, method="cg", M="amg", rtol=1e-10).solve(b)
    bad = data.copy()
    bad[1, 5] = np.nan
    sol = sd.BatchedSolver(A, bad, method="cg", M="amg", rtol=1e-10,
                           on_failure="nan").solve(b)
    assert np.isnan(sol.x[1]).all() and sol.info[1].reason == "nonfinite"
    # element 0 builds the shared aggregation either way, element 2 uses it
    np.testing.assert_array_equal(sol.x[[0, 2]], ref.x[[0, 2]])
    # a non-converged element (indefinite: maxiter) under the three policies
    hard = data.copy()
    hard[2] = data[2] * np.where(rows_of(A) == A.indices, 1e-3, 1.0)
    kw = dict(method="bicgstab", M="amg", maxiter=15)
    with pytest.raises(sd.ConvergenceError, match="batch element 2.*maxiter"):
        sd.BatchedSolver(A, hard, **kw).solve(b)
    ok = sd.BatchedSolver(A, data[:2], **kw).solve(b[:2])
    with pytest.warns(sd.ConvergenceWarning, match="batch element 2"):
        w = sd.BatchedSolver(A, hard, on_failure="warn", **kw).solve(b)
    s = sd.BatchedSolver(A, hard, on_failure="nan", **kw).solve(b)
    assert np.isfinite(w.x[2]).all() and np.isnan(s.x[2]).all()
    assert not s.info[2].converged and s.converged[:2].all()
    # elements 0 and 1 share element 0's aggregation with or without element 2
    np.testing.assert_array_equal(s.x[:2], ok.x)
    np.testing.assert_array_equal(w.x[:2], ok.x)


def test_amg_inputs_never_modified(rng):
    A, data = spd_batch(rng, m=6, B=2)
    b = rng.standard_normal((2, A.shape[0]))
    g = rng.standard_normal(b.shape)
    copies = [a.copy() for a in (A.data, A.indices, A.indptr, data, b, g)]
    for a in (A.data, A.indices, A.indptr, data, b, g):
        a.flags.writeable = False
    sol = sd.BatchedSolver(A, data, method="cg", M="amg").solve(b)
    sol.vjp(g)
    for a, c in zip((A.data, A.indices, A.indptr, data, b, g), copies):
        np.testing.assert_array_equal(a, c)


def test_amg_bad_input(rng):
    A, data = spd_batch(rng, m=4, B=2)
    with pytest.raises(ValueError, match="`M` must be None, 'jacobi', 'ilu' or 'amg'"):
        sd.BatchedSolver(A, data, method="cg", M="ssor")
    with pytest.raises(ValueError, match="`M` is for iterative methods"):
        sd.BatchedSolver(A, data, method="direct", M="amg")
    zero = data.copy()
    zero[1, (rows_of(A) == A.indices) & (rows_of(A) == 3)] = 0.0
    with pytest.raises(sd.SingularMatrixError,
                       match=r"batch element 1: the 'amg' preconditioner needs a "
                             r"nonzero diagonal, but A\[3, 3\] = 0"):
        sd.BatchedSolver(A, zero, method="bicgstab", M="amg")


def counting_aggregations(monkeypatch):
    """Count the AMG set-ups that aggregate (no predefined aggregates)."""
    calls = []
    setup = AMG._setup

    def counted(self, A, aggregates):
        if not aggregates:
            calls.append(A.shape)
        return setup(self, A, aggregates)

    monkeypatch.setattr(AMG, "_setup", counted)
    return calls


@pytest.mark.parametrize(("method", "dtype"), [("cg", np.float64),
                                               ("bicgstab", np.float64),
                                               ("cg", np.complex128)])
def test_amg_update_reuses_the_aggregation(rng, monkeypatch, method, dtype):
    # fails before: update aggregated the new first element afresh
    A, data = spd_batch(rng, m=10, B=4, dtype=dtype)
    b = rng.standard_normal((3, A.shape[0], 2)).astype(dtype)
    calls = counting_aggregations(monkeypatch)
    solver = sd.BatchedSolver(A, data[:3], method=method, M="amg", rtol=1e-10)
    assert len(calls) == 1
    new = data[1:] * np.array([[2.0], [0.5], [1.0]])   # new values, same pattern
    solver.update(new)
    assert len(calls) == 1            # no aggregation on update
    amg = solver._engine.amg
    assert amg.reused and amg.shared.all()
    sol = solver.solve(b)
    g = rng.standard_normal(b.shape).astype(dtype)
    grad = sol.vjp(g)
    fresh = sd.BatchedSolver(A, new, method=method, M="amg", rtol=1e-10)
    assert len(calls) == 2
    ref = fresh.solve(b)
    # the aggregation depends on the pattern alone: the same hierarchies
    np.testing.assert_array_equal(sol.x, ref.x)
    for got, want in zip(grad, ref.vjp(g)):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(amg.rho, fresh._engine.amg.rho)


def test_amg_update_aggregates_afresh_when_the_reuse_measures_poorly(
        rng, monkeypatch):
    A, data = spd_batch(rng, m=8, B=2)
    b = rng.standard_normal((2, A.shape[0]))
    calls = counting_aggregations(monkeypatch)
    solver = sd.BatchedSolver(A, data, method="cg", M="amg", rtol=1e-10)
    monkeypatch.setattr(_amg, "_poor", lambda rho, rho0: True)
    solver.update(data[::-1])
    # the first element aggregates afresh, and (every measurement poor)
    # element 1 gets its own aggregation, as in a fresh build
    assert len(calls) == 3 and not solver._engine.amg.reused
    ref = sd.BatchedSolver(A, data[::-1], method="cg", M="amg", rtol=1e-10)
    np.testing.assert_array_equal(solver.solve(b).x, ref.solve(b).x)


def test_amg_update_and_empty(rng):
    A, data = spd_batch(rng, m=6, B=3)
    b = rng.standard_normal((2, A.shape[0]))
    solver = sd.BatchedSolver(A, data, method="cg", M="amg", rtol=1e-10)
    solver.update(data[1:])
    sol = solver.solve(b)
    fresh = sd.BatchedSolver(A, data[1:], method="cg", M="amg", rtol=1e-10).solve(b)
    np.testing.assert_array_equal(sol.x, fresh.x)
    empty = sd.BatchedSolver(A, data[:0], method="cg", M="amg").solve(b[:0])
    assert empty.x.shape == (0, A.shape[0])


# ---------------------------------------------------------------------------
# GMRES
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("M", [None, "jacobi", "amg"])
@pytest.mark.parametrize("trans", ["N", "T", "H"])
def test_gmres_each_element_is_its_own_solve(rng, M, trans):
    A, data = convdiff_batch(rng, m=8)
    b = rng.standard_normal((3, A.shape[0], 2))
    method = ("gmres", {"restart": 7})
    sol = sd.BatchedSolver(A, data, method=method, M=M, rtol=1e-10).solve(
        b, trans=trans)
    g = rng.standard_normal(b.shape)
    grad_data, grad_b = sol.vjp(g)
    for e in range(3):
        one = sd.Solver(with_values(A, data[e]), method=method, M=M,
                        rtol=1e-10).solve(b[e], trans=trans)
        gA, gb = one.vjp(g[e])
        gA = entries(A, gA)
        info = sol.info[e]
        assert info.converged
        assert info.method == "gmres" + (f"+{M}" if M else "")
        assert np.abs(info.column_iterations - one.info.column_iterations).max() <= 1
        for got, want in ((sol.x[e], one.x), (grad_data[e], gA), (grad_b[e], gb)):
            np.testing.assert_allclose(got, want, rtol=0,
                                       atol=1e-8 * np.abs(want).max())


def test_gmres_complex_hermitian_amg(rng):
    A, data = spd_batch(rng, m=8, dtype=np.complex128)
    b = rng.standard_normal((3, A.shape[0])) + 1j * rng.standard_normal(
        (3, A.shape[0]))
    sol = sd.BatchedSolver(A, data, method="gmres", M="amg", rtol=1e-10).solve(
        b, trans="T")
    for e in range(3):
        one = sd.Solver(with_values(A, data[e]), method="gmres", M="amg",
                        rtol=1e-10).solve(b[e], trans="T")
        np.testing.assert_allclose(sol.x[e], one.x, rtol=0,
                                   atol=1e-8 * np.abs(one.x).max())


@pytest.mark.parametrize("M", [None, "jacobi"])
def test_gmres_gradients_finite_differences_and_dot_product(rng, M):
    A, data = convdiff_batch(rng, m=5, B=2)
    check_gradients(rng, A, data,
                    dict(method=("gmres", {"restart": 4}), M=M, rtol=1e-13),
                    oracle=(0,))


def test_gmres_failure_stays_in_its_element(rng):
    # a singular element (row sums zero, b not in its range): maxiter
    A, data = convdiff_batch(rng, m=6)
    r = rows_of(A)
    off = np.where(r != A.indices, data[1], 0.0)
    data[1, r == A.indices] = -np.bincount(r, off, minlength=A.shape[0])
    b = rng.standard_normal((3, A.shape[0]))
    with pytest.raises(sd.ConvergenceError, match="batch element 1"):
        sd.BatchedSolver(A, data, method="gmres", maxiter=50).solve(b)
    sol = sd.BatchedSolver(A, data, method="gmres", maxiter=50,
                           on_failure="nan").solve(b)
    assert np.isnan(sol.x[1]).all() and sol.converged[[0, 2]].all()
    grad_data, _ = sol.vjp(rng.standard_normal(b.shape))
    assert np.isnan(grad_data[1]).all() and np.isfinite(grad_data[[0, 2]]).all()


def test_gmres_bad_input(rng):
    A, data = convdiff_batch(rng, m=4, B=2)
    with pytest.raises(ValueError, match="`restart` must be >= 1; got 0"):
        sd.BatchedSolver(A, data, method=("gmres", {"restart": 0}))
    with pytest.raises(TypeError, match="`restart` must be an integer"):
        sd.BatchedSolver(A, data, method=("gmres", {"restart": 2.5}))
    with pytest.raises(ValueError, match=r"has options \('restart',\); got unknown"):
        sd.BatchedSolver(A, data, method=("gmres", {"restrat": 5}))
    with pytest.raises(ValueError, match="`method` must be one of"):
        sd.BatchedSolver(A, data, method="qmr")


# ---------------------------------------------------------------------------
# MINRES
# ---------------------------------------------------------------------------


def indefinite_batch(rng, m=8, B=3, dtype=np.float64):
    """Hermitian indefinite elements: the SPD batch shifted by −(1..2)·I."""
    A, data = spd_batch(rng, m=m, B=B, dtype=dtype)
    on = rows_of(A) == A.indices
    for e in range(B):
        data[e, on] -= rng.uniform(1.0, 2.0)
    return A, data


@pytest.mark.parametrize(("kind", "M"), [
    ("spd", None), ("spd", "jacobi"), ("spd", "amg"), ("complex", None),
    ("complex", "jacobi"), ("complex", "amg"),
    ("indefinite", None)])   # (MINRES needs a positive definite M)
@pytest.mark.parametrize("trans", ["N", "T", "H"])
def test_minres_each_element_is_its_own_solve(rng, kind, M, trans):
    if kind == "indefinite":
        A, data = indefinite_batch(rng)
    else:
        A, data = spd_batch(rng, m=8, dtype=np.complex128 if kind == "complex"
                            else np.float64)
    b = rng.standard_normal((3, A.shape[0], 2)).astype(data.dtype)
    sol = sd.BatchedSolver(A, data, method="minres", M=M, rtol=1e-10).solve(
        b, trans=trans)
    g = rng.standard_normal(b.shape).astype(data.dtype)
    grad_data, grad_b = sol.vjp(g)
    for e in range(3):
        one = sd.Solver(with_values(A, data[e]), method="minres", M=M,
                        rtol=1e-10).solve(b[e], trans=trans)
        gA, gb = one.vjp(g[e])
        gA = entries(A, gA)
        assert sol.info[e].converged
        assert sol.info[e].method == "minres" + (f"+{M}" if M else "")
        np.testing.assert_array_equal(sol.info[e].column_iterations,
                                      one.info.column_iterations)
        for got, want in ((sol.x[e], one.x), (grad_data[e], gA), (grad_b[e], gb)):
            np.testing.assert_allclose(got, want, rtol=0,
                                       atol=1e-8 * np.abs(want).max())


def test_minres_failures_stay_in_their_element(rng):
    # stagnation, as the single MINRES
    A, data, b = stagnating_batch(rng, m=12)
    with quiet():
        sol = sd.BatchedSolver(A, data, method="minres", rtol=1e-20,
                               on_failure="warn").solve(b)
        one = sd.Solver(A, method="minres", rtol=1e-20, on_failure="warn").solve(b[0])
    assert one.info.reason == sol.info[0].reason == "stagnation"
    assert sol.info[0].iterations == one.info.iterations
    np.testing.assert_allclose(sol.x[0], one.x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sol.x[1], b[1] / 4, rtol=1e-15)
    # an element whose Jacobi preconditioner is indefinite (negative
    # diagonal entries): "indefinite" there, the others converge untouched
    A, data = spd_batch(rng, m=8)
    b = rng.standard_normal((3, A.shape[0]))
    ref = sd.BatchedSolver(A, data[[0, 2]], method="minres", M="jacobi").solve(b[[0, 2]])
    bad = data.copy()
    rows = rows_of(A)
    bad[1, (rows == A.indices) & (rows < 5)] *= -1
    with pytest.raises(sd.ConvergenceError, match="batch element 1.*indefinite"):
        sd.BatchedSolver(A, bad, method="minres", M="jacobi").solve(b)
    sol = sd.BatchedSolver(A, bad, method="minres", M="jacobi",
                           on_failure="nan").solve(b)
    assert sol.info[1].reason == "indefinite" and np.isnan(sol.x[1]).all()
    np.testing.assert_array_equal(sol.x[[0, 2]], ref.x)
    grad_data, grad_b = sol.vjp(np.ones_like(b))
    assert np.isnan(grad_b[1]).all() and np.isfinite(grad_b[[0, 2]]).all()


def test_minres_refuses_non_hermitian(rng):
    A, data = convdiff_batch(rng, m=4)
    with pytest.raises(ValueError, match="method='minres' needs Hermitian matrices; "
                                         "batch element 0"):
        sd.BatchedSolver(A, data, method="minres")


@pytest.mark.parametrize(("method", "M"), [
    ("cg", "amg"), ("bicgstab", "amg"), ("minres", None), ("minres", "amg"),
    ("gmres", None), ("gmres", "jacobi"), ("gmres", "amg"), ("bicgstab", "ilu"),
    ("gmres", "ilu")])
def test_new_methods_edge_cases(rng, method, M):
    A, data = spd_batch(rng, m=6)
    b = rng.standard_normal((3, A.shape[0]))
    # float32 values and right-hand sides
    s32 = sd.BatchedSolver(A, data.astype(np.float32), method=method, M=M,
                           rtol=1e-5).solve(b.astype(np.float32))
    assert s32.x.dtype == np.float32 and s32.converged.all()
    ref = sd.BatchedSolver(A, data, method=method, M=M).solve(b)
    r = b - np.einsum("eij,ej->ei", np.stack([with_values(A, d).toarray()
                                               for d in data]), s32.x)
    assert (np.linalg.norm(r, axis=1) <= 1e-4 * np.linalg.norm(b, axis=1)).all()
    # a converged x0: no iteration, x0 returned
    again = sd.BatchedSolver(A, data, method=method, M=M).solve(b, x0=ref.x)
    assert all(i.iterations == 0 for i in again.info)
    np.testing.assert_array_equal(again.x, ref.x)
    # B = 0 and n = 0
    assert sd.BatchedSolver(A, data[:0], method=method, M=M).solve(
        b[:0]).x.shape == (0, A.shape[0])
    empty = sd.BatchedSolver(sp.csr_array((0, 0)), np.zeros((2, 0)), method=method,
                             M=M).solve(np.zeros((2, 0)))
    assert empty.x.shape == (2, 0) and empty.converged.all()


# ---------------------------------------------------------------------------
# ILU per element
# ---------------------------------------------------------------------------


@pytest.fixture
def weak_ilu(monkeypatch):
    """A coarser ILU (drop_tol 0.05, fill 2) for the batch and `sd.Solver`
    alike, so that the solves take tens of iterations instead of two."""
    monkeypatch.setitem(ILU.__init__.__kwdefaults__, "drop_tol", 0.05)
    monkeypatch.setitem(ILU.__init__.__kwdefaults__, "fill_factor", 2.0)


def ilu_batch(rng, kind):
    if kind == "convdiff":
        A, data = convdiff_batch(rng, m=8)
        b = rng.standard_normal((3, A.shape[0], 2))
    else:   # complex Hermitian bit for bit: sd.Solver's conjugated plan for Aᵀ
        A, data = spd_batch(rng, m=8, dtype=np.complex128)
        b = (rng.standard_normal((3, A.shape[0], 2))
             + 1j * rng.standard_normal((3, A.shape[0], 2)))
    return A, data, b


@pytest.mark.parametrize("method", ["bicgstab", "gmres"])
@pytest.mark.parametrize("trans", ["N", "T", "H"])
@pytest.mark.parametrize("kind", ["convdiff", "hermitian"])
def test_ilu_each_element_is_its_own_solve(rng, weak_ilu, method, trans, kind):
    # fails before: M='ilu' was refused for a batch
    A, data, b = ilu_batch(rng, kind)
    sol = sd.BatchedSolver(A, data, method=method, M="ilu", rtol=1e-10).solve(
        b, trans=trans)
    g = rng.standard_normal(b.shape) + (1j * rng.standard_normal(b.shape)
                                        if kind == "hermitian" else 0)
    grad_data, grad_b = sol.vjp(g)
    for e in range(3):
        one = sd.Solver(with_values(A, data[e]), method=method, M="ilu",
                        rtol=1e-10).solve(b[e], trans=trans)
        gA, gb = one.vjp(g[e])
        gA = entries(A, gA)
        info = sol.info[e]
        assert info.converged and info.method == f"{method}+ilu"
        assert info.iterations > 5   # the ILU is not exact: a real iteration
        # the same arithmetic as the single solver: the same iteration counts
        np.testing.assert_array_equal(info.column_iterations,
                                      one.info.column_iterations)
        np.testing.assert_array_equal(sol.adjoint_info[e].column_iterations,
                                      one.adjoint_info.column_iterations)
        for got, want in ((sol.x[e], one.x), (grad_data[e], gA), (grad_b[e], gb)):
            np.testing.assert_allclose(got, want, rtol=0,
                                       atol=1e-12 * np.abs(want).max())


def test_ilu_operator_and_its_adjoints(rng, weak_ilu):
    # <M u, v> = <u, Mᴴ v> and Mᵀ v = conj(Mᴴ conj v), element by element,
    # through the batch's own application
    A, data = convdiff_batch(rng, m=6)
    solver = sd.BatchedSolver(A, data, method="bicgstab", M="ilu")
    ilu = solver._engine.ilu
    n = A.shape[0]
    u = rng.standard_normal((n, 3, 2)) + 1j * rng.standard_normal((n, 3, 2))
    v = rng.standard_normal((n, 3, 2)) + 1j * rng.standard_normal((n, 3, 2))
    live = np.ones(3, bool)
    Mu, MHv, MTv = (ilu.apply(w, t, live) for w, t in ((u, "N"), (v, "H"), (v, "T")))
    for e in range(3):
        lhs = np.vdot(Mu[:, e], v[:, e])
        rhs = np.vdot(u[:, e], MHv[:, e])
        assert lhs == pytest.approx(rhs, rel=1e-12)
        np.testing.assert_allclose(MTv[:, e], np.conj(ilu.precs[e].rmatvec(
            np.conj(v[:, e]))), rtol=1e-13)
        assert not np.allclose(MHv[:, e], ilu.apply(v, "N", live)[:, e])
    # elements that are not live are left as they are
    part = ilu.apply(u, "N", np.array([True, False, True]))
    np.testing.assert_array_equal(part[:, 1], u[:, 1])
    np.testing.assert_array_equal(part[:, [0, 2]], Mu[:, [0, 2]])


@pytest.mark.parametrize("method", ["bicgstab", "gmres"])
def test_ilu_gradients_finite_differences_and_dot_product(rng, weak_ilu, method):
    A, data = convdiff_batch(rng, m=5, B=2)
    check_gradients(rng, A, data, dict(method=method, M="ilu", rtol=1e-13),
                    oracle=(0, 1))


def test_ilu_failing_element_stays_in_its_element(rng):
    A, data = convdiff_batch(rng, m=6)
    b = rng.standard_normal((3, A.shape[0]))
    bad = data.copy()
    bad[1, rows_of(A) == 4] = 0.0   # a zero row: SuperLU meets a zero pivot
    kw = dict(method="bicgstab", M="ilu", rtol=1e-10)
    with pytest.raises(sd.SingularMatrixError,
                       match=r"batch element 1: the 'ilu' preconditioner met a "
                             r"zero pivot"):
        sd.BatchedSolver(A, bad, **kw)
    ref = sd.BatchedSolver(A, data, **kw).solve(b)
    sol = sd.BatchedSolver(A, bad, on_failure="nan", **kw).solve(b)
    assert np.isnan(sol.x[1]).all() and sol.info[1].reason == "singular"
    assert "zero pivot" in sol.info[1].extra["ilu"]
    np.testing.assert_array_equal(sol.converged, [True, False, True])
    np.testing.assert_array_equal(sol.x[[0, 2]], ref.x[[0, 2]])
    g = rng.standard_normal(b.shape)
    grad_data, grad_b = sol.vjp(g)
    ref_data, ref_b = ref.vjp(g)
    assert np.isnan(grad_data[1]).all() and np.isnan(grad_b[1]).all()
    np.testing.assert_array_equal(grad_data[[0, 2]], ref_data[[0, 2]])
    with pytest.warns(sd.ConvergenceWarning, match="batch element 1.*singular"):
        w = sd.BatchedSolver(A, bad, on_failure="warn", **kw).solve(b)
    np.testing.assert_array_equal(w.x[[0, 2]], ref.x[[0, 2]])
    # update: the failure is judged again on the new values
    solver = sd.BatchedSolver(A, bad, on_failure="nan", **kw)
    assert solver.update(data).solve(b).converged.all()
    with pytest.raises(sd.SingularMatrixError, match="batch element 1"):
        sd.BatchedSolver(A, data, **kw).update(bad)


@pytest.mark.parametrize("method", ["cg", "minres"])
def test_ilu_refused_where_the_single_solver_refuses_it(rng, method):
    A, data = spd_batch(rng, m=4, B=2)
    with pytest.raises(ValueError, match=rf"method='{method}' needs a Hermitian "
                                         r"preconditioner \(M = Mᴴ\); M='ilu'"):
        sd.BatchedSolver(A, data, method=method, M="ilu")
    with pytest.raises(ValueError, match="needs a Hermitian preconditioner"):
        sd.Solver(with_values(A, data[0]), method=method, M="ilu")


# ---------------------------------------------------------------------------
# fused update kernels of the CG and BiCGSTAB loops
# ---------------------------------------------------------------------------

UPDATE_KERNELS = ("batched_bicgstab_p", "batched_bicgstab_r", "batched_bicgstab_x",
                  "batched_cg_step", "batched_col_dot", "batched_sqnorm",
                  "batched_sub_scaled", "batched_xpby")


def _rand(rng, shape, dtype):
    a = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        a = a + 1j * rng.standard_normal(shape)
    return a.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128])
def test_batched_update_kernels_match_their_twins(rng, dtype):
    # real: bit for bit (same operations, same order); complex: to rounding
    # (NumPy's complex product is not the textbook formula bit for bit)
    from sparsediff.kernels.numba import _batched_krylov as compiled

    n, B, m = 11, 4, 3
    rdt = np.zeros(1, dtype).real.dtype
    vec = [_rand(rng, (n, B, m), dtype) for _ in range(6)]
    sca = [_rand(rng, (B, m), dtype) for _ in range(2)]
    active = rng.random((B, m)) < 0.6
    if np.dtype(dtype).kind == "c":
        same = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-13)  # noqa: E731
    else:
        same = np.testing.assert_array_equal

    def both(name, make_args):
        got = make_args()
        want = make_args()
        getattr(compiled, name)(*got)
        getattr(_reference, name)(*want)
        for g, w in zip(got, want):
            same(g, w)
        return got

    def fresh(*arrays):
        return lambda: [np.array(a, copy=True) for a in arrays]

    x, r, p, q, z, v = vec
    a, w = sca
    both("batched_sqnorm", fresh(r, np.empty((B, m), rdt)))
    got = both("batched_col_dot", fresh(p, q, np.empty((B, m), dtype)))
    np.testing.assert_allclose(got[2], np.einsum("nbm,nbm->bm", np.conj(p), q),
                               rtol=1e-5 if dtype == np.float32 else 1e-13)
    got = both("batched_cg_step", fresh(x, r, p, q, a, np.empty((B, m), rdt)))
    np.testing.assert_allclose(got[5], np.linalg.norm(got[1], axis=0) ** 2,
                               rtol=1e-5 if dtype == np.float32 else 1e-13)
    both("batched_xpby", fresh(z, a, p))
    both("batched_bicgstab_p", fresh(p, r, v, a, w))
    both("batched_sub_scaled", fresh(z, r, a, v))
    both("batched_bicgstab_x", fresh(x, a, p, w, q))
    got = both("batched_bicgstab_r", fresh(r, z, w, v, active, np.empty((B, m), rdt)))
    np.testing.assert_array_equal(got[0][:, ~active], r[:, ~active])


@pytest.mark.parametrize("method", ["cg", "bicgstab"])
@pytest.mark.parametrize("M", [None, "jacobi", "amg"])
def test_fused_loops_are_the_numpy_expressions(rng, monkeypatch, method, M):
    # fails before: the loops made several NumPy passes and had no kernels.
    # The twins are the loop's former NumPy expressions: with them in place
    # of the compiled kernels, real solves and gradients are the same bits.
    A, data = spd_batch(rng, m=10, B=3)
    b = rng.standard_normal((3, A.shape[0], 2))
    g = rng.standard_normal(b.shape)
    fused = sd.BatchedSolver(A, data, method=method, M=M, rtol=1e-12).solve(b)
    fused_grad = fused.vjp(g)
    called = set()
    for name in UPDATE_KERNELS:
        def twin(*args, _n=name):
            called.add(_n)
            return getattr(_reference, _n)(*args)

        monkeypatch.setattr(NUMBA.kernels, name, twin)
    plain = sd.BatchedSolver(A, data, method=method, M=M, rtol=1e-12).solve(b)
    plain_grad = plain.vjp(g)
    expect = ({"batched_cg_step", "batched_col_dot", "batched_xpby"}
              if method == "cg" else
              {"batched_bicgstab_p", "batched_bicgstab_r", "batched_bicgstab_x",
               "batched_col_dot", "batched_sub_scaled"})
    assert called == expect
    assert fused.converged.all()
    np.testing.assert_array_equal(fused.x, plain.x)
    for got, want in zip(fused_grad, plain_grad):
        np.testing.assert_array_equal(got, want)
    for e in range(3):
        np.testing.assert_array_equal(fused.info[e].column_iterations,
                                      plain.info[e].column_iterations)


@pytest.mark.parametrize("method", ["cg", "bicgstab"])
def test_fused_loops_complex_and_reference_backend(rng, monkeypatch, method):
    # complex: the compiled kernels agree with the twins to rounding; the
    # reference backend (the NumPy twins throughout) gives the same solves
    from sparsediff.batched import _api

    A, data = spd_batch(rng, m=8, B=3, dtype=np.complex128)
    b = _rand(rng, (3, A.shape[0]), np.complex128)
    sol = sd.BatchedSolver(A, data, method=method, M="jacobi", rtol=1e-10).solve(b)
    monkeypatch.setattr(_api, "get_backend", lambda *a, func: REFERENCE)
    ref = sd.BatchedSolver(A, data, method=method, M="jacobi", rtol=1e-10).solve(b)
    assert ref._mat.backend is REFERENCE
    assert sol.converged.all() and ref.converged.all()
    for e in range(3):
        one = sd.Solver(with_values(A, data[e]), method=method, M="jacobi",
                        rtol=1e-10).solve(b[e])
        for x in (sol.x[e], ref.x[e]):
            np.testing.assert_allclose(x, one.x, rtol=0,
                                       atol=1e-8 * np.abs(one.x).max())
