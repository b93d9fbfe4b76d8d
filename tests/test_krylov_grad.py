"""Gradients through the Krylov solvers: FD, dot-product and dense oracles."""

import numpy as np
import pytest
import scipy.sparse as sp

import sparsediff as sd

# every test runs on the CPU backend and on the reference backend (NumPy twins,
# Krylov flags read every 8 iterations): tests/conftest.py::backend
pytestmark = pytest.mark.usefixtures("backend")

METHODS = ("cg", "minres", "gmres", "bicgstab")
TOL = dict(rtol=1e-12, maxiter=2000)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def _matrix(method, dtype, rng, n=12):
    """A sparse test matrix the method must handle (Hermitian for CG/MINRES)."""
    complex_ = np.dtype(dtype).kind == "c"
    R = sp.random_array((n, n), density=0.3, rng=rng, format="csr").toarray()
    if complex_:
        R = R + 1j * sp.random_array((n, n), density=0.3, rng=rng).toarray()
    R = R + np.diag(np.ones(n - 1), 1)  # connected pattern
    if method == "cg":
        A = R + R.conj().T + 6 * np.eye(n)  # Hermitian, diagonally dominant
    elif method == "minres":
        signs = np.where(np.arange(n) % 2, -1.0, 1.0)
        A = 0.5 * (R + R.conj().T) + np.diag(signs * np.linspace(4, 6, n))  # indefinite
    else:
        A = R + 4 * np.eye(n)
    return sp.csr_array(A.astype(dtype))


def _direction(A, method, rng):
    """A tangent ``dA`` on A's pattern (Hermitian for CG/MINRES)."""
    d = rng.standard_normal(A.nnz)
    if A.dtype.kind == "c":
        d = d + 1j * rng.standard_normal(A.nnz)
    dA = sp.csr_array((d.astype(A.dtype), A.indices.copy(), A.indptr.copy()),
                      shape=A.shape)
    if method in ("cg", "minres"):
        dA = (dA + dA.conj().T).tocsr()
        # back onto A's exact pattern (A is Hermitian: same pattern as Aᴴ)
        dA = _on_pattern(dA, A)
    return dA


def _on_pattern(M, A):
    Md = M.toarray()
    rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
    return sp.csr_array((Md[rows, A.indices], A.indices.copy(), A.indptr.copy()),
                        shape=A.shape)


def _vec(shape, dtype, rng):
    v = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        v = v + 1j * rng.standard_normal(shape)
    return v.astype(dtype)


def _op(Ad, trans):
    return {"N": Ad, "T": Ad.T, "H": Ad.conj().T}[trans]


CASES = [(m, t, d, k) for m in METHODS for t in ("N", "T", "H")
         for d in (np.float64, np.complex128) for k in (None, 3)]


@pytest.mark.parametrize("method, trans, dtype, m", CASES,
                         ids=[f"{a}-{b}-{np.dtype(c).name}-{d}" for a, b, c, d in CASES])
def test_gradient_checks(method, trans, dtype, m, rng):
    A = _matrix(method, dtype, rng)
    n = A.shape[0]
    shape = (n,) if m is None else (n, m)
    b = _vec(shape, dtype, rng)
    g = _vec(shape, dtype, rng)
    solver = sd.Solver(A, method=method, **TOL)
    sol = solver.solve(b, trans=trans)
    assert sol.info.converged
    grad_A, grad_b = sol.vjp(g)
    assert sol.adjoint_info.converged and sol.adjoint_info.backward_error is not None
    assert sol.adjoint_info.error_estimate is None  # no condition estimate: no bound
    assert type(grad_A) is type(A) and grad_A.data.shape == A.data.shape

    # dense oracle: λ = op(A)⁻ᴴ g, grad_data from the pattern-restricted outer product
    Ad = A.toarray()
    opA = _op(Ad, trans)
    x = np.linalg.solve(opA, b)
    lam = np.linalg.solve(opA.conj().T, g)
    np.testing.assert_allclose(sol.x, x, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(grad_b, lam, rtol=1e-9, atol=1e-11)
    x2, lam2 = x.reshape(n, -1), lam.reshape(n, -1)
    G = {"N": -lam2 @ x2.conj().T, "T": -(x2.conj() @ lam2.T),
         "H": -(x2 @ lam2.conj().T)}[trans]
    rows = np.repeat(np.arange(n), np.diff(A.indptr))
    np.testing.assert_allclose(grad_A.data, G[rows, A.indices], rtol=1e-8,
                               atol=1e-10 * np.abs(G).max())

    # dot-product test: <J u, v> = Re<u, Jᴴ v> with the Krylov tangent solve
    dA = _direction(A, method, rng)
    db = _vec(shape, dtype, rng)
    dx = sol.jvp(dA, db)
    lhs = np.vdot(g, dx).real
    rhs = np.vdot(grad_A.data, dA.data).real + np.vdot(grad_b, db).real
    assert lhs == pytest.approx(rhs, rel=1e-9)

    # central finite differences of L = Re<g, x> through the same Krylov solve
    def loss(h):
        Ah = sp.csr_array((A.data + h * dA.data, A.indices, A.indptr), shape=A.shape)
        xh = sd.Solver(Ah, method=method, **TOL).solve(b + h * db, trans=trans).x
        return np.vdot(g, xh).real

    # Richardson-extrapolated central differences: O(h⁴) truncation, so a
    # step large enough that the solver's 1e-12 noise stays far below 1e-6
    h = 2e-3
    d1 = (loss(h) - loss(-h)) / (2 * h)
    d2 = (loss(h / 2) - loss(-h / 2)) / h
    fd = (4 * d2 - d1) / 3
    assert fd == pytest.approx(rhs, rel=1e-6)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_cotangent_scale_invariance(method, dtype, scale, rng):
    A = _matrix(method, dtype, rng)
    b = _vec(12, dtype, rng)
    g = _vec(12, dtype, rng)
    rtol = 1e-6 if dtype == np.float32 else 1e-10
    sol = sd.solve(A, b, method=method, rtol=rtol)
    ga, gb = sol.vjp(g)
    gs = (g * dtype(scale)).astype(dtype)
    sa, sb = sol.vjp(gs)
    assert np.all(np.isfinite(sb)) and np.any(sb != 0)
    r = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(sb / scale, gb, rtol=r, atol=r * np.abs(gb).max())
    np.testing.assert_allclose(sa.data / scale, ga.data, rtol=r,
                               atol=r * np.abs(ga.data).max())


@pytest.mark.parametrize("method", METHODS)
def test_failed_adjoint_raises(method, rng):
    A = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(100, 100), format="csr")
    sol = sd.solve(A, rng.standard_normal(100), method=method, maxiter=5000)
    assert sol.info.converged
    with pytest.raises(sd.ConvergenceError, match="adjoint solve"):
        sol.vjp(rng.standard_normal(100), maxiter=2)
    nan = sd.solve(A, rng.standard_normal(100), method=method, maxiter=5000,
                   on_failure="nan")
    grad_A, grad_b = nan.vjp(rng.standard_normal(100), maxiter=2)
    assert np.isnan(grad_b).all()
    assert not nan.adjoint_info.converged


@pytest.mark.parametrize("method", METHODS)
def test_adjoint_warm_start_and_tolerance(method, rng):
    A = _matrix(method, np.float64, rng, n=30)
    solver = sd.Solver(A, method=method, rtol=1e-10, maxiter=3000)
    g = rng.standard_normal(30)
    first = solver.solve(rng.standard_normal(30))
    first.vjp(g)
    cold = first.adjoint_info.iterations
    assert cold > 0
    second = solver.solve(rng.standard_normal(30))
    _, gb = second.vjp(g)
    assert second.adjoint_info.iterations < cold
    np.testing.assert_allclose(gb, np.linalg.solve(A.toarray().T, g), rtol=1e-7)
    # the adjoint tolerance defaults to the forward one and can be loosened
    loose = solver.solve(rng.standard_normal(30))
    loose.vjp(2 * g + 1, rtol=1e-3)
    tight = solver.solve(rng.standard_normal(30))
    tight.vjp(2 * g + 1)
    assert loose.adjoint_info.iterations <= tight.adjoint_info.iterations


def test_preconditioner_without_adjoint(rng):
    A = _matrix("gmres", np.float64, rng)
    d = 1.0 / A.diagonal()

    class Forward:
        shape, dtype = A.shape, np.dtype(float)

        def matvec(self, x):
            return d * x

    sol = sd.solve(A, rng.standard_normal(12), method="gmres", M=Forward())
    assert sol.info.converged
    with pytest.raises(TypeError, match="no adjoint"):
        sol.vjp(rng.standard_normal(12))
    # with an adjoint, the adjoint solve uses it
    Forward.rmatvec = Forward.matvec
    sol = sd.solve(A, rng.standard_normal(12), method="gmres", M=Forward(),
                   rtol=1e-12)
    _, gb = sol.vjp(np.ones(12))
    np.testing.assert_allclose(gb, np.linalg.solve(A.toarray().T, np.ones(12)),
                               rtol=1e-9)


@pytest.mark.parametrize("method, M", [("cg", "jacobi"), ("cg", "amg"),
                                       ("gmres", "ilu"), ("bicgstab", "ilu"),
                                       ("gmres", "jacobi"), ("minres", "jacobi")])
@pytest.mark.parametrize("trans", ["N", "T", "H"])
def test_preconditioned_gradients(method, M, trans, rng):
    import sparsediff.precond as pc

    if M not in getattr(pc, "PRECONDITIONERS", {}):
        pytest.skip(f"preconditioner {M!r} not available")
    A = _matrix("cg" if method in ("cg", "minres") else "gmres", np.complex128, rng,
                n=20)
    b = _vec((20, 2), np.complex128, rng)
    g = _vec((20, 2), np.complex128, rng)
    sol = sd.Solver(A, method=method, M=M, **TOL).solve(b, trans=trans)
    grad_A, grad_b = sol.vjp(g)
    opA = _op(A.toarray(), trans)
    np.testing.assert_allclose(grad_b, np.linalg.solve(opA.conj().T, g), rtol=1e-9)
    dA = _direction(A, method, rng)
    dx = sol.jvp(dA, None)
    assert np.vdot(g, dx).real == pytest.approx(np.vdot(grad_A.data, dA.data).real,
                                                rel=1e-9)
