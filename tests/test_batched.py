"""Batched solves on one pattern: each element is its own `sd.solve`, the
gradients are exact (finite differences, dot-product test, dense oracle),
failures stay in their element, bad input is named."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import (
    build,
    caller_data,
    caller_entries,
    count_batched,
    dense_of,
    dense_system,
    fingerprint,
    op,
    randn,
    readonly,
    with_data,
)

import sparsediff as sd
from sparsediff.backend import REFERENCE


def batch_problem(rng, B=3, n=7, dtype=np.float64, fmt="csr", m=None):
    """A pattern in format ``fmt`` and B random, well-conditioned value sets."""
    D, mask = dense_system(rng, n, dtype, zero_diag=(fmt == "csr_zeros"))
    A = build(fmt, D, mask, rng)
    base = caller_data(A)
    scale = 1 + 0.3 * rng.random((B, base.shape[0]))
    data = (base[None, :] * scale).astype(dtype)
    shape = (B, n) if m is None else (B, n, m)
    b = randn(rng, shape, dtype)
    return A, data, b


def element(A, data_e):
    return with_data(A, data_e)


def dense_elements(A, data):
    return [dense_of(element(A, d)) for d in data]


@pytest.mark.parametrize("trans", ["N", "T", "H"])
@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("m", [None, 2])
def test_each_element_is_its_own_solve(rng, trans, dtype, m):
    A, data, b = batch_problem(rng, dtype=dtype, m=m)
    g = randn(rng, b.shape, dtype)
    sol = sd.BatchedSolver(A, data).solve(b, trans=trans)
    grad_data, grad_b = sol.vjp(g)
    assert sol.x.shape == b.shape and grad_data.shape == data.shape
    assert grad_b.shape == b.shape
    for e in range(data.shape[0]):
        one = sd.Solver(element(A, data[e]), method="direct").solve(b[e], trans=trans)
        gA, gb = one.vjp(g[e])
        np.testing.assert_allclose(sol.x[e], one.x, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(grad_data[e], caller_data(gA), rtol=1e-11,
                                   atol=1e-12)
        np.testing.assert_allclose(grad_b[e], gb, rtol=1e-11, atol=1e-12)
        info = sol.info[e]
        assert info.converged and info.reason == "converged" and info.trans == trans
        assert info.condition_estimate == pytest.approx(
            one.info.condition_estimate, rel=1e-6)
        assert np.shape(info.residual_norm) == np.shape(one.info.residual_norm)


@pytest.mark.parametrize("fmt", ["csr_unsorted", "csr_dup", "csr_zeros", "coo_dup"])
def test_dense_oracle_entry_alignment(rng, fmt):
    """grad_data[e, k] = −λ_e[i_k]·conj(x_e[j_k]) on the caller's entries
    (duplicates and explicit zeros included), against dense solves."""
    A, data, b = batch_problem(rng, fmt=fmt, dtype=np.complex128, m=2)
    g = randn(rng, b.shape, np.complex128)
    sol = sd.batched_solve(A, data, b)
    grad_data, grad_b = sol.vjp(g)
    rows, cols = caller_entries(A)
    for e, D in enumerate(dense_elements(A, data)):
        x = np.linalg.solve(D, b[e])
        lam = np.linalg.solve(D.conj().T, g[e])
        np.testing.assert_allclose(sol.x[e], x, rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(grad_b[e], lam, rtol=1e-11, atol=1e-12)
        expect = -(lam[rows] * x[cols].conj()).sum(axis=1)
        np.testing.assert_allclose(grad_data[e], expect, rtol=1e-10, atol=1e-12)


def test_pattern_as_csr_pair_matches_matrix(rng):
    A, data, b = batch_problem(rng)
    A = sp.csr_array(A)
    x1 = sd.batched_solve(A, data, b).x
    x2 = sd.batched_solve((A.indptr, A.indices), data, b).x
    x3 = sd.batched_solve((A.indptr, A.indices, A.shape), data, b).x
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(x1, x3)


@pytest.mark.parametrize("trans", ["N", "T", "H"])
def test_finite_differences(rng, trans):
    A, data, b = batch_problem(rng, B=2, n=6, m=2)
    g = rng.standard_normal(b.shape)
    solver = sd.BatchedSolver(A, data)
    grad_data, grad_b = solver.solve(b, trans=trans).vjp(g)
    dA = rng.standard_normal(data.shape)
    db = rng.standard_normal(b.shape)
    h = 1e-6

    def loss(t):
        x = sd.BatchedSolver(A, data + t * dA).solve(b + t * db, trans=trans).x
        return np.sum(g * x)

    fd = (loss(h) - loss(-h)) / (2 * h)
    exact = np.sum(grad_data * dA) + np.sum(grad_b * db)
    assert fd == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize("trans", ["N", "T", "H"])
@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_dot_product(rng, trans, dtype):
    """<J u, v> = <u, Jᴴ v> between jvp and vjp, per batch and over it."""
    A, data, b = batch_problem(rng, dtype=dtype, m=3)
    sol = sd.BatchedSolver(A, data).solve(b, trans=trans)
    dA = randn(rng, data.shape, dtype)
    db = randn(rng, b.shape, dtype)
    v = randn(rng, b.shape, dtype)
    lhs = np.vdot(v, sol.jvp(dA, db)).real
    grad_data, grad_b = sol.vjp(v)
    rhs = (np.vdot(grad_data, dA) + np.vdot(grad_b, db)).real
    assert lhs == pytest.approx(rhs, rel=1e-10)


def test_float32_against_float64(rng):
    A, data, b = batch_problem(rng, m=2)
    g = rng.standard_normal(b.shape)
    s64 = sd.batched_solve(A, data, b)
    s32 = sd.batched_solve(A, data.astype(np.float32), b.astype(np.float32))
    gd64, gb64 = s64.vjp(g)
    gd32, gb32 = s32.vjp(g.astype(np.float32))
    assert s32.x.dtype == np.float32 and gd32.dtype == np.float32
    np.testing.assert_allclose(s32.x, s64.x, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(gd32, gd64, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(gb32, gb64, rtol=2e-4, atol=2e-5)


def test_real_data_complex_rhs(rng):
    A, data, b = batch_problem(rng)
    bc = b + 1j * rng.standard_normal(b.shape)
    sol = sd.batched_solve(A, data, bc)
    grad_data, grad_b = sol.vjp(np.ones_like(bc))
    assert grad_data.dtype == np.float64 and grad_b.dtype == np.complex128
    for e, D in enumerate(dense_elements(A, data)):
        np.testing.assert_allclose(sol.x[e], np.linalg.solve(D, bc[e]), rtol=1e-11)


def test_batch_sizes_one_and_zero(rng):
    A, data, b = batch_problem(rng, B=1)
    sol = sd.batched_solve(A, data, b)
    one = sd.solve(element(A, data[0]), b[0], method="direct")
    np.testing.assert_allclose(sol.x[0], one.x, rtol=1e-13)
    empty = sd.batched_solve(A, data[:0], b[:0])
    assert empty.x.shape == (0, b.shape[1]) and empty.info == ()
    grad_data, grad_b = empty.vjp(np.zeros((0, b.shape[1])))
    assert grad_data.shape == (0, data.shape[1]) and grad_b.shape == (0, b.shape[1])


def test_empty_system(rng):
    A = sp.csr_array((0, 0))
    sol = sd.batched_solve(A, np.zeros((2, 0)), np.zeros((2, 0)))
    assert sol.x.shape == (2, 0) and all(i.converged for i in sol.info)


def singular_batch(rng):
    """Three elements; element 1 is exactly singular (a zero row)."""
    A, data, b = batch_problem(rng, B=3)
    A = sp.csr_array(A)
    rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
    data = data.copy()
    data[1, rows == 2] = 0.0
    return A, data, b


def test_singular_element_nan_policy(rng):
    A, data, b = singular_batch(rng)
    sol = sd.batched_solve(A, data, b, on_failure="nan")
    assert sol.info[1].reason == "singular" and not sol.info[1].converged
    assert np.isnan(sol.x[1]).all()
    assert sol.converged.tolist() == [True, False, True]
    g = rng.standard_normal(b.shape)
    grad_data, grad_b = sol.vjp(g)
    assert np.isnan(grad_data[1]).all() and np.isnan(grad_b[1]).all()
    for e in (0, 2):  # the others are unaffected
        one = sd.solve(element(A, data[e]), b[e], method="direct")
        gA, gb = one.vjp(g[e])
        np.testing.assert_allclose(sol.x[e], one.x, rtol=1e-12)
        np.testing.assert_allclose(grad_data[e], gA.data, rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(grad_b[e], gb, rtol=1e-11)


def test_singular_element_raise_and_warn(rng):
    A, data, b = singular_batch(rng)
    with pytest.raises(sd.SingularMatrixError, match="batch element 1") as exc:
        sd.batched_solve(A, data, b)
    assert exc.value.info.reason == "singular"
    with pytest.warns(sd.ConvergenceWarning, match="batch element 1"):
        sol = sd.batched_solve(A, data, b, on_failure="warn")
    assert np.isfinite(sol.x[[0, 2]]).all()
    with pytest.warns(sd.ConvergenceWarning, match="batch element 1"):
        grad_data, _ = sol.vjp(np.ones(b.shape))
    assert np.isnan(grad_data[1]).all() and np.isfinite(grad_data[[0, 2]]).all()


def test_numerically_singular_element(rng):
    """κ·eps ≥ 1 without an exact zero pivot: singular by the estimate."""
    n = 6
    A = sp.csr_array(np.ones((n, n)))
    H = 1.0 / (np.arange(n)[:, None] + np.arange(n)[None, :] + 1.0)
    good = (np.eye(n) * 4 + H).ravel()
    bad = np.outer(np.arange(1, n + 1), np.arange(1, n + 1)).astype(float).ravel()
    bad = bad + 1e-17 * np.eye(n).ravel()
    data = np.stack([good, bad])
    sol = sd.batched_solve(A, data, np.ones((2, n)), on_failure="nan")
    assert sol.info[0].converged and sol.info[1].reason == "singular"


def test_nonfinite_element(rng):
    A, data, b = batch_problem(rng)
    data = data.copy()
    data[2, 0] = np.nan
    with pytest.raises(sd.NonFiniteInputError, match=r"`data\[2\]`"):
        sd.BatchedSolver(A, data)
    sol = sd.batched_solve(A, data, b, on_failure="nan")
    assert sol.info[2].reason == "nonfinite" and np.isnan(sol.x[2]).all()
    assert np.isfinite(sol.x[:2]).all()
    bb = b.copy()
    bb[0, 1] = np.inf
    with pytest.raises(sd.NonFiniteInputError, match=r"`b\[0\]`"):
        sd.BatchedSolver(A, data[:2]).solve(bb[:2])
    sol = sd.BatchedSolver(A, data[:2], on_failure="nan").solve(bb[:2])
    assert np.isnan(sol.x[0]).all() and np.isfinite(sol.x[1]).all()


def test_bad_input(rng):
    A, data, b = batch_problem(rng)
    nnz = data.shape[1]
    with pytest.raises(ValueError, match=rf"`data` must have shape \(B, nnz\) with "
                       rf"nnz = {nnz}.*got \(3, {nnz - 1}\)"):
        sd.BatchedSolver(A, data[:, 1:])
    with pytest.raises(ValueError, match=r"`data` must have shape \(B, nnz\)"):
        sd.BatchedSolver(A, data[0])
    with pytest.raises(ValueError, match=r"`b` has batch size 2 but `data` has 3"):
        sd.BatchedSolver(A, data).solve(b[:2])
    with pytest.raises(ValueError, match=r"`b` must have shape \(B, n\) or "
                       r"\(B, n, m\) with n = 7"):
        sd.BatchedSolver(A, data).solve(b[:, :5])
    Ac = sp.csr_array(A)
    with pytest.raises(ValueError, match=r"`pattern` is inconsistent: `indptr` has "
                       r"length 8 .* but `shape` is \(9, 9\)"):
        sd.BatchedSolver((Ac.indptr, Ac.indices, (9, 9)), data)
    with pytest.raises(TypeError, match="`pattern` must be a scipy.sparse"):
        sd.BatchedSolver([1, 2], data)
    with pytest.raises(ValueError, match="`trans` must be one of"):
        sd.BatchedSolver(A, data).solve(b, trans="X")
    sol = sd.BatchedSolver(A, data).solve(b)
    with pytest.raises(ValueError, match=r"`g` must have the shape of `x`"):
        sol.vjp(b[:2])
    with pytest.raises(ValueError, match="`method` must be one of"):
        sd.BatchedSolver(A, data, method="qmr")


def test_inputs_never_modified(rng):
    A, data, b = batch_problem(rng, fmt="csr_dup")
    readonly(A), readonly(data), readonly(b)
    before = fingerprint(A, data, b)
    solver = sd.BatchedSolver(A, data)
    sol = solver.solve(b)
    g = readonly(np.ones(b.shape))
    grad_data, grad_b = sol.vjp(g)
    sol.jvp(data, b)
    solver.update(data)
    assert fingerprint(A, data, b) == before
    assert not np.shares_memory(grad_data, data) and not np.shares_memory(sol.x, b)


def test_update_reuses_the_ordering(rng):
    A, data, b = batch_problem(rng, n=9)
    solver = sd.BatchedSolver(A, data)
    sol_old = solver.solve(b)
    ordering = solver._engine.ordering
    new = data * (1 + 0.2 * rng.random(data.shape))
    solver.update(np.concatenate([new, new[:1]]))
    assert solver._engine.ordering is ordering and solver.batch_size == 4
    bb = np.concatenate([b, b[:1]])
    sol = solver.solve(bb)
    for e, D in enumerate(dense_elements(A, np.concatenate([new, new[:1]]))):
        np.testing.assert_allclose(sol.x[e], np.linalg.solve(D, bb[e]), rtol=1e-11)
    # the old solution keeps its factorizations
    for e, D in enumerate(dense_elements(A, data)):
        np.testing.assert_allclose(sol_old.x[e], np.linalg.solve(D, b[e]), rtol=1e-11)
        g = np.zeros(b.shape)
        g[e, 0] = 1.0
        np.testing.assert_allclose(sol_old.vjp(g)[1][e],
                                   np.linalg.solve(D.T, g[e]), rtol=1e-10)


def test_one_ordering_for_the_batch(rng, monkeypatch):
    """One factorization with a fill-reducing ordering (the analysis), then
    every element with the natural ordering of the pre-permuted matrix."""
    from sparsediff.backend import NUMBA

    A, data, b = batch_problem(rng, B=5, n=10)
    specs = []
    real_lu = type(NUMBA).lu

    def spy(self, csc, *, permc_spec, func):
        specs.append(permc_spec)
        return real_lu(self, csc, permc_spec=permc_spec, func=func)

    monkeypatch.setattr(type(NUMBA), "lu", spy)
    sd.BatchedSolver(A, data, workers=1)
    assert specs[0] in ("COLAMD", "MMD_AT_PLUS_A")
    assert specs[1:] == ["NATURAL"] * 5


@pytest.mark.parametrize("workers", [1, 3])
def test_threads_give_the_same_bits(rng, workers):
    A, data, b = batch_problem(rng, B=6)
    ref = sd.batched_solve(A, data, b, workers=1)
    sol = sd.batched_solve(A, data, b, workers=workers)
    np.testing.assert_array_equal(sol.x, ref.x)
    np.testing.assert_array_equal(sol.vjp(b)[0], ref.vjp(b)[0])


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("conj", [False, True])
def test_batched_kernels_match_reference(rng, dtype, conj):
    from sparsediff.kernels.numba import _batched

    A, data, b = batch_problem(rng, B=4, n=9, dtype=dtype, m=2)
    A = sp.csr_array(A)
    vals = np.ascontiguousarray(randn(rng, (A.nnz, 4), dtype))
    x = randn(rng, (9, 4, 2), dtype)
    y = randn(rng, (9, 4, 2), dtype)
    ker, ref = _batched, REFERENCE.kernels
    out1, out2 = np.empty_like(x), np.empty_like(x)
    ker.batched_csr_matvec(A.indptr, A.indices, vals, x, out1)
    ref.batched_csr_matvec(A.indptr, A.indices, vals, x, out2)
    np.testing.assert_allclose(out1, out2, rtol=1e-13)
    mats = [sp.csr_array((vals[:, e], A.indices, A.indptr), shape=A.shape)
            for e in range(4)]
    for e, Ae in enumerate(mats):
        np.testing.assert_allclose(out1[:, e], Ae @ x[:, e], rtol=1e-13)
    ker.batched_csr_rmatvec(A.indptr, A.indices, vals, x, out1, conj)
    ref.batched_csr_rmatvec(A.indptr, A.indices, vals, x, out2, conj)
    for e, Ae in enumerate(mats):
        expect = (Ae.conj() if conj else Ae).T @ x[:, e]
        np.testing.assert_allclose(out1[:, e], expect, rtol=1e-12)
        np.testing.assert_allclose(out2[:, e], expect, rtol=1e-12)
    g1 = np.empty((4, A.nnz), dtype)
    g2 = np.empty((4, A.nnz), dtype)
    ker.batched_sparse_outer(A.indptr, A.indices, x, y, dtype(-1), g1)
    ref.batched_sparse_outer(A.indptr, A.indices, x, y, dtype(-1), g2)
    np.testing.assert_allclose(g1, g2, rtol=1e-13)
    rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
    np.testing.assert_allclose(
        g1, -np.einsum("kec,kec->ek", x[rows], y[A.indices]), rtol=1e-13)


def test_reference_backend(rng, monkeypatch):
    """The batched path on the NumPy twins gives the same results."""
    from sparsediff.batched import _api

    A, data, b = batch_problem(rng, m=2)
    ref = sd.batched_solve(A, data, b)
    gref = ref.vjp(b)

    def reference(*args, func):
        return REFERENCE

    monkeypatch.setattr(_api, "get_backend", reference)
    sol = sd.batched_solve(A, data, b)
    assert sol._mat.backend is REFERENCE
    np.testing.assert_allclose(sol.x, ref.x, rtol=1e-13)
    for got, want in zip(sol.vjp(b), gref):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_ill_conditioned_warns(rng):
    n = 10
    Hil = 1.0 / (np.arange(n)[:, None] + np.arange(n)[None, :] + 1.0)
    A = sp.csr_array(np.ones((n, n)))
    data = np.stack([np.eye(n).ravel() + 0.1 * Hil.ravel(), Hil.ravel()])
    with pytest.warns(sd.IllConditionedWarning):
        sol = sd.batched_solve(A, data, np.ones((2, n)))
    assert sol.info[1].condition_estimate > 1e12
    assert sol.info[0].condition_estimate < 10
    with warnings.catch_warnings():
        warnings.simplefilter("error", sd.IllConditionedWarning)
        sd.batched_solve(A, data[:1], np.ones((1, n)))


def test_op_helper_consistency(rng):
    """Sanity of the oracle helper itself (op of the conftest)."""
    D = randn(rng, (3, 3), np.complex128)
    assert np.array_equal(op(D, "H"), D.conj().T)


# ---------------------------------------------------------------------------
# Krylov path
# ---------------------------------------------------------------------------

def poisson_batch(rng, B=3, k=5, dtype=np.float64, hermitian=True):
    """B 2-D diffusion matrices on one 5-point pattern with random
    coefficients (symmetric positive definite when ``hermitian``)."""
    n = k * k
    idx = np.arange(n).reshape(k, k)
    rows, cols = [], []
    for di, dj in ((0, 1), (1, 0)):
        a = idx[: k - di, : k - dj].ravel()
        c = idx[di:, dj:].ravel()
        rows += [a, c]
        cols += [c, a]
    rows = np.concatenate(rows + [np.arange(n)])
    cols = np.concatenate(cols + [np.arange(n)])
    A = sp.csr_array((np.ones(rows.size), (rows, cols)), shape=(n, n))
    A.sort_indices()
    r = np.repeat(np.arange(n), np.diff(A.indptr))
    off = r != A.indices
    data = np.empty((B, A.nnz), dtype)
    for e in range(B):
        w = rng.uniform(0.5, 2.0, (n, n))
        if hermitian:
            w = (w + w.T) / 2
        vals = -w[r, A.indices]
        if np.dtype(dtype).kind == "c" and not hermitian:
            vals = vals * np.exp(0.3j * rng.standard_normal(A.nnz))
        vals[~off] = 0
        rowsum = np.abs(vals).reshape(-1)
        diag = np.bincount(r, weights=rowsum, minlength=n) + 0.5
        vals = vals.astype(dtype)
        vals[~off] = diag[r[~off]]
        data[e] = vals
    return A, data


@pytest.mark.parametrize("method,M", [("cg", None), ("cg", "jacobi"),
                                      ("bicgstab", None), ("bicgstab", "jacobi")])
@pytest.mark.parametrize("trans", ["N", "T", "H"])
def test_krylov_matches_direct(rng, method, M, trans):
    dtype = np.float64 if method == "cg" else np.complex128
    A, data = poisson_batch(rng, dtype=dtype, hermitian=method == "cg")
    b = randn(rng, (3, A.shape[0], 2), dtype)
    g = randn(rng, b.shape, dtype)
    kry = sd.BatchedSolver(A, data, method=method, M=M, rtol=1e-12).solve(b, trans=trans)
    ref = sd.BatchedSolver(A, data).solve(b, trans=trans)
    assert all(i.converged for i in kry.info)
    assert kry.info[0].method == method + ("+jacobi" if M else "")
    assert kry.info[0].iterations > 0
    np.testing.assert_allclose(kry.x, ref.x, rtol=1e-9, atol=1e-10)
    for got, want in zip(kry.vjp(g), ref.vjp(g)):
        np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-9)
    assert all(i.converged for i in kry.adjoint_info)
    for e in range(3):  # the true residual of each element meets the test
        res = np.atleast_1d(kry.info[e].residual_norm)
        assert np.all(res <= 1e-12 * np.atleast_1d(kry.info[e].rhs_norm) * 1.0001)


@pytest.mark.parametrize("method", ["cg", "bicgstab"])
def test_krylov_finite_differences_and_dot_product(rng, method):
    A, data = poisson_batch(rng, B=2)
    b = rng.standard_normal((2, A.shape[0]))
    g = rng.standard_normal(b.shape)
    kw = dict(method=method, M="jacobi", rtol=1e-13)
    sol = sd.BatchedSolver(A, data, **kw).solve(b)
    grad_data, grad_b = sol.vjp(g)
    # a symmetric direction keeps every element Hermitian (CG)
    tperm = sp.csr_array((np.arange(A.nnz) + 1.0, A.indices, A.indptr),
                         shape=A.shape).T.tocsr().data.astype(int) - 1
    R = rng.standard_normal(data.shape)
    dA = (R + R[:, tperm]) / 2
    db = rng.standard_normal(b.shape)
    h = 1e-6

    def loss(t):
        return np.sum(g * sd.BatchedSolver(A, data + t * dA, **kw).solve(b + t * db).x)

    fd = (loss(h) - loss(-h)) / (2 * h)
    exact = np.sum(grad_data * dA) + np.sum(grad_b * db)
    assert fd == pytest.approx(exact, rel=1e-6)
    assert np.sum(g * sol.jvp(dA, db)) == pytest.approx(exact, rel=1e-9)


def test_krylov_nonconverged_element_alone(rng):
    """maxiter stops the hard element only; the policy acts on it alone."""
    A, data = poisson_batch(rng, B=3)
    data = data.copy()
    n = A.shape[0]
    rows = np.repeat(np.arange(n), np.diff(A.indptr))
    on = rows == A.indices
    data[0] = 0.0
    data[0, on] = 2.0          # element 0: 2·I, one iteration
    data[2] = data[0]
    b = rng.standard_normal((3, n))
    sol = sd.BatchedSolver(A, data, method="cg", maxiter=3,
                           on_failure="nan").solve(b)
    assert sol.converged.tolist() == [True, False, True]
    assert sol.info[1].reason == "maxiter" and np.isnan(sol.x[1]).all()
    np.testing.assert_allclose(sol.x[[0, 2]], b[[0, 2]] / 2, rtol=1e-14)
    grad_data, grad_b = sol.vjp(np.ones(b.shape))
    assert np.isnan(grad_data[1]).all()
    np.testing.assert_allclose(grad_b[[0, 2]], 0.5, rtol=1e-14)
    with pytest.raises(sd.ConvergenceError, match="batch element 1"):
        sd.BatchedSolver(A, data, method="cg", maxiter=3).solve(b)
    with pytest.warns(sd.ConvergenceWarning, match="batch element 1"):
        sd.BatchedSolver(A, data, method="cg", maxiter=3,
                         on_failure="warn").solve(b)


def test_krylov_refusals(rng):
    A, data = poisson_batch(rng, hermitian=False)
    with pytest.raises(ValueError, match="method='cg' needs Hermitian matrices; "
                                         "batch element 0"):
        sd.BatchedSolver(A, data, method="cg")
    A2, data2 = poisson_batch(rng)
    rows = np.repeat(np.arange(A2.shape[0]), np.diff(A2.indptr))
    data2[1, (rows == A2.indices) & (rows == 3)] = 0.0
    with pytest.raises(ValueError, match="nonzero diagonal; batch element 1 .* row 3"):
        sd.BatchedSolver(A2, data2, method="bicgstab", M="jacobi")
    with pytest.raises(ValueError, match="`M` must be None, 'jacobi', 'ilu' or 'amg'"):
        sd.BatchedSolver(A2, data2, method="cg", M="ssor")


def test_krylov_reference_backend(rng, monkeypatch):
    from sparsediff.batched import _api

    A, data = poisson_batch(rng)
    b = rng.standard_normal((3, A.shape[0]))
    ref = sd.BatchedSolver(A, data, method="cg", M="jacobi").solve(b)
    monkeypatch.setattr(_api, "get_backend", lambda *a, func: REFERENCE)
    sol = sd.BatchedSolver(A, data, method="cg", M="jacobi").solve(b)
    np.testing.assert_allclose(sol.x, ref.x, rtol=1e-12)


# ---------------------------------------------------------------------------
# glue: torch, jax, tensorflow
# ---------------------------------------------------------------------------

def _glue_problem(rng, B=3, n=7):
    A, data, b = batch_problem(rng, B=B, n=n)
    return sp.csr_array(A), data, b


def test_torch_values_batch(rng, monkeypatch):
    torch = pytest.importorskip("torch")
    import sparsediff.torch as sdt

    A, data, b = _glue_problem(rng)
    indptr, indices = torch.tensor(A.indptr), torch.tensor(A.indices)
    v = torch.tensor(data, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    count = count_batched(monkeypatch)
    x = sdt.solve_values(v, bt, indptr=indptr, indices=indices)
    (x ** 2).sum().backward()
    assert count == {"build": 1, "sizes": [data.shape[0]], "solve": 1}
    ref = sd.batched_solve(A, data, b)
    gd, gb = ref.vjp(2 * ref.x)
    np.testing.assert_allclose(x.detach().numpy(), ref.x, rtol=1e-13)
    np.testing.assert_allclose(v.grad.numpy(), gd, rtol=1e-12)
    np.testing.assert_allclose(bt.grad.numpy(), gb, rtol=1e-12)

    def f(vv, bb):
        return sdt.solve_values(vv, bb, indptr=indptr, indices=indices)

    with pytest.raises(ValueError, match=r"`b` must have shape \(B, n\) or "
                                         r"\(B, n, m\) with B = 3"):
        f(v, bt[:2])
    A, data, b = _glue_problem(rng, B=2, n=4)        # small: gradcheck is O(nnz²)
    indptr, indices = torch.tensor(A.indptr), torch.tensor(A.indices)
    args = (torch.tensor(data, requires_grad=True), torch.tensor(b, requires_grad=True))
    assert torch.autograd.gradcheck(f, args, check_forward_ad=True)
    assert torch.autograd.gradgradcheck(f, args)


def test_torch_vmap_over_values_is_one_batched_solve(rng, monkeypatch):
    torch = pytest.importorskip("torch")
    from torch.func import grad, vmap

    import sparsediff.torch as sdt

    A, data, b = _glue_problem(rng)
    indptr, indices = torch.tensor(A.indptr), torch.tensor(A.indices)

    def loss(vv, bb):
        return (sdt.solve_values(vv, bb, indptr=indptr, indices=indices) ** 2).sum()

    count = count_batched(monkeypatch)
    gv, gb = vmap(grad(loss, argnums=(0, 1)))(torch.tensor(data), torch.tensor(b))
    assert count["build"] == 1 and count["solve"] == 2   # forward, adjoint
    for e in range(3):
        ge = sd.solve(element(A, data[e]), b[e])
        gA, gbe = ge.vjp(2 * ge.x)
        np.testing.assert_allclose(gv[e].numpy(), gA.data, rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(gb[e].numpy(), gbe, rtol=1e-11, atol=1e-13)


def test_jax_vmap_over_data_is_one_host_call(rng, monkeypatch):
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    import sparsediff.jax as sdj

    A, data, b = _glue_problem(rng)
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        ind, ptr = jnp.array(A.indices), jnp.array(A.indptr)

        def loss(d, bb):
            return (sdj.solve((d, ind, ptr), bb) ** 2).sum()

        count = count_batched(monkeypatch)
        x = jax.vmap(lambda d, bb: sdj.solve((d, ind, ptr), bb))(
            jnp.array(data), jnp.array(b))
        assert count["solve"] == 1
        gd, gb = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1))))(
            jnp.array(data), jnp.array(b))
        assert count["solve"] == 3    # + forward and transposed solve
        xb = jax.vmap(lambda bb: sdj.solve((jnp.array(data[0]), ind, ptr), bb))(
            jnp.array(b))
        assert count["solve"] == 3    # one matrix: a multi-column solve
    finally:
        jax.config.update("jax_enable_x64", previous)
    ref = sd.batched_solve(A, data, b)
    rgd, rgb = ref.vjp(2 * ref.x)
    np.testing.assert_allclose(np.asarray(x), ref.x, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(gd), rgd, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(np.asarray(gb), rgb, rtol=1e-11, atol=1e-13)
    for e in range(3):
        np.testing.assert_allclose(np.asarray(xb[e]),
                                   sd.solve(element(A, data[0]), b[e]).x, rtol=1e-12)


def test_tensorflow_values_batch(rng):
    tf = pytest.importorskip("tensorflow")
    import sparsediff.tensorflow as sdtf

    A, data, b = _glue_problem(rng)
    coo = A.tocoo()
    idx = np.stack([coo.row, coo.col], axis=1)
    v, bt = tf.Variable(data), tf.Variable(b)
    with tf.GradientTape() as tape:
        x = sdtf.solve((v, idx, A.shape), bt)
        loss = tf.reduce_sum(x ** 2)
    gv, gb = tape.gradient(loss, [v, bt])
    ref = sd.batched_solve(coo, data, b)
    rgd, rgb = ref.vjp(2 * ref.x)
    np.testing.assert_allclose(x.numpy(), ref.x, rtol=1e-13)
    np.testing.assert_allclose(gv.numpy(), rgd, rtol=1e-12)
    np.testing.assert_allclose(gb.numpy(), rgb, rtol=1e-12)
    # second derivatives (checked in test_batched_glue.py): connected, finite
    with tf.GradientTape() as t2:
        with tf.GradientTape() as t1:
            loss = tf.reduce_sum(sdtf.solve((v, idx, A.shape), bt) ** 2)
        s = tf.reduce_sum(t1.gradient(loss, v))
    assert np.isfinite(t2.gradient(s, v).numpy()).all()
    with pytest.raises(ValueError, match=r"`b` must have shape \(B, n\)"):
        sdtf.solve((v, idx, A.shape), bt[:2])


def test_hermitian_elements_reuse_the_condition_estimate(rng):
    """A bitwise Hermitian element needs no second estimate for the adjoint
    (‖A⁻ᴴ‖₁ = ‖A⁻¹‖₁); a non-Hermitian one gets its own."""
    A, data = poisson_batch(rng, B=2)
    data = data.copy()
    data[1, 1] += 1e-3                 # element 1 no longer symmetric
    solver = sd.BatchedSolver(A, data)
    assert solver._engine._exact_hermitian.tolist() == [True, False]
    sol = solver.solve(rng.standard_normal((2, A.shape[0])))
    sol.vjp(np.ones((2, A.shape[0])))
    kinds = {(e, k) for e, _, k in solver._engine._inverse_norms}
    assert kinds == {(0, "N"), (1, "N"), (1, "T")}
    for e in range(2):
        one = sd.solve(element(A, data[e]), np.ones(A.shape[0]), method="direct")
        one.vjp(np.ones(A.shape[0]))
        assert sol.adjoint_info[e].condition_estimate == pytest.approx(
            one.adjoint_info.condition_estimate, rel=1e-6)


@pytest.mark.parametrize("library", ["cholesky", "cholmod"])
@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_cholesky_with_one_analysis(rng, dtype, library, monkeypatch):
    """Bitwise Hermitian positive-diagonal elements: one symbolic analysis,
    by the batched Cholesky kernels (shallow elimination, as this 2-D
    pattern) or CHOLMOD (deep elimination, forced here); an indefinite element
    falls back to SuperLU alone; every element is its own solve."""
    from sparsediff.backend import NUMBA
    from sparsediff.batched import _direct

    if library == "cholmod":
        if "cholmod" not in getattr(NUMBA, "direct_libraries", lambda: ())():
            pytest.skip("CHOLMOD not installed")
        monkeypatch.setattr(_direct, "CHOLESKY_MAX_DEPTH", -1)
    A, data = poisson_batch(rng, B=3)
    data = data.astype(dtype)
    if dtype == np.complex128:   # Hermitian: a_ji = conj(a_ij), real diagonal
        tperm = sp.csr_array((np.arange(A.nnz) + 1.0, A.indices, A.indptr),
                             shape=A.shape).T.tocsr().data.astype(int) - 1
        rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
        upper = rows < A.indices
        phase = np.exp(1j * rng.uniform(0, 2 * np.pi, A.nnz))
        data[:, upper] = data[:, upper] * phase[upper]
        lower = rows > A.indices
        data[:, lower] = np.conj(data[:, tperm[lower]])
    rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
    on = rows == A.indices
    data[2, on] = 0.1           # element 2: positive diagonal, indefinite
    solver = sd.BatchedSolver(A, data)
    engine = solver._engine
    assert engine.library == library
    lus = engine.factors(engine.dtype)
    assert [getattr(f, "library", "superlu") for f in lus] == [library, library,
                                                               "superlu"]
    b = randn(rng, (3, A.shape[0]), dtype)
    g = randn(rng, b.shape, dtype)
    for trans in "NTH":
        sol = solver.solve(b, trans=trans)
        grad_data, grad_b = sol.vjp(g)
        for e in range(3):
            one = sd.Solver(element(A, data[e]), method="direct").solve(b[e],
                                                                        trans=trans)
            gA, gb = one.vjp(g[e])
            np.testing.assert_allclose(sol.x[e], one.x, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(grad_data[e], gA.data, rtol=1e-9, atol=1e-11)
            np.testing.assert_allclose(grad_b[e], gb, rtol=1e-10, atol=1e-12)
    analysis = engine._analysis
    solver.update(data * 1.5)
    assert solver._engine.library == library and solver._engine._analysis is analysis
    skew = data * 1.5
    skew[0, 1] += 0.25                    # element 0 no longer Hermitian
    solver.update(skew)
    assert solver._engine.library == "superlu"
    x = solver.solve(b).x
    np.testing.assert_allclose(x[0], np.linalg.solve(dense_of(element(A, skew[0])), b[0]),
                               rtol=1e-10)


def test_m_matrix_condition_estimate_is_exact_and_cheap(rng, monkeypatch):
    """Diffusion batches are M-matrices: each element's ‖A⁻¹‖₁ comes exactly
    from ones-vector solves (as in the single solver), not Hager–Higham."""
    from sparsediff.solvers import _conditioning

    n = 36
    A = sp.diags([-1.0, 2.2, -1.0], [-1, 0, 1], shape=(n, n), format="csr")
    A = A + sp.diags([-0.5, -0.5], [-6, 6], shape=(n, n), format="csr")
    A = sp.csr_array(A + sp.identity(n))
    data = A.data * rng.uniform(0.5, 2.0, size=(3, 1))
    data[2] = A.data                     # the unscaled one too
    calls = []
    real = _conditioning.inverse_norm1
    monkeypatch.setattr("sparsediff.batched._direct.inverse_norm1",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    b = rng.standard_normal((3, n))
    sol = sd.BatchedSolver(A, data, method="direct").solve(b)
    assert not calls                     # no Hager–Higham iteration
    for e in range(3):
        dense = sp.csr_array((data[e], A.indices, A.indptr), shape=A.shape).toarray()
        exact = np.linalg.norm(dense, 1) * np.linalg.norm(np.linalg.inv(dense), 1)
        assert sol.info[e].condition_estimate == pytest.approx(exact, rel=1e-10)
    # a non-M-matrix element keeps Hager–Higham
    data2 = data.copy()
    data2[1, A.indices != np.repeat(np.arange(n), np.diff(A.indptr))] *= -1
    sd.BatchedSolver(A, data2, method="direct").solve(b)
    assert calls
