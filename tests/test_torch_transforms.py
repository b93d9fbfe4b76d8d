"""PyTorch glue under the framework's own transforms: torch.func and torch.compile.

Every derivative is checked against the same computation on the dense matrix
with ``torch.linalg.solve`` (float64, complex128 where the transform allows
complex inputs), plus central differences and the dot-product test for the
transform-built gradients. The pattern is given as integer *tensors* created
outside the transform, the case that used to fail with "Cannot access data
pointer of Tensor that doesn't have storage".
"""

import numpy as np
import pytest
from conftest import random_pattern

torch = pytest.importorskip("torch")
sdt = pytest.importorskip("sparsediff.torch")

from torch.func import grad, hessian, jacfwd, jacrev, jvp, vjp, vmap  # noqa: E402

pytestmark = [
    pytest.mark.torch,
    pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta"),
    pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly"),
]

F64 = torch.float64
TOL = dict(rtol=1e-10, atol=1e-12)


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


def _problem(rng, n=5, extra=2, dtype=F64):
    """CSR pattern (unsorted columns, duplicates) as int64 tensors, values, b."""
    indptr, cols, rows = random_pattern(rng, n, extra)
    v = rng.standard_normal(rows.size)
    v = np.where(rows == cols, v + 2.0 * n, v)
    b = rng.standard_normal(n)
    if dtype.is_complex:
        v = v + 1j * rng.standard_normal(rows.size)
        b = b + 1j * rng.standard_normal(n)
    return dict(indptr=torch.from_numpy(indptr), indices=torch.from_numpy(cols),
                rows=torch.from_numpy(rows), cols=torch.from_numpy(cols), n=n,
                values=torch.tensor(v, dtype=dtype), b=torch.tensor(b, dtype=dtype))


def _ours(p):
    def f(values, b):
        return sdt.solve_values(values, b, indptr=p["indptr"], indices=p["indices"])
    return f


def _oracle(p):
    def f(values, b):
        A = torch.zeros((p["n"], p["n"]), dtype=values.dtype)
        A = A.index_put((p["rows"], p["cols"]), values, accumulate=True)
        return torch.linalg.solve(A, b)
    return f


def _loss(solve_fn):
    def L(values, b):
        x = solve_fn(values, b)
        return (x.abs() ** 3).sum() + (x * x).real.sum()
    return L


def _close(a, c, **tol):
    a, c = (t.detach().numpy() if isinstance(t, torch.Tensor) else t for t in (a, c))
    np.testing.assert_allclose(a, c, **(tol or TOL))


# ---------------------------------------------------------------------------
# torch.func.grad, jvp (pattern as index tensors)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_func_grad_matches_dense(rng, dtype):
    p = _problem(rng, dtype=dtype)
    ours = grad(_loss(_ours(p)), argnums=(0, 1))(p["values"], p["b"])
    ref = grad(_loss(_oracle(p)), argnums=(0, 1))(p["values"], p["b"])
    for a, c in zip(ours, ref):
        _close(a, c)


def test_func_grad_central_differences(rng):
    p = _problem(rng, n=6)
    L = _loss(_ours(p))
    gv, gb = grad(L, argnums=(0, 1))(p["values"], p["b"])
    dv = torch.tensor(rng.standard_normal(p["values"].shape[0]))
    db = torch.tensor(rng.standard_normal(6))
    h = 1e-6
    fd = (L(p["values"] + h * dv, p["b"] + h * db)
          - L(p["values"] - h * dv, p["b"] - h * db)) / (2 * h)
    pred = (gv * dv).sum() + (gb * db).sum()
    assert abs(float(fd - pred)) <= 1e-7 * max(1.0, abs(float(pred)))


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_func_jvp_matches_dense_and_dot_product(rng, dtype):
    p = _problem(rng, dtype=dtype)
    args = (p["values"], p["b"])
    u = tuple(torch.randn_like(a) for a in args)
    _, ju = jvp(_ours(p), args, u)
    _, ref = jvp(_oracle(p), args, u)
    _close(ju, ref)
    w = torch.randn_like(p["b"])
    _, vjp_fn = vjp(_ours(p), *args)
    jhw = vjp_fn(w)
    lhs = (ju.conj() * w).sum().real                                # Re <J u, w>
    rhs = sum((a.conj() * c).sum().real for a, c in zip(u, jhw))   # Re <u, Jᴴ w>
    assert abs(float(lhs - rhs)) <= 1e-12 * max(1.0, abs(float(lhs)))


def test_pattern_as_numpy_and_tensors_agree_under_grad(rng):
    p = _problem(rng)
    q = dict(p, indptr=p["indptr"].numpy(), indices=p["indices"].numpy())
    a = grad(_loss(_ours(p)))(p["values"], p["b"])
    c = grad(_loss(_ours(q)))(p["values"], p["b"])
    _close(a, c, rtol=0, atol=0)


# ---------------------------------------------------------------------------
# vmap
# ---------------------------------------------------------------------------


def _count_factorizations(monkeypatch):
    from sparsediff.solvers import direct

    count = {"n": 0}
    orig = direct.DirectEngine._factor

    def counting(self, dtype):
        if dtype not in self._factors:
            count["n"] += 1
        return orig(self, dtype)

    monkeypatch.setattr(direct.DirectEngine, "_factor", counting)
    return count


@pytest.mark.parametrize("m", [None, 2])
def test_vmap_over_b_is_one_multicolumn_solve(rng, monkeypatch, m):
    p = _problem(rng)
    count = _count_factorizations(monkeypatch)
    shape = (4, p["n"]) if m is None else (4, p["n"], m)
    bs = torch.tensor(rng.standard_normal(shape))
    xs = vmap(_ours(p), in_dims=(None, 0))(p["values"], bs)
    assert count["n"] == 1
    _close(xs, vmap(_oracle(p), in_dims=(None, 0))(p["values"], bs))
    # batch dimension elsewhere than first
    xs1 = vmap(_ours(p), in_dims=(None, -1), out_dims=-1)(p["values"], bs.movedim(0, -1))
    _close(xs1.movedim(-1, 0), xs)


def test_vmap_over_values_is_one_batched_solver(rng, monkeypatch):
    # one sparsediff.BatchedSolver for the batch (docs/batched.md), no
    # per-element Solver
    from sparsediff.batched import _api

    p = _problem(rng)
    count = _count_factorizations(monkeypatch)
    built = []
    init = _api.BatchedSolver.__init__
    monkeypatch.setattr(_api.BatchedSolver, "__init__",
                        lambda self, *a, **k: built.append(1) or init(self, *a, **k))
    vs = p["values"] + 0.1 * torch.tensor(rng.standard_normal((3, p["values"].shape[0])))
    bs = torch.tensor(rng.standard_normal((3, p["n"])))
    xs = vmap(_ours(p), in_dims=(0, None))(vs, p["b"])
    assert count["n"] == 0 and len(built) == 1
    _close(xs, vmap(_oracle(p), in_dims=(0, None))(vs, p["b"]))
    xs = vmap(_ours(p))(vs, bs)
    _close(xs, vmap(_oracle(p))(vs, bs))


def test_vmap_of_grad_and_grad_of_vmap(rng):
    p = _problem(rng)
    vs = p["values"] + 0.1 * torch.tensor(rng.standard_normal((3, p["values"].shape[0])))
    bs = torch.tensor(rng.standard_normal((3, p["n"])))
    # per-sample gradients: vmap outside grad, over values and b
    ours = vmap(grad(_loss(_ours(p)), argnums=(0, 1)))(vs, bs)
    ref = vmap(grad(_loss(_oracle(p)), argnums=(0, 1)))(vs, bs)
    for a, c in zip(ours, ref):
        _close(a, c)

    def total(solve_fn):
        return lambda v, b: vmap(_loss(solve_fn))(v, b).sum()

    ours = grad(total(_ours(p)), argnums=(0, 1))(vs, bs)
    ref = grad(total(_oracle(p)), argnums=(0, 1))(vs, bs)
    for a, c in zip(ours, ref):
        _close(a, c)


# ---------------------------------------------------------------------------
# jacrev, jacfwd, hessian
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("jac", [jacrev, jacfwd], ids=["jacrev", "jacfwd"])
def test_jacobians_match_dense(rng, jac):
    p = _problem(rng)
    ours = jac(_ours(p), argnums=(0, 1))(p["values"], p["b"])
    ref = jac(_oracle(p), argnums=(0, 1))(p["values"], p["b"])
    for a, c in zip(ours, ref):
        assert a.shape == c.shape
        _close(a, c)


def test_jacrev_jacfwd_dot_product(rng):
    p = _problem(rng)
    Jr = jacrev(_ours(p))(p["values"], p["b"])          # ∂x/∂values by VJPs
    Jf = jacfwd(_ours(p))(p["values"], p["b"])          # the same by JVPs
    u = torch.randn(p["values"].shape[0], dtype=F64)
    w = torch.randn(p["n"], dtype=F64)
    assert abs(float(w @ (Jf @ u) - (Jr.T @ w) @ u)) <= 1e-12 * float(
        (Jf @ u).norm() * w.norm() + 1)


def test_hessian_matches_dense(rng):
    p = _problem(rng)
    ours = hessian(_loss(_ours(p)), argnums=(0, 1))(p["values"], p["b"])
    ref = hessian(_loss(_oracle(p)), argnums=(0, 1))(p["values"], p["b"])
    for row_o, row_r in zip(ours, ref):
        for a, c in zip(row_o, row_r):
            _close(a, c, rtol=1e-9, atol=1e-10)
    # symmetric (the cross blocks are each other's transpose)
    _close(ours[0][1], ours[1][0].T, rtol=1e-9, atol=1e-10)


def test_jacrev_of_jacrev_matches_dense(rng):
    p = _problem(rng, n=4)
    ours = jacrev(jacrev(_ours(p), argnums=1))(p["values"], p["b"])
    ref = jacrev(jacrev(_oracle(p), argnums=1))(p["values"], p["b"])
    _close(ours, ref, rtol=1e-9, atol=1e-10)


# ---------------------------------------------------------------------------
# sparsediff.torch.solve with torch sparse tensors under torch.func
# ---------------------------------------------------------------------------


def _dense_A(p):
    A = torch.zeros((p["n"], p["n"]), dtype=F64)
    return A.index_put((p["rows"], p["cols"]), p["values"], accumulate=True)


@pytest.mark.parametrize("layout", ["coo", "coo_uncoalesced", "dense"])
def test_solve_sparse_tensor_under_grad_jvp_vmap(rng, layout):
    p = _problem(rng)
    Ad = _dense_A(p)
    if layout == "coo":
        A = Ad.to_sparse()
    elif layout == "coo_uncoalesced":
        A = torch.sparse_coo_tensor(torch.stack([p["rows"], p["cols"]]), p["values"],
                                    Ad.shape)
    else:
        A = Ad

    def loss_ours(b):
        return _loss(lambda _, r: sdt.solve(A, r))(None, b)

    def loss_ref(b):
        return _loss(lambda _, r: torch.linalg.solve(Ad, r))(None, b)

    _close(grad(loss_ours)(p["b"]), grad(loss_ref)(p["b"]))
    db = torch.randn_like(p["b"])
    _close(jvp(lambda r: sdt.solve(A, r), (p["b"],), (db,))[1],
           jvp(lambda r: torch.linalg.solve(Ad, r), (p["b"],), (db,))[1])
    bs = torch.randn(3, p["n"], dtype=F64)
    _close(vmap(lambda r: sdt.solve(A, r))(bs),
           vmap(lambda r: torch.linalg.solve(Ad, r))(bs))
    _close(hessian(loss_ours)(p["b"]), hessian(loss_ref)(p["b"]),
           rtol=1e-9, atol=1e-10)


def test_solve_coo_requires_grad_inside_func_grad(rng):
    """A COO ``A`` with ``requires_grad`` keeps its ordinary gradient."""
    p = _problem(rng)
    A = _dense_A(p).to_sparse().requires_grad_()
    Ad = _dense_A(p).requires_grad_()
    gb = grad(_loss(lambda _, r: sdt.solve(A, r)), argnums=1)(None, p["b"])
    gb.sum().backward()
    gb_ref = grad(_loss(lambda _, r: torch.linalg.solve(Ad, r)), argnums=1)(None, p["b"])
    gb_ref.sum().backward()
    _close(gb, gb_ref)
    _close(A.grad.to_dense(), Ad.grad * (_dense_A(p) != 0))


def test_solve_csr_vmap_works_and_grad_raises_clearly(rng):
    p = _problem(rng)
    Ad = _dense_A(p)
    A = Ad.to_sparse_csr()
    bs = torch.randn(3, p["n"], dtype=F64)
    _close(vmap(lambda r: sdt.solve(A, r))(bs),
           vmap(lambda r: torch.linalg.solve(Ad, r))(bs))
    with pytest.raises(TypeError, match=r"sparse CSR `A` cannot be read inside "
                                        r"torch\.func\.grad.*\(values, \(indptr"):
        grad(lambda r: sdt.solve(A, r).sum())(p["b"])
    # the suggested form works
    parts = (A.values(), (A.crow_indices(), A.col_indices()))
    _close(grad(lambda r: sdt.solve(parts, r).sum())(p["b"]),
           grad(lambda r: torch.linalg.solve(Ad, r).sum())(p["b"]))


# ---------------------------------------------------------------------------
# torch.compile: the solve is one opaque call (a graph break), same numbers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_torch_compile_value_and_gradient(rng, backend):
    """Same value and gradients as eager, also when a new size recompiles
    (dynamic shapes: Dynamo used to crash tracing into the solve)."""
    torch._dynamo.reset()

    def f(values, b, indptr, indices):
        x = sdt.solve_values(values * 1.0, torch.sin(b), indptr=indptr, indices=indices)
        return (x ** 2).sum() + x.cos().sum()

    compiled = torch.compile(f, backend=backend)
    for n in (4, 5, 6):
        p = _problem(rng, n=n)
        results = []
        for fn in (compiled, f):
            v = p["values"].clone().requires_grad_()
            b = p["b"].clone().requires_grad_()
            y = fn(v, b, p["indptr"], p["indices"])
            y.backward()
            results.append((y.detach(), v.grad, b.grad))
        for a, c in zip(*results):
            _close(a, c, rtol=1e-12, atol=1e-13)


def test_torch_compile_sparse_csr_captured(rng):
    torch._dynamo.reset()
    p = _problem(rng)
    Ad = _dense_A(p)
    A = Ad.to_sparse_csr().requires_grad_()

    def f(b):
        return (sdt.solve(A, b) ** 2).sum()

    b = p["b"].clone().requires_grad_()
    y = torch.compile(f, backend="eager")(b)
    y.backward()
    bref = p["b"].clone().requires_grad_()
    Aref = Ad.clone().requires_grad_()
    yr = (torch.linalg.solve(Aref, bref) ** 2).sum()
    yr.backward()
    _close(y.detach(), yr.detach())
    _close(b.grad, bref.grad)
    _close(A.grad.to_dense(), Aref.grad * (Ad != 0))
