"""``sparsediff.torch.fixed_point`` under ``torch.func``: grad, vjp, jacrev, vmap.

The transform-built gradients are checked against ordinary autograd through
the same function (float64, tight tolerance), central finite differences and,
for the linear map ``x* = (I − W)⁻¹ c``, the dense oracle. ``vmap`` over a
batch of parameters loops, one fixed-point solve per element: checked against
the unbatched calls. Second derivatives raise (the backward is once
differentiable) instead of coming back as silent zeros.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
sdt = pytest.importorskip("sparsediff.torch")

from torch.func import grad, jacrev, vjp, vmap  # noqa: E402

pytestmark = pytest.mark.torch

F64 = torch.float64
TOL = dict(rtol=1e-10, atol=1e-12)


@pytest.fixture
def rng():
    return np.random.default_rng(97531)


def _contraction(rng, n, norm=0.5):
    W = rng.standard_normal((n, n))
    W *= norm / np.linalg.norm(W, 2)
    return torch.tensor(W, dtype=F64), torch.tensor(rng.standard_normal(n), dtype=F64)


def _tanh_map(x, W, c):
    return torch.tanh(W @ x + c)


def _linear_map(x, W, c):
    return W @ x + c


def _solve(W, c, fmap=_tanh_map):
    x0 = torch.zeros(c.shape[-1], dtype=F64)
    return sdt.fixed_point(fmap, x0, (W, c), tol=1e-14, adjoint_rtol=1e-14)


def _loss_for(w):
    def loss(W, c):
        return (w * _solve(W, c)).sum() + 0.5 * (_solve(W, c) ** 2).sum()
    return loss


def _autograd(loss, W, c):
    Wr, cr = W.clone().requires_grad_(), c.clone().requires_grad_()
    return torch.autograd.grad(loss(Wr, cr), (Wr, cr))


def test_grad_matches_autograd(rng):
    W, c = _contraction(rng, 6)
    loss = _loss_for(torch.tensor(rng.standard_normal(6), dtype=F64))
    gW, gc = grad(loss, argnums=(0, 1))(W, c)
    rW, rc = _autograd(loss, W, c)
    torch.testing.assert_close(gW, rW, **TOL)
    torch.testing.assert_close(gc, rc, **TOL)
    assert gc.abs().max() > 1e-3                     # not a trivial zero


def test_grad_central_differences(rng):
    W, c = _contraction(rng, 5)
    loss = _loss_for(torch.tensor(rng.standard_normal(5), dtype=F64))
    gW, gc = grad(loss, argnums=(0, 1))(W, c)
    dW = torch.tensor(rng.standard_normal((5, 5)), dtype=F64)
    dc = torch.tensor(rng.standard_normal(5), dtype=F64)
    h = 1e-5
    fd = (loss(W + h * dW, c + h * dc) - loss(W - h * dW, c - h * dc)) / (2 * h)
    exact = float((gW * dW).sum() + (gc * dc).sum())
    assert abs(float(fd) - exact) <= 1e-7 * max(1.0, abs(exact))


def test_vjp_matches_autograd_and_dot_product(rng):
    """vjp against autograd, and ⟨vjp(v), δc⟩ = ⟨v, J δc⟩ with the dense
    Jacobian of the linear map, J = (I − W)⁻¹."""
    W, c = _contraction(rng, 6)
    v = torch.tensor(rng.standard_normal(6), dtype=F64)
    x, pullback = vjp(lambda WW, cc: _solve(WW, cc, _linear_map), W, c)
    gW, gc = pullback(v)
    Wr, cr = W.clone().requires_grad_(), c.clone().requires_grad_()
    rW, rc = torch.autograd.grad(_solve(Wr, cr, _linear_map), (Wr, cr), v)
    torch.testing.assert_close(gW, rW, **TOL)
    torch.testing.assert_close(gc, rc, **TOL)
    J = torch.linalg.inv(torch.eye(6, dtype=F64) - W)
    torch.testing.assert_close(x, J @ c, **TOL)
    dc = torch.tensor(rng.standard_normal(6), dtype=F64)
    lhs, rhs = float(gc @ dc), float(v @ (J @ dc))
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(rhs))


def test_jacrev_dense_oracle(rng):
    """jacrev (vmap over cotangents): one adjoint solve per row, J = (I − W)⁻¹."""
    W, c = _contraction(rng, 5)
    J = jacrev(lambda cc: _solve(W, cc, _linear_map))(c)
    torch.testing.assert_close(J, torch.linalg.inv(torch.eye(5, dtype=F64) - W), **TOL)


def test_vmap_over_parameters_loops(rng):
    W, c = _contraction(rng, 5)
    cs = torch.tensor(rng.standard_normal((3, 5)), dtype=F64)
    xs = vmap(lambda cc: _solve(W, cc))(cs)
    assert xs.shape == (3, 5)
    for i in range(3):
        torch.testing.assert_close(xs[i], _solve(W, cs[i]), **TOL)
    # batched along another dimension, and ordinary autograd through the loop
    csr = cs.T.clone().requires_grad_()
    xs = vmap(lambda cc: _solve(W, cc), in_dims=1)(csr)
    (g,) = torch.autograd.grad(xs.sum(), csr)
    for i in range(3):
        ci = cs[i].clone().requires_grad_()
        (gi,) = torch.autograd.grad(_solve(W, ci).sum(), ci)
        torch.testing.assert_close(g[:, i], gi, **TOL)


def test_vmap_of_grad_and_grad_of_vmap(rng):
    W, c = _contraction(rng, 5)
    w = torch.tensor(rng.standard_normal(5), dtype=F64)
    loss = _loss_for(w)
    cs = torch.tensor(rng.standard_normal((3, 5)), dtype=F64)
    per_sample = vmap(grad(loss, argnums=1), in_dims=(None, 0))(W, cs)
    for i in range(3):
        torch.testing.assert_close(per_sample[i], _autograd(loss, W, cs[i])[1], **TOL)
    scale = torch.tensor([1.0, 2.0, -0.5], dtype=F64)

    def batched(cc):
        return vmap(lambda s: (w * _solve(W, s * cc)).sum())(scale).sum()

    g = grad(batched)(c)
    ref = sum(_autograd(lambda WW, cc, s=s: (w * _solve(WW, s * cc)).sum(), W, c)[1]
              for s in scale)
    torch.testing.assert_close(g, ref, **TOL)


def test_second_derivative_raises(rng):
    W, c = _contraction(rng, 4)
    loss = _loss_for(torch.tensor(rng.standard_normal(4), dtype=F64))
    with pytest.raises(RuntimeError, match="fixed_point.*once differentiable"):
        grad(lambda cc: grad(loss, argnums=1)(W, cc).sum())(c)
    cr = c.clone().requires_grad_()
    (g,) = torch.autograd.grad(loss(W, cr), cr, create_graph=True)
    with pytest.raises(RuntimeError, match="fixed_point.*once differentiable"):
        torch.autograd.grad(g.sum(), cr)
