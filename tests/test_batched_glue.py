"""Batches of systems on one pattern through the framework glue.

* PyTorch: nested ``torch.func.vmap`` over the values (and ``b``) is one
  :class:`sparsediff.BatchedSolver` for the product of the batch sizes, with
  results and gradients equal to a loop of single solves.
* JAX: nested ``jax.vmap`` over ``data`` and ``b`` is one host call, with one
  factorization per distinct matrix.
* TensorFlow: values of shape (B, nnz) have second derivatives (nested tapes),
  checked by central differences of the first derivatives, a dense oracle and
  the symmetry of the Hessian.

Every reference is a loop over ``sparsediff.solve`` per element, or the same
computation on dense matrices with the framework's own dense solve.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import count_batched, random_pattern

import sparsediff as sd

N = 5


@pytest.fixture
def rng():
    return np.random.default_rng(20240614)


def _pattern(rng, n=N, extra=2):
    """A nonsymmetric CSR pattern with unsorted columns and duplicates, and
    its base values (diagonally dominant)."""
    indptr, cols, rows = random_pattern(rng, n, extra)
    base = rng.standard_normal(rows.size)
    base = np.where(rows == cols, base + 2.0 * n, base)
    return indptr, cols, rows, base


def _values(rng, base, shape):
    return base * (1 + 0.3 * rng.random(shape + base.shape))


def _matrix(indptr, indices, v):
    return sp.csr_array((v, indices, indptr), shape=(indptr.size - 1,) * 2)


def _pick(arr, axes, i, j):
    """Element (i, j) of an operand batched along the (outer, inner) levels
    named by ``axes`` (None: not batched at that level)."""
    if axes[0] is not None:
        arr = arr[i]
    if axes[1] is not None:
        arr = arr[j]
    return arr


# in_dims of (values, b) at the (outer, inner) vmap level
NESTED = {
    "both-both": ((0, 0), (0, 0)),
    "values-outer-b-inner": ((0, None), (None, 0)),
    "values-inner-b-outer": ((None, 0), (0, None)),
    "values-outer-b-both": ((0, 0), (None, 0)),
    "values-both-b-outer": ((0, 0), (0, None)),
    "values-both-b-none": ((0, None), (0, None)),
}
CO, CI = 3, 2


def _nested_operands(rng, base, axes_v, axes_b, m=None):
    vshape = tuple(c for c, ax in zip((CO, CI), axes_v) if ax is not None)
    bshape = tuple(c for c, ax in zip((CO, CI), axes_b) if ax is not None)
    core = (N,) if m is None else (N, m)
    return _values(rng, base, vshape), rng.standard_normal(bshape + core)


def _axes(name):
    (vo, bo), (vi, bi) = NESTED[name]
    return (vo, vi), (bo, bi)


def _distinct(axes_v):
    """How many distinct matrices a nested batch holds."""
    return (CO if axes_v[0] is not None else 1) * (CI if axes_v[1] is not None else 1)


# ---------------------------------------------------------------------------
# PyTorch: nested torch.func.vmap
# ---------------------------------------------------------------------------


@pytest.fixture
def tp(rng):
    torch = pytest.importorskip("torch")
    sdt = pytest.importorskip("sparsediff.torch")
    indptr, cols, rows, base = _pattern(rng)
    ip, ix = torch.tensor(indptr), torch.tensor(cols)

    def solve(v, b):
        return sdt.solve_values(v, b, indptr=ip, indices=ix)

    def oracle(v, b):
        A = torch.zeros((N, N), dtype=v.dtype)
        A = A.index_put((torch.tensor(rows), torch.tensor(cols)), v, accumulate=True)
        return torch.linalg.solve(A, b)

    return dict(torch=torch, indptr=indptr, cols=cols, base=base, solve=solve,
                oracle=oracle)


def _nest(fn, name):
    from torch.func import vmap

    (vo, bo), (vi, bi) = NESTED[name]
    return vmap(vmap(fn, in_dims=(vi, bi)), in_dims=(vo, bo))


def _loss(x):
    return (x ** 3).sum() + (x * x).sum()


@pytest.mark.parametrize("m", [None, 2])
@pytest.mark.parametrize("name", list(NESTED))
def test_torch_nested_vmap_is_one_batched_solve(rng, tp, monkeypatch, name, m):
    torch = tp["torch"]
    axes_v, axes_b = _axes(name)
    v, b = _nested_operands(rng, tp["base"], axes_v, axes_b, m)
    count = count_batched(monkeypatch)
    x = _nest(tp["solve"], name)(torch.tensor(v), torch.tensor(b))
    # one batched solver, one factorization per distinct matrix, one solve
    assert count == {"build": 1, "sizes": [_distinct(axes_v)], "solve": 1}
    assert x.shape == (CO, CI) + b.shape[b.ndim - (1 if m is None else 2):]
    for i in range(CO):
        for j in range(CI):
            ref = sd.solve(_matrix(tp["indptr"], tp["cols"], _pick(v, axes_v, i, j)),
                           _pick(b, axes_b, i, j)).x
            np.testing.assert_allclose(x[i, j].numpy(), ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", list(NESTED))
def test_torch_grad_of_nested_vmap_matches_loop(rng, tp, monkeypatch, name):
    torch = tp["torch"]
    from torch.func import grad

    axes_v, axes_b = _axes(name)
    v, b = _nested_operands(rng, tp["base"], axes_v, axes_b)
    count = count_batched(monkeypatch)

    def total(vv, bb):
        return _nest(lambda a, c: _loss(tp["solve"](a, c)), name)(vv, bb).sum()

    gv, gb = grad(total, argnums=(0, 1))(torch.tensor(v), torch.tensor(b))
    assert count == {"build": 1, "sizes": [_distinct(axes_v)], "solve": 2}
    # reference: a loop of single solves and their vjp, summed over the
    # elements that share an operand (an operand not batched at a level)
    rv, rb = np.zeros_like(v), np.zeros_like(b)
    for i in range(CO):
        for j in range(CI):
            s = sd.solve(_matrix(tp["indptr"], tp["cols"], _pick(v, axes_v, i, j)),
                         _pick(b, axes_b, i, j))
            gA, gbe = s.vjp(3 * s.x ** 2 + 2 * s.x)
            _pick(rv, axes_v, i, j)[...] += gA.data
            _pick(rb, axes_b, i, j)[...] += gbe
    np.testing.assert_allclose(gv.numpy(), rv, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(gb.numpy(), rb, rtol=1e-11, atol=1e-13)
    # central differences of the nested-vmapped loss in float64
    du, db = rng.standard_normal(v.shape), rng.standard_normal(b.shape)
    h = 1e-6
    fd = (total(torch.tensor(v + h * du), torch.tensor(b + h * db))
          - total(torch.tensor(v - h * du), torch.tensor(b - h * db))) / (2 * h)
    pred = float((gv.numpy() * du).sum() + (gb.numpy() * db).sum())
    assert abs(float(fd) - pred) <= 1e-7 * max(1.0, abs(pred))


def test_torch_per_sample_gradients_under_nested_vmap(rng, tp, monkeypatch):
    torch = tp["torch"]
    from torch.func import grad, vmap

    v, b = _nested_operands(rng, tp["base"], (0, 0), (0, 0))
    count = count_batched(monkeypatch)
    per = vmap(vmap(grad(lambda a, c: _loss(tp["solve"](a, c)), argnums=(0, 1))))
    gv, gb = per(torch.tensor(v), torch.tensor(b))
    assert count == {"build": 1, "sizes": [CO * CI], "solve": 2}
    ref = vmap(vmap(grad(lambda a, c: _loss(tp["oracle"](a, c)), argnums=(0, 1))))
    rv, rb = ref(torch.tensor(v), torch.tensor(b))
    np.testing.assert_allclose(gv.numpy(), rv.numpy(), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(gb.numpy(), rb.numpy(), rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("name", ["both-both", "values-outer-b-both"])
def test_torch_jacrev_of_nested_vmap_matches_dense_and_dot_product(rng, tp, name):
    torch = tp["torch"]
    from torch.func import jacfwd, jacrev, jvp, vjp

    axes_v, axes_b = _axes(name)
    v, b = _nested_operands(rng, tp["base"], axes_v, axes_b)
    v, b = torch.tensor(v), torch.tensor(b)
    ours = _nest(tp["solve"], name)
    ref = _nest(tp["oracle"], name)
    for jac in (jacrev, jacfwd):
        for a, c in zip(jac(ours, argnums=(0, 1))(v, b), jac(ref, argnums=(0, 1))(v, b)):
            np.testing.assert_allclose(a.numpy(), c.numpy(), rtol=1e-10, atol=1e-12)
    # <J u, w> = <u, Jᵀ w> for the nested-vmapped solve
    u = (torch.randn_like(v), torch.randn_like(b))
    _, ju = jvp(ours, (v, b), u)
    w = torch.randn_like(ju)
    _, pull = vjp(ours, v, b)
    jw = pull(w)
    lhs = float((ju * w).sum())
    rhs = float(sum((a * c).sum() for a, c in zip(u, jw)))
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))


def test_torch_vmap_over_batched_values_and_hessian(rng, tp, monkeypatch):
    """vmap over values that are already (B, nnz); and the Hessian of a
    nested-vmapped loss (second derivatives through the flattened solve)."""
    torch = tp["torch"]
    from torch.func import hessian, vmap

    v = torch.tensor(_values(rng, tp["base"], (CO, CI)))
    b = torch.tensor(rng.standard_normal((CO, CI, N)))
    count = count_batched(monkeypatch)
    x = vmap(tp["solve"])(v, b)                       # solve_values on (CI, nnz)
    assert count == {"build": 1, "sizes": [CO * CI], "solve": 1}
    np.testing.assert_allclose(x.numpy(), vmap(vmap(tp["oracle"]))(v, b).numpy(),
                               rtol=1e-12, atol=1e-14)

    # vmap over b only, values (CI, nnz) shared: more columns, CI elements
    count = count_batched(monkeypatch)
    x = vmap(lambda bb: tp["solve"](v[0], bb))(b)
    assert count == {"build": 1, "sizes": [CI], "solve": 1}
    ref = vmap(vmap(tp["oracle"]), in_dims=(None, 0))(v[0], b)
    np.testing.assert_allclose(x.numpy(), ref.numpy(), rtol=1e-12, atol=1e-14)

    def total(fn):
        return lambda vv: vmap(vmap(lambda a, c: _loss(fn(a, c))))(vv, b).sum()

    v = v[:2, :1]                                      # a small Hessian
    b = b[:2, :1]
    H = hessian(total(tp["solve"]))(v)
    ref = hessian(total(tp["oracle"]))(v)
    np.testing.assert_allclose(H.numpy(), ref.numpy(), rtol=1e-9, atol=1e-10)
    Hm = H.reshape(v.numel(), v.numel())
    np.testing.assert_allclose(Hm.numpy(), Hm.T.numpy(), rtol=1e-9, atol=1e-10)


# ---------------------------------------------------------------------------
# JAX: nested jax.vmap
# ---------------------------------------------------------------------------


@pytest.fixture
def jx(rng):
    jax = pytest.importorskip("jax")
    sdj = pytest.importorskip("sparsediff.jax")
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    sdj._CACHE.clear()
    indptr, cols, rows, base = _pattern(rng)
    ind, ptr = jax.numpy.array(cols), jax.numpy.array(indptr)
    try:
        yield dict(jax=jax, indptr=indptr, cols=cols, base=base,
                   solve=lambda d, c: sdj.solve((d, ind, ptr), c))
    finally:
        jax.config.update("jax_enable_x64", previous)
        sdj._CACHE.clear()


@pytest.mark.parametrize("name", ["both-both", "values-outer-b-inner",
                                  "values-inner-b-outer", "values-outer-b-both"])
def test_jax_nested_vmap_is_one_host_call(rng, jx, monkeypatch, name):
    jax = jx["jax"]
    (vo, bo), (vi, bi) = NESTED[name]
    axes_v, axes_b = _axes(name)
    v, b = _nested_operands(rng, jx["base"], axes_v, axes_b)

    def nest(fn):
        return jax.vmap(jax.vmap(fn, in_axes=(vi, bi)), in_axes=(vo, bo))

    count = count_batched(monkeypatch)
    x = nest(jx["solve"])(v, b)
    # one host call: one batched solver with one element per distinct matrix
    assert count == {"build": 1, "sizes": [_distinct(axes_v)], "solve": 1}

    def total(vv, bb):
        return nest(lambda a, c: _loss(jx["solve"](a, c)))(vv, bb).sum()

    gv, gb = jax.jit(jax.grad(total, argnums=(0, 1)))(v, b)
    # the forward solve again and the transposed solve, on the cached solver
    assert count["build"] == 1 and count["solve"] == 3
    rv, rb = np.zeros_like(v), np.zeros_like(b)
    for i in range(CO):
        for j in range(CI):
            s = sd.solve(_matrix(jx["indptr"], jx["cols"], _pick(v, axes_v, i, j)),
                         _pick(b, axes_b, i, j))
            np.testing.assert_allclose(np.asarray(x[i, j]), s.x, rtol=1e-12,
                                       atol=1e-14)
            gA, gbe = s.vjp(3 * s.x ** 2 + 2 * s.x)
            _pick(rv, axes_v, i, j)[...] += gA.data
            _pick(rb, axes_b, i, j)[...] += gbe
    np.testing.assert_allclose(np.asarray(gv), rv, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(np.asarray(gb), rb, rtol=1e-11, atol=1e-13)


def test_jax_nested_vmap_with_matrix_columns(rng, jx, monkeypatch):
    """``b`` of shape (n, m) with data batched at the outer level only: the
    inner batch and the m columns are columns of the outer elements' solves."""
    jax = jx["jax"]
    v = _values(rng, jx["base"], (CO,))
    b = rng.standard_normal((CO, CI, N, 2))
    count = count_batched(monkeypatch)
    x = jax.vmap(jax.vmap(jx["solve"], in_axes=(None, 0)))(v, b)
    assert count == {"build": 1, "sizes": [CO], "solve": 1}
    for i in range(CO):
        for j in range(CI):
            ref = sd.solve(_matrix(jx["indptr"], jx["cols"], v[i]), b[i, j]).x
            np.testing.assert_allclose(np.asarray(x[i, j]), ref, rtol=1e-12,
                                       atol=1e-14)


# ---------------------------------------------------------------------------
# TensorFlow: second derivatives of a batched solve
# ---------------------------------------------------------------------------


@pytest.fixture
def tfp(rng):
    tf = pytest.importorskip("tensorflow")
    sdtf = pytest.importorskip("sparsediff.tensorflow")
    indptr, cols, rows, base = _pattern(rng, n=4, extra=1)
    idx = np.stack([rows, cols], axis=1)
    n = indptr.size - 1

    def solve(v, b):
        return sdtf.solve((v, idx, (n, n)), b)

    def oracle(v, b):
        # dense matrices per element (duplicates summed), tf.linalg.solve
        B = v.shape[0]
        full = np.stack([np.repeat(np.arange(B), idx.shape[0]),
                         np.tile(idx[:, 0], B), np.tile(idx[:, 1], B)], axis=1)
        A = tf.scatter_nd(full, tf.reshape(v, [-1]), [B, n, n])
        rhs = b if b.shape.rank == 3 else b[..., None]
        x = tf.linalg.solve(A, rhs)
        return x if b.shape.rank == 3 else x[..., 0]

    return dict(tf=tf, n=n, base=base, solve=solve, oracle=oracle, idx=idx,
                indptr=indptr, cols=cols)


def _tf_loss(tf, x):
    return tf.reduce_sum(tf.math.real(x * tf.math.conj(x)) ** 2) + tf.reduce_sum(
        tf.math.real(x))


def _tf_grad(tf, solve, v, b):
    with tf.GradientTape() as tape:
        tape.watch([v, b])
        L = _tf_loss(tf, solve(v, b))
    return tape.gradient(L, [v, b])


def _tf_hvp(tf, solve, v, b, dv, db):
    """Reverse-over-reverse: nested tapes."""
    with tf.GradientTape() as outer:
        outer.watch([v, b])
        gv, gb = _tf_grad(tf, solve, v, b)
        s = tf.reduce_sum(tf.math.real(tf.math.conj(gv) * dv)) + tf.reduce_sum(
            tf.math.real(tf.math.conj(gb) * db))
    return outer.gradient(s, [v, b])


def _tf_operands(rng, tfp, m=None, dtype=np.float64, B=3):
    tf = tfp["tf"]
    v = _values(rng, tfp["base"], (B,))
    bshape = (B, tfp["n"]) if m is None else (B, tfp["n"], m)
    b = rng.standard_normal(bshape)
    if np.dtype(dtype).kind == "c":
        v = v + 0.2j * rng.standard_normal(v.shape)
        b = b + 1j * rng.standard_normal(b.shape)
    return tf.constant(v.astype(dtype)), tf.constant(b.astype(dtype))


@pytest.mark.parametrize("m, graph", [(None, False), (2, False), (None, True)],
                         ids=["eager", "eager-columns", "tf.function"])
def test_tensorflow_batched_hvp_central_differences(rng, tfp, graph, m):
    tf = tfp["tf"]
    v, b = _tf_operands(rng, tfp, m)
    dv = tf.constant(rng.standard_normal(v.shape))
    db = tf.constant(rng.standard_normal(b.shape))
    def hvp(*a):
        return _tf_hvp(tf, tfp["solve"], *a)

    hv, hb = (tf.function(hvp) if graph else hvp)(v, b, dv, db)
    assert hv is not None and hb is not None
    h = 1e-5
    gp = _tf_grad(tf, tfp["solve"], v + h * dv, b + h * db)
    gm = _tf_grad(tf, tfp["solve"], v - h * dv, b - h * db)
    for got, p, q in zip((hv, hb), gp, gm):
        fd = (p - q).numpy() / (2 * h)
        np.testing.assert_allclose(got.numpy(), fd, rtol=1e-6,
                                   atol=1e-7 * np.abs(fd).max())


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_tensorflow_batched_hvp_matches_dense_and_is_symmetric(rng, tfp, dtype):
    tf = tfp["tf"]
    v, b = _tf_operands(rng, tfp, dtype=dtype)

    def randn(t):
        r = rng.standard_normal(t.shape)
        if dtype == np.complex128:
            r = r + 1j * rng.standard_normal(t.shape)
        return tf.constant(r.astype(dtype))

    u = (randn(v), randn(b))
    w = (randn(v), randn(b))
    Hu = _tf_hvp(tf, tfp["solve"], v, b, *u)
    ref = _tf_hvp(tf, tfp["oracle"], v, b, *u)
    for a, c in zip(Hu, ref):
        np.testing.assert_allclose(a.numpy(), c.numpy(), rtol=1e-9, atol=1e-11)
    # the Hessian (of a real loss, as a real-linear map) is symmetric:
    # Re<w, H u> = Re<u, H w>
    Hw = _tf_hvp(tf, tfp["solve"], v, b, *w)
    lhs = sum(float(tf.reduce_sum(tf.math.real(tf.math.conj(p) * q)))
              for p, q in zip(w, Hu))
    rhs = sum(float(tf.reduce_sum(tf.math.real(tf.math.conj(p) * q)))
              for p, q in zip(u, Hw))
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


def test_tensorflow_batched_second_order_reuses_one_solver(rng, tfp, monkeypatch):
    tf = tfp["tf"]
    v, b = _tf_operands(rng, tfp)
    count = count_batched(monkeypatch)
    hv, hb = _tf_hvp(tf, tfp["solve"], v, b, tf.ones_like(v), tf.ones_like(b))
    assert count["build"] == 1 and count["sizes"] == [3]
    # forward, adjoint, and the solves of the second-order sweep: every one
    # on the forward's factorizations
    assert count["solve"] >= 3
    # first derivatives still equal the core's BatchedSolution.vjp
    gv, gb = _tf_grad(tf, tfp["solve"], v, b)
    coo = sp.coo_array((np.zeros(tfp["idx"].shape[0]),
                        (tfp["idx"][:, 0], tfp["idx"][:, 1])), shape=(tfp["n"],) * 2)
    ref = sd.batched_solve(coo, v.numpy(), b.numpy())
    x = ref.x
    rv, rb = ref.vjp(4 * (x * x) * x + 1.0)
    np.testing.assert_allclose(gv.numpy(), rv, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(gb.numpy(), rb, rtol=1e-11, atol=1e-13)


def test_tensorflow_batched_forward_over_reverse(rng, tfp):
    """ForwardAccumulator around a tape (eager): the Hessian–vector product."""
    tf = tfp["tf"]
    v, b = _tf_operands(rng, tfp)
    dv = tf.constant(rng.standard_normal(v.shape))
    db = tf.constant(rng.standard_normal(b.shape))
    with tf.autodiff.ForwardAccumulator([v, b], [dv, db]) as acc:
        g = _tf_grad(tf, tfp["solve"], v, b)
    ours = [acc.jvp(gi) for gi in g]
    ref = _tf_hvp(tf, tfp["oracle"], v, b, dv, db)
    for a, c in zip(ours, ref):
        assert a is not None
        np.testing.assert_allclose(a.numpy(), c.numpy(), rtol=1e-9, atol=1e-11)


# ---------------------------------------------------------------------------
# Which options go to one batched solver
# ---------------------------------------------------------------------------


def test_accepts_names_what_the_batch_takes():
    from sparsediff.batched import accepts

    for method in ("auto", "direct", "cg", "bicgstab", "gmres", "minres",
                   ("gmres", {"restart": 5})):
        assert accepts(method)
    for method, M in (("cg", "amg"), ("minres", "jacobi"), ("gmres", "ilu"),
                      ("bicgstab", "ilu"), ("auto", "amg")):
        assert accepts(method, M)
    for method, M in (("direct", "jacobi"), ("cg", "ilu"), ("minres", "ilu"),
                      ("qmr", None), ("cg", "sor"), (("cg", {}), None),
                      (("gmres",), None)):
        assert not accepts(method, M)


KRYLOV_OPTIONS = [("gmres", "amg"), ("gmres", "ilu"), ("bicgstab", "ilu"),
                  (("gmres", {"restart": 3}), "jacobi")]


@pytest.mark.parametrize("method, M", KRYLOV_OPTIONS)
def test_torch_vmap_with_new_batched_options_is_one_solver(rng, tp, monkeypatch,
                                                           method, M):
    """GMRES, ILU and AMG under vmap over the values are one batched solver
    (before: one system per element), equal to single solves."""
    torch = tp["torch"]
    from torch.func import vmap

    sdt = pytest.importorskip("sparsediff.torch")
    ip, ix = torch.tensor(tp["indptr"]), torch.tensor(tp["cols"])
    v = _values(rng, tp["base"], (CO,))
    b = rng.standard_normal((CO, N))
    count = count_batched(monkeypatch)

    def solve(vv, bb):
        return sdt.solve_values(vv, bb, indptr=ip, indices=ix, method=method, M=M,
                                rtol=1e-12)

    x = vmap(solve)(torch.tensor(v), torch.tensor(b))
    assert count == {"build": 1, "sizes": [CO], "solve": 1}
    for e in range(CO):
        ref = sd.solve(_matrix(tp["indptr"], tp["cols"], v[e]), b[e], method=method,
                       M=M, rtol=1e-12).x
        np.testing.assert_allclose(x[e].numpy(), ref, rtol=1e-9, atol=1e-11)


def test_jax_vmap_with_new_batched_options_is_one_host_call(rng, jx, monkeypatch):
    jax = jx["jax"]
    sdj = pytest.importorskip("sparsediff.jax")
    ptr, ind = jax.numpy.asarray(jx["indptr"]), jax.numpy.asarray(jx["cols"])
    v = _values(rng, jx["base"], (CO,))
    b = rng.standard_normal((CO, N))
    count = count_batched(monkeypatch)

    def solve(d, c):
        return sdj.solve((d, ind, ptr), c, method="gmres", M="ilu", rtol=1e-12)

    x = jax.vmap(solve)(v, b)
    assert count["build"] == 1 and count["sizes"] == [CO]
    for e in range(CO):
        ref = sd.solve(_matrix(jx["indptr"], jx["cols"], v[e]), b[e], method="gmres",
                       M="ilu", rtol=1e-12).x
        np.testing.assert_allclose(np.asarray(x[e]), ref, rtol=1e-9, atol=1e-11)
