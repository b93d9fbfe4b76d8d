"""logdet (exact and stochastic) and sampled_rhs_gradient.

Exact paths against dense slogdet / inv; finite differences; unbiasedness of
every stochastic estimator over many seeds with the reported standard error
checked against the observed spread; Hutch++ against Hutchinson at equal cost.
"""

import doctest
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import sparsediff as sd
from sparsediff._errors import ConvergenceWarning, IllConditionedWarning
from sparsediff._validation import as_matrix
from sparsediff.stochastic import _logdet, _sampled


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def laplacian_2d(m, shift):
    L = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m))
    return (sp.kron(L, sp.eye(m)) + sp.kron(sp.eye(m), L)
            + shift * sp.eye(m * m)).tocsr()


def random_matrix(n, rng, complex_=False, density=0.15):
    A = sp.random(n, n, density, random_state=rng, format="csr")
    if complex_:
        A = A + 1j * sp.random(n, n, density, random_state=rng, format="csr")
    # not diagonally dominant: partial pivoting permutes rows
    return (A + sp.diags(rng.uniform(0.3, 1.0, n) * rng.choice([-1, 1], n))).tocsr()


def dense_gradient(A):
    """conj(A⁻ᵀ) on the stored entries, entry for entry in COO order."""
    Ad = A.toarray()
    Ainv = np.linalg.inv(Ad)
    coo = A.tocoo()
    return np.conj(Ainv.T[coo.row, coo.col])


# ---------------------------------------------------------------------------
# exact
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("complex_", [False, True])
def test_exact_against_dense(rng, complex_):
    for n in (1, 7, 40):
        A = random_matrix(n, rng, complex_)
        res = sd.logdet(A)
        sign, logabs = np.linalg.slogdet(A.toarray())
        assert res.estimator == "exact" and res.value_estimator == "exact"
        assert res.grad_stderr is None and res.logabsdet_stderr == 0.0
        np.testing.assert_allclose(res.logabsdet, logabs, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(res.sign, sign, rtol=1e-12)
        assert type(res.grad) is type(A) and res.grad.format == "csr"
        np.testing.assert_allclose(res.grad.tocoo().data, dense_gradient(A),
                                   rtol=1e-9, atol=1e-12)


def test_exact_negative_determinant_and_permutation_sign():
    P = sp.csr_array(np.array([[0.0, 0.0, 2.0], [0.0, -3.0, 0.0], [1.0, 0.0, 0.0]]))
    res = sd.logdet(P)
    sign, logabs = np.linalg.slogdet(P.toarray())
    assert res.sign == sign == 1.0       # odd permutation times a negative pivot
    np.testing.assert_allclose(res.logabsdet, logabs)
    res = sd.logdet(-P)
    assert res.sign == -1.0


def test_exact_caller_order_duplicates_and_explicit_zeros(rng):
    n = 12
    A = random_matrix(n, rng).tocoo()
    # duplicates of existing entries and explicit zeros at new positions, unsorted
    extra_r = np.concatenate([A.row[:5], [0, 3, 7]])
    extra_c = np.concatenate([A.col[:5], [n - 1, 1, 2]])
    extra_v = np.concatenate([0.5 * A.data[:5], [0.0, 0.0, 0.0]])
    perm = rng.permutation(A.nnz + 8)
    rows = np.concatenate([A.row, extra_r])[perm]
    cols = np.concatenate([A.col, extra_c])[perm]
    vals = np.concatenate([A.data, extra_v])[perm]
    C = sp.coo_array((vals, (rows, cols)), shape=(n, n))
    before = C.data.copy()
    res = sd.logdet(C)
    Ad = C.toarray()
    Ainv_t = np.linalg.inv(Ad).T
    assert res.grad.format == "coo" and res.grad.nnz == C.nnz
    np.testing.assert_array_equal(res.grad.row, C.row)
    # every duplicate gets the derivative of the merged entry; zeros get theirs
    np.testing.assert_allclose(res.grad.data, Ainv_t[C.row, C.col], rtol=1e-9,
                               atol=1e-12)
    np.testing.assert_allclose(res.logabsdet, np.linalg.slogdet(Ad)[1])
    np.testing.assert_array_equal(C.data, before)      # caller's array untouched


def test_exact_explicit_zero_pruned_by_the_factors():
    # an explicit zero that no fill reaches: SciPy's U omits it, so the
    # recurrence reruns on the symbolic pattern, which has a place for it
    A = sp.csr_array((np.array([4.0, 0.0, 1.0, 3.0, 1.0, 5.0]),
                      np.array([0, 1, 2, 1, 0, 2]), np.array([0, 3, 4, 6])), shape=(3, 3))
    mat = as_matrix(A, "test")
    lu = _logdet.factorize(mat)
    assert lu.U.nnz + lu.L.nnz - 3 < A.nnz           # the zero was pruned
    res = sd.logdet(A)
    assert res.fallback_entries == 0
    np.testing.assert_allclose(res.grad.data,
                               np.linalg.inv(A.toarray()).T[[0, 0, 0, 1, 2, 2],
                                                            [0, 1, 2, 1, 0, 2]],
                               rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("complex_", [False, True])
def test_selected_inversion_matches_solves(rng, complex_):
    # with complex_=True (this seed) two fill entries cancel exactly and are
    # pruned from L, U: the first pass lacks 4 values, the symbolic rerun not
    A = random_matrix(60, rng, complex_, density=0.08)
    mat = as_matrix(A, "test")
    lu = _logdet.factorize(mat)
    g1, fell = _logdet.exact_gradient(lu, mat, how="selinv")
    g2, _ = _logdet.exact_gradient(lu, mat, how="solves")
    assert fell == 0
    np.testing.assert_allclose(g1, g2, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("complex_", [False, True])
def test_finite_differences(rng, complex_):
    n = 15
    A = random_matrix(n, rng, complex_)
    res = sd.logdet(A)
    h = 1e-6
    for _ in range(3):
        u = rng.standard_normal(A.nnz)
        if complex_:
            u = u + 1j * rng.standard_normal(A.nnz)
        fp = sd.logdet(sp.csr_array((A.data + h * u, A.indices, A.indptr)),
                       grad=False).logabsdet
        fm = sd.logdet(sp.csr_array((A.data - h * u, A.indices, A.indptr)),
                       grad=False).logabsdet
        # δL = Re(conj(g)·δa)
        directional = np.real(np.vdot(res.grad.data, u))
        np.testing.assert_allclose((fp - fm) / (2 * h), directional, rtol=1e-6)


def test_float32_and_dense_input(rng):
    A = random_matrix(10, rng)
    res = sd.logdet(A.astype(np.float32))
    assert res.grad.dtype == np.float32
    np.testing.assert_allclose(res.grad.data, sd.logdet(A).grad.data, rtol=1e-5,
                               atol=1e-6)
    dense = sd.logdet(A.toarray())
    assert dense.grad.shape == (10, 10)
    np.testing.assert_allclose(dense.grad, np.linalg.inv(A.toarray()).T, rtol=1e-9,
                               atol=1e-13)


# ---------------------------------------------------------------------------
# stochastic: unbiased, honest standard errors
# ---------------------------------------------------------------------------


def _check_unbiased(estimates, stderrs, exact):
    """Mean over seeds within a few standard errors of the exact value, and the
    reported standard error consistent with the observed spread.

    Entries with no spread (an exactly determined entry, e.g. a row of the
    inverse with a single nonzero) are compared to rounding instead.
    """
    estimates, stderrs = np.asarray(estimates), np.asarray(stderrs)
    R = estimates.shape[0]
    spread = estimates.std(axis=0, ddof=1)
    floor = 1e-9 * np.max(np.abs(exact))
    z = np.abs(estimates.mean(axis=0) - exact) / (spread / np.sqrt(R) + floor)
    assert np.max(z) < 5.0, np.max(z)
    # the reported SE against the observed standard deviation: the ratio of
    # variances is 1 within sampling error (median over the random entries)
    live = spread > 1e3 * floor
    assert live.sum() >= max(1, live.size // 4)
    ratio = np.mean(stderrs[:, live] ** 2, axis=0) / spread[live] ** 2
    assert 0.6 < np.median(ratio) < 1.5, np.median(ratio)


@pytest.mark.parametrize("estimator, method", [
    ("hutchinson", "direct"), ("hutch++", "direct"), ("hutchinson", "cg"),
])
def test_gradient_estimators_unbiased(estimator, method):
    A = laplacian_2d(5, 0.5)
    exact = sd.logdet(A).grad.data
    est, ses = [], []
    for seed in range(300):
        r = sd.logdet(A, method=method, estimator=estimator, num_probes=9, seed=seed,
                      value=False)
        assert r.estimator == estimator and r.num_probes == 9
        est.append(r.grad.data)
        ses.append(r.grad_stderr.data)
    _check_unbiased(est, ses, exact)


def test_complex_gradient_unbiased_gmres(rng):
    A = random_matrix(8, rng, complex_=True, density=0.3) + 3 * sp.eye(8)
    A = sp.csr_array(A)
    exact = sd.logdet(A).grad.data
    est, ses = [], []
    for seed in range(300):
        r = sd.logdet(A, method="gmres", estimator="hutchinson", num_probes=6,
                      seed=seed, value=False)
        est.append(r.grad.data)
        ses.append(r.grad_stderr.data)
    # complex: |mean − exact| against the spread E|v − μ|² (what stderr reports)
    _check_unbiased(est, ses, exact)


def test_slq_value_unbiased():
    A = laplacian_2d(6, 0.3)
    exact = np.linalg.slogdet(A.toarray())[1]
    est, ses = [], []
    for seed in range(200):
        r = sd.logdet(A, method="cg", num_probes=4, seed=seed, grad=False,
                      lanczos_steps=20)
        assert r.value_estimator == "slq" and r.sign == 1.0
        est.append(r.logabsdet)
        ses.append(r.logabsdet_stderr)
    _check_unbiased(np.asarray(est)[:, None], np.asarray(ses)[:, None], exact)


def test_seed_reproducible_and_probes_reuse_one_factorization(monkeypatch):
    A = laplacian_2d(4, 1.0)
    r1 = sd.logdet(A, estimator="hutchinson", num_probes=5, seed=7)
    r2 = sd.logdet(A, estimator="hutchinson", num_probes=5, seed=7)
    np.testing.assert_array_equal(r1.grad.data, r2.grad.data)
    calls = []
    from sparsediff.backend import NumbaBackend
    original = NumbaBackend.lu

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(NumbaBackend, "lu", counting)
    sd.logdet(A, estimator="hutch++", num_probes=12, seed=1, block=2)
    assert len(calls) == 1


def neumann_2d(m, shift):
    """A GMRF precision ``κ²I + L`` with the Neumann Laplacian ``L`` (rows sum
    to zero): for small κ², ``A⁻¹`` has one eigenvalue 1/κ² far above the rest."""
    L = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m)).tolil()
    L[0, 0] = L[m - 1, m - 1] = 1.0
    return (sp.kron(L, sp.eye(m)) + sp.kron(sp.eye(m), L)
            + shift * sp.eye(m * m)).tocsr()


def test_hutchpp_beats_hutchinson_on_decaying_spectrum():
    A = neumann_2d(8, 0.01)
    exact = sd.logdet(A).grad.data
    err = {}
    for est in ("hutchinson", "hutch++"):
        e = [np.sum((sd.logdet(A, estimator=est, num_probes=12, seed=s,
                               value=False).grad.data - exact) ** 2)
             for s in range(20)]
        err[est] = np.mean(e)
    # measured: 48 against 3632 (ratio 0.013); 0.1 leaves room for the seeds
    assert err["hutch++"] < 0.1 * err["hutchinson"], err


def test_jacobian_projection_exact_fd_and_unbiased():
    # A(θ) = θ0·I + θ1·L on a Neumann grid: dlog det/dθ through `jacobian`
    m = 5
    L = neumann_2d(m, 0.0)
    n = m * m
    eye = sp.eye(n, format="csr")
    P = (L + eye).tocsr()
    P.sort_indices()

    def on_pattern(X):
        X = sp.coo_array(X)
        D = np.zeros((n, n))
        D[X.row, X.col] = X.data
        return D[np.repeat(np.arange(n), np.diff(P.indptr)), P.indices]

    J = np.stack([on_pattern(eye), on_pattern(L)], axis=1)
    assert J.shape == (P.nnz, 2)

    def A(theta):
        return sp.csr_array((J @ theta, P.indices, P.indptr), shape=P.shape)

    theta = np.array([0.3, 1.2])
    res = sd.logdet(A(theta), jacobian=J)
    h = 1e-6
    fd = [(sd.logdet(A(theta + h * e), grad=False).logabsdet
           - sd.logdet(A(theta - h * e), grad=False).logabsdet) / (2 * h)
          for e in np.eye(2)]
    np.testing.assert_allclose(res.grad_params, fd, rtol=1e-7)
    np.testing.assert_array_equal(res.grad_params_stderr, 0.0)
    for est in ("hutchinson", "hutch++"):
        runs = [sd.logdet(A(theta), estimator=est, num_probes=9, seed=s, jacobian=J,
                          value=False) for s in range(200)]
        est_p = np.array([r.grad_params for r in runs])
        se_p = np.array([r.grad_params_stderr for r in runs])
        _check_unbiased(est_p, se_p, res.grad_params)
        # the projection's SE is far below the per-entry SEs summed through J
        loose = np.abs(J).T @ runs[0].grad_stderr.data
        assert np.all(runs[0].grad_params_stderr < loose)
    with pytest.raises(ValueError, match="`jacobian` must have shape"):
        sd.logdet(A(theta), jacobian=J[:-1])


# ---------------------------------------------------------------------------
# SLQ on the normal operator: non-Hermitian and Hermitian indefinite A
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("complex_", [False, True])
def test_slq_normal_matches_slogdet_and_converges(rng, complex_):
    A = random_matrix(40, rng, complex_)
    assert not np.allclose(A.toarray(), A.toarray().conj().T)
    exact = np.linalg.slogdet(A.toarray())[1]
    runs = {m: sd.logdet(A, method="gmres", grad=False, num_probes=m, seed=3,
                         lanczos_steps=40) for m in (16, 4096)}
    for m, r in runs.items():
        assert r.value_estimator == "slq-normal" and np.isnan(r.sign)
        assert r.grad is None and r.logabsdet_stderr > 0
        assert abs(r.logabsdet - exact) < 4 * r.logabsdet_stderr, (m, r, exact)
    # the standard error falls as 1/sqrt(probes) (16x here) and the error with it
    ratio = runs[16].logabsdet_stderr / runs[4096].logabsdet_stderr
    assert 8 < ratio < 32, ratio
    assert abs(runs[4096].logabsdet - exact) < runs[16].logabsdet_stderr


def test_slq_normal_unbiased_with_honest_stderr(rng):
    A = random_matrix(30, rng)
    exact = np.linalg.slogdet(A.toarray())[1]
    est, ses = [], []
    for seed in range(200):
        r = sd.logdet(A, method="gmres", num_probes=4, seed=seed, grad=False,
                      lanczos_steps=30)
        est.append(r.logabsdet)
        ses.append(r.logabsdet_stderr)
    _check_unbiased(np.asarray(est)[:, None], np.asarray(ses)[:, None], exact)


def test_slq_normal_badly_scaled(rng):
    # rows and columns scaled over 12 decades: κ(A) ~ 1e12, κ(AᴴA) ~ 1e24; the
    # row and column scaling inside SLQ takes the scales out exactly
    A0 = random_matrix(30, rng)
    R = sp.diags(10.0 ** rng.uniform(-6, 6, 30))
    C = sp.diags(10.0 ** rng.uniform(-6, 6, 30))
    A = sp.csr_array(R @ A0 @ C)
    exact = np.linalg.slogdet(A.toarray())[1]
    r = sd.logdet(A, method="gmres", grad=False, num_probes=512, seed=0,
                  lanczos_steps=30)
    r0 = sd.logdet(A0, method="gmres", grad=False, num_probes=512, seed=0,
                   lanczos_steps=30)
    assert abs(r.logabsdet - exact) < 4 * r.logabsdet_stderr, (r, exact)
    assert r.logabsdet_stderr < 2 * r0.logabsdet_stderr


def test_slq_hermitian_indefinite_uses_normal_operator():
    # negative diagonal, and a positive diagonal with a negative eigenvalue
    for A in (laplacian_2d(3, -5.0), laplacian_2d(3, -2.0)):
        exact = np.linalg.slogdet(A.toarray())[1]
        r = sd.logdet(A, method="minres", grad=False, num_probes=2000, seed=1,
                      lanczos_steps=9)
        assert r.value_estimator == "slq-normal" and np.isnan(r.sign)
        assert abs(r.logabsdet - exact) < 4 * r.logabsdet_stderr, (r, exact)
    # positive definite: still SLQ on A itself, sign 1
    r = sd.logdet(laplacian_2d(3, 1.0), method="cg", grad=False, num_probes=4, seed=0)
    assert r.value_estimator == "slq" and r.sign == 1.0


def test_slq_normal_singular_follows_on_failure():
    A = sp.csr_array(np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [3.0, 0.0, 1.0]]))
    with pytest.raises(sd.SingularMatrixError, match="singular to working precision"):
        sd.logdet(A, method="gmres", grad=False)
    with pytest.warns(ConvergenceWarning, match="row or a column") as w:
        r = sd.logdet(A, method="gmres", grad=False, on_failure="warn")
    assert w[0].filename == __file__
    assert r.logabsdet == -np.inf and r.sign == 0.0
    r = sd.logdet(A, method="gmres", grad=False, on_failure="nan")
    assert np.isnan(r.logabsdet)


# ---------------------------------------------------------------------------
# conditioning of the exact path
# ---------------------------------------------------------------------------


def test_exact_ill_conditioned_warns_with_estimate(rng):
    n = 20
    A = random_matrix(n, rng).toarray()
    U, s, Vt = np.linalg.svd(A)
    s[-1] = s[0] * 1e-14                           # κ₂ = 1e14: κ·eps ≈ 0.02
    A = sp.csr_array(U @ np.diag(s) @ Vt)
    with pytest.warns(IllConditionedWarning, match="ill-conditioned") as w:
        r = sd.logdet(A)
    assert w[0].filename == __file__
    cond1 = np.linalg.cond(A.toarray(), 1)
    assert cond1 / 3 <= r.condition_estimate <= cond1 * 1.01
    # the stochastic estimators on the same factorization warn too
    with pytest.warns(IllConditionedWarning):
        sd.logdet(A, estimator="hutchinson", num_probes=2, seed=0)


def test_exact_well_conditioned_and_badly_scaled_do_not_warn(rng):
    A = random_matrix(30, rng, complex_=True)
    D = sp.diags(10.0 ** rng.uniform(-150, 150, 30))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = sd.logdet(A)
        # diagonal scaling: κ₁ ~ 1e300, yet log|det| is as accurate as for A
        rs = sd.logdet(sp.csr_array(D @ A))
    cond1 = np.linalg.cond(A.toarray(), 1)
    assert cond1 / 3 <= r.condition_estimate <= cond1 * 1.01
    assert rs.condition_estimate < 1e6
    np.testing.assert_allclose(rs.logabsdet,
                               r.logabsdet + np.sum(np.log(D.diagonal())), rtol=1e-12)
    assert sd.logdet(laplacian_2d(3, 1.0), method="cg", num_probes=3,
                     seed=0).condition_estimate is None


def test_exact_singular_to_working_precision_follows_on_failure():
    A = sp.csr_array(np.array([[1.0, 1.0, 0.0], [1.0, 1.0 + 3e-16, 0.0],
                               [0.0, 0.0, 2.0]]))
    with pytest.raises(sd.SingularMatrixError, match="singular to working precision"):
        sd.logdet(A)
    with pytest.warns(ConvergenceWarning, match="singular to working precision"):
        r = sd.logdet(A, on_failure="warn")
    assert np.isfinite(r.logabsdet) and r.condition_estimate > 1e15
    r = sd.logdet(A, on_failure="nan")
    assert np.isnan(r.logabsdet) and np.isnan(r.grad.data).all()


# ---------------------------------------------------------------------------
# sampled right-hand sides
# ---------------------------------------------------------------------------


def test_sampled_rhs_unbiased_and_stderr(rng):
    A = laplacian_2d(4, 0.5)
    n, m = A.shape[0], 12
    B = rng.standard_normal((n, m))
    T = rng.standard_normal((n, m))

    def loss_grad(X, cols):
        return X - T[:, cols]

    X = sd.solve(A, B).x
    exact = sd.solve(A, B).vjp(X - T)[0].data
    full = sd.sampled_rhs_gradient(A, B, loss_grad, num_columns=m)
    np.testing.assert_allclose(full.grad_A.data, exact, rtol=1e-10)
    assert np.all(full.grad_A_stderr.data == 0) and full.scale == 1.0
    est, ses = [], []
    for seed in range(300):
        r = sd.sampled_rhs_gradient(A, B, loss_grad, num_columns=4, seed=seed)
        assert r.columns.shape == (4,) and r.scale == 3.0
        est.append(r.grad_A.data)
        ses.append(r.grad_A_stderr.data)
    _check_unbiased(est, ses, exact)


def test_sampled_rhs_bad_input():
    A = laplacian_2d(3, 1.0)
    B = np.ones((9, 4))
    with pytest.raises(ValueError, match="`num_columns` must be <= m = 4"):
        sd.sampled_rhs_gradient(A, B, lambda X, c: X, num_columns=5)
    with pytest.raises(ValueError, match="`num_columns` must be >= 1"):
        sd.sampled_rhs_gradient(A, B, lambda X, c: X, num_columns=0)
    with pytest.raises(ValueError, match=r"`B` must have shape \(n, m\)"):
        sd.sampled_rhs_gradient(A, np.ones(9), lambda X, c: X, num_columns=1)
    with pytest.raises(ValueError, match="must return an array of shape"):
        sd.sampled_rhs_gradient(A, B, lambda X, c: X[:, :1], num_columns=2)


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------


def test_singular_follows_on_failure():
    A = sp.csr_array(np.array([[1.0, 2.0], [2.0, 4.0]]))
    with pytest.raises(sd.SingularMatrixError, match="exactly singular"):
        sd.logdet(A)
    with pytest.warns(ConvergenceWarning, match="exactly singular"):
        r = sd.logdet(A, on_failure="warn")
    assert r.sign == 0.0 and r.logabsdet == -np.inf and np.isnan(r.grad.data).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = sd.logdet(A, on_failure="nan")
    assert np.isnan(r.logabsdet) and np.isnan(r.grad.data).all()


def test_bad_input():
    A = laplacian_2d(3, 1.0)
    with pytest.raises(ValueError, match="`A` must be square"):
        sd.logdet(sp.csr_array(np.ones((2, 3))))
    with pytest.raises(ValueError, match="`num_probes` must be >= 1"):
        sd.logdet(A, estimator="hutchinson", num_probes=0)
    with pytest.raises(TypeError, match="`num_probes` must be an integer"):
        sd.logdet(A, estimator="hutchinson", num_probes=2.5)
    with pytest.raises(ValueError, match="needs `num_probes` >= 3"):
        sd.logdet(A, estimator="hutch++", num_probes=2)
    with pytest.raises(ValueError, match="estimator='exact' needs the LU factors"):
        sd.logdet(A, method="cg", estimator="exact")
    with pytest.raises(ValueError, match="`estimator` must be one of"):
        sd.logdet(A, estimator="slq")
    N = (A + sp.diags([0.5], [1], shape=A.shape)).tocsr()
    with pytest.raises(ValueError, match="`lanczos_steps` must be >= 1"):
        sd.logdet(N, method="gmres", grad=False, lanczos_steps=0)
    bad = A.copy()
    bad.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        sd.logdet(bad)
    assert np.isnan(sd.logdet(bad, on_failure="nan").logabsdet)
    # the gradient of a non-Hermitian A by an iterative method: value=False
    r = sd.logdet(N, method="gmres", estimator="hutchinson", num_probes=3, value=False,
                  seed=0)
    assert np.isnan(r.logabsdet) and r.grad.nnz == N.nnz


def test_empty_matrix():
    r = sd.logdet(sp.csr_array((0, 0)))
    assert r.logabsdet == 0.0 and r.sign == 1.0 and r.grad.nnz == 0


@pytest.mark.parametrize("module", [_logdet, _sampled])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted >= 1
