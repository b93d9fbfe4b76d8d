"""Forward solves: values, shapes, dtypes, edge cases, hard direct-solver cases."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import (
    DTYPES,
    FORMATS,
    RHS_SHAPES,
    TRANS,
    build,
    dense_system,
    fingerprint,
    make_problem,
    op,
    randn,
    ref_solve,
    shares,
    tol,
)

import sparsediff as sd
from sparsediff._errors import IllConditionedWarning

# every test runs on the CPU backend and on the reference backend (NumPy twins,
# Krylov flags read every 8 iterations): tests/conftest.py::backend
pytestmark = pytest.mark.usefixtures("backend")


def check_residual(D, x, b, trans, dtype):
    """‖b − op(A) x‖ ≤ c·n·eps·‖A‖·‖x‖ (backward stability of LU)."""
    if x.size == 0:
        return
    M = op(D.astype(np.complex128), trans)
    x2 = x.reshape(x.shape[0], -1)
    r = b.reshape(b.shape[0], -1) - M @ x2
    eps = np.finfo(dtype).eps
    bound = 100 * D.shape[0] * eps * np.linalg.norm(M, 2) * np.linalg.norm(x2, axis=0)
    assert np.all(np.linalg.norm(r, axis=0) <= bound + 1e-300)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("fmt", FORMATS)
def test_matches_dense_solve_every_format(rng, fmt, dtype):
    idx = np.int64 if fmt in ("csr_dup", "coo_dup", "csc") else np.int32
    A, b, D = make_problem(rng, fmt, dtype, n=8, shape="nk", idx=idx)
    before = fingerprint(A, b)
    sol = sd.solve(A, b)
    assert fingerprint(A, b) == before
    assert sol.x.shape == b.shape and sol.x.dtype == np.dtype(dtype)
    np.testing.assert_allclose(sol.x, ref_solve(D, b), rtol=tol(dtype),
                               atol=tol(dtype))
    check_residual(D, sol.x, b, "N", dtype)
    assert sol.info.converged and sol.info.method == "direct"
    assert sol.info.iterations == 0 and sol.info.reason == "converged"
    assert not shares(sol.x, b) and not shares(sol.x, A)


@pytest.mark.parametrize("shape", RHS_SHAPES)
@pytest.mark.parametrize("trans", TRANS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_trans_and_rhs_shapes(rng, dtype, trans, shape):
    A, b, D = make_problem(rng, "csr_unsorted", dtype, n=7, shape=shape)
    sol = sd.Solver(A).solve(b, trans=trans)
    assert sol.x.shape == b.shape  # (n, 1) stays (n, 1); (n, 0) stays (n, 0)
    assert sol.x.dtype == np.dtype(dtype)
    np.testing.assert_allclose(sol.x, ref_solve(D, b, trans), rtol=tol(dtype),
                               atol=tol(dtype))
    check_residual(D, sol.x, b, trans, dtype)
    info = sol.info
    assert info.trans == trans
    if shape == "n":
        assert isinstance(info.residual_norm, float)
        assert isinstance(info.rhs_norm, float)
    else:
        assert info.residual_norm.shape == (b.shape[1],)
        assert info.column_converged.shape == (b.shape[1],)


def test_complex_symmetric_is_not_hermitian(rng):
    """B5: A = Aᵀ ≠ Aᴴ: T equals N, H differs (and equals conj(A)⁻¹ b)."""
    D, mask = dense_system(rng, 6, np.complex128)
    S = D + D.T
    A = build("csr", S, mask | mask.T, rng)
    b = randn(rng, (6,), np.complex128)
    solver = sd.Solver(A)
    xn, xt, xh = (solver.solve(b, trans=t).x for t in TRANS)
    np.testing.assert_allclose(xt, xn, rtol=1e-12)
    np.testing.assert_allclose(xh, np.linalg.solve(S.conj(), b), rtol=1e-12)
    assert np.linalg.norm(xh - xn) > 1e-3 * np.linalg.norm(xn)


def test_transposed_solves_use_one_factorization(rng, monkeypatch):
    """N, T and H solves and their adjoints share the forward factorization (D9)."""
    import scipy.sparse.linalg as spla

    calls = []
    real = spla.splu

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(spla, "splu", counting)
    A, b, D = make_problem(rng, "csr", np.complex128, n=6)
    solver = sd.Solver(A)
    for trans in TRANS:
        sol = solver.solve(b, trans=trans)
        sol.vjp(b)
        sol.jvp(db=b)
    assert len(calls) == 1


def test_solve_function_accepts_keyword_options_only(rng):
    A, b, _ = make_problem(rng)
    with pytest.raises(TypeError):
        sd.solve(A, b, "direct")  # noqa  (A17: positional options)


# ---------------------------------------------------------------------------
# edge sizes: n = 0, 1x1 (A13, A14)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(0,), (0, 1), (0, 3)])
def test_empty_system(dtype, shape):
    for A in (sp.csr_array((0, 0), dtype=dtype), np.zeros((0, 0), dtype)):
        b = np.zeros(shape, dtype)
        sol = sd.solve(A, b)
        assert sol.x.shape == shape and sol.x.dtype == np.dtype(dtype)
        assert sol.info.converged
        assert not np.shares_memory(sol.x, b)
        gA, gb = sol.vjp(np.ones(shape, dtype))
        assert gb.shape == shape and gb.dtype == np.dtype(dtype)
        if sp.issparse(A):
            assert gA.shape == (0, 0) and gA.nnz == 0 and type(gA) is type(A)
        else:
            assert gA.shape == (0, 0)
        assert sol.jvp(db=np.ones(shape, dtype)).shape == shape
        for trans in TRANS:
            assert sd.Solver(A).solve(b, trans=trans).x.shape == shape


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_one_by_one_closed_form(rng, dtype):
    a = randn(rng, (), dtype)
    a = (a + (2 if not np.iscomplexobj(a) else 2 + 1j)).astype(dtype)
    b, g = randn(rng, (1,), dtype), randn(rng, (1,), dtype)
    sol = sd.solve(sp.csr_array(np.array([[a]])), b)
    r = tol(dtype)
    np.testing.assert_allclose(sol.x, b / a, rtol=r)
    gA, gb = sol.vjp(g)
    # λ = conj(a)⁻¹ g (= g/a for real a); ∂L/∂a = −λ conj(x) (= −x g/a)
    lam = g / np.conj(a)
    np.testing.assert_allclose(gb, lam, rtol=r)
    np.testing.assert_allclose(gA.data, -lam * np.conj(sol.x), rtol=r)
    np.testing.assert_allclose(sol.jvp(dA=np.array([1.0]), db=np.zeros(1)),
                               -sol.x / a, rtol=r)


@pytest.mark.parametrize("A", [sp.csr_array(np.array([[0.0]])),
                               sp.csr_array((np.array([0.0]), np.array([0]),
                                             np.array([0, 1])), shape=(1, 1)),
                               np.zeros((1, 1))])
def test_one_by_one_zero_is_singular(A):
    with pytest.raises(sd.SingularMatrixError, match="singular"):
        sd.solve(A, np.ones(1))


# ---------------------------------------------------------------------------
# §(b) numerical hard cases for the direct solver
# ---------------------------------------------------------------------------

SINGULAR = {
    "zero-row": np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 3.0]]),
    "zero-col": np.array([[1.0, 0.0, 0.0], [2.0, 0.0, 1.0], [1.0, 0.0, 3.0]]),
    "rank-deficient": np.array([[1.0, 2.0], [2.0, 4.0]]),
    "all-zero-stored": np.zeros((3, 3)),
}


@pytest.mark.parametrize("name", sorted(SINGULAR))
def test_exactly_singular_raises(name):
    D = SINGULAR[name]
    n = D.shape[0]
    mask = np.ones_like(D, dtype=bool)  # every entry stored, zeros included
    A = build("csr", D, mask, None)
    with pytest.raises(sd.SingularMatrixError) as err:
        sd.solve(A, np.ones(n))
    assert isinstance(err.value, np.linalg.LinAlgError)
    with pytest.raises(sd.SingularMatrixError):
        sd.Solver(A).solve(np.ones(n), trans="T")


def test_no_stored_entries_is_singular():
    with pytest.raises(sd.SingularMatrixError):
        sd.solve(sp.csr_array((3, 3)), np.ones(3))


def test_ill_conditioned_warns():
    """B2: κ ≈ 1e17 diagonal; near-singular 2x2 (κ ≈ 4e14)."""
    A = sp.diags_array(np.logspace(0, -17, 6)).tocsr()
    with pytest.warns(IllConditionedWarning, match="ill-conditioned"):
        sol = sd.solve(A, np.ones(6))
    assert sol.info.condition_estimate > 1e16
    assert np.all(np.isfinite(sol.x))
    A2 = sp.csr_array(np.array([[1.0, 1.0], [1.0, 1.0 + 1e-14]]))
    with pytest.warns(IllConditionedWarning):
        sd.solve(A2, np.array([1.0, 2.0]))
    with pytest.warns(IllConditionedWarning):
        sd.Solver(A2).solve(np.array([1.0, 2.0]), trans="T")
    # the warning is SciPy's LinAlgWarning family
    from scipy.linalg import LinAlgWarning
    assert issubclass(IllConditionedWarning, LinAlgWarning)


def test_well_conditioned_does_not_warn(rng):
    A, b, D = make_problem(rng, "csr", np.float32, n=20, shape="nk")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sol = sd.solve(A, b)
    est = sol.info.condition_estimate
    assert np.all(est <= np.linalg.cond(D.astype(np.float64), 1) * (1 + 1e-6))
    assert np.all(est >= 1.0 - 1e-6)  # κ ≥ 1


def test_badly_scaled_rows_and_rhs(rng):
    """B6: rows scaled by 1e±8, b of norm 1e-10 and 1e10: still accurate."""
    A, b, D = make_problem(rng, "csr", np.float64, n=8)
    s = np.logspace(-8, 8, 8)
    As = sp.diags_array(s) @ A
    Ds = s[:, None] * D
    for scale in (1e-10, 1.0, 1e10):
        bs = scale * s * b
        # κ₁ ≈ 1e16 from the row scaling, which changes SuperLU's pivots: the
        # solve warns, and here is accurate all the same
        with pytest.warns(sd.IllConditionedWarning):
            x = sd.solve(As, bs).x
        np.testing.assert_allclose(x, ref_solve(Ds, bs), rtol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_zero_rhs(rng, dtype):
    """B7: exact zeros in a fresh array; mixed zero columns; grad_A = 0."""
    A, _, D = make_problem(rng, "csr", dtype, n=6)
    b = np.zeros(6, dtype)
    sol = sd.solve(A, b)
    assert np.array_equal(sol.x, np.zeros(6)) and sol.info.converged
    assert not np.shares_memory(sol.x, b)
    g = randn(rng, (6,), dtype)
    gA, gb = sol.vjp(g)
    assert np.all(gA.data == 0)
    np.testing.assert_allclose(gb, ref_solve(D, g, "H"), rtol=tol(dtype))
    B = randn(rng, (6, 3), dtype)
    B[:, 1] = 0
    sol = sd.solve(A, B)
    assert np.all(sol.x[:, 1] == 0) and sol.info.converged
    assert np.all(sol.info.column_converged)
    # the condition estimate is the matrix's, whatever the right-hand side
    assert np.isfinite(sol.info.condition_estimate)
    assert sol.info.condition_estimate == sd.solve(A, b).info.condition_estimate


@pytest.mark.parametrize("dtype", [np.float32, np.complex64], ids=str)
def test_float32_against_float64(rng, dtype):
    """B10: single precision compared with the double-precision reference."""
    D, mask = dense_system(rng, 30, dtype, density=0.2)
    A = build("csr", D, mask, rng)
    b = randn(rng, (30, 2), dtype)
    x = sd.solve(A, b).x
    assert x.dtype == np.dtype(dtype)
    ref = ref_solve(D, b)
    kappa = np.linalg.cond(D.astype(np.complex128))
    err = np.linalg.norm(x - ref) / np.linalg.norm(ref)
    assert err <= 10 * kappa * np.finfo(dtype).eps


# ---------------------------------------------------------------------------
# dtypes (A7, A8)
# ---------------------------------------------------------------------------

PAIRS = [(a, b) for a in DTYPES for b in DTYPES]


@pytest.mark.parametrize("a_dt,b_dt", PAIRS, ids=lambda d: np.dtype(d).name)
def test_mixed_precision_promotes(rng, a_dt, b_dt):
    """Result dtype = promote(A, b); never a downcast, never a dropped imag part."""
    A, _, D = make_problem(rng, "csr", a_dt, n=5)
    b = randn(rng, (5, 2), b_dt)
    sol = sd.solve(A, b)
    want = np.result_type(a_dt, b_dt)
    assert sol.x.dtype == want
    np.testing.assert_allclose(sol.x, ref_solve(D, b), rtol=tol(want), atol=tol(want))
    # a Solver factorized in A's precision takes any rhs too
    sol2 = sd.Solver(A).solve(b, trans="H")
    assert sol2.x.dtype == want
    np.testing.assert_allclose(sol2.x, ref_solve(D, b, "H"), rtol=tol(want),
                               atol=tol(want))


@pytest.mark.parametrize("dt", [np.int8, np.int32, np.int64, np.uint8, np.uint64])
def test_integer_inputs_promote_to_float64(dt):
    A = sp.csr_array(np.array([[4, 1], [1, 3]], dtype=dt))
    b = np.array([1, 2], dtype=dt)
    sol = sd.solve(A, b)
    assert sol.x.dtype == np.float64
    gA, gb = sol.vjp(np.ones(2))
    assert gA.dtype == np.float64 and gb.dtype == np.float64


def test_float16_promotes_to_float32():
    A = np.array([[4, 1], [1, 3]], dtype=np.float16)  # scipy.sparse has no float16
    sol = sd.solve(A, np.array([1, 2], dtype=np.float16))
    assert sol.x.dtype == np.float32


# ---------------------------------------------------------------------------
# layouts (A9)
# ---------------------------------------------------------------------------

def test_strided_fortran_readonly_and_broadcast_b(rng):
    A, _, D = make_problem(rng, "csr", np.float64, n=6)
    base = rng.standard_normal((12, 4))
    cases = {
        "strided": base[::2, 0],
        "fortran": np.asfortranarray(base[:6, :3]),
        "negative": base[:6, 0][::-1],
        "broadcast": np.broadcast_to(np.arange(1.0, 4.0), (6, 3)),
        "noncontig-2d": base[::2, ::2],
    }
    ro = base[:6, :2].copy()
    ro.setflags(write=False)
    cases["readonly"] = ro
    for name, b in cases.items():
        before = fingerprint(b)
        x = sd.solve(A, b).x
        np.testing.assert_allclose(x, ref_solve(D, np.array(b)), rtol=1e-10,
                                   err_msg=name)
        assert fingerprint(b) == before
        assert not np.shares_memory(x, b)
        assert x.flags.c_contiguous or x.ndim == 1


def test_solution_x_is_yours_to_modify(rng):
    A, b, _ = make_problem(rng, "csr", np.float64, n=5)
    sol = sd.solve(A, b)
    ref = sol.vjp(np.ones(5))[0].data.copy()
    sol.x[:] = 1e30
    np.testing.assert_array_equal(sol.vjp(np.ones(5))[0].data, ref)


# ---------------------------------------------------------------------------
# the documented examples run (doctest is not configured for the package)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("module", ["sparsediff", "sparsediff._api",
                                    "sparsediff.solvers._solution"])
def test_docstring_examples(module):
    import doctest
    import importlib

    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0
    if module != "sparsediff":
        assert result.attempted >= 10
