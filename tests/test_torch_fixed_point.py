"""``sparsediff.torch.fixed_point``: torch maps through the core's implicit adjoint."""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sdt = pytest.importorskip("sparsediff.torch")

from sparsediff import ConvergenceError, ConvergenceWarning  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture
def rng():
    return np.random.default_rng(4321)


def _contraction(rng, n, dtype=torch.float64, norm=0.5):
    W = rng.standard_normal((n, n))
    c = rng.standard_normal(n)
    if dtype.is_complex:
        W = W + 1j * rng.standard_normal((n, n))
        c = c + 1j * rng.standard_normal(n)
    W *= norm / np.linalg.norm(W, 2)
    return (torch.tensor(W, dtype=dtype, requires_grad=True),
            torch.tensor(c, dtype=dtype, requires_grad=True))


def _tanh_map(x, W, c):
    return torch.tanh(W @ x + c)


def _linear_map(x, W, c):
    return W @ x + c


def test_gradient_matches_long_unrolling(rng):
    W, c = _contraction(rng, 6)
    x0 = torch.zeros(6, dtype=torch.float64)
    w = torch.tensor(rng.standard_normal(6))
    x = sdt.fixed_point(_tanh_map, x0, (W, c), tol=1e-13)
    assert torch.allclose(x, _tanh_map(x, W, c), atol=1e-12)
    gW, gc = torch.autograd.grad((x * w).sum(), (W, c))
    xu = x0
    for _ in range(200):   # autograd through a long, converged iteration
        xu = _tanh_map(xu, W, c)
    rW, rc = torch.autograd.grad((xu * w).sum(), (W, c))
    np.testing.assert_allclose(gW.numpy(), rW.numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(gc.numpy(), rc.numpy(), rtol=1e-8, atol=1e-10)


def test_central_differences(rng):
    W, c = _contraction(rng, 5)
    x0 = torch.zeros(5, dtype=torch.float64)
    dW, dc = torch.tensor(rng.standard_normal((5, 5))), torch.tensor(rng.standard_normal(5))

    def loss(WW, cc):
        return (sdt.fixed_point(_tanh_map, x0, (WW, cc), tol=1e-14) ** 2).sum()

    gW, gc = torch.autograd.grad(loss(W, c), (W, c))
    h = 1e-5
    with torch.no_grad():
        fd = (loss(W + h * dW, c + h * dc) - loss(W - h * dW, c - h * dc)) / (2 * h)
    exact = float((gW * dW).sum() + (gc * dc).sum())
    assert abs(float(fd) - exact) <= 1e-7 * max(1.0, abs(exact))


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_dense_oracle_linear_map(rng, dtype):
    """x* = (I − W)⁻¹ c: the gradient of torch.linalg.solve is the oracle."""
    W, c = _contraction(rng, 7, dtype)
    x0 = torch.zeros(7, dtype=dtype)
    w = torch.tensor(rng.standard_normal(7) + (1j * rng.standard_normal(7)
                     if dtype.is_complex else 0), dtype=dtype)

    def loss(x):
        return (w.conj() * x).sum().real if dtype.is_complex else (w * x).sum()

    x = sdt.fixed_point(_linear_map, x0, (W, c), tol=1e-14)
    gW, gc = torch.autograd.grad(loss(x), (W, c))
    xr = torch.linalg.solve(torch.eye(7, dtype=dtype) - W, c)
    rW, rc = torch.autograd.grad(loss(xr), (W, c))
    torch.testing.assert_close(x, xr.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gW, rW, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gc, rc, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_gradcheck(rng, dtype):
    W, c = _contraction(rng, 4, dtype)
    x0 = torch.zeros(4, dtype=dtype)
    fn = _tanh_map if not dtype.is_complex else _linear_map
    assert torch.autograd.gradcheck(
        lambda WW, cc: sdt.fixed_point(fn, x0, (WW, cc), tol=1e-14,
                                       adjoint_rtol=1e-14), (W, c))


def test_dot_product_with_dense_jvp(rng):
    """⟨vjp(v), δθ⟩ = ⟨v, jvp(δθ)⟩ with the JVP (I − ∂f/∂x)⁻¹ ∂f/∂θ δθ formed densely."""
    W, c = _contraction(rng, 6)
    x0 = torch.zeros(6, dtype=torch.float64)
    x = sdt.fixed_point(_tanh_map, x0, (W, c), tol=1e-14)
    v = torch.tensor(rng.standard_normal(6))
    dW, dc = torch.tensor(rng.standard_normal((6, 6))), torch.tensor(rng.standard_normal(6))
    gW, gc = torch.autograd.grad(x, (W, c), v)
    xs = x.detach()
    Jx = torch.autograd.functional.jacobian(lambda y: _tanh_map(y, W.detach(), c.detach()),
                                            xs)
    _, ftheta = torch.func.jvp(lambda WW, cc: _tanh_map(xs, WW, cc),
                               (W.detach(), c.detach()), (dW, dc))
    jvp = torch.linalg.solve(torch.eye(6, dtype=torch.float64) - Jx, ftheta)
    lhs = float((gW * dW).sum() + (gc * dc).sum())
    rhs = float((v * jvp).sum())
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(rhs))


def test_adjoint_solvers_agree(rng):
    W, c = _contraction(rng, 6)
    x0 = torch.zeros(6, dtype=torch.float64)
    v = torch.tensor(rng.standard_normal(6))
    out = []
    for solver in ("gmres", "fixed_point"):
        x = sdt.fixed_point(_tanh_map, x0, (W, c), tol=1e-14, adjoint_solver=solver)
        out.append(torch.autograd.grad(x, (W, c), v))
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)


def test_one_linearization_per_backward(rng):
    """Every adjoint product reuses one autograd graph of f at x*."""
    W, c = _contraction(rng, 6)
    calls = {"grad": 0}

    def f(x, W, c):
        if torch.is_grad_enabled() and x.requires_grad:
            calls["grad"] += 1
        return _tanh_map(x, W, c)

    x = sdt.fixed_point(f, torch.zeros(6, dtype=torch.float64), (W, c), tol=1e-13)
    x.sum().backward()
    assert calls["grad"] == 1
    assert W.grad is not None and c.grad is not None


def test_only_requested_gradients(rng):
    W, c = _contraction(rng, 5)
    W.requires_grad_(False)
    x = sdt.fixed_point(_tanh_map, torch.zeros(5, dtype=torch.float64), (W, c))
    x.sum().backward()
    assert W.grad is None and c.grad is not None and c.grad.dtype == torch.float64


def test_float32(rng):
    W, c = _contraction(rng, 5, torch.float32)
    x = sdt.fixed_point(_tanh_map, torch.zeros(5), (W, c), tol=1e-6)
    assert x.dtype == torch.float32
    x.sum().backward()
    assert W.grad.dtype == torch.float32 and c.grad.dtype == torch.float32
    assert torch.isfinite(W.grad).all()


def test_inputs_not_modified(rng):
    W, c = _contraction(rng, 5)
    x0 = torch.tensor(rng.standard_normal(5))
    before = [t.detach().clone() for t in (W, c, x0)]
    x = sdt.fixed_point(_tanh_map, x0, (W, c))
    x.sum().backward()
    for t, b in zip((W, c, x0), before):
        assert torch.equal(t.detach(), b)


# ---------------------------------------------------------------------------
# failure policy, forward and adjoint
# ---------------------------------------------------------------------------


def _expanding(x, c):
    return 2 * x + c


def test_forward_failure_raise_warn_nan(rng):
    c = torch.tensor(rng.standard_normal(3), requires_grad=True)
    x0 = torch.ones(3, dtype=torch.float64)
    with pytest.raises(ConvergenceError, match="sparsediff.torch.fixed_point.*did not "
                                               "converge.*maxiter"):
        sdt.fixed_point(_expanding, x0, (c,), maxiter=5)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        x = sdt.fixed_point(_expanding, x0, (c,), maxiter=5, on_failure="warn")
    assert torch.isfinite(x).all()
    x = sdt.fixed_point(_expanding, x0, (c,), maxiter=5, on_failure="nan")
    assert torch.isnan(x).all()
    x.sum().backward()
    assert torch.isnan(c.grad).all()           # never a silent zero gradient


def test_adjoint_failure_follows_policy(rng):
    W, c = _contraction(rng, 8, norm=0.95)
    x0 = torch.zeros(8, dtype=torch.float64)
    x = sdt.fixed_point(_tanh_map, x0, (W, c), adjoint_maxiter=1)
    with pytest.raises(ConvergenceError, match="adjoint solve"):
        x.sum().backward()
    x = sdt.fixed_point(_tanh_map, x0, (W, c), adjoint_maxiter=1, on_failure="warn")
    with pytest.warns(ConvergenceWarning, match="adjoint solve"):
        (g,) = torch.autograd.grad(x.sum(), c)
    assert torch.isfinite(g).all()
    x = sdt.fixed_point(_tanh_map, x0, (W, c), adjoint_maxiter=1, on_failure="nan")
    (g,) = torch.autograd.grad(x.sum(), c)
    assert torch.isnan(g).all()


def test_noncontractive_adjoint_is_reported():
    """Started at its fixed point, ``3x + c`` "converges" at once, but its
    Jacobian has spectral radius 3: eq. 12 iterated must report it, GMRES solves."""
    c = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    x0 = torch.zeros(2, dtype=torch.float64)     # already the fixed point of 3x + c
    x = sdt.fixed_point(lambda x, c: 3 * x + c, x0, (c,), adjoint_solver="fixed_point")
    with pytest.raises(ConvergenceError, match="not a contraction"):
        x.sum().backward()
    # GMRES solves (I − 3I)ᵀ w = v all the same: w = −v/2
    x = sdt.fixed_point(lambda x, c: 3 * x + c, x0, (c,))
    (g,) = torch.autograd.grad(x.sum(), c)
    torch.testing.assert_close(g, torch.full((2,), -0.5, dtype=torch.float64))


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------


def test_bad_input(rng):
    W, c = _contraction(rng, 3)
    x0 = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(TypeError, match="`f` must be callable"):
        sdt.fixed_point(None, x0, (c,))
    with pytest.raises(TypeError, match="`x0` must be a torch.Tensor"):
        sdt.fixed_point(_tanh_map, np.zeros(3), (W, c))
    with pytest.raises(TypeError, match="`params` must hold torch tensors"):
        sdt.fixed_point(_tanh_map, x0, (W, 1.0))
    with pytest.raises(TypeError, match="`params` must be a tensor or a tuple"):
        sdt.fixed_point(_tanh_map, x0, {"W": W})
    with pytest.raises(ValueError, match="`tol` must be a number > 0"):
        sdt.fixed_point(_tanh_map, x0, (W, c), tol=0)
    with pytest.raises(ValueError, match="`adjoint_rtol` must be a number > 0"):
        sdt.fixed_point(_tanh_map, x0, (W, c), adjoint_rtol=-1.0)
    with pytest.raises(ValueError, match="`maxiter` must be >= 0"):
        sdt.fixed_point(_tanh_map, x0, (W, c), maxiter=-1)
    with pytest.raises(ValueError, match="`adjoint_solver` must be one of"):
        sdt.fixed_point(_tanh_map, x0, (W, c), adjoint_solver="cg")
    with pytest.raises(ValueError, match="on_failure"):
        sdt.fixed_point(_tanh_map, x0, (W, c), on_failure="ignore")
    with pytest.raises(TypeError, match="`f` must return a torch.Tensor"):
        sdt.fixed_point(lambda x, W, c: x.numpy(), x0, (W, c))
    with pytest.raises(ValueError, match="sparsediff.torch.fixed_point.*shape"):
        sdt.fixed_point(lambda x, W, c: torch.cat([x, x]), x0, (W, c))


def test_no_warning_on_success(rng):
    W, c = _contraction(rng, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = sdt.fixed_point(_tanh_map, torch.zeros(4, dtype=torch.float64), (W, c))
        x.sum().backward()
