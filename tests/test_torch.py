"""PyTorch glue: gradients (reverse, forward, second order), layouts, errors."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import random_pattern

torch = pytest.importorskip("torch")
sdt = pytest.importorskip("sparsediff.torch")

import sparsediff as sd  # noqa: E402

pytestmark = [
    pytest.mark.torch,
    pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta"),
    pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly"),
]

REAL_COMPLEX = [torch.float64, torch.complex128]


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def _pattern(rng, n, extra=3):
    """A CSR pattern with a full diagonal, unsorted columns and duplicates."""
    return random_pattern(rng, n, extra)


def _values(rng, rows, cols, dtype, n):
    """Diagonally dominant values (well conditioned for finite differences)."""
    v = rng.standard_normal(rows.shape[0])
    if dtype.is_complex:
        v = v + 1j * rng.standard_normal(rows.shape[0])
    v = np.where(rows == cols, v + 2.0 * n / np.maximum(np.bincount(
        rows[rows == cols], minlength=n)[rows], 1), v)
    return torch.tensor(v, dtype=dtype)


def _rhs(rng, n, m, dtype):
    shape = (n,) if m is None else (n, m)
    b = rng.standard_normal(shape)
    if dtype.is_complex:
        b = b + 1j * rng.standard_normal(shape)
    return torch.tensor(b, dtype=dtype)


def _dense(values, rows, cols, n):
    """Dense oracle matrix, differentiable in ``values`` (duplicates summed)."""
    A = torch.zeros((n, n), dtype=values.dtype)
    return A.index_put((torch.as_tensor(rows), torch.as_tensor(cols)), values,
                       accumulate=True)


def _problem(rng, dtype, n=6, m=None):
    indptr, cols, rows = _pattern(rng, n)
    values = _values(rng, rows, cols, dtype, n).requires_grad_()
    b = _rhs(rng, n, m, dtype).requires_grad_()
    return values, b, indptr, cols, rows


# ---------------------------------------------------------------------------
# forward
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, *REAL_COMPLEX])
@pytest.mark.parametrize("m", [None, 3])
def test_forward_matches_dense(rng, dtype, m):
    values, b, indptr, cols, rows = _problem(rng, dtype, m=m)
    x = sdt.solve_values(values, b, indptr=indptr, indices=cols)
    ref = torch.linalg.solve(_dense(values, rows, cols, 6).detach().double()
                             if not dtype.is_complex else
                             _dense(values, rows, cols, 6).detach(),
                             b.detach().to(torch.complex128 if dtype.is_complex
                                           else torch.float64))
    assert x.shape == b.shape and x.dtype == dtype
    tol = 1e-4 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(x.detach().numpy(), ref.numpy(), rtol=tol, atol=tol)


def test_inputs_not_modified(rng):
    values, b, indptr, cols, rows = _problem(rng, torch.float64, m=2)
    before = [t.detach().clone() for t in (values, b)]
    ip, cc = indptr.copy(), cols.copy()
    x = sdt.solve_values(values, b, indptr=indptr, indices=cols)
    (x ** 2).sum().backward()
    assert torch.equal(values.detach(), before[0]) and torch.equal(b.detach(), before[1])
    assert np.array_equal(ip, indptr) and np.array_equal(cc, cols)
    assert not np.shares_memory(x.detach().numpy(), b.detach().numpy())


# ---------------------------------------------------------------------------
# reverse mode
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", REAL_COMPLEX)
@pytest.mark.parametrize("m", [None, 2])
def test_gradcheck(rng, dtype, m):
    values, b, indptr, cols, _ = _problem(rng, dtype, m=m)

    def f(v, rhs):
        return sdt.solve_values(v, rhs, indptr=indptr, indices=cols)

    assert torch.autograd.gradcheck(f, (values, b))


@pytest.mark.parametrize("dtype", REAL_COMPLEX)
@pytest.mark.parametrize("m", [None, 2])
def test_gradgradcheck(rng, dtype, m):
    values, b, indptr, cols, _ = _problem(rng, dtype, n=5, m=m)

    def f(v, rhs):
        return sdt.solve_values(v, rhs, indptr=indptr, indices=cols)

    assert torch.autograd.gradgradcheck(f, (values, b))


@pytest.mark.parametrize("dtype", REAL_COMPLEX)
def test_gradient_matches_dense_oracle(rng, dtype):
    values, b, indptr, cols, rows = _problem(rng, dtype, n=8, m=3)
    w = _rhs(rng, 8, 3, dtype)

    def loss(x):
        return (x * w.conj()).real.sum() + (x.abs() ** 2).sum()

    gv, gb = torch.autograd.grad(loss(sdt.solve_values(values, b, indptr=indptr,
                                                       indices=cols)), (values, b))
    x_ref = torch.linalg.solve(_dense(values, rows, cols, 8), b)
    rv, rb = torch.autograd.grad(loss(x_ref), (values, b))
    # the oracle's gradient per value is G[rows, cols]: masked by the pattern,
    # duplicates included (never by the nonzeros of the computed gradient)
    np.testing.assert_allclose(gv.numpy(), rv.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gb.numpy(), rb.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", REAL_COMPLEX)
def test_central_differences(rng, dtype):
    values, b, indptr, cols, _ = _problem(rng, dtype, n=7)
    w = _rhs(rng, 7, None, dtype)

    def loss(v, rhs):
        x = sdt.solve_values(v, rhs, indptr=indptr, indices=cols)
        return (x * w.conj()).real.sum()

    gv, gb = torch.autograd.grad(loss(values, b), (values, b))
    du, db = _rhs(rng, values.shape[0], None, dtype), _rhs(rng, 7, None, dtype)
    h = 6e-6
    with torch.no_grad():
        fd = (loss(values + h * du, b + h * db) - loss(values - h * du, b - h * db)) / (
            2 * h)
    # δL = Re<grad, δp>  (PyTorch's complex convention)
    pred = (gv.conj() * du).real.sum() + (gb.conj() * db).real.sum()
    assert abs(float(fd) - float(pred)) <= 1e-7 * max(1.0, abs(float(pred)))


@pytest.mark.parametrize("dtype", REAL_COMPLEX)
def test_dot_product_jvp_vjp(rng, dtype):
    values, b, indptr, cols, _ = _problem(rng, dtype, n=9, m=2)

    def f(v, rhs):
        return sdt.solve_values(v, rhs, indptr=indptr, indices=cols)

    u = (_rhs(rng, values.shape[0], None, dtype), _rhs(rng, 9, 2, dtype))
    v = _rhs(rng, 9, 2, dtype)
    _, ju = torch.func.jvp(f, (values.detach(), b.detach()), u)
    _, vjp_fn = torch.func.vjp(f, values.detach(), b.detach())
    jhv = vjp_fn(v)
    lhs = (ju.conj() * v).sum().real            # Re <J u, v>
    rhs = sum((a.conj() * c).sum().real for a, c in zip(u, jhv))   # Re <u, Jᴴ v>
    assert abs(float(lhs - rhs)) <= 1e-12 * max(1.0, abs(float(lhs)))


def test_hessian_vector_product_matches_dense(rng):
    values, b, indptr, cols, rows = _problem(rng, torch.float64, n=6, m=2)
    direction = (_rhs(rng, values.shape[0], None, torch.float64), _rhs(rng, 6, 2,
                                                                       torch.float64))

    def hvp(solve_fn):
        x = solve_fn(values, b)
        L = (x ** 3).sum()
        g = torch.autograd.grad(L, (values, b), create_graph=True)
        s = sum((gi * di).sum() for gi, di in zip(g, direction))
        return torch.autograd.grad(s, (values, b))

    ours = hvp(lambda v, r: sdt.solve_values(v, r, indptr=indptr, indices=cols))
    ref = hvp(lambda v, r: torch.linalg.solve(_dense(v, rows, cols, 6), r))
    for a, c in zip(ours, ref):
        np.testing.assert_allclose(a.numpy(), c.numpy(), rtol=1e-9, atol=1e-11)


def test_float32_gradient_close_to_float64(rng):
    values, b, indptr, cols, _ = _problem(rng, torch.float64, n=10)
    grads = {}
    for dt in (torch.float32, torch.float64):
        v = values.detach().to(dt).requires_grad_()
        r = b.detach().to(dt).requires_grad_()
        x = sdt.solve_values(v, r, indptr=indptr, indices=cols)
        (x ** 2).sum().backward()
        assert v.grad.dtype == dt
        grads[dt] = (v.grad.double(), r.grad.double())
    for a, c in zip(grads[torch.float32], grads[torch.float64]):
        np.testing.assert_allclose(a.numpy(), c.numpy(), rtol=1e-3,
                                   atol=1e-4 * float(c.abs().max()))


def test_backward_reuses_factorization(rng, monkeypatch):
    from sparsediff.solvers import direct

    count = {"n": 0}
    orig = direct.DirectEngine._factor

    def counting(self, dtype):
        if dtype not in self._factors:
            count["n"] += 1
        return orig(self, dtype)

    monkeypatch.setattr(direct.DirectEngine, "_factor", counting)
    values, b, indptr, cols, _ = _problem(rng, torch.float64, n=6)
    x = sdt.solve_values(values, b, indptr=indptr, indices=cols)
    g = torch.autograd.grad((x ** 2).sum(), (values, b), create_graph=True)
    torch.autograd.grad(g[0].sum() + g[1].sum(), (values, b))
    assert count["n"] == 1


# ---------------------------------------------------------------------------
# forward mode
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", REAL_COMPLEX)
def test_forward_mode_matches_dense(rng, dtype):
    values, b, indptr, cols, rows = _problem(rng, dtype, n=7, m=2)
    dv, db = _rhs(rng, values.shape[0], None, dtype), _rhs(rng, 7, 2, dtype)
    v0, b0 = values.detach(), b.detach()
    _, ours = torch.func.jvp(
        lambda v, r: sdt.solve_values(v, r, indptr=indptr, indices=cols),
        (v0, b0), (dv, db))
    _, ref = torch.func.jvp(lambda v, r: torch.linalg.solve(_dense(v, rows, cols, 7), r),
                            (v0, b0), (dv, db))
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-10, atol=1e-12)
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        x = sdt.solve_values(fwAD.make_dual(v0, dv), b0, indptr=indptr, indices=cols)
        tangent = fwAD.unpack_dual(x).tangent
    _, ref_v = torch.func.jvp(lambda v: torch.linalg.solve(_dense(v, rows, cols, 7), b0),
                              (v0,), (dv,))
    np.testing.assert_allclose(tangent.numpy(), ref_v.numpy(), rtol=1e-10, atol=1e-12)


def test_gradcheck_forward_mode(rng):
    values, b, indptr, cols, _ = _problem(rng, torch.float64, n=5)
    assert torch.autograd.gradcheck(
        lambda v, r: sdt.solve_values(v, r, indptr=indptr, indices=cols),
        (values, b), check_forward_ad=True, check_backward_ad=True)


# ---------------------------------------------------------------------------
# torch layouts: CSR, COO (coalesced or not), dense, tuple
# ---------------------------------------------------------------------------


def _oracle_grads(values, rows, cols, b, n):
    v = values.detach().clone().requires_grad_()
    x = torch.linalg.solve(_dense(v, rows, cols, n), b.detach())
    (x.abs() ** 2).sum().backward()
    return v.grad


@pytest.mark.parametrize("dtype", REAL_COMPLEX)
def test_sparse_csr_tensor(rng, dtype):
    values, b, indptr, cols, rows = _problem(rng, dtype, n=8)
    A = torch.sparse_csr_tensor(torch.tensor(indptr), torch.tensor(cols),
                                values.detach(), (8, 8)).requires_grad_()
    x = sdt.solve(A, b.detach())
    (x.abs() ** 2).sum().backward()
    assert A.grad.layout == torch.sparse_csr
    assert torch.equal(A.grad.crow_indices(), A.crow_indices())
    assert torch.equal(A.grad.col_indices(), A.col_indices())
    # duplicates (allowed when torch's invariant checks are off) share the
    # merged entry's gradient, so that the dense value of A.grad is right
    _, inv, counts = np.unique(rows * 8 + cols, return_inverse=True,
                               return_counts=True)
    np.testing.assert_allclose(A.grad.values().numpy(),
                               _oracle_grads(values, rows, cols, b, 8).numpy()
                               / counts[inv], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("coalesce", [False, True])
def test_sparse_coo_tensor(rng, coalesce):
    values, b, indptr, cols, rows = _problem(rng, torch.float64, n=8)
    A = torch.sparse_coo_tensor(torch.tensor(np.stack([rows, cols])), values.detach(),
                                (8, 8))
    if coalesce:
        A = A.coalesce()
    A.requires_grad_()
    idx = A._indices().clone()
    vals = A._values().detach()
    r, c = idx.numpy()
    x = sdt.solve(A, b.detach())
    (x.abs() ** 2).sum().backward()
    assert A.grad.layout == torch.sparse_coo
    # same (possibly uncoalesced) entries as A, one gradient per caller entry
    assert torch.equal(A.grad._indices(), idx)
    assert A.grad._values().shape == vals.shape
    if coalesce:
        np.testing.assert_allclose(A.grad._values().numpy(),
                                   _oracle_grads(vals, r, c, b, 8).numpy(),
                                   rtol=1e-10, atol=1e-12)
    if not coalesce:
        # a sparse gradient means its dense sum: duplicates share the merged
        # entry's gradient equally
        key = r * 8 + c
        _, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
        dense_grad = A.grad.to_dense().numpy()
        np.testing.assert_allclose(dense_grad[r, c], expected_merged := (
            _oracle_grads(vals, r, c, b, 8).numpy()), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(A.grad._values().numpy(),
                                   expected_merged / counts[inv], rtol=1e-10)
        assert counts.max() > 1


def test_dense_tensor(rng):
    A = torch.tensor(rng.standard_normal((5, 5)) + 5 * np.eye(5), requires_grad=True)
    b = torch.tensor(rng.standard_normal(5), requires_grad=True)
    x = sdt.solve(A, b)
    (x ** 2).sum().backward()
    A2, b2 = A.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    (torch.linalg.solve(A2, b2) ** 2).sum().backward()
    np.testing.assert_allclose(A.grad.numpy(), A2.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(b.grad.numpy(), b2.grad.numpy(), rtol=1e-10)


def test_tuple_form_and_coo_values(rng):
    values, b, indptr, cols, rows = _problem(rng, torch.float64, n=6)
    x1 = sdt.solve((values, (torch.tensor(indptr), torch.tensor(cols))), b)
    x2 = sdt.solve_values(values, b, row=torch.tensor(rows), col=torch.tensor(cols))
    np.testing.assert_allclose(x1.detach().numpy(), x2.detach().numpy(), rtol=1e-13)
    g1 = torch.autograd.grad(x1.sum(), values)[0]
    g2 = torch.autograd.grad(x2.sum(), values)[0]
    np.testing.assert_allclose(g1.numpy(), g2.numpy(), rtol=1e-12)


@pytest.mark.parametrize("layout", ["csr", "coo"])
def test_gradcheck_through_sparse_tensor(rng, layout):
    # gradcheck cannot perturb sparse inputs itself: build the tensor inside,
    # which also checks that A.grad flows on through torch's constructors
    values, b, indptr, cols, rows = _problem(rng, torch.float64, n=5)
    if layout == "csr":
        # torch's CSR constructor cannot take gradients of duplicate entries
        key = np.unique(rows * 5 + cols)
        rows, cols = key // 5, key % 5
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=5))])
        values = _values(rng, rows, cols, torch.float64, 5).requires_grad_()
    ip, ci = torch.tensor(indptr), torch.tensor(cols)
    idx = torch.tensor(np.stack([rows, cols]))

    def f(v, r):
        if layout == "csr":
            A = torch.sparse_csr_tensor(ip, ci, v, (5, 5))
        else:
            A = torch.sparse_coo_tensor(idx, v, (5, 5))
        return sdt.solve(A, r)

    assert torch.autograd.gradcheck(f, (values, b))
    if layout == "coo":
        # (torch's CSR constructor has no double backward of its own)
        assert torch.autograd.gradgradcheck(f, (values, b))


def test_stored_zeros_get_gradient():
    indptr, indices = np.array([0, 2, 4]), np.array([0, 1, 0, 1])
    values = torch.tensor([2.0, 0.0, 0.0, 3.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([1.0, 1.0], dtype=torch.float64)
    x = sdt.solve_values(values, b, indptr=indptr, indices=indices)
    x.sum().backward()
    # λ = A⁻ᵀ 1 = [1/2, 1/3], x = [1/2, 1/3]; grad_01 = −λ0 x1 = −1/6
    np.testing.assert_allclose(values.grad.numpy(),
                               [-0.25, -1 / 6, -1 / 6, -1 / 9], rtol=1e-14)


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------


def test_dtype_mismatch(rng):
    values, b, indptr, cols, _ = _problem(rng, torch.float64)
    with pytest.raises(TypeError, match="dtype of `A`'s values"):
        sdt.solve_values(values, b.float(), indptr=indptr, indices=cols)


def test_non_cpu_tensor_rejected(rng):
    values, b, indptr, cols, _ = _problem(rng, torch.float64)
    with pytest.raises(TypeError, match="only CPU tensors"):
        sdt.solve_values(values.detach().to("meta"), b, indptr=indptr, indices=cols)
    with pytest.raises(TypeError, match="GPU backend is not available"):
        sdt.solve(torch.eye(3, device="meta"), torch.ones(3))


def test_float_indices_rejected(rng):
    values, b, indptr, cols, _ = _problem(rng, torch.float64)
    with pytest.raises(TypeError, match="`indices` must be an integer"):
        sdt.solve_values(values, b, indptr=indptr, indices=torch.tensor(cols).double())
    with pytest.raises(TypeError, match="`indptr` must be an integer"):
        sdt.solve_values(values, b, indptr=indptr.astype(float), indices=cols)


def test_shape_errors(rng):
    values, b, indptr, cols, _ = _problem(rng, torch.float64)
    with pytest.raises(ValueError, match=r"`b` must have shape \(n,\) or \(n, m\)"):
        sdt.solve_values(values, b[:-1], indptr=indptr, indices=cols)
    with pytest.raises(ValueError, match="one entry per stored index"):
        sdt.solve_values(values[:-1], b, indptr=indptr, indices=cols)
    with pytest.raises(ValueError, match="square"):
        sdt.solve(torch.ones(2, 3, dtype=torch.float64), torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="must lie in"):
        bad = cols.copy()
        bad[0] = 99
        sdt.solve_values(values, b, indptr=indptr, indices=bad)


def test_bad_arguments():
    v = torch.ones(2, dtype=torch.float64)
    with pytest.raises(TypeError, match="not both and not neither"):
        sdt.solve_values(v, v, indptr=[0, 1, 2], indices=[0, 1], row=[0, 1], col=[0, 1])
    with pytest.raises(TypeError, match=r"\(values, \(indptr, indices\)\)"):
        sdt.solve((v,), v)
    with pytest.raises(TypeError, match="must be a torch sparse"):
        sdt.solve(np.eye(2), v)
    with pytest.raises(TypeError, match="float32, float64"):
        sdt.solve(torch.eye(2, dtype=torch.int64), torch.ones(2, dtype=torch.int64))


def test_nonfinite_and_singular():
    indptr, indices = np.array([0, 1, 2]), np.array([0, 1])
    b = torch.ones(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="NaN or infinite"):
        sdt.solve_values(torch.tensor([1.0, np.nan], dtype=torch.float64), b,
                         indptr=indptr, indices=indices)
    with pytest.raises(sd.SingularMatrixError):
        sdt.solve_values(torch.tensor([1.0, 0.0], dtype=torch.float64), b,
                         indptr=indptr, indices=indices)
    v = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    x = sdt.solve_values(v, b, indptr=indptr, indices=indices, on_failure="nan")
    assert torch.isnan(x).all()
    x.sum().backward()
    assert torch.isnan(v.grad).all()   # never a finite gradient of a failed solve


def test_import_does_not_pull_frameworks():
    code = ("import sys, sparsediff; "
            "print(any(m in sys.modules for m in ('torch', 'jax', 'tensorflow')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_missing_torch_names_the_extra():
    code = ("import sys; sys.modules['torch'] = None\n"
            "try:\n    import sparsediff.torch\n"
            "except ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert "pip install sparsediff[torch]" in out.stdout
