"""Gradients, checked three ways (docs/design.md, "Reliability principles").

* D4: a dense autodiff oracle (``torch.linalg.solve`` + autograd), read at the
  caller's entries: masked by A's *pattern*, never by the gradient's nonzeros;
* D1: central finite differences in float64 along random directions in
  ``(A.data, b)``, perturbing only stored values;
* D3: the dot-product test ``⟨J u, v⟩ = Re⟨u, Jᴴ v⟩`` between ``jvp`` and ``vjp``.

Convention (docs/design.md): for a real loss ``L`` and cotangent ``g``,
``δL = Re(gᴴ δx)``; a gradient ``G`` of a parameter ``p`` satisfies
``δL = Re(Σ conj(G) δp)``: PyTorch's ``.grad`` convention.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import (
    DTYPES,
    FORMATS,
    RHS_SHAPES,
    TRANS,
    build,
    caller_data,
    caller_entries,
    dense_system,
    fingerprint,
    is_complex,
    make_problem,
    randn,
    shares,
    tol,
    with_data,
)

import sparsediff as sd

# every test runs on the CPU backend and on the reference backend (NumPy twins,
# Krylov flags read every 8 iterations): tests/conftest.py::backend
pytestmark = pytest.mark.usefixtures("backend")

torch = pytest.importorskip("torch")

DT_IDS = lambda d: np.dtype(d).name  # noqa: E731


def torch_oracle(D, b, g, trans):
    """Dense autodiff gradients ``(G_A (n×n), G_b)`` of ``L = Re⟨g, op(D)⁻¹ b⟩``."""
    cdt = np.result_type(D.dtype, b.dtype, g.dtype, np.float64)
    Dt = torch.tensor(D.astype(np.result_type(D.dtype, np.float64)), requires_grad=True)
    bt = torch.tensor(b.astype(np.result_type(b.dtype, np.float64)), requires_grad=True)
    tdt = torch.complex128 if cdt.kind == "c" else torch.float64
    M = Dt.to(tdt)
    M = {"N": M, "T": M.T, "H": M.conj().T}[trans]
    b2 = bt.to(tdt)
    b2 = b2[:, None] if b2.ndim == 1 else b2
    x = torch.linalg.solve(M, b2)
    gt = torch.tensor(g.astype(cdt)).reshape(x.shape)
    L = (torch.conj(gt) * x).real.sum()
    L.backward()
    return Dt.grad.resolve_conj().numpy(), bt.grad.resolve_conj().numpy()


def oracle_grads(A, b, g, trans):
    """Oracle ``(grad_data in the caller's order, grad_b)``."""
    GA, Gb = torch_oracle(np.asarray(A.toarray() if sp.issparse(A) else A), b, g, trans)
    rows, cols = caller_entries(A)
    return GA[rows, cols], Gb


def grad_data(gA):
    return caller_data(gA)


def assert_close(actual, desired, dtype, scale=None):
    scale = np.max(np.abs(desired), initial=0.0) if scale is None else scale
    np.testing.assert_allclose(actual, desired, rtol=0,
                               atol=tol(dtype) * max(scale, 1e-300) * 10)


# ---------------------------------------------------------------------------
# D4: dense autodiff oracle
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("trans", TRANS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_dense_oracle_every_format(rng, fmt, dtype, trans):
    shape = {"N": "n", "T": "nk", "H": "n1"}[trans]
    A, b, D = make_problem(rng, fmt, dtype, n=6, shape=shape)
    g = randn(rng, b.shape, dtype)
    before = fingerprint(A, b, g)
    sol = sd.Solver(A).solve(b, trans=trans)
    gA, gb = sol.vjp(g)
    assert fingerprint(A, b, g) == before
    want_A, want_b = oracle_grads(A, b, g, trans)
    # float32/complex64 results against the float64 analytic oracle (D5)
    assert_close(grad_data(gA), want_A, dtype)
    assert_close(gb, want_b, dtype)
    # caller's class, format, structure and entry order; own index arrays
    if sp.issparse(A):
        assert type(gA) is type(A) and gA.format == A.format
        assert gA.shape == A.shape
        r0, c0 = caller_entries(A)
        r1, c1 = caller_entries(gA)
        np.testing.assert_array_equal(r0, r1)
        np.testing.assert_array_equal(c0, c1)
    else:
        assert isinstance(gA, np.ndarray) and gA.shape == A.shape
    assert gA.dtype == np.dtype(dtype) and gb.dtype == np.dtype(dtype)
    assert gb.shape == b.shape
    assert not shares(gA, A) and not shares(gb, g) and not shares(gb, b)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo_dup", "bsr", "lil", "dok"])
def test_matrix_classes_round_trip(rng, fmt):
    """csr_matrix in, csr_matrix out (and so on): the *class* is kept too."""
    A, b, D = make_problem(rng, fmt, np.float64, n=6, cls="matrix")
    assert sp.isspmatrix(A)
    gA, gb = sd.solve(A, b).vjp(np.ones(6))
    assert type(gA) is type(A)
    want, _ = oracle_grads(A, b, np.ones(6), "N")
    assert_close(grad_data(gA), want, np.float64)
    out = sd.sparse_outer(A, np.ones(6), np.ones(6))
    assert type(out) is type(A)


@pytest.mark.parametrize("shape", RHS_SHAPES)
@pytest.mark.parametrize("trans", TRANS)
def test_oracle_every_rhs_shape(rng, shape, trans):
    A, b, D = make_problem(rng, "csr_dup", np.complex128, n=5, shape=shape)
    g = randn(rng, b.shape, np.complex128)
    sol = sd.Solver(A).solve(b, trans=trans)
    gA, gb = sol.vjp(g)
    assert gb.shape == b.shape
    if b.ndim == 2 and b.shape[1] == 0:
        assert np.all(grad_data(gA) == 0)
        return
    want_A, want_b = oracle_grads(A, b, g, trans)
    assert_close(grad_data(gA), want_A, np.complex128)
    assert_close(gb, want_b, np.complex128)


def test_real_A_complex_b_gives_real_grad_A(rng):
    A, _, D = make_problem(rng, "csr_unsorted", np.float64, n=6)
    b = randn(rng, (6, 2), np.complex128)
    g = randn(rng, (6, 2), np.complex128)
    for trans in TRANS:
        sol = sd.Solver(A).solve(b, trans=trans)
        assert sol.x.dtype == np.complex128
        gA, gb = sol.vjp(g)
        assert gA.dtype == np.float64 and gb.dtype == np.complex128
        want_A, want_b = oracle_grads(A, b, g, trans)  # real leaf: real part
        assert_close(grad_data(gA), want_A, np.float64)
        assert_close(gb, want_b, np.complex128)


def test_complex_A_real_b_gives_real_grad_b(rng):
    A, _, D = make_problem(rng, "coo_dup", np.complex128, n=6)
    b = randn(rng, (6,), np.float64)
    g = randn(rng, (6,), np.complex128)
    for trans in TRANS:
        gA, gb = sd.Solver(A).solve(b, trans=trans).vjp(g)
        assert gA.dtype == np.complex128 and gb.dtype == np.float64
        want_A, want_b = oracle_grads(A, b, g, trans)
        assert_close(grad_data(gA), want_A, np.complex128)
        assert_close(gb, want_b, np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.complex64], ids=DT_IDS)
@pytest.mark.parametrize("trans", TRANS)
def test_single_precision_against_double_analytic(rng, dtype, trans):
    """D5: never finite differences in float32."""
    D, mask = dense_system(rng, 12, dtype, density=0.3)
    A32 = build("csr_dup", D, mask, rng)
    A64 = with_data(A32, caller_data(A32).astype(np.complex128 if is_complex(dtype)
                                                 else np.float64))
    b = randn(rng, (12, 2), dtype)
    g = randn(rng, (12, 2), dtype)
    gA32, gb32 = sd.Solver(A32).solve(b, trans=trans).vjp(g)
    gA64, gb64 = sd.Solver(A64).solve(b.astype(A64.dtype), trans=trans).vjp(
        g.astype(A64.dtype))
    assert gA32.dtype == np.dtype(dtype)
    kappa = np.linalg.cond(D.astype(np.complex128))
    rtol = 50 * kappa * np.finfo(dtype).eps
    assert (np.linalg.norm(grad_data(gA32) - grad_data(gA64))
            <= rtol * np.linalg.norm(grad_data(gA64)))
    assert np.linalg.norm(gb32 - gb64) <= rtol * np.linalg.norm(gb64)


# ---------------------------------------------------------------------------
# D1: central finite differences (float64 only)
# ---------------------------------------------------------------------------

def _loss(A, b, w, trans):
    x = sd.Solver(A).solve(b, trans=trans).x
    return float(np.real(np.vdot(w, x)))


@pytest.mark.parametrize("trans", TRANS)
@pytest.mark.parametrize("dtype", [np.float64, np.complex128], ids=DT_IDS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_central_finite_differences(rng, fmt, dtype, trans):
    A, b, D = make_problem(rng, fmt, dtype, n=6, shape="nk" if fmt == "csr" else "n")
    w = randn(rng, b.shape, dtype)  # L = Re⟨w, x⟩ has cotangent w
    data = caller_data(A)
    sol = sd.Solver(A).solve(b, trans=trans)
    gA, gb = sol.vjp(w)
    for _ in range(2):
        u_A = randn(rng, data.shape, dtype)  # only stored values are perturbed
        u_b = randn(rng, b.shape, dtype)
        h = 6e-6
        fp = _loss(with_data(A, data + h * u_A), b + h * u_b, w, trans)
        fm = _loss(with_data(A, data - h * u_A), b - h * u_b, w, trans)
        fd = (fp - fm) / (2 * h)
        an = np.real(np.vdot(grad_data(gA), u_A) + np.vdot(gb, u_b))
        assert abs(fd - an) <= 1e-7 * max(abs(an), 1e-3 * np.linalg.norm(w))
        # the forward mode agrees too
        jv = sol.jvp(u_A, u_b)
        assert abs(np.real(np.vdot(w, jv)) - an) <= 1e-12 * max(abs(an), 1.0) * 10


def test_full_jacobian_small(rng):
    """D1 full-Jacobian check for n ≤ 10 (real; every entry, b and A.data)."""
    A, b, D = make_problem(rng, "csr_zeros", np.float64, n=4)
    data = caller_data(A)
    sol = sd.solve(A, b)
    h = 6e-6
    J_fd = []
    for k in range(data.size):
        e = np.zeros(data.size)
        e[k] = h
        J_fd.append((sd.solve(with_data(A, data + e), b).x
                     - sd.solve(with_data(A, data - e), b).x) / (2 * h))
    J_fd = np.array(J_fd).T  # (n, nnz)
    J_vjp = np.array([sd.solve(A, b).vjp(np.eye(4)[i])[0].data for i in range(4)])
    np.testing.assert_allclose(J_vjp, J_fd, rtol=1e-7, atol=1e-9)
    J_jvp = np.array([sol.jvp(np.eye(data.size)[k]) for k in range(data.size)]).T
    np.testing.assert_allclose(J_jvp, J_vjp, rtol=1e-13, atol=1e-15)


# ---------------------------------------------------------------------------
# D3: dot-product test
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", RHS_SHAPES)
@pytest.mark.parametrize("trans", TRANS)
@pytest.mark.parametrize("dtype", [np.float64, np.complex128], ids=DT_IDS)
@pytest.mark.parametrize("fmt", ["csr", "csr_dup", "coo_dup", "dense", "bsr"])
def test_dot_product(rng, fmt, dtype, trans, shape):
    A, b, D = make_problem(rng, fmt, dtype, n=7, shape=shape)
    sol = sd.Solver(A).solve(b, trans=trans)
    u_A = randn(rng, caller_data(A).shape, dtype)
    u_b = randn(rng, b.shape, dtype)
    v = randn(rng, b.shape, dtype)
    Ju = sol.jvp(u_A, u_b)
    gA, gb = sol.vjp(v)
    lhs = np.real(np.vdot(v, Ju))
    rhs = np.real(np.vdot(u_A, grad_data(gA)) + np.vdot(u_b, gb))
    scale = np.linalg.norm(v) * np.linalg.norm(Ju) + 1e-300
    assert abs(lhs - rhs) <= 1e-12 * max(scale, abs(lhs))


# ---------------------------------------------------------------------------
# D7: pattern semantics
# ---------------------------------------------------------------------------

def test_duplicates_each_get_the_merged_gradient(rng):
    A, b, D = make_problem(rng, "csr_dup", np.complex128, n=6)
    gA, _ = sd.solve(A, b).vjp(randn(rng, (6,), np.complex128))
    rows, cols = caller_entries(A)
    data = grad_data(gA)
    assert data.shape == caller_data(A).shape  # the caller's nnz, not merged
    seen = {}
    dup = 0
    for k, key in enumerate(zip(rows, cols)):
        if key in seen:
            assert data[k] == data[seen[key]]
            dup += 1
        seen[key] = k
    assert dup > 0


def test_explicit_zeros_get_a_gradient(rng):
    A, b, D = make_problem(rng, "csr_zeros", np.float64, n=8)
    gA, _ = sd.solve(A, b).vjp(randn(rng, (8,), np.float64))
    zero = caller_data(A) == 0
    assert zero.sum() >= 2 and A[0, 0] == 0
    assert np.all(grad_data(gA)[zero] != 0)


def test_unsorted_input_gradient_in_callers_order(rng):
    A, b, D = make_problem(rng, "csr_unsorted", np.float64, n=8)
    assert not A.has_sorted_indices
    A = A.copy()  # the flag read above must not leak into the caller check below
    gA, _ = sd.solve(A, b).vjp(np.ones(8))
    np.testing.assert_array_equal(gA.indices, A.indices)
    np.testing.assert_array_equal(gA.indptr, A.indptr)
    want, _ = oracle_grads(A, b, np.ones(8), "N")
    assert_close(gA.data, want, np.float64)


def test_dense_A_gives_dense_gradient_and_takes_dense_tangent(rng):
    A, b, D = make_problem(rng, "dense", np.float64, n=5)
    sol = sd.solve(A, b)
    gA, gb = sol.vjp(np.ones(5))
    assert isinstance(gA, np.ndarray) and gA.shape == (5, 5)
    GA, _ = torch_oracle(D, b, np.ones(5), "N")
    np.testing.assert_allclose(gA, GA, rtol=1e-12, atol=1e-14)
    dA = rng.standard_normal((5, 5))
    np.testing.assert_allclose(sol.jvp(dA), sol.jvp(dA.ravel()), rtol=0, atol=0)


def test_jvp_accepts_sparse_tangent_with_As_structure(rng):
    A, b, D = make_problem(rng, "csr_dup", np.float64, n=6)
    sol = sd.solve(A, b)
    u = rng.standard_normal(A.nnz)
    dA_sparse = with_data(A, u)
    np.testing.assert_allclose(sol.jvp(dA_sparse), sol.jvp(u), rtol=1e-13)
    with pytest.raises(ValueError, match="structure"):
        sol.jvp(sp.eye_array(6, format="csr"))
    with pytest.raises(ValueError, match="nnz"):
        sol.jvp(np.ones(A.nnz + 1))


@pytest.mark.parametrize("scale", [1e-30, 1e-12, 1e12])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=DT_IDS)
def test_vjp_is_scale_invariant_in_g(rng, scale, dtype):
    """B6: a tiny or huge cotangent scales the gradient, no underflow to 0/NaN."""
    A, b, D = make_problem(rng, "csr", dtype, n=6)
    g = randn(rng, (6,), dtype)
    sol = sd.solve(A, b)
    gA1, gb1 = sol.vjp(g)
    gAs, gbs = sol.vjp((g * scale).astype(dtype))
    assert np.all(np.isfinite(gAs.data)) and np.all(gbs != 0)
    np.testing.assert_allclose(gAs.data / scale, gA1.data, rtol=5 * tol(dtype))
    np.testing.assert_allclose(gbs / scale, gb1, rtol=5 * tol(dtype))


def test_x0_does_not_change_the_gradient(rng):
    """D13: x0 only affects iterative iterates; for a direct solve nothing."""
    A, b, D = make_problem(rng, "csr", np.float64, n=6)
    g = rng.standard_normal(6)
    s1 = sd.solve(A, b)
    s2 = sd.solve(A, b, x0=rng.standard_normal(6))
    np.testing.assert_array_equal(s1.x, s2.x)
    for a, c in zip(s1.vjp(g), s2.vjp(g)):
        np.testing.assert_array_equal(caller_data(a), caller_data(c))


def test_vjp_adjoint_tolerances_validated(rng):
    A, b, _ = make_problem(rng)
    sol = sd.solve(A, b)
    with pytest.raises(ValueError, match="rtol"):
        sol.vjp(np.ones(6), rtol=-1)
    with pytest.raises(TypeError, match="maxiter"):
        sol.vjp(np.ones(6), maxiter=1.5)
    with pytest.raises(ValueError, match="shape of `x`"):
        sol.vjp(np.ones((6, 1)))
    with pytest.raises(TypeError):
        sol.vjp(np.ones(6), 1e-3)  # tolerances are keyword-only
    assert sol.vjp(np.ones(6), rtol=1e-3)[1].shape == (6,)
    assert sol.adjoint_info is not None and sol.adjoint_info.converged
