"""Built-in differentiable steps: VJPs against central differences, inverses, kernels."""

import numpy as np
import pytest
import scipy.sparse as sp

from sparsediff.fixed_point import fixed_point, iterate, steps

# every test runs on the CPU backend and on the reference backend (NumPy twins,
# Krylov flags read every 8 iterations): tests/conftest.py::backend
pytestmark = pytest.mark.usefixtures("backend")


def _matrix(rng, n=14):
    A = (sp.diags([-1.0, 3.0, -1.2], [-1, 0, 1], shape=(n, n))
         + sp.random(n, n, density=0.1, random_state=7) * 0.3).tocsr()
    A.sum_duplicates()
    return A


def _unsorted_with_duplicates(A, rng):
    """The same matrix as a CSR with shuffled rows' entries and split duplicates."""
    coo = A.tocoo()
    r, c, d = coo.row, coo.col, coo.data
    keep = rng.random(d.shape[0]) < 0.3
    r = np.concatenate([r, r[keep]])
    c = np.concatenate([c, c[keep]])
    d = np.concatenate([d * np.where(keep, 0.5, 1.0), 0.5 * d[keep]])
    perm = rng.permutation(d.shape[0])
    order = np.argsort(r[perm], kind="stable")
    r, c, d = r[perm][order], c[perm][order], d[perm][order]
    indptr = np.searchsorted(r, np.arange(A.shape[0] + 1))
    return sp.csr_array((d, c, indptr), shape=A.shape)


def _fd_check(step, x, p, keys, rng, rtol=1e-6):
    v = rng.standard_normal(step.f(x, p).shape)
    v_x, g = step.f_vjp(x, p, v)

    def L(x_, p_):
        return float(np.sum(v * step.f(x_, p_)))

    h = 1e-6
    d = rng.standard_normal(x.shape)
    fd = (L(x + h * d, p) - L(x - h * d, p)) / (2 * h)
    np.testing.assert_allclose(np.sum(v_x * d), fd, rtol=rtol)
    for key in keys:
        d = rng.standard_normal(np.shape(p[key]))
        fd = (L(x, {**p, key: p[key] + h * d}) - L(x, {**p, key: p[key] - h * d})) / (2 * h)
        np.testing.assert_allclose(np.sum(np.asarray(g[key]) * d), fd, rtol=rtol,
                                   err_msg=key)


def _steps(A):
    # parameters where the inverse is well conditioned (an over-relaxed SOR
    # sweep's inverse back-substitutes with (1 − ω) d_i on the diagonal)
    return [(steps.Richardson(A), dict(omega=0.2)), (steps.Jacobi(A), dict(omega=0.3)),
            (steps.SOR(A), dict(omega=0.5)), (steps.SOR(A, "backward"), dict(omega=0.6)),
            (steps.SOR(A, "symmetric"), dict(omega=0.5))]


@pytest.mark.parametrize("m", [None, 3])
def test_linear_steps_vjp_and_inverse(rng, m):
    A = _matrix(rng)
    n = A.shape[0]
    x = rng.standard_normal((n,) if m is None else (n, m))
    for step, kw in _steps(A):
        for b in (rng.standard_normal(n), rng.standard_normal(x.shape)):
            p = step.params(b=b, **kw)
            _fd_check(step, x, p, ["omega", "data", "b"], rng)
            _fd_check(step, x, {**p, "omega": 1.3}, ["omega", "data", "b"], rng)
            np.testing.assert_allclose(step.f_inverse(step.f(x, p), p), x, atol=1e-10)


def test_caller_entry_order(rng):
    # gradients w.r.t. A.data follow the caller's (unsorted, duplicated) entries
    A = _matrix(rng)
    B = _unsorted_with_duplicates(A, rng)
    x = rng.standard_normal(A.shape[0])
    for step, kw in _steps(B):
        p = step.params(b=rng.standard_normal(A.shape[0]), **kw)
        assert p["data"].shape == B.data.shape
        _fd_check(step, x, p, ["data"], rng)


def test_sor_sweeps_match_dense_formula(rng):
    A = _matrix(rng)
    Ad = A.toarray()
    D, L, U = np.diag(np.diag(Ad)), np.tril(Ad, -1), np.triu(Ad, 1)
    x, b, w = rng.standard_normal(A.shape[0]), rng.standard_normal(A.shape[0]), 1.4
    fwd = np.linalg.solve(D + w * L, w * b + ((1 - w) * D - w * U) @ x)
    bwd = np.linalg.solve(D + w * U, w * b + ((1 - w) * D - w * L) @ fwd)
    np.testing.assert_allclose(steps.SOR(A).f(x, {"omega": w, "data": A.data, "b": b}),
                               fwd, rtol=1e-13)
    sym = steps.SOR(A, "symmetric")
    np.testing.assert_allclose(sym.f(x, sym.params(w, b=b)), bwd, rtol=1e-13)
    # the VJP's transposed triangular solve against the dense transpose
    v = rng.standard_normal(A.shape[0])
    v_x, g = steps.SOR(A).f_vjp(x, {"omega": w, "data": A.data, "b": b}, v)
    M = np.linalg.solve(D + w * L, (1 - w) * D - w * U)
    np.testing.assert_allclose(v_x, M.T @ v, rtol=1e-12)
    np.testing.assert_allclose(g["b"], w * np.linalg.solve((D + w * L).T, v), rtol=1e-12)


def test_gauss_seidel_has_no_inverse(rng):
    A = _matrix(rng)
    step = steps.SOR(A)
    p = step.params(1.0)
    with pytest.raises(ValueError, match="no inverse"):
        step.f_inverse(np.ones(A.shape[0]), p)


def test_chebyshev(rng):
    A = _matrix(rng)
    A = (A + A.T).tocsr() + 2 * sp.eye_array(A.shape[0], format="csr")
    ev = np.linalg.eigvalsh(A.toarray())
    step = steps.Chebyshev(A)
    n = A.shape[0]
    s = step.initial_state(rng.standard_normal(n))
    s[1] += 0.1 * rng.standard_normal(n)
    p = step.params(0.8 * ev[0], 1.1 * ev[-1], b=rng.standard_normal(n))
    _fd_check(step, s, p, ["lmin", "lmax", "data", "b"], rng)
    np.testing.assert_allclose(step.f_inverse(step.f(s, p), p), s, atol=1e-10)
    # converges to A⁻¹b at Chebyshev's rate
    res = iterate(step.f, step.initial_state(np.zeros(n)), p, 60, f_vjp=step.f_vjp)
    x = step.solution(res.x)
    np.testing.assert_allclose(A @ x, p["b"], atol=1e-8)
    with pytest.raises(ValueError, match="0 < lmin < lmax"):
        step.f(s, step.params(2.0, 1.0))
    with pytest.raises(ValueError, match="Chebyshev state must have shape"):
        step.f(s[0], p)


@pytest.mark.parametrize("m", [None, 2])
def test_amg_vcycle(rng, m):
    import pyamg

    A = pyamg.gallery.poisson((16, 16), format="csr")
    step = steps.AMGVCycle(A, max_coarse=20)
    assert len(step.levels) >= 1 and step.f_inverse is None
    n = A.shape[0]
    x = rng.standard_normal((n,) if m is None else (n, m))
    p = step.params(0.7, b=rng.standard_normal(n))
    _fd_check(step, x, p, ["omega", "b"], rng)
    # its fixed point is A⁻¹b; implicit gradient w.r.t. b is A⁻ᵀ v
    res = fixed_point(step.f, np.zeros(n), p, f_vjp=step.f_vjp, tol=1e-12)
    np.testing.assert_allclose(A @ res.x, p["b"], atol=1e-8)
    v = rng.standard_normal(n)
    g = res.vjp(v)
    np.testing.assert_allclose(g["b"], np.linalg.solve(A.toarray().T, v), rtol=1e-7)
    assert abs(g["omega"]) < 1e-7 * np.linalg.norm(v)


def test_step_input_errors(rng):
    A = _matrix(rng).tolil()
    A[3, 3] = 0
    A = A.tocsr()
    A.eliminate_zeros()
    with pytest.raises(ValueError, match=r"must store every diagonal entry; rows \[3\]"):
        steps.Jacobi(A)
    step = steps.Jacobi(_matrix(rng))
    x = np.ones(14)
    with pytest.raises(ValueError, match="with key 'omega'"):
        step.f(x, {"data": step.params(1.0)["data"]})
    with pytest.raises(ValueError, match=r"params\['data'\] must have length nnz"):
        step.f(x, {"omega": 1.0, "data": np.ones(3)})
    with pytest.raises(ValueError, match=r"params\['b'\] must have shape"):
        step.f(x, step.params(1.0, b=np.ones(5)))
    with pytest.raises(ValueError, match="`direction` must be"):
        steps.SOR(_matrix(rng), "sideways")
