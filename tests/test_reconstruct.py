"""`iterate(adjoint="reconstruct")` without `f_inverse`: x_i rebuilt from x_{i+1}.

The step is inverted by solving ``f(y, θ) = x_{i+1}`` for ``y`` (Gauss–Newton
with CGLS on JVP/VJP products, or the gradient-descent baseline). Checked on
an invertible nonlinear step (tanh), a reversible integrator (leapfrog), and a
smoother whose inverse is so ill-conditioned that the sweep must fall back.
"""

import sys

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import traced_peak

import sparsediff  # noqa: F401  (loads the private module below)
from sparsediff.fixed_point import Reconstruct, iterate, steps

_rc = sys.modules["sparsediff.fixed_point._reconstruct"]


# ---------------------------------------------------------------------------
# steps
# ---------------------------------------------------------------------------


class Tanh:
    """``x ↦ tanh(W x + θ)``: invertible when ``W`` is (here ‖W‖ < 1)."""

    @staticmethod
    def f(x, p):
        return np.tanh(p["W"] @ x + p["theta"])

    @staticmethod
    def f_vjp(x, p, v):
        u = v * (1 - np.tanh(p["W"] @ x + p["theta"]) ** 2)
        return p["W"].T @ u, {"W": np.outer(u, x), "theta": u}

    @staticmethod
    def f_jvp(x, p, dx):
        return (1 - np.tanh(p["W"] @ x + p["theta"]) ** 2) * (p["W"] @ dx)

    @staticmethod
    def tangent(x, p, dx, dp):
        """Full forward-mode tangent (state and parameters)."""
        s = 1 - np.tanh(p["W"] @ x + p["theta"]) ** 2
        return s * (dp["W"] @ x + p["W"] @ dx + dp["theta"])


def tanh_problem(rng, n=12):
    q1, _ = np.linalg.qr(rng.standard_normal((n, n)))
    q2, _ = np.linalg.qr(rng.standard_normal((n, n)))
    W = q1 @ np.diag(rng.uniform(0.5, 0.9, n)) @ q2          # ‖W‖ = 0.9, cond ≤ 1.8
    p = {"W": W, "theta": 0.3 * rng.standard_normal(n)}
    return p, rng.standard_normal(n), rng.standard_normal(n)


class Leapfrog:
    """Störmer–Verlet for a chain of pendulums, ``x = (q, p)``, unit masses.

    ``V(q) = Σ κ_i (1 − cos q_i) + ½ c Σ (q_{i+1} − q_i)²``; one step is
    ``p½ = p − h/2 ∇V(q)``, ``q' = q + h p½``, ``p' = p½ − h/2 ∇V(q')``:
    symplectic, time-reversible, with Jacobian determinant 1.
    """

    def __init__(self, m, h=0.1):
        self.m, self.h = m, h
        self.L = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m)).toarray()
        self.L[0, 0] = self.L[-1, -1] = 1.0                     # free ends

    def grad_V(self, q, p):
        return p["kappa"] * np.sin(q) + p["c"] * (self.L @ q)

    def hess_V(self, q, p, d):
        return p["kappa"] * np.cos(q) * d + p["c"] * (self.L @ d)

    def f(self, x, p):
        m, h = self.m, self.h
        q, mom = x[:m], x[m:]
        ph = mom - 0.5 * h * self.grad_V(q, p)
        q1 = q + h * ph
        return np.concatenate([q1, ph - 0.5 * h * self.grad_V(q1, p)])

    def f_vjp(self, x, p, v):
        # reverse of the three updates above, last first
        m, h = self.m, self.h
        q, mom = x[:m], x[m:]
        q1 = q + h * (mom - 0.5 * h * self.grad_V(q, p))
        vq1, vph = v[:m], v[m:].copy()
        vg1 = -0.5 * h * v[m:]                                  # p' = p½ − h/2 g(q')
        vq1 = vq1 + self.hess_V(q1, p, vg1)
        g_kappa, g_c = vg1 * np.sin(q1), vg1 @ (self.L @ q1)
        vph = vph + h * vq1                                     # q' = q + h p½
        vg0 = -0.5 * h * vph                                    # p½ = p − h/2 g(q)
        vq = vq1 + self.hess_V(q, p, vg0)
        g_kappa = g_kappa + vg0 * np.sin(q)
        g_c = g_c + vg0 @ (self.L @ q)
        return np.concatenate([vq, vph]), {"kappa": g_kappa, "c": float(g_c)}

    def f_jvp(self, x, p, dx):
        m, h = self.m, self.h
        q, mom = x[:m], x[m:]
        dq, dp = dx[:m], dx[m:]
        ph = mom - 0.5 * h * self.grad_V(q, p)
        q1 = q + h * ph
        dph = dp - 0.5 * h * self.hess_V(q, p, dq)
        dq1 = dq + h * dph
        return np.concatenate([dq1, dph - 0.5 * h * self.hess_V(q1, p, dq1)])

    def f_inverse(self, x, p):
        # time reversal: the step with −h
        m, h = self.m, self.h
        q1, p1 = x[:m], x[m:]
        ph = p1 + 0.5 * h * self.grad_V(q1, p)
        q = q1 - h * ph
        return np.concatenate([q, ph + 0.5 * h * self.grad_V(q, p)])


def leapfrog_problem(rng, m=8):
    lf = Leapfrog(m)
    p = {"kappa": rng.uniform(0.5, 2.0, m), "c": 0.7}
    x0 = np.concatenate([rng.uniform(-1, 1, m), rng.uniform(-1, 1, m)])
    return lf, p, x0, rng.standard_normal(2 * m)


def poisson1d(n):
    return sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n), format="csr")


def rel(a, b):
    return np.linalg.norm(np.ravel(a) - np.ravel(b)) / np.linalg.norm(np.ravel(b))


def grads(step, x0, p, k, v, adjoint, **kw):
    res = iterate(step.f, x0, p, k, f_vjp=step.f_vjp, adjoint=adjoint, **kw)
    return res, res.vjp(v)


# ---------------------------------------------------------------------------
# (a) a nonlinear invertible step
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("with_jvp", [True, False])
def test_tanh_matches_store_and_checkpoint(rng, with_jvp):
    p, x0, v = tanh_problem(rng)
    k = 15
    kw = {"f_jvp": Tanh.f_jvp} if with_jvp else {}
    _, (gs, xs) = grads(Tanh, x0, p, k, v, "store")
    _, (gc, xc) = grads(Tanh, x0, p, k, v, "checkpoint")
    res, (gr, xr) = grads(Tanh, x0, p, k, v, "reconstruct", **kw)
    info = res.info
    assert info.reconstruct_solver == "gauss-newton"
    assert not info.fell_back and info.fallback_step is None
    assert info.reconstructed_steps == k
    assert info.max_reconstruction_error <= 1e-12
    # Gauss–Newton: a handful of iterations per step, not hundreds
    assert info.reconstruction_iterations <= 8 * k
    assert info.max_reconstruction_iterations <= 15
    for g in (gs, gc):
        assert rel(gr["W"], g["W"]) < 1e-10
        assert rel(gr["theta"], g["theta"]) < 1e-10
    assert rel(xr, xs) < 1e-10 and rel(xr, xc) < 1e-10


def test_tanh_central_differences(rng):
    p, x0, v = tanh_problem(rng)
    k = 10
    _, (gp, gx0) = grads(Tanh, x0, p, k, v, "reconstruct")

    def L(x0_, p_):
        return float(v @ iterate(Tanh.f, x0_, p_, k, f_vjp=Tanh.f_vjp).x)

    h = 1e-6
    for key in ("W", "theta"):
        d = rng.standard_normal(p[key].shape)
        fd = L(x0, {**p, key: p[key] + h * d}) - L(x0, {**p, key: p[key] - h * d})
        np.testing.assert_allclose(np.sum(gp[key] * d), fd / (2 * h), rtol=1e-7)
    d = rng.standard_normal(x0.shape)
    fd = L(x0 + h * d, p) - L(x0 - h * d, p)
    # ∂L/∂x0 is small (the step contracts): allow the difference's rounding,
    # eps |L| / h ≈ 1e-10
    np.testing.assert_allclose(gx0 @ d, fd / (2 * h), rtol=1e-7, atol=1e-9)


def test_tanh_dot_product_and_dense_oracle(rng):
    # forward mode by chaining the full tangent: <J u, v> = <u, Jᵀ v>, and the
    # dense Jacobian ∂x_k/∂θ (n columns of tangents) against n VJPs
    n, k = 6, 8
    p, x0, _ = tanh_problem(rng, n)

    def forward(dx0, dp):
        x, dx = x0, dx0
        for _ in range(k):
            x, dx = Tanh.f(x, p), Tanh.tangent(x, p, dx, dp)
        return dx

    res = iterate(Tanh.f, x0, p, k, f_vjp=Tanh.f_vjp, adjoint="reconstruct")
    v = rng.standard_normal(n)
    gp, gx0 = res.vjp(v)
    du = {"W": rng.standard_normal((n, n)), "theta": rng.standard_normal(n)}
    dx0 = rng.standard_normal(n)
    lhs = v @ forward(dx0, du)
    rhs = np.sum(gp["W"] * du["W"]) + gp["theta"] @ du["theta"] + gx0 @ dx0
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10)
    assert not res.info.fell_back

    zero = {"W": np.zeros((n, n)), "theta": np.zeros(n)}
    J = np.column_stack([forward(np.zeros(n), {**zero, "theta": e}) for e in np.eye(n)])
    JT = np.column_stack([res.vjp(e)[0]["theta"] for e in np.eye(n)])
    np.testing.assert_allclose(JT, J.T, rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------------------
# (b) a reversible integrator
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("with_jvp", [True, False])
def test_leapfrog_reconstructs_without_fallback(rng, with_jvp):
    lf, p, x0, v = leapfrog_problem(rng)
    k = 100
    kw = {"f_jvp": lf.f_jvp} if with_jvp else {}
    _, (gs, xs) = grads(lf, x0, p, k, v, "store")
    res, (gr, xr) = grads(lf, x0, p, k, v, "reconstruct", **kw)
    info = res.info
    assert not info.fell_back and info.reconstructed_steps == k
    assert info.max_reconstruction_error < 1e-12
    assert info.max_reconstruction_iterations <= 8
    assert rel(gr["kappa"], gs["kappa"]) < 1e-8
    assert abs(gr["c"] - gs["c"]) <= 1e-8 * abs(gs["c"])
    assert rel(xr, xs) < 1e-8


def test_leapfrog_inverse_free_equals_exact_inverse(rng):
    # the solver finds the same x_i as the closed-form time reversal
    lf, p, x0, v = leapfrog_problem(rng)
    k = 40
    _, (gi, xi) = grads(lf, x0, p, k, v, "reconstruct", f_inverse=lf.f_inverse)
    res, (gn, xn) = grads(lf, x0, p, k, v, "reconstruct")
    assert res.info.reconstruct_solver == "gauss-newton"
    assert rel(gn["kappa"], gi["kappa"]) < 1e-10 and rel(xn, xi) < 1e-10


def test_explicit_gauss_newton_ignores_f_inverse(rng):
    lf, p, x0, v = leapfrog_problem(rng)

    def never(x, q):
        raise AssertionError("f_inverse must not be called")

    res, (g, _) = grads(lf, x0, p, 10, v, Reconstruct(solver="gauss-newton"),
                        f_inverse=never)
    assert res.info.reconstruct_solver == "gauss-newton" and not res.info.fell_back


# ---------------------------------------------------------------------------
# (c) a smoother: the inverse is ill-posed, the sweep must fall back
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("with_jvp", [True, False])
def test_smoother_falls_back_to_checkpointing(rng, with_jvp):
    # damped Jacobi, ω = 2/3, on 1-D Poisson: 1 − ω μ ≈ 0.012 for the mode
    # nearest μ = 1.5, so each inverse step multiplies errors by ≈ 80
    n, k = 40, 30
    step = steps.Jacobi(poisson1d(n))
    p = step.params(2.0 / 3.0, b=rng.standard_normal(n))
    x0, v = rng.standard_normal(n), rng.standard_normal(n)
    kw = {"f_jvp": lambda x, q, dx: step.f_jvp(x, q, dx, {})} if with_jvp else {}
    _, (gs, xs) = grads(step, x0, p, k, v, "store")
    res, (gr, xr) = grads(step, x0, p, k, v, "reconstruct", reconstruct_tol=1e-10, **kw)
    info = res.info
    assert info.fell_back and 0 <= info.fallback_step < k
    assert info.max_reconstruction_error > 1e-10
    assert info.reconstructed_steps < k          # the rest was checkpointed
    # after the fallback the gradient is the checkpointed one
    np.testing.assert_allclose(xr, xs, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gr["data"], gs["data"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gr["omega"], gs["omega"], rtol=1e-10)


def test_failure_at_the_last_step_falls_back_instead_of_raising(rng):
    # a step that forgets its input (projection) has no preimage to find: with
    # f_inverse this raises "does not invert"; without it the sweep falls back
    n = 6
    P = np.diag([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])

    def f(x, a):
        return a * (P @ x) + 1.0

    def f_vjp(x, a, v):
        return a * (P @ v), float(v @ (P @ x))

    x0 = rng.standard_normal(n)
    v = rng.standard_normal(n)
    gs, xs = iterate(f, x0, 0.5, 4, f_vjp=f_vjp).vjp(v)
    res = iterate(f, x0, 0.5, 4, f_vjp=f_vjp, adjoint="reconstruct")
    g, gx = res.vjp(v)
    assert res.info.fell_back
    np.testing.assert_allclose(g, gs, rtol=1e-12)
    np.testing.assert_allclose(gx, xs, rtol=1e-12)


# ---------------------------------------------------------------------------
# (d) the gradient-descent baseline
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("with_jvp", [True, False])
def test_gradient_descent_baseline(rng, with_jvp):
    p, x0, v = tanh_problem(rng, n=6)
    x0 = 0.5 * x0
    k = 6
    kw = {"f_jvp": Tanh.f_jvp} if with_jvp else {}
    _, (gs, xs) = grads(Tanh, x0, p, k, v, "store")
    res, (gr, xr) = grads(Tanh, x0, p, k, v, Reconstruct(solver="gradient-descent"), **kw)
    gn, _ = grads(Tanh, x0, p, k, v, "reconstruct", **kw)
    info = res.info
    assert info.reconstruct_solver == "gradient-descent" and not info.fell_back
    assert rel(gr["W"], gs["W"]) < 1e-9 and rel(xr, xs) < 1e-9
    # the baseline needs many more iterations than Gauss–Newton
    assert info.reconstruction_iterations > 3 * gn.info.reconstruction_iterations


def test_gradient_descent_runs_out_of_iterations_and_falls_back(rng):
    p, x0, v = tanh_problem(rng, n=6)
    _, (gs, _) = grads(Tanh, x0, p, 5, v, "store")
    res, (gr, _) = grads(Tanh, x0, p, 5, v,
                         Reconstruct(solver="gradient-descent", maxiter=2))
    assert res.info.fell_back and res.info.max_reconstruction_iterations <= 2
    np.testing.assert_allclose(gr["W"], gs["W"], rtol=1e-12)


# ---------------------------------------------------------------------------
# solver pieces
# ---------------------------------------------------------------------------


def test_rebuild_inverts_one_step_and_counts_products(rng):
    p, x0, _ = tanh_problem(rng, n=10)
    x1 = Tanh.f(x0, p)
    for solver, jvp in [("gauss-newton", Tanh.f_jvp), ("gauss-newton", None),
                        ("gradient-descent", None)]:
        y, fy, its, prods = _rc.rebuild(
            Reconstruct(), solver, x1, None, lambda y: Tanh.f(y, p),
            lambda y, s: Tanh.f_vjp(y, p, s)[0],
            None if jvp is None else (lambda y, d, jvp=jvp: jvp(y, p, d)))
        assert np.linalg.norm(fy - x1) <= 1e-14 * np.linalg.norm(x1)
        np.testing.assert_allclose(y, x0, rtol=1e-12, atol=1e-13)
        assert its >= 1 and prods >= its


def test_cgls_solves_a_linear_least_squares_problem(rng):
    # dense oracle: J δ = r for a square well-conditioned J, inside a wide region
    n = 15
    J = np.eye(n) + 0.3 * rng.standard_normal((n, n)) / np.sqrt(n)
    r = rng.standard_normal(n)
    ops = _rc._Ops(lambda y: J @ y, lambda y, s: J.T @ s, lambda y, d: J @ d)
    delta, s, hit = _rc._cgls(ops, np.zeros(n), r, 1e-12, 100, radius=1e6)
    assert not hit
    np.testing.assert_allclose(delta, np.linalg.solve(J, r), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(s, r - J @ delta, atol=1e-9)
    # a small trust region: the step stops on its boundary
    delta, _, hit = _rc._cgls(ops, np.zeros(n), r, 1e-12, 100, radius=0.1)
    assert hit and np.isclose(np.linalg.norm(delta), 0.1)


def test_finite_difference_jvp_is_accurate_for_a_smooth_step(rng):
    p, x0, _ = tanh_problem(rng, n=8)
    d = rng.standard_normal(8)
    ops = _rc._Ops(lambda y: Tanh.f(y, p), None, None)
    np.testing.assert_allclose(ops.jvp(x0, d), Tanh.f_jvp(x0, p, d), rtol=1e-8, atol=1e-10)
    assert not ops.jvp(x0, np.zeros(8)).any()


# ---------------------------------------------------------------------------
# memory: O(1) iterates besides the log k snapshots
# ---------------------------------------------------------------------------


def test_memory_does_not_grow_with_steps(rng):
    n = 5_000
    step = steps.Richardson(poisson1d(n))
    p = step.params(0.05, b=rng.standard_normal(n))
    x0, v = rng.standard_normal(n), rng.standard_normal(n)

    def peak(mode, k):
        return traced_peak(lambda: iterate(step.f, x0, p, k, f_vjp=step.f_vjp,
                                     adjoint=mode).vjp(v))

    growth = {m: (peak(m, 32) - peak(m, 4)) / x0.nbytes for m in ("store", "reconstruct")}
    # store ~ k (28 more iterates); reconstruct ~ log k snapshots (3 more)
    assert growth["store"] > 22
    assert growth["reconstruct"] < 5
    res = iterate(step.f, x0, p, 32, f_vjp=step.f_vjp, adjoint="reconstruct")
    res.vjp(v)
    info = res.info
    assert not info.fell_back and info.checkpoints == 6
    # snapshots, x_k, and the sweep's vectors: independent of k
    assert info.peak_stored == 6 + 1 + 2 + 1 + _rc.WORKSPACE["gauss-newton"]


# ---------------------------------------------------------------------------
# (e) bad options
# ---------------------------------------------------------------------------


def test_bad_options(rng):
    p, x0, v = tanh_problem(rng, n=4)
    cls = "`sparsediff.fixed_point.Reconstruct`"
    with pytest.raises(ValueError, match=f"{cls}: `solver` must be one of .* got 'newton'"):
        Reconstruct(solver="newton")
    with pytest.raises(ValueError, match=r"`rtol` must lie in \(0, 1\); got 0"):
        Reconstruct(rtol=0)
    with pytest.raises(TypeError, match="`rtol` must be a real number or None; got 'a'"):
        Reconstruct(rtol="a")
    with pytest.raises(ValueError, match="`maxiter` must be >= 1; got 0"):
        Reconstruct(maxiter=0)
    with pytest.raises(TypeError, match="`maxiter` must be an integer or None; got 1.5"):
        Reconstruct(maxiter=1.5)
    with pytest.raises(TypeError, match="`inner_maxiter` must be an integer or None"):
        Reconstruct(inner_maxiter=True)
    kw = dict(f_vjp=Tanh.f_vjp)
    with pytest.raises(ValueError,
                       match=r"Reconstruct\(solver='inverse'\) needs `f_inverse`"):
        iterate(Tanh.f, x0, p, 2, adjoint=Reconstruct(solver="inverse"), **kw)
    with pytest.raises(TypeError, match="`f_jvp` must be callable"):
        iterate(Tanh.f, x0, p, 2, adjoint="reconstruct", f_jvp=3, **kw)
    with pytest.raises(TypeError, match="without `f_inverse` needs real iterates; "
                                        "got `x0` of dtype complex128"):
        iterate(Tanh.f, x0 + 0j, p, 2, adjoint="reconstruct", **kw)
    res = iterate(Tanh.f, x0, p, 2, adjoint="reconstruct",
                  f_jvp=lambda x, q, dx: dx[:-1], **kw)
    with pytest.raises(ValueError, match=r"`f_jvp\(x, params, dx\)` must return an array "
                                         r"of the shape of `x`, \(4,\); got \(3,\)"):
        res.vjp(v)


def test_docstring_example():
    import doctest

    result = doctest.testmod(_rc, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0 and result.attempted >= 1
