"""Tests of compare_gradients: FD, implicit, unrolled and truncated gradients."""

import numpy as np
import pytest
import scipy.sparse as sp

from sparsediff._compare import GradientComparison, compare_gradients


@pytest.fixture
def rng():
    return np.random.default_rng(2024)


def poisson_1d(n, shift=0.2):
    return sp.diags([-1.0, 2.0 + shift, -1.0], [-1, 0, 1], shape=(n, n), format="csr")


def diffusion_params(n, rng):
    """θ = log κ on the n + 1 faces of a 1-D grid: a symmetric assembly."""
    A = poisson_1d(n)                      # pattern: sorted tridiagonal CSR
    rows = np.repeat(np.arange(n), np.diff(A.indptr))
    cols = A.indices
    theta = 0.3 * rng.standard_normal(n + 1)
    b = rng.standard_normal(n)

    def assemble(t):
        kappa = np.exp(t)
        diag = kappa[:-1] + kappa[1:] + 0.1
        data = np.where(rows == cols, diag[rows], -kappa[np.maximum(rows, cols)])
        return data, b

    def assemble_vjp(t, grad_data, grad_b):
        kappa = np.exp(t)
        g = np.zeros_like(t)
        on = rows == cols
        np.add.at(g, rows[on], grad_data[on])
        np.add.at(g, rows[on] + 1, grad_data[on])
        np.add.at(g, np.maximum(rows, cols)[~on], -grad_data[~on])
        return g * kappa

    data, _ = assemble(theta)
    A = A.copy()
    A.data = data
    return A, b, (theta, assemble, assemble_vjp)


def test_fd_and_implicit_agree_nonsymmetric_jacobi(rng):
    n = 12
    A = (poisson_1d(n, shift=1.0) + sp.diags([0.3], [2], shape=(n, n))).tocsr()
    b = rng.standard_normal(n)
    res = compare_gradients(A, b, methods=("fd", "implicit", "unrolled", "truncated"),
                            k=(3, 10, 30), iteration="jacobi")
    assert isinstance(res, GradientComparison) and res.reference == "implicit"
    assert res.get("fd").rel_error < 1e-7
    assert res.get("implicit").grad.shape == (A.nnz + n,)
    assert res.get("unrolled").rel_error < 1e-6
    errs = [res.get("truncated", k).rel_error for k in (3, 10, 30)]
    assert errs[0] > errs[1] > errs[2]


def test_fd_and_implicit_agree_with_loss_and_params(rng):
    n = 10
    A, b, params = diffusion_params(n, rng)
    target = rng.standard_normal(n)
    res = compare_gradients(A, b, lambda x: 0.5 * float((x - target) @ (x - target)),
                            loss_grad=lambda x: x - target, params=params,
                            methods=("fd", "implicit"))
    assert res.get("fd").grad.shape == (n + 1,)
    assert res.get("fd").rel_error < 1e-7
    # an independent dense oracle for the implicit gradient
    theta, assemble, assemble_vjp = params
    Ad = A.toarray()
    x = np.linalg.solve(Ad, b)
    lam = np.linalg.solve(Ad.T, x - target)
    rows = np.repeat(np.arange(n), np.diff(A.indptr))
    grad_data = -lam[rows] * x[A.indices]
    np.testing.assert_allclose(res.get("implicit").grad,
                               assemble_vjp(theta, grad_data, lam), rtol=1e-10)


@pytest.mark.torch
def test_cg_unrolled_and_truncated(rng):
    pytest.importorskip("torch")
    n = 16
    A, b, params = diffusion_params(n, rng)
    res = compare_gradients(A, b, params=params, k=(2, 6, 12), rtol=1e-12)
    assert "cg" in res.get("unrolled").note
    assert "not converged" not in res.get("unrolled").note
    assert res.get("fd").rel_error < 1e-7
    assert res.get("unrolled").rel_error < 1e-6
    errs = [res.get("truncated", k).rel_error for k in (2, 6, 12)]
    assert errs[0] > errs[1] > errs[2]
    # memory of unrolling grows with the steps; the table prints every record
    mems = [res.get("truncated", k).peak_memory for k in (2, 6, 12)]
    assert mems[0] < mems[2]
    table = str(res)
    assert table.count("truncated") == 3 and "(ref)" in table


@pytest.mark.torch
def test_symmetric_family_default_params(rng):
    # default θ = (A.data, b) on a symmetric A: every method differentiates within
    # the symmetric family ½(A_θ + A_θᵀ), so CG's derivative is comparable
    pytest.importorskip("torch")
    A = poisson_1d(8)
    b = rng.standard_normal(8)
    res = compare_gradients(A.tocoo(), b, k=(8,), rtol=1e-12)
    assert res.get("fd").rel_error < 1e-7
    assert res.get("truncated", 8).rel_error < 1e-8      # k = n: CG is exact
    assert res.get("unrolled").rel_error < 1e-8


def test_reference_fd_when_no_implicit(rng):
    A = poisson_1d(6, shift=1.0)
    res = compare_gradients(A, np.ones(6), methods=("fd", "truncated"), k=4,
                            iteration="jacobi")
    assert res.reference == "fd"
    assert res.get("fd").rel_error == 0.0
    assert 0 < res.get("truncated").rel_error < 1


def test_bad_input(rng):
    A = poisson_1d(5)
    b = np.ones(5)
    with pytest.raises(ValueError, match="`methods` must be"):
        compare_gradients(A, b, methods=("fd", "adjoint"))
    with pytest.raises(ValueError, match="`b` must have shape"):
        compare_gradients(A, np.ones(4))
    with pytest.raises(TypeError, match="CSR, CSC or COO"):
        compare_gradients(A.toarray(), b)
    with pytest.raises(ValueError, match="give both `loss` and `loss_grad`"):
        compare_gradients(A, b, lambda x: float(x.sum()))
    with pytest.raises(ValueError, match="`k` must be integers"):
        compare_gradients(A, b, k=(-1,))
    with pytest.raises(ValueError, match="`reference` must be one of"):
        compare_gradients(A, b, methods=("fd",), reference="implicit")
    N = (A + sp.diags([0.5], [1], shape=(5, 5))).tocsr()
    with pytest.raises(ValueError, match="iteration='cg' needs a symmetric"):
        compare_gradients(N, b, methods=("unrolled",), iteration="cg")
    with pytest.raises(ValueError, match="`assemble\\(theta\\)` must return"):
        compare_gradients(A, b, params=(np.zeros(2), lambda t: (t, b),
                                        lambda t, gd, gb: gd))


# ---------------------------------------------------------------------------
# the seed note's sampled-rows estimator: a measured, biased baseline
# ---------------------------------------------------------------------------


def poisson_2d(m, shift=0.1):
    L = poisson_1d(m, shift=0.0)
    return (sp.kron(L, sp.eye(m)) + sp.kron(sp.eye(m), L)
            + shift * sp.eye(m * m)).tocsr()


def test_sampled_rows_not_run_by_default(rng):
    A = poisson_1d(6, shift=1.0)
    res = compare_gradients(A, np.ones(6), methods=("fd", "implicit"))
    with pytest.raises(KeyError):
        res.get("sampled_rows")


def test_sampled_rows_is_biased(rng):
    # the mean over many row samples stays far from the gradient (many
    # standard errors of that mean), while rate 1 reproduces it exactly
    A = poisson_2d(6)
    b = rng.standard_normal(A.shape[0])
    exact = compare_gradients(A, b, methods=("implicit",)).get("implicit").grad
    grads = [compare_gradients(A, b, methods=("sampled_rows",), sample_rates=0.5,
                               seed=s, warmup=False).get("sampled_rows").grad
             for s in range(60)]
    grads = np.asarray(grads)
    mean_err = np.linalg.norm(grads.mean(axis=0) - exact)
    noise = np.sqrt(np.sum(grads.var(axis=0, ddof=1)) / grads.shape[0])
    assert mean_err > 10 * noise, (mean_err, noise)
    res = compare_gradients(A, b, methods=("implicit", "sampled_rows"),
                            sample_rates=(0.25, 1.0), seed=0)
    full = res.get("sampled_rows", A.shape[0])
    assert full.rel_error < 1e-12 and "biased" in full.note
    assert res.get("sampled_rows", 9).rel_error > 0.1
    assert str(res).count("sampled_rows") == 2


def test_sampled_rows_seeded_and_bad_rates(rng):
    A = poisson_2d(4)
    b = rng.standard_normal(16)
    g1 = compare_gradients(A, b, methods=("sampled_rows",), seed=3).get("sampled_rows")
    g2 = compare_gradients(A, b, methods=("sampled_rows",), seed=3).get("sampled_rows")
    np.testing.assert_array_equal(g1.grad, g2.grad)
    for bad in (0.0, 1.5, (), (0.5, True)):
        with pytest.raises(ValueError, match="`sample_rates` must be numbers in"):
            compare_gradients(A, b, methods=("sampled_rows",), sample_rates=bad)
