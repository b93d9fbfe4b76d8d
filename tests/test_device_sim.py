"""The Krylov engines, Jacobi and the adjoint rule on a simulated device.

``devicesim.DEVICE`` is a backend whose arrays behave like a GPU library's
(``tests/devicesim.py``): NumPy-only calls on them, host arrays mixed into
their arithmetic and implicit conversions raise, and every host read is
counted. Under it, below the public layer:

* every method (CG, MINRES, GMRES, BiCGSTAB), with and without Jacobi, for
  every ``trans`` and dtype, gives the reference backend's iterates bit for
  bit (the same NumPy twins, the same ``check_every = 8``) and returns device
  arrays;
* CG, MINRES and BiCGSTAB read values to the host only at the checkpoints:
  a bounded number of reads per ``check_every`` iterations, whatever the
  iteration count (GMRES reads its new Hessenberg column every step: its
  small least-squares problem stays on the host by design);
* the adjoint solve and the pattern gradient give the reference backend's
  gradient, which the core tests check against finite differences, the
  dot-product test and a dense oracle;
* the backend's capabilities are enforced: a direct solve, ILU or AMG are
  refused naming what the backend has.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from devicesim import DEVICE, SYNCS, DeviceArray, reset, to_device

from sparsediff._validation import as_matrix
from sparsediff.adjoint.linear import adjoint_solve, pattern_gradient
from sparsediff.backend import REFERENCE, _csr
from sparsediff.solvers import make_engine

METHODS = ("cg", "minres", "gmres", "bicgstab")


def _poisson(n, dtype=np.float64):
    """1-D Poisson with a complex Hermitian coupling for complex dtypes."""
    off = -np.ones(n - 1)
    if np.dtype(dtype).kind == "c":
        off = off * np.exp(0.3j)
    A = sp.diags([np.conj(off), 2.05 * np.ones(n), off], [-1, 0, 1], format="csr")
    return sp.csr_array(A.astype(dtype))


def _convection(n, dtype=np.float64):
    A = sp.diags([-1.3 * np.ones(n - 1), 2.5 * np.ones(n), -0.7 * np.ones(n - 1)],
                 [-1, 0, 1], format="csr").astype(dtype)
    return sp.csr_array(A)


def _engines(method, A, M):
    host = as_matrix(A, "t", "A", backend=REFERENCE)
    dev = as_matrix(to_device(A), "t", "A", backend=DEVICE)
    return (make_engine(method, host, M, func="t"),
            make_engine(method, dev, M, func="t"), host, dev)


def _rhs(n, m, dtype, seed=0):
    rng = np.random.default_rng(seed)
    b = rng.standard_normal((n, m))
    if np.dtype(dtype).kind == "c":
        b = b + 1j * rng.standard_normal((n, m))
    return b.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128, np.float32])
@pytest.mark.parametrize("trans", ["N", "T", "H"])
@pytest.mark.parametrize("M", [None, "jacobi"])
@pytest.mark.parametrize("method", METHODS)
def test_engine_matches_reference_bitwise(method, M, trans, dtype):
    n = 60
    A = (_poisson if method in ("cg", "minres") else _convection)(n, dtype)
    ref, dev, _, _ = _engines(method, A, M)
    b = _rhs(n, 3, dtype)
    b[:, 1] = 0  # a zero column: x = 0 without iterations
    rtol = 1e-4 if dtype == np.float32 else 1e-8
    x_ref, info_ref = ref.solve(b, trans=trans, rtol=rtol)
    x_dev, info_dev = dev.solve(DEVICE.from_host(b), trans=trans, rtol=rtol)
    assert isinstance(x_dev, DeviceArray)
    np.testing.assert_array_equal(DEVICE.to_host(x_dev), x_ref)
    assert info_dev.converged and info_ref.converged
    np.testing.assert_array_equal(info_dev.column_iterations,
                                  info_ref.column_iterations)
    np.testing.assert_array_equal(info_dev.residual_norm, info_ref.residual_norm)


@pytest.mark.parametrize("M", [None, "jacobi"])
@pytest.mark.parametrize("method", ["cg", "minres", "bicgstab"])
def test_host_reads_only_at_checkpoints(method, M):
    n = 400
    _, dev, _, _ = _engines(method, _poisson(n), M)
    b = DEVICE.from_host(_rhs(n, 2, np.float64))
    reset()
    x, info = dev.solve(b, rtol=1e-10)
    its = int(info.iterations)
    assert info.converged and its >= 40  # a long solve
    checkpoints = its // DEVICE.check_every + 2
    # two or three reads per checkpoint (flags; confirmations; stall counters
    # and clocks together) and a fixed number at the start and the end
    assert SYNCS["count"] <= 3 * checkpoints + 10, (SYNCS["count"], its)
    assert SYNCS["count"] < its / 2


def test_failures_settle_at_checkpoints():
    """Indefinite and non-finite columns are retired by masks on the device."""
    n = 50
    A = _poisson(n).tolil()
    A[0, 0] = -3.0  # not positive definite: CG meets pᴴAp ≤ 0 for some b
    A = sp.csr_array(A)
    b = _rhs(n, 2, np.float64)
    b[:, 1] = np.nan
    ref, dev, _, _ = _engines("minres", sp.csr_array(_poisson(n)), None)
    x_ref, info_ref = ref.solve(b)
    x_dev, info_dev = dev.solve(DEVICE.from_host(b))
    np.testing.assert_array_equal(DEVICE.to_host(x_dev), x_ref)
    assert info_dev.reason == info_ref.reason == "nonfinite"
    ref, dev, _, _ = _engines("bicgstab", A, None)
    b = _rhs(n, 2, np.float64)
    x_ref, info_ref = ref.solve(b, maxiter=5)
    x_dev, info_dev = dev.solve(DEVICE.from_host(b), maxiter=5)
    np.testing.assert_array_equal(DEVICE.to_host(x_dev), x_ref)
    assert info_dev.reason == info_ref.reason == "maxiter"
    np.testing.assert_array_equal(info_dev.column_iterations, [5, 5])


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("trans", ["N", "T", "H"])
@pytest.mark.parametrize("method", ["cg", "gmres", "bicgstab"])
def test_adjoint_and_pattern_gradient(method, trans, dtype):
    n = 40
    A = (_poisson if method == "cg" else _convection)(n, dtype)
    ref, dev, host, devmat = _engines(method, A, "jacobi")
    b, g = _rhs(n, 2, dtype, 1), _rhs(n, 2, dtype, 2)
    tol = dict(rtol=1e-12)
    x_ref, _ = ref.solve(b, trans=trans, **tol)
    lam_ref, info_ref, _, _ = adjoint_solve(ref, g, trans, **tol)
    grad_ref = pattern_gradient(host, x_ref, lam_ref, trans)
    x_dev, _ = dev.solve(DEVICE.from_host(b), trans=trans, **tol)
    lam_dev, info_dev, _, _ = adjoint_solve(dev, DEVICE.from_host(g), trans, **tol)
    grad_dev = pattern_gradient(devmat, x_dev, lam_dev, trans)
    assert isinstance(grad_dev, DeviceArray) and info_dev.converged
    np.testing.assert_array_equal(DEVICE.to_host(lam_dev), lam_ref)
    np.testing.assert_array_equal(DEVICE.to_host(grad_dev), grad_ref)
    # and the gradient is the dense one: ∂⟨g, x⟩/∂a_ij = −λ_i x_j (trans N)
    if trans == "N":
        Ad = A.toarray()
        xd = np.linalg.solve(Ad, b)
        ld = np.linalg.solve(Ad.conj().T, g)
        rows = np.repeat(np.arange(n), np.diff(A.indptr))
        dense = -np.sum(ld[rows] * np.conj(xd[A.indices]), axis=1)
        np.testing.assert_allclose(DEVICE.to_host(grad_dev), dense, rtol=1e-8,
                                   atol=1e-10)


def test_segment_sums_and_diagonal_on_device():
    """Duplicates summed by the backend's segment sums; the diagonal kernel."""
    rows = np.array([0, 0, 1, 2, 2, 2, 1])
    cols = np.array([0, 0, 1, 2, 0, 2, 1])
    vals = np.arange(1.0, 8.0)
    A = sp.coo_array((vals, (rows, cols)), shape=(3, 3))
    mat = as_matrix(to_device(A), "t", "A", backend=DEVICE)
    new = np.linspace(0.5, 3.5, 7)
    summed = mat.to_canonical(DEVICE.from_host(new))
    assert isinstance(summed, DeviceArray)
    expect = as_matrix(sp.coo_array((new, (rows, cols)), shape=(3, 3)), "t", "A")
    np.testing.assert_array_equal(DEVICE.to_host(summed), expect.data)
    d = _csr.diagonal(mat)
    np.testing.assert_array_equal(DEVICE.to_host(d), A.toarray().diagonal())


@pytest.mark.parametrize("method, M", [("direct", None), ("cg", "ilu"),
                                       ("cg", "amg"), ("auto", None)])
def test_capabilities_are_refused_by_name(method, M):
    A = _poisson(20)
    dev = as_matrix(to_device(A), "t", "A", backend=DEVICE)
    with pytest.raises(ValueError, match="devicesim backend has no .*available"):
        make_engine(method, dev, M, func="t")


def test_the_simulator_catches_host_code():
    """The rules the simulator enforces (so that the tests above mean something)."""
    d = DEVICE.from_host(np.ones(4))
    with pytest.raises(TypeError, match="implicit conversion"):
        np.asarray(d)
    with pytest.raises(TypeError, match="host numpy.ndarray"):
        d + np.ones(4)
    with pytest.raises(TypeError, match="host numpy.ndarray"):
        np.where(d > 0, d, np.zeros(4))
    with pytest.raises(TypeError, match="host numpy.ndarray"):
        DEVICE.kernels.col_sqnorm(np.ones((4, 1)), DEVICE.xp.empty(1))
    reset()
    assert bool((d > 0).all()) and SYNCS["count"] == 1
