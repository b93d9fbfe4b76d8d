"""The direct (SuperLU) solver: failure policies, `Solver.update`, `sparse_outer`,
and engine details (factor reuse, ordering, condition estimate)."""

import types
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import (
    DTYPES,
    FORMATS,
    caller_data,
    caller_entries,
    fingerprint,
    make_problem,
    randn,
    ref_solve,
    shares,
    tol,
    with_data,
)

import sparsediff as sd
from sparsediff.solvers.direct import DirectEngine

# every test runs on the CPU backend and on the reference backend (NumPy twins,
# Krylov flags read every 8 iterations): tests/conftest.py::backend
pytestmark = pytest.mark.usefixtures("backend")

SINGULAR = sp.csr_array(np.array([[1.0, 2.0], [2.0, 4.0]]))


# ---------------------------------------------------------------------------
# on_failure for a singular matrix: forward, vjp and jvp (B1, D12)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("trans", ["N", "T", "H"])
def test_singular_raise(trans):
    with pytest.raises(sd.SingularMatrixError, match="singular") as e:
        sd.Solver(SINGULAR).solve(np.ones(2), trans=trans)
    assert e.value.info is not None and e.value.info.reason == "singular"
    with pytest.raises(sd.SingularMatrixError):
        sd.solve(SINGULAR, np.ones((2, 3)))


@pytest.mark.parametrize("trans", ["N", "T", "H"])
def test_singular_warn_never_gives_finite_numbers(trans):
    with pytest.warns(sd.ConvergenceWarning, match="singular"):
        sol = sd.Solver(SINGULAR, on_failure="warn").solve(np.ones(2), trans=trans)
    assert not sol.info.converged and sol.info.reason == "singular"
    assert not np.any(np.isfinite(sol.x))
    with pytest.warns(sd.ConvergenceWarning):
        gA, gb = sol.vjp(np.ones(2))
    assert not np.any(np.isfinite(gA.data)) and not np.any(np.isfinite(gb))
    with pytest.warns(sd.ConvergenceWarning):
        dx = sol.jvp(np.ones(4), np.ones(2))
    assert not np.any(np.isfinite(dx))


@pytest.mark.parametrize("trans", ["N", "T", "H"])
def test_singular_nan(trans):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sol = sd.Solver(SINGULAR, on_failure="nan").solve(np.ones((2, 2)), trans=trans)
        assert np.all(np.isnan(sol.x)) and not sol.info.converged
        gA, gb = sol.vjp(np.ones((2, 2)))
        assert np.all(np.isnan(gA.data)) and np.all(np.isnan(gb))
        assert np.all(np.isnan(sol.jvp(np.ones(4))))


def test_singular_solver_can_be_built_and_updated():
    solver = sd.Solver(SINGULAR)
    with pytest.raises(sd.SingularMatrixError):
        solver.solve(np.ones(2))
    solver.update(np.array([1.0, 2.0, 2.0, 5.0]))
    np.testing.assert_allclose(solver.solve(np.ones(2)).x,
                               np.linalg.solve([[1, 2], [2, 5]], np.ones(2)))
    solver.update(SINGULAR.data)
    with pytest.raises(sd.SingularMatrixError):
        solver.solve(np.ones(2))


def test_singular_error_is_linalg_error():
    assert issubclass(sd.SingularMatrixError, np.linalg.LinAlgError)
    assert issubclass(sd.NonFiniteInputError, ValueError)
    assert issubclass(sd.ConvergenceWarning, RuntimeWarning)


# ---------------------------------------------------------------------------
# Solver.update
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("fmt", FORMATS)
def test_update_equals_fresh_solve(rng, fmt, dtype):
    A, b, D = make_problem(rng, fmt, dtype, n=6, shape="nk")
    solver = sd.Solver(A)
    new = caller_data(A) * (1.5 + randn(rng, caller_data(A).shape, dtype) * 0.1)
    new = new.astype(dtype)
    A_new = with_data(A, new)
    before = fingerprint(A, new)
    arg = new.reshape(A.shape) if fmt == "dense" else new
    assert solver.update(arg) is solver
    assert fingerprint(A, new) == before
    g = randn(rng, b.shape, dtype)
    for trans in ("N", "T", "H"):
        s_upd = solver.solve(b, trans=trans)
        s_new = sd.Solver(A_new).solve(b, trans=trans)
        np.testing.assert_array_equal(s_upd.x, s_new.x)
        for a, c in zip(s_upd.vjp(g), s_new.vjp(g)):
            np.testing.assert_array_equal(caller_data(a), caller_data(c))


def test_update_accepts_matrix_with_same_structure(rng):
    A, b, D = make_problem(rng, "csr_unsorted", np.float64, n=6)
    solver = sd.Solver(A)
    A2 = with_data(A, 2 * caller_data(A))
    solver.update(A2)
    np.testing.assert_allclose(solver.solve(b).x, ref_solve(2 * D, b), rtol=1e-12)
    solver.update(A2.tocoo())  # another format of the same pattern
    np.testing.assert_allclose(solver.solve(b).x, ref_solve(2 * D, b), rtol=1e-12)


def test_update_rejects_wrong_length_and_structure(rng):
    A, b, D = make_problem(rng, "csr", np.float64, n=6)
    solver = sd.Solver(A)
    with pytest.raises(ValueError, match="length nnz"):
        solver.update(np.ones(A.nnz - 1))
    with pytest.raises(ValueError, match="length nnz"):
        solver.update(np.ones((A.nnz, 1)))
    with pytest.raises(ValueError, match="structure of `A`"):
        solver.update(sp.eye_array(6, format="csr"))
    with pytest.raises(ValueError, match="structure of `A`"):
        solver.update(sp.csr_array(np.ones((6, 5))))
    with pytest.raises(TypeError, match="numeric dtype"):
        solver.update(np.ones(A.nnz, dtype=bool))
    bad = caller_data(A)
    bad[0] = np.nan
    with pytest.raises(sd.NonFiniteInputError, match="`Solver.update`: `data`"):
        solver.update(bad)
    # failed updates leave the solver as it was
    np.testing.assert_allclose(solver.solve(b).x, ref_solve(D, b), rtol=1e-12)


def test_update_nonfinite_under_nan_policy(rng):
    A, b, D = make_problem(rng, "csr", np.float64, n=5)
    solver = sd.Solver(A, on_failure="nan")
    bad = caller_data(A)
    bad[0] = np.inf
    solver.update(bad)
    sol = solver.solve(b)
    assert np.all(np.isnan(sol.x)) and not sol.info.converged
    solver.update(caller_data(A))
    np.testing.assert_allclose(solver.solve(b).x, ref_solve(D, b), rtol=1e-12)


def test_update_promotes_dtype(rng):
    A, b, D = make_problem(rng, "csr", np.float32, n=5)
    solver = sd.Solver(A)
    solver.update(caller_data(A).astype(np.complex128) * (1 + 1j))
    assert solver.dtype == np.complex128
    sol = solver.solve(b)
    assert sol.x.dtype == np.complex128
    gA, gb = sol.vjp(np.ones(5))
    assert gA.dtype == np.complex128 and gb.dtype == np.float32
    np.testing.assert_allclose(sol.x, ref_solve(D * (1 + 1j), b), rtol=1e-6)


def test_solutions_keep_their_factorization_after_update(rng):
    A, b, D = make_problem(rng, "coo_dup", np.complex128, n=6)
    solver = sd.Solver(A)
    sol = solver.solve(b, trans="T")
    g = randn(rng, (6,), np.complex128)
    before = [caller_data(a) for a in sol.vjp(g)]
    jv = sol.jvp(db=g)
    solver.update(3 * caller_data(A))
    after = [caller_data(a) for a in sol.vjp(g)]
    for x, y in zip(before, after):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(jv, sol.jvp(db=g))


# ---------------------------------------------------------------------------
# sparse_outer
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("m", [None, 1, 3, 0])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("fmt", ["csr", "csr_unsorted", "csr_dup", "coo_dup", "csc",
                                 "bsr", "lil", "dok", "dense"])
def test_sparse_outer(rng, fmt, dtype, m):
    A, _, _ = make_problem(rng, fmt, np.float64, n=6)
    shape = (6,) if m is None else (6, m)
    u, v = randn(rng, shape, dtype), randn(rng, shape, dtype)
    alpha = 0.5 - 2j if np.iscomplexobj(u) else -1.5
    before = fingerprint(A, u, v)
    out = sd.sparse_outer(A, u, v, alpha=alpha)
    assert fingerprint(A, u, v) == before
    rows, cols = caller_entries(A)
    u2, v2 = u.reshape(6, -1), v.reshape(6, -1)
    want = alpha * np.sum(u2[rows] * v2[cols], axis=1)  # no conjugation
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_allclose(caller_data(out), want, rtol=tol(dtype), atol=tol(dtype))
    if sp.issparse(A):
        assert type(out) is type(A)
        np.testing.assert_array_equal(caller_entries(out)[0], rows)
        np.testing.assert_array_equal(caller_entries(out)[1], cols)
    else:
        assert out.shape == A.shape
    assert not shares(out, A) and not shares(out, u) and not shares(out, v)


def test_sparse_outer_rectangular_and_default_alpha(rng):
    R = sp.random_array((4, 7), density=0.4, format="coo", rng=rng)
    u, v = rng.standard_normal((4, 2)), rng.standard_normal((7, 2))
    out = sd.sparse_outer(R, u, v)
    assert out.format == "coo" and out.shape == (4, 7)
    np.testing.assert_allclose(out.data, np.sum(u[R.row] * v[R.col], axis=1))
    dense = sd.sparse_outer(np.ones((4, 7)), u, v, alpha=2)
    np.testing.assert_allclose(dense, 2 * u @ v.T)
    assert sd.sparse_outer(sp.csr_array((0, 3)), np.zeros(0), np.ones(3)).nnz == 0


def test_sparse_outer_is_the_gradient_kernel(rng):
    """∂L/∂A.data = −sparse_outer(A, λ, conj(x)) (docs/design.md)."""
    A, b, D = make_problem(rng, "csr_dup", np.complex128, n=6, shape="nk")
    sol = sd.solve(A, b)
    g = randn(rng, b.shape, np.complex128)
    gA, lam = sol.vjp(g)
    np.testing.assert_allclose(gA.data, sd.sparse_outer(A, lam, np.conj(sol.x),
                                                        alpha=-1).data, rtol=1e-14)


def test_sparse_outer_precision_follows_vectors(rng):
    A = sp.csr_array(np.eye(3))
    out = sd.sparse_outer(A, np.ones(3, np.float32), np.ones(3, np.float32), alpha=1j)
    assert out.dtype == np.complex64
    out = sd.sparse_outer(A, np.ones(3, np.int64), np.ones(3, np.float32))
    assert out.dtype == np.float64


# ---------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------

def test_ordering_choice(rng):
    A, _, _ = make_problem(rng, "csr", np.float64, n=8)
    S = (A + A.T).tocsr()
    from sparsediff._validation import as_matrix

    assert DirectEngine(as_matrix(S, "t")).permc_spec == "MMD_AT_PLUS_A"
    U = sp.csr_array(np.triu(np.ones((8, 8))))
    assert DirectEngine(as_matrix(U, "t")).permc_spec == "COLAMD"


def test_engine_refuses_more_rows_than_superlu_can_index():
    fake = types.SimpleNamespace(shape=(2**31, 2**31), nnz=2**31, dtype=np.float64)
    with pytest.raises(ValueError, match="SuperLU .* at most 2147483647"):
        DirectEngine(fake)


@pytest.mark.parametrize("trans", ["N", "T", "H"])
def test_condition_estimate_is_a_lower_bound(rng, trans):
    A, b, D = make_problem(rng, "csr", np.complex128, n=10, shape="nk")
    info = sd.Solver(A).solve(b, trans=trans).info
    M = {"N": D, "T": D.T, "H": D.conj().T}[trans]
    kappa = np.linalg.cond(M, 1)
    assert np.all(info.condition_estimate <= kappa * (1 + 1e-10))
    assert np.all(info.condition_estimate >= 1 - 1e-10)


def test_residual_reported(rng):
    A, b, D = make_problem(rng, "csr", np.float64, n=10, shape="nk")
    sol = sd.solve(A, b)
    np.testing.assert_allclose(sol.info.residual_norm,
                               np.linalg.norm(b - D @ sol.x, axis=0), atol=1e-13)
    np.testing.assert_allclose(sol.info.rhs_norm, np.linalg.norm(b, axis=0))
    assert sol.info.column_converged.all()
    assert "Solution(" in repr(sol) and "Solver(" in repr(sd.Solver(A))
    assert sd.Solver(A).method == "direct" and sd.Solver(A).shape == (10, 10)


def test_auto_uses_direct_for_small_systems(rng):
    A, b, D = make_problem(rng, "csr", np.float64, n=10)
    assert sd.solve(A, b).info.method == "direct"
