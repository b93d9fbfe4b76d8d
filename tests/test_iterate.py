"""`iterate`: truncated iterations differentiated by store / checkpoint / reconstruct."""


import numpy as np
import pytest
import scipy.sparse as sp
from conftest import traced_peak

from sparsediff import ConvergenceError, ConvergenceWarning, NonFiniteInputError
from sparsediff.fixed_point import Reconstruct, iterate, steps
from sparsediff.fixed_point._checkpoint import forward_chain, repetitions

# every test runs on the CPU backend and on the reference backend (NumPy twins,
# Krylov flags read every 8 iterations): tests/conftest.py::backend
pytestmark = pytest.mark.usefixtures("backend")

MODES = ["store", "checkpoint", "reconstruct"]


def poisson1d(n):
    return sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n), format="csr")


def run(step, x0, p, k, mode, **kw):
    return iterate(step.f, x0, p, k, f_vjp=step.f_vjp, f_inverse=step.f_inverse,
                   adjoint=mode, **kw)


def loss_grad(step, x0, p, k, mode, v, **kw):
    res = run(step, x0, p, k, mode, **kw)
    return res, res.vjp(v)


@pytest.fixture
def problem(rng):
    n = 24
    A = poisson1d(n)
    step = steps.Richardson(A)
    b = rng.standard_normal(n)
    p = step.params(0.05, b=b)
    x0 = rng.standard_normal(n)
    v = rng.standard_normal(n)
    return step, p, x0, v


@pytest.mark.parametrize("mode", MODES)
def test_gradients_match_central_differences(problem, rng, mode):
    step, p, x0, v = problem
    k = 15
    res, (gp, gx0) = loss_grad(step, x0, p, k, mode, v)
    assert not res.info.fell_back

    def L(x0_, p_):
        return float(v @ run(step, x0_, p_, k, "store").x)

    h = 1e-6
    fd = (L(x0, {**p, "omega": p["omega"] + h}) - L(x0, {**p, "omega": p["omega"] - h}))
    np.testing.assert_allclose(gp["omega"], fd / (2 * h), rtol=1e-7)
    for key in ("data", "b"):
        d = rng.standard_normal(p[key].shape)
        fd = L(x0, {**p, key: p[key] + h * d}) - L(x0, {**p, key: p[key] - h * d})
        np.testing.assert_allclose(gp[key] @ d, fd / (2 * h), rtol=1e-7)
    d = rng.standard_normal(x0.shape)
    fd = L(x0 + h * d, p) - L(x0 - h * d, p)
    np.testing.assert_allclose(gx0 @ d, fd / (2 * h), rtol=1e-7)


@pytest.mark.parametrize("k", [0, 1, 2, 7, 50])
@pytest.mark.parametrize("checkpoints", [1, 2, 3, None, 200])
def test_checkpoint_equals_store_bitwise(problem, k, checkpoints):
    step, p, x0, v = problem
    _, (gs, xs) = loss_grad(step, x0, p, k, "store", v)
    res, (gc, xc) = loss_grad(step, x0, p, k, "checkpoint", v, checkpoints=checkpoints)
    assert np.array_equal(xs, xc)
    assert gs["omega"] == gc["omega"]
    assert np.array_equal(gs["data"], gc["data"]) and np.array_equal(gs["b"], gc["b"])
    # Revolve's bound: no step re-evaluated more than t times, C(s + t, s) >= k
    assert res.info.max_recomputations <= res.info.repetitions
    assert res.info.peak_stored <= 2 * res.info.checkpoints + 2


def test_revolve_schedule_counts():
    # C(s + t, s) >= k with the smallest t; the first descent stores s - 1 snapshots
    assert repetitions(10, 3) == 2          # C(5, 3) = 10
    assert repetitions(11, 3) == 3
    assert repetitions(1000, 32) == 3
    chain = forward_chain(100, 5)
    assert len(chain) == 4 and chain == sorted(chain) and chain[-1] < 100


def test_reconstruct_matches_store(problem):
    step, p, x0, v = problem
    _, (gs, xs) = loss_grad(step, x0, p, 40, "store", v)
    res, (gr, xr) = loss_grad(step, x0, p, 40, "reconstruct", v, reconstruct_tol=1e-8)
    info = res.info
    assert info.adjoint == "reconstruct" and not info.fell_back
    assert info.max_reconstruction_error < 1e-8
    np.testing.assert_allclose(xr, xs, rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(gr["data"], gs["data"], rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(gr["omega"], gs["omega"], rtol=1e-6)


def test_ill_conditioned_inverse_falls_back(rng):
    # damped Jacobi with ω = 2/3 is a good smoother: 1 − ω μ ≈ 0 for μ ≈ 1.5, so
    # its inverse amplifies rounding errors enormously step after step
    n = 40
    step = steps.Jacobi(poisson1d(n))
    p = step.params(2.0 / 3.0, b=rng.standard_normal(n))
    x0, v = rng.standard_normal(n), rng.standard_normal(n)
    _, (gs, xs) = loss_grad(step, x0, p, 30, "store", v)
    res, (gr, xr) = loss_grad(step, x0, p, 30, "reconstruct", v, reconstruct_tol=1e-10)
    info = res.info
    assert info.fell_back and info.fallback_step is not None
    assert 0 <= info.fallback_step < 30
    assert info.max_reconstruction_error > 1e-10
    # after the announced fallback the gradient is the checkpointed one
    np.testing.assert_allclose(xr, xs, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gr["data"], gs["data"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gr["omega"], gs["omega"], rtol=1e-10)


def test_wrong_inverse_is_detected(problem):
    step, p, x0, v = problem
    res = iterate(step.f, x0, p, 5, f_vjp=step.f_vjp, f_inverse=lambda y, q: 0.9 * y,
                  adjoint="reconstruct")
    with pytest.raises(ValueError, match="`f_inverse` does not invert `f`"):
        res.vjp(v)


def test_dot_product_with_forward_mode(rng):
    # <J u, v> = <u, Jᵀ v> with J u by chaining the step's tangent (exact forward mode)
    n, k = 20, 12
    step = steps.Jacobi(poisson1d(n) + sp.diags(rng.uniform(0, 0.5, n)))
    p = step.params(0.6, b=rng.standard_normal(n))
    x0, v = rng.standard_normal(n), rng.standard_normal(n)
    du = {"omega": rng.standard_normal(), "data": rng.standard_normal(p["data"].shape),
          "b": rng.standard_normal(n)}
    dx0 = rng.standard_normal(n)
    x, dx = x0, dx0
    for _ in range(k):
        x, dx = step.f(x, p), step.f_jvp(x, p, dx, du)
    for mode in MODES:
        gp, gx0 = run(step, x0, p, k, mode, checkpoints=3).vjp(v)
        lhs = v @ dx
        rhs = (gp["omega"] * du["omega"] + gp["data"] @ du["data"] + gp["b"] @ du["b"]
               + gx0 @ dx0)
        # reconstruct: exact up to its measured reconstruction error
        np.testing.assert_allclose(lhs, rhs, rtol=1e-12 if mode != "reconstruct" else 1e-7)


def test_nested_params_and_none_leaves(rng):
    n = 6
    M = rng.standard_normal((n, n)) * 0.2

    def f(x, p):
        (a, c), d = p["pair"], p["lst"][0]
        return a * (M @ x) + c + d

    def f_vjp(x, p, v):
        (a, _c), _d = p["pair"], p["lst"][0]
        return a * (M.T @ v), {"pair": (float(v @ (M @ x)), v.copy()),
                               "lst": [v.sum()], "none": None}

    p = {"pair": (0.7, rng.standard_normal(n)), "lst": [1.5], "none": None}
    res = iterate(f, rng.standard_normal(n), p, 4, f_vjp=f_vjp)
    g, _ = res.vjp(np.ones(n))
    assert set(g) == {"pair", "lst", "none"} and g["none"] is None
    assert isinstance(g["pair"], tuple) and isinstance(g["pair"][0], float)
    assert isinstance(g["lst"], list) and g["lst"][0] != 0


def test_zero_steps(problem):
    step, p, x0, v = problem
    res = run(step, x0, p, 0, "checkpoint")
    gp, gx0 = res.vjp(v)
    assert np.array_equal(res.x, x0) and np.array_equal(gx0, v)
    assert gp["omega"] == 0.0 and not gp["data"].any()


def test_memory_growth_order(rng):
    n = 20_000
    step = steps.Richardson(poisson1d(n))
    p = step.params(0.05, b=rng.standard_normal(n))
    x0, v = rng.standard_normal(n), rng.standard_normal(n)
    step.f_inverse(step.f(x0, p), p)          # factorize outside the measurement

    def peak(mode, k):
        return traced_peak(lambda: run(step, x0, p, k, mode).vjp(v))

    # growth of the peak from k = 8 to k = 64 steps, in iterates (8n bytes):
    # store ~ k (56 more), checkpoint ~ 2√k (≈ 10 more), reconstruct ~ log k (3 more)
    growth = {m: (peak(m, 64) - peak(m, 8)) / x0.nbytes for m in MODES}
    assert growth["store"] > 45
    assert growth["checkpoint"] < 20
    assert growth["reconstruct"] < 6
    assert growth["reconstruct"] < growth["checkpoint"] < growth["store"]


def _blowup(x, p):
    with np.errstate(over="ignore"):
        return p * x * x + 1.0


def _blowup_vjp(x, p, v):
    return 2 * p * x * v, float(v @ (x * x))


def test_nonfinite_iterate_follows_on_failure():
    x0 = np.full(3, 10.0)
    with pytest.raises(ConvergenceError, match="non-finite at step"):
        iterate(_blowup, x0, 1.0, 50, f_vjp=_blowup_vjp)
    with pytest.warns(ConvergenceWarning, match="non-finite"):
        res = iterate(_blowup, x0, 1.0, 50, f_vjp=_blowup_vjp, on_failure="warn")
    assert res.info.reason == "nonfinite" and not res.info.converged
    g, gx = res.vjp(np.ones(3))
    assert np.isnan(g) and np.isnan(gx).all()
    res = iterate(_blowup, x0, 1.0, 50, f_vjp=_blowup_vjp, on_failure="nan")
    assert np.isnan(res.x).all()


def test_bad_input(problem):
    step, p, x0, v = problem
    kw = dict(f_vjp=step.f_vjp)
    with pytest.raises(ValueError, match="`num_steps` must be >= 0; got -1"):
        iterate(step.f, x0, p, -1, **kw)
    with pytest.raises(TypeError, match="`num_steps` must be an integer"):
        iterate(step.f, x0, p, 2.5, **kw)
    with pytest.raises(ValueError, match="`adjoint` must be one of"):
        iterate(step.f, x0, p, 2, adjoint="magic", **kw)
    with pytest.raises(ValueError, match="needs `f_inverse`"):
        iterate(step.f, x0, p, 2, adjoint=Reconstruct(solver="inverse"), **kw)
    with pytest.raises(ValueError, match="or a `sparsediff.fixed_point.Reconstruct`"):
        iterate(step.f, x0, p, 2, adjoint=("reconstruct",), **kw)
    with pytest.raises(ValueError, match="`checkpoints` must be >= 1"):
        iterate(step.f, x0, p, 2, adjoint="checkpoint", checkpoints=0, **kw)
    with pytest.raises(TypeError, match="`f_vjp` must be callable"):
        iterate(step.f, x0, p, 2, f_vjp=None)
    with pytest.raises(NonFiniteInputError, match="`x0`"):
        iterate(step.f, np.full(x0.shape, np.nan), p, 2, **kw)
    with pytest.raises(TypeError, match=r"params\['s'\] is a str"):
        iterate(step.f, x0, {"s": "abc"}, 2, **kw)
    with pytest.raises(ValueError, match=r"`f\(x, params\)` must return an array of "
                                         r"the shape"):
        iterate(lambda x, q: x[:-1], x0, p, 2, **kw)
    res = iterate(step.f, x0, p, 3, **kw)
    with pytest.raises(ValueError, match="`v` must have the shape of `x`"):
        res.vjp(v[:-1])

    def wrong_shape(x, q, w):
        vx, vp = step.f_vjp(x, q, w)
        return vx[:-1], vp

    def wrong_leaf(x, q, w):
        vx, vp = step.f_vjp(x, q, w)
        return vx, {**vp, "data": vp["data"][:-1]}

    def wrong_keys(x, q, w):
        vx, vp = step.f_vjp(x, q, w)
        return vx, {"omega": vp["omega"]}

    cases = [(wrong_shape, ValueError, "v_x with the shape of `x`"),
             (wrong_leaf, ValueError, r"for params\['data'\]"),
             (wrong_keys, ValueError, "with the keys of params"),
             (lambda x, q, w: w, TypeError, "must return a pair")]
    for bad, exc, msg in cases:
        res = iterate(step.f, x0, p, 3, f_vjp=bad)
        with pytest.raises(exc, match=msg):
            res.vjp(v)
