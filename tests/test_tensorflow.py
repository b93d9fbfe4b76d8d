"""TensorFlow glue: gradients (dense oracle, finite differences, dot product),
entry order and duplicates, tf.function, errors."""

import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")

import sparsediff as sd  # noqa: E402
import sparsediff.tensorflow as sdtf  # noqa: E402

pytestmark = pytest.mark.tensorflow

DTYPES = [tf.float32, tf.float64, tf.complex64, tf.complex128]
RHS = [None, 3]  # b of shape (n,) or (n, 3)


@pytest.fixture
def rng():
    return np.random.default_rng(8642)


def _randn(rng, shape, dtype):
    out = rng.standard_normal(shape)
    if dtype.is_complex:
        out = out + 1j * rng.standard_normal(shape)
    return out.astype(dtype.as_numpy_dtype)


def _system(rng, n, dtype, messy=False):
    """``(values, indices)`` of a well-conditioned n×n matrix, caller's order.

    ``messy``: entries shuffled (not row-major), some split into duplicates
    that sum to the value, and a stored zero in the pattern.
    """
    D = _randn(rng, (n, n), dtype) * (rng.random((n, n)) < 0.4)
    D[np.arange(n), np.arange(n)] = np.abs(D).sum(axis=1) + 1.0
    rows, cols = np.nonzero(D)
    values = D[rows, cols]
    if messy:
        zr, zc = np.nonzero(D == 0)
        rows, cols = np.append(rows, zr[0]), np.append(cols, zc[0])
        values = np.append(values, 0.0).astype(D.dtype)
        pick = np.flatnonzero(rng.random(rows.size) < 0.4)
        pick = np.union1d(pick, [0])
        part = (values[pick] * rng.uniform(0.2, 0.8, pick.size)).astype(D.dtype)
        values[pick] -= part
        rows, cols = np.append(rows, rows[pick]), np.append(cols, cols[pick])
        values = np.append(values, part)
        order = rng.permutation(rows.size)
        rows, cols, values = rows[order], cols[order], values[order]
    indices = np.stack([rows, cols], axis=1).astype(np.int64)
    return tf.constant(values), tf.constant(indices)


def _loss(x, w):
    """A real, nonlinear loss: Re⟨w, x⟩ + ½‖x‖²."""
    lin = tf.math.real(tf.reduce_sum(tf.math.conj(w) * x))
    return lin + 0.5 * tf.reduce_sum(tf.math.real(tf.math.conj(x) * x))


def _grads(solve, values, b, w):
    with tf.GradientTape() as tape:
        tape.watch([values, b])
        x = solve(values, b)
        loss = _loss(x, w)
    return x, tape.gradient(loss, [values, b])


def _ours(indices, n, form="sparse", **options):
    def solve(values, b):
        A = (tf.sparse.SparseTensor(indices, values, [n, n]) if form == "sparse"
             else (values, indices, [n, n]))
        return sdtf.solve(A, b, **options)

    return solve


def _oracle(indices, n):
    """Dense oracle: ``tf.linalg.solve`` on the scattered matrix (duplicates summed),
    so its gradient with respect to the values is masked by the pattern."""

    def solve(values, b):
        D = tf.scatter_nd(indices, values, [n, n])
        x = tf.linalg.solve(D, b[:, None] if b.shape.rank == 1 else b)
        return x[:, 0] if b.shape.rank == 1 else x

    return solve


def _close(a, b, dtype):
    rtol = 1e-4 if dtype in (tf.float32, tf.complex64) else 1e-10
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol,
                               atol=rtol * np.abs(np.asarray(b)).max())


# ---------------------------------------------------------------------------
# gradients: dense oracle, finite differences, dot product
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("m", RHS)
@pytest.mark.parametrize("form", ["sparse", "tuple"])
def test_matches_dense_oracle(rng, dtype, m, form):
    n = 7
    values, indices = _system(rng, n, dtype)
    b = tf.constant(_randn(rng, (n,) if m is None else (n, m), dtype))
    w = tf.constant(_randn(rng, b.shape, dtype))
    x, (gv, gb) = _grads(_ours(indices, n, form), values, b, w)
    x_ref, (gv_ref, gb_ref) = _grads(_oracle(indices, n), values, b, w)
    assert x.dtype == dtype and x.shape == b.shape
    assert gv.dtype == dtype and gv.shape == values.shape
    assert gb.dtype == dtype and gb.shape == b.shape
    _close(x, x_ref, dtype)
    _close(gv, gv_ref, dtype)
    _close(gb, gb_ref, dtype)


@pytest.mark.parametrize("dtype", [tf.float64, tf.complex128], ids=lambda d: d.name)
def test_unordered_entries_and_duplicates(rng, dtype):
    n = 6
    values, indices = _system(rng, n, dtype, messy=True)
    keys = indices.numpy() @ [n, 1]
    assert np.unique(keys).size < keys.size  # duplicates present
    assert np.any(np.diff(keys) < 0)         # not row-major
    b = tf.constant(_randn(rng, (n, 2), dtype))
    w = tf.constant(_randn(rng, b.shape, dtype))
    x, (gv, gb) = _grads(_ours(indices, n), values, b, w)
    x_ref, (gv_ref, gb_ref) = _grads(_oracle(indices, n), values, b, w)
    _close(x, x_ref, dtype)
    _close(gv, gv_ref, dtype)
    _close(gb, gb_ref, dtype)
    # every duplicate gets the merged entry's gradient, the stored zero one too
    gv = gv.numpy()
    for key in np.unique(keys):
        same = gv[keys == key]
        np.testing.assert_allclose(same, same[0], rtol=1e-12)
    assert np.all(np.abs(gv) > 0)


@pytest.mark.parametrize("dtype", [tf.float64, tf.complex128], ids=lambda d: d.name)
@pytest.mark.parametrize("m", RHS)
def test_central_finite_differences(rng, dtype, m):
    n = 6
    values, indices = _system(rng, n, dtype, messy=True)
    b = tf.constant(_randn(rng, (n,) if m is None else (n, m), dtype))
    w = tf.constant(_randn(rng, b.shape, dtype))
    solve = _ours(indices, n)
    _, (gv, gb) = _grads(solve, values, b, w)

    def loss(v, r):
        return float(_loss(solve(tf.constant(v), tf.constant(r)), w))

    for _ in range(3):
        du = _randn(rng, values.shape, dtype)
        db = _randn(rng, b.shape, dtype)
        h = 1e-6
        v0, b0 = values.numpy(), b.numpy()
        fd = (loss(v0 + h * du, b0 + h * db) - loss(v0 - h * du, b0 - h * db)) / (2 * h)
        # δL = Re⟨g, δ⟩ (PyTorch's and TensorFlow's complex convention)
        ad = np.real(np.vdot(gv.numpy(), du) + np.vdot(gb.numpy(), db))
        np.testing.assert_allclose(fd, ad, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [tf.float64, tf.complex128], ids=lambda d: d.name)
@pytest.mark.parametrize("m", RHS)
def test_dot_product_against_core_jvp(rng, dtype, m):
    """⟨J u, v⟩ = Re⟨u, Jᴴ v⟩ with J u from the core's jvp, Jᴴ v from the tape."""
    n = 8
    values, indices = _system(rng, n, dtype, messy=True)
    b = tf.constant(_randn(rng, (n,) if m is None else (n, m), dtype))
    v = _randn(rng, b.shape, dtype)
    with tf.GradientTape() as tape:
        tape.watch([values, b])
        x = _ours(indices, n)(values, b)
    gv, gb = tape.gradient(x, [values, b], output_gradients=tf.constant(v))

    idx = indices.numpy()
    A = sp.coo_array((values.numpy(), (idx[:, 0], idx[:, 1])), shape=(n, n))
    sol = sd.solve(A, b.numpy())
    np.testing.assert_allclose(x.numpy(), sol.x, rtol=1e-13)
    u_values = _randn(rng, values.shape, dtype)
    u_b = _randn(rng, b.shape, dtype)
    Ju = sol.jvp(dA=u_values, db=u_b)
    lhs = np.real(np.vdot(v, Ju))
    rhs = np.real(np.vdot(gv.numpy(), u_values) + np.vdot(gb.numpy(), u_b))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)


@pytest.mark.parametrize("method", ["direct", "gmres"])
def test_methods_and_options(rng, method):
    n = 10
    values, indices = _system(rng, n, tf.float64)
    b = tf.constant(_randn(rng, (n,), tf.float64))
    w = tf.constant(_randn(rng, (n,), tf.float64))
    _, (gv, gb) = _grads(_ours(indices, n, method=method, rtol=1e-12), values, b, w)
    _, (gv_ref, gb_ref) = _grads(_oracle(indices, n), values, b, w)
    np.testing.assert_allclose(gv, gv_ref, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(gb, gb_ref, rtol=1e-8, atol=1e-10)


def _spd_system(rng, n):
    """``(values, indices)`` of an SPD n×n matrix (for CG), row-major order."""
    B = rng.standard_normal((n, n)) * (rng.random((n, n)) < 0.3)
    D = B @ B.T + n * np.eye(n)
    rows, cols = np.nonzero(D)
    indices = np.stack([rows, cols], axis=1).astype(np.int64)
    return tf.constant(D[rows, cols]), tf.constant(indices)


def _linear_grads(solve, values, b, g):
    """Gradients of ``⟨g, x⟩``: the adjoint solve sees the cotangent ``g``."""
    with tf.GradientTape() as tape:
        tape.watch([values, b])
        loss = tf.reduce_sum(g * solve(values, b))
    return [np.asarray(t) for t in tape.gradient(loss, [values, b])]


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf_function"])
def test_adjoint_solve_is_scale_invariant_in_the_cotangent(rng, graph):
    # an absolute tolerance is met at unit scale: a cotangent of norm 1e-6
    # (below atol) must still get the gradient of the unit cotangent, scaled;
    # a zero cotangent column gives an exactly zero gradient column
    n = 12
    values, indices = _spd_system(rng, n)
    b = tf.constant(rng.standard_normal((n, 2)))
    g = rng.standard_normal((n, 2))
    g[:, 1] = 0.0
    solve = _ours(indices, n, method="cg", atol=1e-3)
    if graph:
        solve = tf.function(solve)
    gv1, gb1 = _linear_grads(solve, values, b, tf.constant(g))
    gv, gb = _linear_grads(solve, values, b, tf.constant(1e-6 * g))
    assert np.abs(gb1[:, 0]).max() > 1e-2
    np.testing.assert_allclose(gb, 1e-6 * gb1, rtol=1e-10, atol=0)
    np.testing.assert_allclose(gv, 1e-6 * gv1, rtol=1e-10, atol=0)
    assert np.all(gb[:, 1] == 0) and np.all(gb1[:, 1] == 0)
    # and the unit-scale gradient is the one the core gives for its cotangent
    A = sp.coo_array((values.numpy(), tuple(indices.numpy().T)), shape=(n, n))
    sol = sd.solve(A, b.numpy(), method="cg", atol=1e-3)
    _, gb_core = sol.vjp(1e-6 * g)
    np.testing.assert_allclose(gb, gb_core, rtol=1e-10, atol=0)


def test_variable_values_and_persistent_tape(rng):
    n = 5
    values, indices = _system(rng, n, tf.float64)
    var = tf.Variable(values)
    b = tf.Variable(_randn(rng, (n,), tf.float64))
    with tf.GradientTape(persistent=True) as tape:
        x = sdtf.solve((var, indices, [n, n]), b)
        loss = _loss(x, tf.zeros(n, tf.float64))
    g1 = tape.gradient(loss, [var, b])
    g2 = tape.gradient(loss, [var, b])
    del tape
    _, ref = _grads(_oracle(indices, n), values, tf.convert_to_tensor(b),
                    tf.zeros(n, tf.float64))
    for a, c, r in zip(g1, g2, ref):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_allclose(a, r, rtol=1e-10)


def test_one_factorization_per_forward_and_backward(rng, monkeypatch):
    built = []

    make_solver = sdtf._solver_for

    def counting(*args, **kwargs):
        built.append(1)
        return make_solver(*args, **kwargs)

    monkeypatch.setattr(sdtf, "_solver_for", counting)
    n = 6
    values, indices = _system(rng, n, tf.float64)
    b = tf.constant(_randn(rng, (n,), tf.float64))
    _grads(_ours(indices, n), values, b, b)
    assert len(built) == 1
    tf.function(lambda v, r: _grads(_ours(indices, n), v, r, r))(values, b)
    assert len(built) == 2


# ---------------------------------------------------------------------------
# tf.function
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [tf.float32, tf.complex128], ids=lambda d: d.name)
def test_tf_function_tape_inside_and_outside(rng, dtype):
    n = 6
    values, indices = _system(rng, n, dtype, messy=True)
    b = tf.constant(_randn(rng, (n, 2), dtype))
    w = tf.constant(_randn(rng, b.shape, dtype))
    ours = _ours(indices, n)

    inside = tf.function(lambda v, r: _grads(ours, v, r, w))
    outside = tf.function(lambda v, r: _loss(ours(v, r), w))
    for _ in range(2):  # new values on the second call: no stale solutions
        x_ref, (gv_ref, gb_ref) = _grads(_oracle(indices, n), values, b, w)
        x, (gv, gb) = inside(values, b)
        assert x.shape == b.shape and gv.shape == values.shape
        _close(x, x_ref, dtype)
        _close(gv, gv_ref, dtype)
        _close(gb, gb_ref, dtype)
        with tf.GradientTape() as tape:
            tape.watch([values, b])
            loss = outside(values, b)
        gv, gb = tape.gradient(loss, [values, b])
        _close(gv, gv_ref, dtype)
        _close(gb, gb_ref, dtype)
        values = values * tf.cast(1.5, dtype)


def test_tf_function_evicted_solution_refactorizes(rng, monkeypatch):
    monkeypatch.setattr(sdtf._CACHE, "maxsize", 1)
    n = 5
    values, indices = _system(rng, n, tf.float64)
    b = tf.constant(_randn(rng, (n,), tf.float64))
    ours = _ours(indices, n)

    @tf.function
    def two_solves(v, r):
        with tf.GradientTape() as tape:
            tape.watch([v, r])
            loss = tf.reduce_sum(ours(v, r) ** 2) + tf.reduce_sum(ours(2 * v, r))
        return tape.gradient(loss, [v, r])

    def reference(v, r):
        solve = _oracle(indices, n)
        return tf.reduce_sum(solve(v, r) ** 2) + tf.reduce_sum(solve(2 * v, r))

    with tf.GradientTape() as tape:
        tape.watch([values, b])
        loss = reference(values, b)
    for got, ref in zip(two_solves(values, b), tape.gradient(loss, [values, b])):
        np.testing.assert_allclose(got, ref, rtol=1e-10)


def test_tf_function_runtime_errors():
    values = tf.constant([1.0, 1.0, 2.0, 2.0], tf.float64)  # rows 0 and 1 equal
    indices = tf.constant([[0, 0], [0, 1], [1, 0], [1, 1]], tf.int64)
    b = tf.ones(2, tf.float64)
    f = tf.function(lambda v, r: sdtf.solve((v, indices, [2, 2]), r))
    with pytest.raises(tf.errors.OpError, match="singular"):
        f(values, b)
    bad = tf.constant([[0, 0], [0, 5], [1, 0], [1, 1]], tf.int64)
    g = tf.function(lambda v, i, r: sdtf.solve((v, i, [2, 2]), r))
    with pytest.raises(tf.errors.InvalidArgumentError, match="`indices` must lie"):
        g(values, bad, b)


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------


def _small():
    indices = tf.constant([[0, 0], [1, 1], [0, 1]], tf.int64)
    values = tf.constant([2.0, 3.0, 1.0], tf.float64)
    return values, indices, tf.ones(2, tf.float64)


def test_error_dtype_mismatch():
    values, indices, b = _small()
    with pytest.raises(TypeError, match=r"`b` must have the dtype of `A`'s values, "
                                        r"float64; got float32"):
        sdtf.solve((values, indices, [2, 2]), tf.cast(b, tf.float32))
    with pytest.raises(TypeError, match="`values` must be float32, float64"):
        sdtf.solve((tf.constant([2, 3, 1]), indices, [2, 2]), b)
    with pytest.raises(TypeError, match="`indices` must be an integer tensor"):
        sdtf.solve((values, tf.cast(indices, tf.float64), [2, 2]), b)


def test_error_shapes(rng):
    values, indices, b = _small()
    with pytest.raises(ValueError, match=r"`b` must have shape \(n,\) or \(n, m\) "
                                         r"with n = 2; got \(3,\)"):
        sdtf.solve((values, indices, [2, 2]), tf.ones(3, tf.float64))
    with pytest.raises(ValueError, match=r"`b` must have shape .* got \(2, 1, 1\)"):
        sdtf.solve((values, indices, [2, 2]), tf.ones((2, 1, 1), tf.float64))
    with pytest.raises(ValueError, match="must be a square 2-D matrix"):
        sdtf.solve((values, indices, [2, 3]), b)
    with pytest.raises(ValueError, match=r"`indices` must have shape \(nnz, 2\)"):
        sdtf.solve((values, tf.zeros((3, 3), tf.int64), [2, 2]), b)
    with pytest.raises(ValueError, match="one entry per row of `indices`"):
        sdtf.solve((values[:2], indices, [2, 2]), b)
    with pytest.raises(ValueError, match=r"`values` must be 1-D"):
        sdtf.solve((values[:, None], indices, [2, 2]), b)
    with pytest.raises(ValueError, match=r"`indices` must lie in \[0, 2\)"):
        sdtf.solve((values, indices + 1, [2, 2]), b)


def test_error_forms_and_failures():
    values, indices, b = _small()
    with pytest.raises(TypeError, match="`A` must be a tf.sparse.SparseTensor"):
        sdtf.solve(tf.eye(2, dtype=tf.float64), b)
    with pytest.raises(TypeError, match="tuple of length 2"):
        sdtf.solve((values, indices), b)
    with pytest.raises(TypeError, match="`b` must be a dense tensor"):
        A = tf.sparse.SparseTensor(indices, values, [2, 2])
        sdtf.solve(A, A)
    with pytest.raises(ValueError, match="`on_failure` must be one of"):
        sdtf.solve((values, indices, [2, 2]), b, on_failure="ignore")
    singular = tf.constant([1.0, 0.0, 1.0], tf.float64)  # second row empty of value
    with pytest.raises(sd.SingularMatrixError):
        sdtf.solve((singular, tf.constant([[0, 0], [1, 1], [0, 1]]), [2, 2]), b)
    x = sdtf.solve((singular, tf.constant([[0, 0], [1, 1], [0, 1]]), [2, 2]), b,
                   on_failure="nan")
    assert np.all(np.isnan(x.numpy()))
    with pytest.raises(ValueError, match="`A`"):
        sdtf.solve((values * np.nan, indices, [2, 2]), b)


def test_error_gpu_tensor_is_a_type_error():
    values, indices, b = _small()

    @tf.function
    def on_gpu(v, r):
        # device placement is recorded at trace time, with or without a GPU
        with tf.device("/GPU:0"):
            r = tf.identity(r)
        return sdtf.solve((v, indices, [2, 2]), r)

    with pytest.raises(TypeError, match="`b` is on device .*GPU:0; only CPU tensors"):
        on_gpu(values, b)


@pytest.mark.gpu
def test_error_eager_gpu_tensor():
    if not tf.config.list_physical_devices("GPU"):
        pytest.skip("no GPU visible to TensorFlow")
    values, indices, b = _small()
    with tf.device("/GPU:0"):
        values = tf.identity(values)
    with pytest.raises(TypeError, match="`values` is on device .*GPU"):
        sdtf.solve((values, indices, [2, 2]), b)


# ---------------------------------------------------------------------------
# import behaviour and documented examples
# ---------------------------------------------------------------------------


def test_import_is_optional():
    code = (
        "import sys\n"
        "import sparsediff\n"
        "assert 'tensorflow' not in sys.modules, 'sparsediff imported tensorflow'\n"
        "sys.modules['tensorflow'] = None\n"
        "try:\n"
        "    import sparsediff.tensorflow\n"
        "except ImportError as exc:\n"
        "    assert 'pip install sparsediff[tensorflow]' in str(exc), str(exc)\n"
        "else:\n"
        "    raise AssertionError('no ImportError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_docstring_examples():
    import doctest

    result = doctest.testmod(sdtf, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0
    assert result.attempted >= 10
