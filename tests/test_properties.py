"""Properties of every public call (inputs never modified, outputs never
aliased, determinism) and a property-based sweep over random structures,
formats, dtypes and shapes."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import (
    DTYPES,
    FORMATS,
    INDEX_DTYPES,
    RHS_SHAPES,
    TRANS,
    build,
    caller_data,
    caller_entries,
    dense_of,
    fingerprint,
    make_problem,
    op,
    randn,
    readonly,
    rhs_shape,
    shares,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sparsediff as sd
from sparsediff._errors import IllConditionedWarning


def every_public_call(A, b, x0, g, dA, db, new_data, u, v):
    """Exercise every public entry point once; returns every output array."""
    outs = []
    sol = sd.solve(A, b, x0=x0)
    outs.append(sol.x)
    gA, gb = sol.vjp(g)
    outs += [gA, gb, sol.jvp(dA, db), sol.jvp(dA), sol.jvp(db=db)]
    solver = sd.Solver(A)
    for trans in TRANS:
        s = solver.solve(b, x0=x0, trans=trans)
        outs += [s.x, *s.vjp(g), s.jvp(dA, db)]
    solver.update(new_data)
    s = solver.solve(b)
    outs += [s.x, *s.vjp(g)]
    outs.append(sd.sparse_outer(A, u, v, alpha=2.0))
    return outs


def inputs_for(rng, fmt, dtype, shape="nk", n=6):
    A, b, D = make_problem(rng, fmt, dtype, n=n, shape=shape)
    data = caller_data(A)
    x0 = randn(rng, b.shape, dtype)
    g = randn(rng, b.shape, dtype)
    dA = randn(rng, data.shape, dtype)
    db = randn(rng, b.shape, dtype)
    new = (data * 1.25).astype(data.dtype)
    u, v = randn(rng, b.shape, dtype), randn(rng, b.shape, dtype)
    return A, b, x0, g, dA, db, new, u, v


# ---------------------------------------------------------------------------
# E5: inputs untouched (hashes, SciPy's flags), read-only inputs work
# E6: no output shares memory with any input
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("read_only", [False, True])
@pytest.mark.parametrize("fmt", FORMATS)
def test_inputs_untouched_and_never_aliased(rng, fmt, read_only):
    args = inputs_for(rng, fmt, np.complex128)
    if read_only:
        for a in args:
            readonly(a)
    before = fingerprint(*args)
    outs = every_public_call(*args)
    assert fingerprint(*args) == before
    for out in outs:
        for a in args:
            assert not shares(out, a)
    # outputs do not share memory with each other either
    for i, o1 in enumerate(outs):
        for o2 in outs[i + 1:]:
            assert o1 is not o2


def test_scipy_flags_unchanged_for_non_canonical_input(rng):
    """spsolve/splu would canonicalize these in place; we never modify inputs."""
    for fmt in ("csr_unsorted", "csr_dup", "coo_dup"):
        A, b, _ = make_problem(rng, fmt, np.float64)
        flags = dict(A.__dict__)
        nnz = A.nnz
        sd.solve(A, b).vjp(b)
        sd.Solver(A).update(caller_data(A))
        assert A.nnz == nnz
        for key in ("_has_sorted_indices", "_has_canonical_format",
                    "has_canonical_format"):
            assert (key in A.__dict__) == (key in flags)
            if key in flags:
                assert A.__dict__[key] == flags[key]


@pytest.mark.parametrize("case", ["b=0", "n=0", "n=0,m=2", "(n,0)"])
def test_early_exits_do_not_alias(case):
    if case.startswith("n=0"):
        A = sp.csr_array((0, 0))
        b = np.zeros((0, 2)) if "m=2" in case else np.zeros(0)
    else:
        A = sp.csr_array(np.array([[2.0, 1.0], [1.0, 3.0]]))
        b = np.zeros(2) if case == "b=0" else np.zeros((2, 0))
    x0 = np.zeros_like(b)
    sol = sd.solve(A, b, x0=x0)
    g = np.zeros_like(b)
    gA, gb = sol.vjp(g)
    dx = sol.jvp(db=b)
    for out in (sol.x, gA, gb, dx):
        for inp in (A, b, x0, g):
            assert not shares(out, inp)
        assert np.all(out == 0) if not sp.issparse(out) else np.all(out.data == 0)


# ---------------------------------------------------------------------------
# E4: the caller changes A (or b) after the solve
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["csr", "csr_dup", "csc", "coo_dup", "bsr", "dense"])
def test_vjp_uses_the_values_the_solve_used(rng, fmt):
    A, b, D = make_problem(rng, fmt, np.float64, n=6)
    g = rng.standard_normal(6)
    ref = sd.solve(A.copy(), b.copy())
    ref_grads = [caller_data(a) for a in ref.vjp(g)]
    dA, db = caller_data(A), b.copy()
    ref_jvp = ref.jvp(dA, db)
    sol = sd.solve(A, b)
    solver = sd.Solver(A)
    sol_t = solver.solve(b, trans="T")
    ref_t = sd.Solver(A.copy()).solve(b.copy(), trans="T").vjp(g)
    # mutate everything in place
    if sp.issparse(A):
        A.data[...] = 1e6
        if fmt in ("csr", "csr_dup", "csc", "bsr"):
            A.indices[...] = 0  # even the structure
    else:
        A[...] = 1e6
    b[...] = -7.0
    for x, y in zip([caller_data(a) for a in sol.vjp(g)], ref_grads):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(sol.jvp(dA, db), ref_jvp)
    for x, y in zip(sol_t.vjp(g), ref_t):
        np.testing.assert_array_equal(caller_data(x), caller_data(y))
    # the solver keeps its private copy too
    np.testing.assert_allclose(solver.solve(g).x, np.linalg.solve(D, g), rtol=1e-12)


# ---------------------------------------------------------------------------
# E7: determinism
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_bitwise_repeatable(rng, dtype):
    A, b, D = make_problem(rng, "coo_dup", dtype, n=9, shape="nk")
    g = randn(rng, b.shape, dtype)
    runs = []
    for _ in range(3):
        sol = sd.solve(A, b)
        gA, gb = sol.vjp(g)
        runs.append((sol.x, caller_data(gA), gb, sol.jvp(caller_data(A), b)))
    for run in runs[1:]:
        for a, c in zip(run, runs[0]):
            np.testing.assert_array_equal(a, c)


# ---------------------------------------------------------------------------
# property-based sweep
# ---------------------------------------------------------------------------

def dense_grads(D, x, g, trans):
    """Dense gradient of L = Re⟨g, x⟩, x = op(D)⁻¹ b (independent formulas)."""
    x2, g2 = x.reshape(x.shape[0], -1), g.reshape(g.shape[0], -1)
    lam = np.linalg.solve(op(D, trans).conj().T, g2)
    G = {"N": -lam @ x2.conj().T, "T": -x2.conj() @ lam.T, "H": -x2 @ lam.conj().T}
    return G[trans], lam.reshape(g.shape)


@st.composite
def problems(draw):
    n = draw(st.integers(0, 7))
    fmt = draw(st.sampled_from(FORMATS))
    dtype = draw(st.sampled_from(DTYPES))
    idx = draw(st.sampled_from(INDEX_DTYPES))
    shape = draw(st.sampled_from(RHS_SHAPES))
    trans = draw(st.sampled_from(TRANS))
    seed = draw(st.integers(0, 2**32 - 1))
    dominant = draw(st.booleans())  # else: random values, maybe singular
    density = draw(st.floats(0.0, 1.0))
    return n, fmt, dtype, idx, shape, trans, seed, dominant, density


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_random_problems(problem):
    n, fmt, dtype, idx, shape, trans, seed, dominant, density = problem
    rng = np.random.default_rng(seed)
    if fmt == "bsr" and n % 2:
        n += 1
    mask = rng.random((n, n)) < density
    if dominant:
        np.fill_diagonal(mask, True)
    D = (randn(rng, (n, n), dtype) * mask).astype(np.result_type(dtype, np.float64))
    if dominant:
        D[np.arange(n), np.arange(n)] = np.abs(D).sum(axis=1) + 1
    D = D.astype(dtype)
    A = build(fmt, D, mask, rng, idx=idx)
    b = randn(rng, rhs_shape(n, shape), dtype)
    g = randn(rng, b.shape, dtype)
    before = fingerprint(A, b, g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IllConditionedWarning)
        try:
            sol = sd.Solver(A).solve(b, trans=trans)
        except sd.SingularMatrixError:
            assert not dominant and n > 0
            assert fingerprint(A, b, g) == before
            return
        gA, gb = sol.vjp(g)
    assert fingerprint(A, b, g) == before
    assert sol.x.shape == b.shape and gb.shape == b.shape
    assert not shares(sol.x, b) and not shares(gA, A) and not shares(gb, g)
    Dd = dense_of(A).astype(np.complex128)
    if n == 0 or np.linalg.cond(Dd) > 1e5:
        return  # still: no crash, inputs untouched
    G, lam = dense_grads(Dd, sol.x.astype(np.complex128), g.astype(np.complex128), trans)
    rows, cols = caller_entries(A)
    want = G[rows, cols]
    if np.dtype(dtype).kind != "c":
        want = want.real
    eps = np.finfo(dtype).eps
    scale = np.linalg.cond(Dd) * eps * 1e3 * max(1.0, np.abs(want).max(initial=0))
    np.testing.assert_allclose(caller_data(gA), want, rtol=0, atol=scale)
    if sp.issparse(A):
        assert type(gA) is type(A)
