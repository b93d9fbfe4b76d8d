"""The public contract with device objects: in on a device, out on the device.

Each test runs on the simulated device of ``tests/devicesim.py`` (always: it
enforces a device library's rules on NumPy memory) and on CuPy with a GPU
(marker ``gpu``; skipped without CuPy or a GPU). A device ``A`` (CSR or COO
with duplicates) and ``b`` give a device ``x``; ``vjp`` gives the gradient of
``A`` in the caller's device format and entry order and a device ``grad_b``;
``jvp``, ``Solver.update`` and ``sparse_outer`` take device arguments; the
gradients pass the dot-product test and central finite differences; mixed
host/device arguments and missing capabilities are refused by name; the
caller's device arrays are never modified.
"""

import numpy as np
import pytest
import scipy.sparse as sp

import sparsediff as sd


class _Sim:
    """The simulated device (tests/devicesim.py)."""

    name = "devicesim"

    def __init__(self):
        import devicesim

        self.mod = devicesim
        self.array_type = devicesim.DeviceArray
        self.from_host = devicesim.DEVICE.from_host
        self.to_device = devicesim.to_device

    def to_host(self, x):
        return self.mod.DEVICE.to_host(x)


class _Cupy:
    """CuPy on the current GPU."""

    name = "cupy"

    def __init__(self):
        cupy = pytest.importorskip("cupy")
        try:
            cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # noqa: BLE001 - no driver, no device
            pytest.skip(f"no CUDA device: {exc}")
        import cupyx.scipy.sparse as csp

        self.cupy, self.csp = cupy, csp
        self.array_type = cupy.ndarray
        self.from_host = cupy.asarray
        self.to_host = cupy.asnumpy

    def to_device(self, A):
        if not sp.issparse(A):
            return self.cupy.asarray(A)
        cls = {"csr": self.csp.csr_matrix, "csc": self.csp.csc_matrix,
               "coo": self.csp.coo_matrix}[A.format]
        return cls(A)


@pytest.fixture(params=["devicesim", pytest.param("cupy", marks=pytest.mark.gpu)])
def dev(request):
    return _Sim() if request.param == "devicesim" else _Cupy()


def _poisson(n):
    A = sp.diags([-np.ones(n - 1), 2.05 * np.ones(n), -np.ones(n - 1)], [-1, 0, 1])
    return sp.csr_matrix(A)


def _convection(n):
    return sp.csr_matrix(sp.diags([-1.3 * np.ones(n - 1), 2.5 * np.ones(n),
                                   -0.7 * np.ones(n - 1)], [-1, 0, 1]))


def _rhs(n, m, seed):
    return np.random.default_rng(seed).standard_normal((n, m))



def _coo_with_duplicates(n):
    """A non-symmetric COO matrix assembled with duplicate entries."""
    A = _convection(n).tocoo()
    # split every diagonal entry in two (a duplicate per row)
    d = A.row == A.col
    rows = np.concatenate([A.row, A.row[d]])
    cols = np.concatenate([A.col, A.col[d]])
    vals = np.concatenate([A.data, A.data[d]]) * np.where(
        np.concatenate([d, np.ones(d.sum(), bool)]), 0.5, 1.0)
    return sp.coo_matrix((vals, (rows, cols)), shape=A.shape)


@pytest.mark.parametrize("fmt", ["csr", "coo"])
@pytest.mark.parametrize("method, M", [("cg", "jacobi"), ("gmres", None),
                                       ("bicgstab", "jacobi"), ("minres", None)])
def test_solve_and_gradients_stay_on_the_device(dev, method, M, fmt):
    n = 30
    A = _poisson(n) if method in ("cg", "minres") else _coo_with_duplicates(n)
    A = A.tocsr() if fmt == "csr" else sp.coo_matrix(A)
    b, g = _rhs(n, 1, 3)[:, 0], _rhs(n, 1, 4)[:, 0]
    host = sd.solve(A, b, method=method, M=M, rtol=1e-12)
    sol = sd.solve(dev.to_device(A), dev.from_host(b), method=method, M=M, rtol=1e-12)
    assert isinstance(sol.x, dev.array_type) and sol.info.converged
    np.testing.assert_allclose(dev.to_host(sol.x), host.x, rtol=1e-9, atol=1e-12)
    gA_h, gb_h = host.vjp(g)
    gA_d, gb_d = sol.vjp(dev.from_host(g))
    # the caller's format and entry order, on the device
    assert type(gA_d).__name__ == f"{fmt}_matrix" and isinstance(gb_d, dev.array_type)
    np.testing.assert_allclose(dev.to_host(gA_d.data), gA_h.data, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(dev.to_host(gb_d), gb_h, rtol=1e-8, atol=1e-12)
    # forward mode and the dot-product test ⟨J u, v⟩ = ⟨u, Jᵀ v⟩, on the device
    rng = np.random.default_rng(5)
    dA = rng.standard_normal(A.nnz)
    db = rng.standard_normal(n)
    dx = sol.jvp(dev.from_host(dA), dev.from_host(db))
    assert isinstance(dx, dev.array_type)
    lhs = float(np.dot(dev.to_host(dx), g))
    rhs = float(np.dot(dev.to_host(gA_d.data), dA) + np.dot(dev.to_host(gb_d), db))
    assert abs(lhs - rhs) <= 1e-8 * max(abs(lhs), 1.0)
    # and central finite differences of L = ⟨g, x⟩ along (dA, db)
    eps = 1e-6
    Ad = A.toarray()

    def loss(t):
        Ap = A.copy()
        Ap.data = A.data + t * dA
        return np.dot(g, np.linalg.solve(Ap.toarray(), b + t * db))

    assert Ad.shape == (n, n)
    fd = (loss(eps) - loss(-eps)) / (2 * eps)
    assert abs(fd - rhs) <= 1e-6 * max(abs(fd), 1.0)


def test_solver_update_and_sparse_outer_on_the_device(dev):
    n = 25
    A = _coo_with_duplicates(n)
    b = _rhs(n, 2, 6)
    solver = sd.Solver(dev.to_device(A), method="gmres", rtol=1e-12)
    new = A.data * 1.5
    solver.update(dev.from_host(new))
    x = solver.solve(dev.from_host(b)).x
    expect = np.linalg.solve(sp.coo_matrix((new, (A.row, A.col)), A.shape).toarray(), b)
    np.testing.assert_allclose(dev.to_host(x), expect, rtol=1e-9)
    u, v = _rhs(n, 2, 7), _rhs(n, 2, 8)
    out = sd.sparse_outer(dev.to_device(A), dev.from_host(u), dev.from_host(v))
    ref = sd.sparse_outer(A, u, v)
    assert type(out).__name__ == "coo_matrix"
    np.testing.assert_allclose(dev.to_host(out.data), ref.data, rtol=1e-12)


def test_mixed_backends_are_refused_naming_both(dev):
    A = _poisson(10)
    b = np.ones(10)
    with pytest.raises(TypeError, match=rf"mix {dev.name} arrays \(.*csr_matrix\) "
                                        r"and host arrays \(numpy.ndarray\)"):
        sd.solve(dev.to_device(A), b, method="cg")
    with pytest.raises(TypeError, match=r"host arrays \(scipy.sparse.*csr_matrix\)"):
        sd.solve(A, dev.from_host(b), method="cg")
    solver = sd.Solver(dev.to_device(A), method="cg")
    with pytest.raises(TypeError, match=f"`A` is on the {dev.name} backend but `b`"):
        solver.solve(b)
    sol = solver.solve(dev.from_host(b))
    with pytest.raises(TypeError, match=f"must be a dense array of the {dev.name}"):
        sol.vjp(np.ones(10))
    with pytest.raises(ValueError, match=f"{dev.name} backend has no method 'direct'; "
                                         "available: 'cg'"):
        sd.solve(dev.to_device(A), dev.from_host(b), method="direct")
    with pytest.raises(ValueError, match="no preconditioner 'amg'"):
        sd.Solver(dev.to_device(A), method="cg", M="amg")


def test_the_callers_device_arrays_are_not_modified(dev):
    A = _coo_with_duplicates(20)
    Ad = dev.to_device(A)
    b = dev.from_host(_rhs(20, 1, 0)[:, 0])
    before = [dev.to_host(a).copy() for a in (Ad.data, Ad.row, Ad.col, b)]
    sol = sd.solve(Ad, b, method="bicgstab")
    sol.x[:] = 0  # the caller's x is theirs
    sol.vjp(dev.from_host(np.ones(20)))
    for old, new in zip(before, (Ad.data, Ad.row, Ad.col, b)):
        np.testing.assert_array_equal(old, dev.to_host(new))


def test_the_cpu_only_steps_refuse_device_matrices(dev):
    from sparsediff.fixed_point import steps

    A = dev.to_device(_poisson(12))
    with pytest.raises(TypeError, match=f"steps run on the CPU only, and `A` is on "
                                        f"the {dev.name} backend"):
        steps.Jacobi(A)
    with pytest.raises(TypeError, match="steps run on the CPU only"):
        steps.AMGVCycle(A)

