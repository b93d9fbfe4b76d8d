"""TensorFlow glue beyond first-order reverse mode: nested tapes (second
derivatives) and ``tf.autodiff.ForwardAccumulator``, eagerly and in
``tf.function``. TensorFlow reads a ``None`` gradient as "does not depend on";
these used to be ``None`` through the solve (a silent zero), so every test
checks numbers: a dense oracle (``tf.linalg.solve`` on the scattered matrix),
central differences, or the dot-product test; unsupported combinations must
raise.
"""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")

import sparsediff.tensorflow as sdtf  # noqa: E402

pytestmark = pytest.mark.tensorflow

REAL_COMPLEX = [tf.float64, tf.complex128]


@pytest.fixture
def rng():
    return np.random.default_rng(97531)


def _randn(rng, shape, dtype):
    out = rng.standard_normal(shape)
    if dtype.is_complex:
        out = out + 1j * rng.standard_normal(shape)
    return tf.constant(out.astype(dtype.as_numpy_dtype))


def _system(rng, n, dtype):
    """Entries in shuffled order with one duplicate: (values, indices)."""
    D = rng.standard_normal((n, n)) * (rng.random((n, n)) < 0.5)
    D[np.arange(n), np.arange(n)] = np.abs(D).sum(axis=1) + 2.0
    rows, cols = np.nonzero(D)
    vals = D[rows, cols]
    rows, cols = np.append(rows, rows[0]), np.append(cols, cols[0])   # duplicate
    vals = np.append(vals, 0.5)
    if dtype.is_complex:
        vals = vals + 1j * rng.standard_normal(vals.size)
    order = rng.permutation(rows.size)
    indices = np.stack([rows[order], cols[order]], axis=1).astype(np.int64)
    return tf.constant(vals[order].astype(dtype.as_numpy_dtype)), tf.constant(indices)


def _ours(indices, n):
    return lambda v, r: sdtf.solve((v, indices, [n, n]), r)


def _oracle(indices, n):
    def solve(v, r):
        D = tf.scatter_nd(indices, v, [n, n])
        x = tf.linalg.solve(D, r[:, None] if r.shape.rank == 1 else r)
        return x[:, 0] if r.shape.rank == 1 else x
    return solve


def _loss(x):
    """Real and not quadratic (its third derivatives are not zero)."""
    return tf.reduce_sum(tf.abs(x) ** 3) + tf.reduce_sum(tf.math.real(x * x))


def _hvp(solve, values, b, dv, db):
    """Reverse-over-reverse: d/dt ∇L(values + t dv, b + t db) (nested tapes)."""
    with tf.GradientTape(persistent=True) as outer:
        outer.watch([values, b])
        with tf.GradientTape() as inner:
            inner.watch([values, b])
            L = _loss(solve(values, b))
        gv, gb = inner.gradient(L, [values, b])
        s = (tf.reduce_sum(tf.math.real(tf.math.conj(gv) * dv))
             + tf.reduce_sum(tf.math.real(tf.math.conj(gb) * db)))
    return outer.gradient(s, [values, b])


def _close(a, c, tol=1e-9):
    a, c = np.asarray(a), np.asarray(c)
    np.testing.assert_allclose(a, c, rtol=tol, atol=tol * max(1.0, np.abs(c).max()))


# ---------------------------------------------------------------------------
# second derivatives (nested GradientTape)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", REAL_COMPLEX, ids=lambda d: d.name)
@pytest.mark.parametrize("m", [None, 2])
def test_second_derivatives_match_dense(rng, dtype, m):
    n = 6
    values, indices = _system(rng, n, dtype)
    b = _randn(rng, (n,) if m is None else (n, m), dtype)
    dv, db = _randn(rng, values.shape, dtype), _randn(rng, b.shape, dtype)
    ours = _hvp(_ours(indices, n), values, b, dv, db)
    ref = _hvp(_oracle(indices, n), values, b, dv, db)
    for a, c in zip(ours, ref):
        assert a is not None
        _close(a, c)


def test_second_derivatives_central_differences(rng):
    n = 6
    values, indices = _system(rng, n, tf.float64)
    b = _randn(rng, (n,), tf.float64)
    dv, db = _randn(rng, values.shape, tf.float64), _randn(rng, (n,), tf.float64)
    ours = _ours(indices, n)

    def grad(v, r):
        with tf.GradientTape() as tape:
            tape.watch([v, r])
            L = _loss(ours(v, r))
        return tape.gradient(L, [v, r])

    h = 1e-5
    plus, minus = grad(values + h * dv, b + h * db), grad(values - h * dv, b - h * db)
    hv = _hvp(ours, values, b, dv, db)
    for p, q, a in zip(plus, minus, hv):
        _close(a, (p - q) / (2 * h), tol=1e-6)


def test_second_derivatives_in_tf_function(rng):
    n = 5
    values, indices = _system(rng, n, tf.float64)
    b = _randn(rng, (n, 2), tf.float64)
    dv, db = _randn(rng, values.shape, tf.float64), _randn(rng, b.shape, tf.float64)
    ours = tf.function(lambda *a: _hvp(_ours(indices, n), *a))(values, b, dv, db)
    ref = _hvp(_oracle(indices, n), values, b, dv, db)
    for a, c in zip(ours, ref):
        _close(a, c)


def test_third_derivative_in_b(rng):
    """Any order: d³/dt³ of L(x(b + t u)) against the dense oracle."""
    n = 5
    values, indices = _system(rng, n, tf.float64)
    b = _randn(rng, (n,), tf.float64)
    u = _randn(rng, (n,), tf.float64)

    def third(solve):
        t = tf.constant(0.0, tf.float64)
        with tf.GradientTape() as t3:
            t3.watch(t)
            with tf.GradientTape() as t2:
                t2.watch(t)
                with tf.GradientTape() as t1:
                    t1.watch(t)
                    L = _loss(solve(values, b + t * u))
                d1 = t1.gradient(L, t)
            d2 = t2.gradient(d1, t)
        return t3.gradient(d2, t)

    _close(third(_ours(indices, n)), third(_oracle(indices, n)))


def test_derivative_solves_reuse_the_factorization(rng, monkeypatch):
    built = []

    make_solver = sdtf._solver_for

    def counting(*args, **kwargs):
        built.append(1)
        return make_solver(*args, **kwargs)

    monkeypatch.setattr(sdtf, "_solver_for", counting)
    n = 5
    values, indices = _system(rng, n, tf.float64)
    b = _randn(rng, (n,), tf.float64)
    _hvp(_ours(indices, n), values, b, values, b)
    assert len(built) == 1
    tf.function(lambda *a: _hvp(_ours(indices, n), *a))(values, b, values, b)
    assert len(built) == 2


# ---------------------------------------------------------------------------
# forward mode (tf.autodiff.ForwardAccumulator)
# ---------------------------------------------------------------------------


def _jvp(solve, values, b, dv, db):
    with tf.autodiff.ForwardAccumulator([values, b], [dv, db]) as acc:
        x = solve(values, b)
    return acc.jvp(x)


@pytest.mark.parametrize("dtype", REAL_COMPLEX, ids=lambda d: d.name)
@pytest.mark.parametrize("m", [None, 3])
def test_forward_accumulator_matches_dense(rng, dtype, m):
    n = 6
    values, indices = _system(rng, n, dtype)
    b = _randn(rng, (n,) if m is None else (n, m), dtype)
    dv, db = _randn(rng, values.shape, dtype), _randn(rng, b.shape, dtype)
    ours = _jvp(_ours(indices, n), values, b, dv, db)
    assert ours is not None
    _close(ours, _jvp(_oracle(indices, n), values, b, dv, db))


def test_forward_accumulator_central_differences_and_dot_product(rng):
    n = 7
    values, indices = _system(rng, n, tf.float64)
    b = _randn(rng, (n, 2), tf.float64)
    dv, db = _randn(rng, values.shape, tf.float64), _randn(rng, b.shape, tf.float64)
    ours = _ours(indices, n)
    ju = _jvp(ours, values, b, dv, db)
    h = 1e-6
    fd = (ours(values + h * dv, b + h * db) - ours(values - h * dv, b - h * db)) / (2 * h)
    _close(ju, fd, tol=1e-7)
    # <J u, w> = <u, Jᵀ w> with the reverse mode
    w = _randn(rng, b.shape, tf.float64)
    with tf.GradientTape() as tape:
        tape.watch([values, b])
        s = tf.reduce_sum(ours(values, b) * w)
    gv, gb = tape.gradient(s, [values, b])
    lhs = float(tf.reduce_sum(ju * w))
    rhs = float(tf.reduce_sum(gv * dv) + tf.reduce_sum(gb * db))
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))


def test_forward_over_reverse_hessian_vector_product(rng):
    n = 6
    values, indices = _system(rng, n, tf.float64)
    b = _randn(rng, (n,), tf.float64)
    dv, db = _randn(rng, values.shape, tf.float64), _randn(rng, (n,), tf.float64)

    def fwd_over_rev(solve):
        with tf.autodiff.ForwardAccumulator([values, b], [dv, db]) as acc:
            with tf.GradientTape() as tape:
                tape.watch([values, b])
                L = _loss(solve(values, b))
            g = tape.gradient(L, [values, b])
        return [acc.jvp(gi) for gi in g]

    ours = fwd_over_rev(_ours(indices, n))
    ref = _hvp(_oracle(indices, n), values, b, dv, db)
    for a, c in zip(ours, ref):
        assert a is not None
        _close(a, c)


def test_forward_accumulator_inside_tf_function_raises(rng):
    n = 4
    values, indices = _system(rng, n, tf.float64)
    b = _randn(rng, (n,), tf.float64)
    f = tf.function(lambda *a: _jvp(_ours(indices, n), *a))
    with pytest.raises(NotImplementedError, match=r"sparsediff\.tensorflow\.solve`: "
                                                  r"forward mode .*inside tf\.function"):
        f(values, b, values, b)


def test_forward_accumulator_around_tf_function_is_never_a_silent_zero(rng):
    """Eager accumulator, solve in a ``tf.function``: a value or an error.

    (TensorFlow's function-level forward mode fails on a custom gradient that
    calls another one; it used to return ``None``.)
    """
    n = 4
    values, indices = _system(rng, n, tf.float64)
    b = _randn(rng, (n,), tf.float64)
    dv, db = _randn(rng, values.shape, tf.float64), _randn(rng, (n,), tf.float64)
    f = tf.function(_ours(indices, n))
    try:
        got = _jvp(f, values, b, dv, db)
    except Exception:  # noqa: BLE001 - raising is the acceptable outcome
        return
    assert got is not None
    _close(got, _jvp(_oracle(indices, n), values, b, dv, db))
