"""JAX glue: jit, grad, jvp, vmap, hessian; forms; errors."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
from jax.experimental import sparse as jsparse  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import sparsediff.jax as sdj  # noqa: E402

pytestmark = pytest.mark.jax


@pytest.fixture
def rng():
    return np.random.default_rng(4321)


def _matrix(rng, n, complex_=False, density=0.4):
    D = rng.standard_normal((n, n)) * (rng.random((n, n)) < density)
    if complex_:
        D = D + 1j * rng.standard_normal((n, n)) * (D != 0)
    return D + n * np.eye(n)


def _csr(D):
    A = jsparse.BCSR.fromdense(jnp.asarray(D))
    return A.data, A.indices, A.indptr


def _rows(indices, indptr):
    return np.repeat(np.arange(len(indptr) - 1), np.diff(np.asarray(indptr)))


def _dense(data, rows, cols, n):
    """Dense oracle matrix, differentiable in ``data`` (duplicates summed)."""
    return jnp.zeros((n, n), data.dtype).at[rows, cols].add(data)


def _vec(rng, shape, complex_=False):
    v = rng.standard_normal(shape)
    if complex_:
        v = v + 1j * rng.standard_normal(shape)
    return jnp.asarray(v)


@pytest.mark.parametrize("form", ["bcsr", "bcoo", "tuple"])
@pytest.mark.parametrize("m", [None, 3])
def test_forward_matches_dense(rng, form, m):
    D = _matrix(rng, 7)
    b = _vec(rng, (7,) if m is None else (7, m))
    if form == "bcsr":
        A = jsparse.BCSR.fromdense(jnp.asarray(D))
    elif form == "bcoo":
        A = jsparse.BCOO.fromdense(jnp.asarray(D))
    else:
        A = _csr(D)
    x = sdj.solve(A, b)
    assert x.shape == b.shape
    np.testing.assert_allclose(x, np.linalg.solve(D, b), rtol=1e-12, atol=1e-13)


def test_check_grads_order2_real(rng):
    data, indices, indptr = _csr(_matrix(rng, 5))
    b = _vec(rng, (5,))

    def f(d, r):
        return sdj.solve((d, indices, indptr), r)

    check_grads(f, (data, b), order=2, modes=("fwd", "rev"))


@pytest.mark.slow
def test_check_grads_order2_complex_bcoo(rng):
    A = jsparse.BCOO.fromdense(jnp.asarray(_matrix(rng, 4, complex_=True)))
    b = _vec(rng, (4, 2), complex_=True)

    def f(d, r):
        return sdj.solve(jsparse.BCOO((d, A.indices), shape=A.shape), r)

    check_grads(f, (A.data, b), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("complex_", [False, True])
def test_gradient_matches_dense_oracle(rng, complex_):
    n = 8
    data, indices, indptr = _csr(_matrix(rng, n, complex_))
    rows, cols = _rows(indices, indptr), np.asarray(indices)
    b = _vec(rng, (n, 2), complex_)
    w = _vec(rng, (n, 2), complex_)

    def loss(x):
        return jnp.real(jnp.sum(x * w)) + jnp.sum(jnp.abs(x) ** 2)

    ours = jax.grad(lambda d, r: loss(sdj.solve((d, indices, indptr), r)),
                    argnums=(0, 1))(data, b)
    ref = jax.grad(lambda d, r: loss(jnp.linalg.solve(_dense(d, rows, cols, n), r)),
                   argnums=(0, 1))(data, b)
    for a, c in zip(ours, ref):
        np.testing.assert_allclose(a, c, rtol=1e-10, atol=1e-12)


def test_central_differences(rng):
    n = 6
    data, indices, indptr = _csr(_matrix(rng, n))
    b, w = _vec(rng, (n,)), _vec(rng, (n,))

    def loss(d, r):
        return jnp.sum(sdj.solve((d, indices, indptr), r) * w)

    gd, gb = jax.grad(loss, argnums=(0, 1))(data, b)
    du, db = _vec(rng, data.shape), _vec(rng, (n,))
    h = 6e-6
    fd = (loss(data + h * du, b + h * db) - loss(data - h * du, b - h * db)) / (2 * h)
    pred = jnp.sum(gd * du) + jnp.sum(gb * db)
    assert abs(float(fd - pred)) <= 1e-7 * max(1.0, abs(float(pred)))


@pytest.mark.parametrize("complex_", [False, True])
def test_dot_product_jvp_vjp(rng, complex_):
    n = 7
    data, indices, indptr = _csr(_matrix(rng, n, complex_))
    b = _vec(rng, (n,), complex_)

    def f(d, r):
        return sdj.solve((d, indices, indptr), r)

    u = (_vec(rng, data.shape, complex_), _vec(rng, (n,), complex_))
    v = _vec(rng, (n,), complex_)
    _, ju = jax.jvp(f, (data, b), u)
    _, vjp_fn = jax.vjp(f, data, b)
    jtv = vjp_fn(v)
    # JAX's VJP is the linear transpose: <J u, v> = <u, Jᵀ v> (bilinear)
    lhs = jnp.sum(ju * v)
    rhs = sum(jnp.sum(a * c) for a, c in zip(u, jtv))
    assert abs(complex(lhs - rhs)) <= 1e-12 * max(1.0, abs(complex(lhs)))


def test_jit_and_vmap(rng):
    n = 6
    data, indices, indptr = _csr(_matrix(rng, n))
    rows, cols = _rows(indices, indptr), np.asarray(indices)
    b = _vec(rng, (n,))

    def f(d, r):
        return sdj.solve((d, indices, indptr), r)

    def f_ref(d, r):
        return jnp.linalg.solve(_dense(d, rows, cols, n), r)

    np.testing.assert_allclose(jax.jit(f)(data, b), f(data, b), rtol=1e-14)
    # indices traced too (the whole matrix is an argument of the jitted function)
    g = jax.jit(lambda d, i, p, r: sdj.solve((d, i, p), r))
    np.testing.assert_allclose(g(data, indices, indptr, b), f(data, b), rtol=1e-14)
    B = _vec(rng, (3, n))
    np.testing.assert_allclose(jax.vmap(f, in_axes=(None, 0))(data, B),
                               jax.vmap(f_ref, in_axes=(None, 0))(data, B), rtol=1e-11)
    Ds = jnp.stack([data, 2 * data])
    np.testing.assert_allclose(jax.vmap(f, in_axes=(0, None))(Ds, b),
                               jax.vmap(f_ref, in_axes=(0, None))(Ds, b), rtol=1e-11)
    grad_batched = jax.vmap(jax.grad(lambda d, r: jnp.sum(f(d, r) ** 2)),
                            in_axes=(None, 0))(data, B)
    grad_ref = jax.vmap(jax.grad(lambda d, r: jnp.sum(f_ref(d, r) ** 2)),
                        in_axes=(None, 0))(data, B)
    np.testing.assert_allclose(grad_batched, grad_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_hessian(rng):
    n = 5
    data, indices, indptr = _csr(_matrix(rng, n))
    rows, cols = _rows(indices, indptr), np.asarray(indices)
    b = _vec(rng, (n,))

    def f(d, r):
        return sdj.solve((d, indices, indptr), r)

    def f_ref(d, r):
        return jnp.linalg.solve(_dense(d, rows, cols, n), r)

    H = jax.jit(jax.hessian(lambda d: jnp.sum(f(d, b) ** 3)))(data)
    H_ref = jax.hessian(lambda d: jnp.sum(f_ref(d, b) ** 3))(data)
    np.testing.assert_allclose(H, H_ref, rtol=1e-9, atol=1e-11)


def test_duplicates_and_stored_zeros():
    # entry (0, 1) stored twice and (1, 0) stored as an explicit zero
    data = jnp.array([2.0, 0.3, 0.7, 0.0, 3.0])
    row, col = jnp.array([0, 0, 0, 1, 1]), jnp.array([0, 1, 1, 0, 1])
    A = jsparse.BCOO((data, jnp.stack([row, col], 1)), shape=(2, 2))
    b = jnp.array([1.0, 1.0])

    def loss(d):
        return jnp.sum(sdj.solve(jsparse.BCOO((d, A.indices), shape=(2, 2)), b))

    g = jax.grad(loss)(data)
    D = np.array([[2.0, 1.0], [0.0, 3.0]])
    x, lam = np.linalg.solve(D, [1.0, 1.0]), np.linalg.solve(D.T, [1.0, 1.0])
    expected = -lam[np.asarray(row)] * x[np.asarray(col)]
    np.testing.assert_allclose(g, expected, rtol=1e-13)
    assert g[1] == g[2] and g[3] != 0


def test_float32(rng):
    D = _matrix(rng, 6)
    data, indices, indptr = _csr(D)
    b = _vec(rng, (6,))

    def loss(d, r):
        return jnp.sum(sdj.solve((d, indices, indptr), r) ** 2)

    g32 = jax.grad(loss)(data.astype(jnp.float32), b.astype(jnp.float32))
    g64 = jax.grad(loss)(data, b)
    assert g32.dtype == jnp.float32
    np.testing.assert_allclose(g32, g64, rtol=1e-3, atol=1e-4 * float(jnp.abs(g64).max()))


def test_backward_reuses_factorization(rng, monkeypatch):
    from sparsediff.solvers import direct

    sdj._CACHE.clear()
    count = {"n": 0}
    orig = direct.DirectEngine.__init__

    def counting(self, *args, **kwargs):
        count["n"] += 1
        orig(self, *args, **kwargs)

    monkeypatch.setattr(direct.DirectEngine, "__init__", counting)
    data, indices, indptr = _csr(_matrix(rng, 5))
    b = _vec(rng, (5,))
    jax.jit(jax.grad(lambda d: jnp.sum(sdj.solve((d, indices, indptr), b) ** 2)))(data)
    assert count["n"] == 1


def test_errors(rng):
    data, indices, indptr = _csr(_matrix(rng, 4))
    b = _vec(rng, (4,))
    with pytest.raises(ValueError, match=r"`b` must have shape \(n,\) or \(n, m\)"):
        sdj.solve((data, indices, indptr), b[:3])
    with pytest.raises(TypeError, match="`indices` must be an integer"):
        sdj.solve((data, indices.astype(float), indptr), b)
    with pytest.raises(TypeError, match="BCSR or BCOO"):
        sdj.solve(np.eye(4), b)
    with pytest.raises(ValueError, match="square"):
        sdj.solve(jsparse.BCOO.fromdense(jnp.ones((2, 3))), jnp.ones(2))
    with pytest.raises(ValueError, match="one value per stored index"):
        sdj.solve((data[:-1], indices, indptr), b)
    with pytest.raises(Exception, match="singular"):
        sdj.solve((jnp.zeros(4), jnp.arange(4), jnp.arange(5)), b).block_until_ready()
    with pytest.raises(Exception, match="NaN or infinite"):
        sdj.solve((data.at[0].set(jnp.nan), indices, indptr), b).block_until_ready()
    x = sdj.solve((jnp.zeros(4), jnp.arange(4), jnp.arange(5)), b, on_failure="nan")
    assert bool(jnp.isnan(x).all())


def test_missing_jax_names_the_extra():
    import subprocess
    import sys

    code = ("import sys; sys.modules['jax'] = None\n"
            "try:\n    import sparsediff.jax\n"
            "except ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert "pip install sparsediff[jax]" in out.stdout
