"""Fused Krylov kernels (kernels/numba/_krylov.py) against their NumPy twins.

Each kernel is run on the same random blocks by the Numba front and by the
pure-NumPy twin in ``kernels/_reference.py``: one and several columns (the
front has 1-D fast paths for one column), n = 0, all four value dtypes, and
values near float32's overflow for the reductions (which accumulate in
float64).
"""

import numpy as np
import pytest
from conftest import DTYPES, randn

from sparsediff.kernels import _reference as ref
from sparsediff.kernels.numba import _krylov as fused

SHAPES = [(0, 1), (1, 1), (17, 1), (17, 3)]


def _close(a, b, dtype):
    rtol = 1e-5 if np.dtype(dtype) in (np.float32, np.complex64) else 1e-12
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)


def _acc(dtype):
    return np.complex128 if np.dtype(dtype).kind == "c" else np.float64


def _scalars(rng, m, dtype):
    return randn(rng, m, dtype)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_col_dot_and_sqnorm(rng, shape, dtype):
    a, b = randn(rng, shape, dtype), randn(rng, shape, dtype)
    out1, out2 = np.empty(shape[1], _acc(dtype)), np.empty(shape[1], _acc(dtype))
    _close(fused.col_dot(a, b, out1), ref.col_dot(a, b, out2), dtype)
    n1, n2 = np.empty(shape[1]), np.empty(shape[1])
    _close(fused.col_sqnorm(a, n1), ref.col_sqnorm(a, n2), dtype)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cg_step_and_xpby(rng, shape, dtype):
    x, r, p, q = (randn(rng, shape, dtype) for _ in range(4))
    alpha = _scalars(rng, shape[1], dtype)
    x2, r2 = x.copy(), r.copy()
    o1, o2 = np.empty(shape[1]), np.empty(shape[1])
    fused.cg_step(x, r, p, q, alpha, o1)
    ref.cg_step(x2, r2, p, q, alpha, o2)
    _close(x, x2, dtype)
    _close(r, r2, dtype)
    _close(o1, o2, dtype)
    z = randn(rng, shape, dtype)
    beta = _scalars(rng, shape[1], dtype)
    p2 = p.copy()
    _close(fused.xpby(z, beta, p), ref.xpby(z, beta, p2), dtype)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_sub_scaled_and_bicgstab_updates(rng, shape, dtype):
    r, v, p, shat, phat, x = (randn(rng, shape, dtype) for _ in range(6))
    alpha, beta, omega = (_scalars(rng, shape[1], dtype) for _ in range(3))
    out1, out2 = np.empty(shape, dtype), np.empty(shape, dtype)
    n1, n2 = np.empty(shape[1]), np.empty(shape[1])
    fused.sub_scaled(out1, r, alpha, v, n1)
    ref.sub_scaled(out2, r, alpha, v, n2)
    _close(out1, out2, dtype)
    _close(n1, n2, dtype)
    p2 = p.copy()
    _close(fused.bicgstab_p(p, r, v, beta, omega), ref.bicgstab_p(p2, r, v, beta, omega),
           dtype)
    x2 = x.copy()
    _close(fused.bicgstab_x(x, alpha, phat, omega, shat),
           ref.bicgstab_x(x2, alpha, phat, omega, shat), dtype)


@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_csr_matvec_dot(rng, m, dtype):
    n = 23
    D = randn(rng, (n, n), dtype) * (rng.random((n, n)) < 0.3)
    indptr = np.concatenate([[0], np.cumsum((D != 0).sum(1))]).astype(np.int64)
    indices = np.nonzero(D)[1].astype(np.int64)
    data = D[D != 0]
    x = randn(rng, (n, m), dtype)
    o1, o2 = np.empty((n, m), dtype), np.empty((n, m), dtype)
    d1, d2 = np.empty(m, _acc(dtype)), np.empty(m, _acc(dtype))
    fused.csr_matvec_dot(indptr, indices, data, x, o1, d1)
    ref.csr_matvec_dot(indptr, indices, data, x, o2, d2)
    _close(o1, o2, dtype)
    _close(d1, d2, dtype)
    _close(o2, D @ x, dtype)
    if m == 1:
        o3, d3 = np.empty(n, dtype), np.empty(1, _acc(dtype))
        fused.csr_matvec_dot1(indptr, indices, data, x[:, 0].copy(), o3, d3)
        o4, d4 = np.empty(n, dtype), np.empty(1, _acc(dtype))
        ref.csr_matvec_dot1(indptr, indices, data, x[:, 0].copy(), o4, d4)
        _close(o3, o4, dtype)
        _close(d3, d4, dtype)


def test_reductions_accumulate_in_float64():
    """float32 squares of 1e20 overflow; the kernels and twins do not."""
    a = np.full((4, 1), 1e20, dtype=np.float32)
    o1, o2 = np.empty(1), np.empty(1)
    assert fused.col_sqnorm(a, o1)[0] == pytest.approx(4e40)
    assert ref.col_sqnorm(a, o2)[0] == pytest.approx(4e40)
    d1, d2 = np.empty(1), np.empty(1)
    assert fused.col_dot(a, a, d1)[0] == pytest.approx(4e40)
    assert ref.col_dot(a, a, d2)[0] == pytest.approx(4e40)


def test_twins_cover_every_fused_kernel():
    assert set(fused.__all__) <= set(ref.__all__)
