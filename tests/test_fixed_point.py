"""`fixed_point`: implicit differentiation at convergence (eq. 12 of the design note)."""

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

import sparsediff as sd
from sparsediff import ConvergenceError, ConvergenceWarning
from sparsediff.fixed_point import fixed_point, iterate, steps

# every test runs on the CPU backend and on the reference backend (NumPy twins,
# Krylov flags read every 8 iterations): tests/conftest.py::backend
pytestmark = pytest.mark.usefixtures("backend")

SOLVERS = ["gmres", "fixed_point"]


@pytest.fixture
def system(rng):
    """A diagonally dominant system: weighted Jacobi converges to A⁻¹ b."""
    n = 30
    A = (sp.diags([-1.0, 4.0, -1.0], [-1, 0, 1], shape=(n, n))
         + sp.random(n, n, density=0.05, random_state=3) * 0.5).tocsr()
    A.sum_duplicates()
    step = steps.Jacobi(A)
    p = step.params(0.9, b=rng.standard_normal(n))
    return A, step, p


@pytest.mark.parametrize("solver", SOLVERS)
def test_linear_fixed_point_matches_sparse_solve(system, rng, solver):
    # the fixed point of x + ωD⁻¹(b − Ax) is A⁻¹b: the gradients w.r.t. b and
    # A.data must be those of sd.solve (a direct adjoint solve, the oracle)
    A, step, p = system
    res = fixed_point(step.f, np.zeros(A.shape[0]), p, f_vjp=step.f_vjp,
                      adjoint_solver=solver, tol=1e-13)
    assert res.info.converged and res.info.residual_norm < 1e-11
    sol = sd.solve(A, p["b"])
    np.testing.assert_allclose(res.x, sol.x, rtol=1e-10)
    g = rng.standard_normal(A.shape[0])
    grad_A, grad_b = sol.vjp(g)
    gp = res.vjp(g)
    assert res.adjoint_info.converged and res.adjoint_info.method == solver
    np.testing.assert_allclose(gp["b"], grad_b, rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(gp["data"], grad_A.data, rtol=1e-8, atol=1e-11)
    # x* does not depend on ω: its gradient vanishes
    assert abs(gp["omega"]) < 1e-9 * np.linalg.norm(g)


def _nonlinear(rng, n=8):
    W = rng.standard_normal((n, n))
    W *= 0.6 / np.linalg.norm(W, 2)

    def f(x, p):
        return np.tanh(p["W"] @ x + p["c"])

    def f_vjp(x, p, v):
        u = v * (1 - f(x, p) ** 2)
        return p["W"].T @ u, {"W": np.outer(u, x), "c": u}

    return f, f_vjp, {"W": W, "c": rng.standard_normal(n)}


@pytest.mark.parametrize("solver", SOLVERS)
def test_nonlinear_against_central_differences(rng, solver):
    f, f_vjp, p = _nonlinear(rng)
    x0 = np.zeros(8)
    v = rng.standard_normal(8)
    g = fixed_point(f, x0, p, f_vjp=f_vjp, adjoint_solver=solver, tol=1e-14).vjp(v)

    def L(q):
        return v @ fixed_point(f, x0, q, f_vjp=f_vjp, tol=1e-15).x

    h = 1e-6
    for key in ("W", "c"):
        d = rng.standard_normal(p[key].shape)
        fd = (L({**p, key: p[key] + h * d}) - L({**p, key: p[key] - h * d})) / (2 * h)
        np.testing.assert_allclose(np.sum(g[key] * d), fd, rtol=1e-7)


def test_implicit_matches_long_unrolling(rng):
    f, f_vjp, p = _nonlinear(rng)
    v = rng.standard_normal(8)
    res = fixed_point(f, np.zeros(8), p, f_vjp=f_vjp, tol=1e-14)
    g_imp = res.vjp(v)
    g_unr = fixed_point(f, np.zeros(8), p, f_vjp=f_vjp, tol=1e-14,
                        adjoint="unrolled").vjp(v)
    # unrolling from x0: the early steps' contributions also converge to the implicit
    g_long = iterate(f, np.zeros(8), p, res.info.iterations + 40, f_vjp=f_vjp).vjp(v)[0]
    for key in ("W", "c"):
        np.testing.assert_allclose(g_unr[key], g_imp[key], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(g_long[key], g_imp[key], rtol=1e-9, atol=1e-12)


def test_dot_product(rng):
    # <dx*, v> with dx* from a forward-mode difference quotient of tight accuracy:
    # x* is smooth in c, the quotient's error is O(h²)
    f, f_vjp, p = _nonlinear(rng)
    v, u = rng.standard_normal(8), rng.standard_normal(8)
    g = fixed_point(f, np.zeros(8), p, f_vjp=f_vjp, tol=1e-15).vjp(v)
    h = 1e-5
    xp = fixed_point(f, np.zeros(8), {**p, "c": p["c"] + h * u}, f_vjp=f_vjp, tol=1e-15).x
    xm = fixed_point(f, np.zeros(8), {**p, "c": p["c"] - h * u}, f_vjp=f_vjp, tol=1e-15).x
    np.testing.assert_allclose(v @ (xp - xm) / (2 * h), g["c"] @ u, rtol=1e-8)


def test_memory_independent_of_iterations(rng):
    n = 10_000
    A = sp.diags([-1.0, 4.0, -1.0], [-1, 0, 1], shape=(n, n), format="csr")
    step = steps.Jacobi(A)
    p = step.params(1.0, b=rng.standard_normal(n))
    v = rng.standard_normal(n)

    def peak(tol, adjoint):
        tracemalloc.start()
        try:
            res = fixed_point(step.f, np.zeros(n), p, f_vjp=step.f_vjp, tol=tol,
                              adjoint=adjoint, adjoint_solver="fixed_point")
            res.vjp(v, rtol=1e-8)
            return tracemalloc.get_traced_memory()[1] / (8 * n), res.info.iterations
        finally:
            tracemalloc.stop()

    (imp_lo, it_lo), (imp_hi, it_hi) = peak(1e-3, "implicit"), peak(1e-13, "implicit")
    (unr_lo, _), (unr_hi, _) = peak(1e-3, "unrolled"), peak(1e-13, "unrolled")
    assert it_hi > 2 * it_lo
    assert abs(imp_hi - imp_lo) < 3                # flat (in units of one iterate)
    assert unr_hi - unr_lo > 0.5 * (it_hi - it_lo)  # one iterate per step


def test_noncontractive_adjoint():
    # f(x) = 2x − c has the fixed point c but is expanding: forward from x* itself,
    # the Richardson adjoint w = v + 2w diverges; GMRES solves −w = v
    def f(x, c):
        return 2 * x - c
    def f_vjp(x, c, v):
        return (2 * v, -v)
    c = np.array([1.0, -2.0])
    res = fixed_point(f, c.copy(), c, f_vjp=f_vjp, adjoint_solver="fixed_point")
    assert res.info.converged and res.info.iterations == 0
    with pytest.raises(ConvergenceError, match="not a contraction"):
        res.vjp(np.ones(2))
    assert res.adjoint_info.reason == "noncontractive"
    res = fixed_point(f, c.copy(), c, f_vjp=f_vjp, adjoint_solver="fixed_point",
                      on_failure="nan")
    assert np.isnan(res.vjp(np.ones(2))).all()
    res = fixed_point(f, c.copy(), c, f_vjp=f_vjp)   # gmres: d x*/dc = I
    np.testing.assert_allclose(res.vjp(np.array([1.0, 3.0])), [1.0, 3.0])


def test_gmres_adjoint_failure_is_never_silent(system):
    A, step, p = system
    res = fixed_point(step.f, np.zeros(A.shape[0]), p, f_vjp=step.f_vjp)
    with pytest.raises(ConvergenceError, match="adjoint solve"):
        res.vjp(np.ones(A.shape[0]), maxiter=1)


def _grow(x, a):
    with np.errstate(over="ignore", invalid="ignore"):
        return a * x + 1.0


def test_diverging_forward_follows_on_failure():
    f = _grow
    def f_vjp(x, a, v):
        return (a * v, float(v @ x))
    with pytest.raises(ConvergenceError, match="did not converge"):
        fixed_point(f, np.zeros(2), 1.5, f_vjp=f_vjp, maxiter=50)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        res = fixed_point(f, np.zeros(2), 1.5, f_vjp=f_vjp, maxiter=50,
                          on_failure="warn")
    assert not res.info.converged and res.info.reason == "maxiter"
    res = fixed_point(f, np.zeros(2), 1.5, f_vjp=f_vjp, maxiter=5000, on_failure="nan")
    assert res.info.reason == "nonfinite" and np.isnan(res.x).all()
    assert np.isnan(res.vjp(np.ones(2)))


def test_bad_input(system):
    A, step, p = system
    x0 = np.zeros(A.shape[0])
    with pytest.raises(ValueError, match="`adjoint_solver` must be one of"):
        fixed_point(step.f, x0, p, f_vjp=step.f_vjp, adjoint_solver="cg")
    with pytest.raises(ValueError, match="`maxiter` must be >= 0"):
        fixed_point(step.f, x0, p, f_vjp=step.f_vjp, maxiter=-1)
    with pytest.raises(ValueError, match="`on_failure` must be one of"):
        fixed_point(step.f, x0, p, f_vjp=step.f_vjp, on_failure="ignore")
    def bad(x, q, v):
        return (v, {**step.f_vjp(x, q, v)[1], "b": v[:3]})
    res = fixed_point(step.f, x0, p, f_vjp=bad)
    with pytest.raises(ValueError, match=r"shape \(30,\) for params\['b'\]"):
        res.vjp(np.ones(A.shape[0]))
    res = fixed_point(step.f, x0, p, f_vjp=step.f_vjp)
    assert res.vjp(np.zeros(A.shape[0]))["omega"] == 0.0
