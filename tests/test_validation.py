"""Bad inputs get clear errors: the function, the argument, the expectation and
what came (docs/design.md, "Reliability principles")."""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from conftest import build, caller_data, dense_system, fingerprint, make_problem

import sparsediff as sd
from sparsediff._validation import as_matrix


@pytest.fixture
def A():
    return sp.csr_array(np.array([[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]]))


def corrupt_csr(indptr, indices, data, shape=(2, 2)):
    """A CSR whose structure SciPy's constructor would reject or not check."""
    A = sp.csr_array((np.array([1.0, 1.0]), np.array([0, 1]), np.array([0, 1, 2])),
                     shape=shape)
    A.indptr = np.asarray(indptr)
    A.indices = np.asarray(indices)
    A.data = np.asarray(data, dtype=float)
    return A


# ---------------------------------------------------------------------------
# A1, A2, A3: shapes
# ---------------------------------------------------------------------------

def test_non_square(A):
    B = sp.csr_array(np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"`sparsediff.solve`: `A` must be square; "
                                         r"got shape \(3, 4\)"):
        sd.solve(B, np.ones(3))
    with pytest.raises(ValueError, match="square"):
        sd.Solver(np.ones((2, 3)))


@pytest.mark.parametrize("b", [np.ones(4), np.ones((2, 1)), np.ones((3, 2, 1)),
                               np.float64(1.0), np.ones((0,))])
def test_bad_rhs_shape(A, b):
    with pytest.raises(ValueError, match=r"`b` must have shape \(n,\) or \(n, m\) "
                                         r"with n = 3; got"):
        sd.solve(A, b)
    with pytest.raises(ValueError, match="Solver.solve"):
        sd.Solver(A).solve(b)


def test_bad_x0_shape(A):
    with pytest.raises(ValueError, match=r"`x0` must have the shape of `b`, \(3,\); "
                                         r"got \(3, 1\)"):
        sd.solve(A, np.ones(3), x0=np.ones((3, 1)))
    with pytest.raises(ValueError, match="`x0`"):
        sd.solve(A, np.ones(3), x0=np.ones(2))


def test_complex_x0_for_a_real_solution(A):
    with pytest.raises(TypeError, match="`x0` is complex"):
        sd.solve(A, np.ones(3), x0=np.ones(3, complex))
    x = sd.solve(A, np.ones(3, complex), x0=np.ones(3)).x  # real x0, complex x: fine
    assert x.dtype == np.complex128


def test_ndim_3_matrix():
    with pytest.raises(ValueError, match=r"`A` must be 2-D; got shape \(2, 2, 2\)"):
        sd.solve(np.ones((2, 2, 2)), np.ones(2))


# ---------------------------------------------------------------------------
# A4: containers
# ---------------------------------------------------------------------------

def test_linear_operator_is_a_type_error(A):
    with pytest.raises(TypeError, match="LinearOperator has no stored entries"):
        sd.solve(spla.aslinearoperator(A), np.ones(3))


def test_torch_tensor_is_a_type_error(A):
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="sparsediff.torch"):
        sd.solve(torch.eye(3).to_sparse(), torch.ones(3))
    with pytest.raises(TypeError, match="`b` must be a NumPy array"):
        sd.solve(A, torch.ones(3))


def test_other_objects_are_type_errors(A):
    with pytest.raises(TypeError, match="`A` must be a scipy.sparse matrix"):
        sd.solve("matrix", np.ones(3))
    with pytest.raises(TypeError, match="`b` must be a dense array"):
        sd.solve(A, sp.csr_array(np.ones((3, 1))))


def test_dia_and_lists_accepted(A):
    x = sd.solve(A.todia(), np.ones(3)).x
    np.testing.assert_allclose(x, np.linalg.solve(A.toarray(), np.ones(3)))
    x = sd.solve(A.toarray().tolist(), [1.0, 1.0, 1.0]).x
    np.testing.assert_allclose(x, np.linalg.solve(A.toarray(), np.ones(3)))


# ---------------------------------------------------------------------------
# A5: corrupt structure, checked before any native call
# ---------------------------------------------------------------------------

CORRUPT = {
    "index >= n": ([0, 1, 2], [0, 7], [1, 1], "indices must lie in \\[0, 2\\)"),
    "index < 0": ([0, 1, 2], [0, -1], [1, 1], "indices must lie in"),
    "indptr decreasing": ([0, 3, 2], [0, 1], [1, 1], "non-decreasing"),
    "indptr[0] != 0": ([1, 1, 2], [0, 1], [1, 1], r"`indptr\[0\]` must be 0"),
    "indptr[-1] != nnz": ([0, 1, 1], [0, 1], [1, 1], r"`indptr\[-1\]` must equal"),
    "len(data) != len(indices)": ([0, 1, 2], [0, 1], [1, 1, 1],
                                  "same length"),
    "indptr too short": ([0, 2], [0, 1], [1, 1], "`indptr` must have length 3"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_csr(case):
    indptr, indices, data, msg = CORRUPT[case]
    B = corrupt_csr(indptr, indices, data)
    with pytest.raises(ValueError, match=msg):
        sd.solve(B, np.ones(2))
    with pytest.raises(ValueError, match=msg):
        sd.sparse_outer(B, np.ones(2), np.ones(2))


def test_corrupt_coo_and_csc():
    C = sp.coo_array((np.ones(2), (np.array([0, 1]), np.array([0, 1]))), shape=(2, 2))
    C.coords = (np.array([0, 5]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"\(coo\) row indices must lie in \[0, 2\)"):
        sd.solve(C, np.ones(2))
    S = sp.csc_array(np.eye(2))
    S.indices = np.array([0, 3], dtype=S.indices.dtype)
    with pytest.raises(ValueError, match=r"\(csc\)"):
        sd.solve(S, np.ones(2))


def test_float_index_arrays_are_type_errors():
    B = corrupt_csr(np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0]), [1, 1])
    with pytest.raises(TypeError, match="index arrays of `A` must be integers"):
        sd.solve(B, np.ones(2))


def test_mixed_index_dtypes_are_normalized(rng):
    """A15 (iii): int32 indices with int64 indptr work (normalized to int64)."""
    A, b, D = make_problem(rng, "csr", np.float64, n=6)
    A.indptr = A.indptr.astype(np.int64)
    A.indices = A.indices.astype(np.int32)
    np.testing.assert_allclose(sd.solve(A, b).x, np.linalg.solve(D, b), rtol=1e-12)


@pytest.mark.parametrize("fmt", ["csr", "csr_dup", "coo_dup", "csc", "bsr"])
def test_int64_indices_bitwise_equal_int32(rng, fmt):
    """A15 (i): int64 index arrays whose values fit int32 give the same bits."""
    D, mask = dense_system(rng, 8, np.complex128)
    seed = int(rng.integers(1 << 30))
    A32 = build(fmt, D, mask, np.random.default_rng(seed), idx=np.int32)
    A64 = build(fmt, D, mask, np.random.default_rng(seed), idx=np.int64)
    b = rng.standard_normal((8, 2)) + 0j
    g = rng.standard_normal((8, 2)) + 0j
    s32, s64 = sd.solve(A32, b), sd.solve(A64, b)
    np.testing.assert_array_equal(s32.x, s64.x)
    np.testing.assert_array_equal(caller_data(s32.vjp(g)[0]), caller_data(s64.vjp(g)[0]))


def test_int64_indices_beyond_int32_never_wrap():
    """A15 (ii): index values > 2³¹−1 are kept in int64 (cheap: huge shape, tiny nnz)."""
    big = 2**33
    A = sp.csr_array((np.array([1.0, 2.0]), np.array([5, big], dtype=np.int64),
                      np.array([0, 1, 2], dtype=np.int64)), shape=(2, big + 1))
    mat = as_matrix(A, "test", square=False)
    assert mat.indices.dtype == np.int64 and mat.indices[1] == big
    C = sp.coo_array((np.array([1.0, 2.0]), (np.array([1, 0]), np.array([big, 3]))),
                     shape=(2, big + 1))
    mat = as_matrix(C, "test", square=False)
    assert mat.indices.dtype == np.int64 and mat.indices[1] == big


# ---------------------------------------------------------------------------
# A6: non-finite input, each policy
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["A", "b", "x0"])
def test_nonfinite_inputs(A, where, bad):
    b, x0 = np.ones(3), np.zeros(3)
    A = A.copy()
    if where == "A":
        A.data[1] = bad
    elif where == "b":
        b[2] = bad
    else:
        x0[0] = bad
    for policy in ("raise", "warn"):
        with pytest.raises(sd.NonFiniteInputError, match=f"`{where}` contains NaN") as e:
            sd.solve(A, b, x0=x0, on_failure=policy)
        assert isinstance(e.value, ValueError)
        assert "sparsediff.solve" in str(e.value)
    sol = sd.solve(A, b, x0=x0, on_failure="nan")
    assert np.all(np.isnan(sol.x)) and not sol.info.converged
    assert sol.info.reason == "nonfinite"
    gA, gb = sol.vjp(np.ones(3))
    assert np.all(np.isnan(gA.data)) and np.all(np.isnan(gb))
    assert np.all(np.isnan(sol.jvp(db=np.ones(3))))


def test_nonfinite_in_solver_and_cotangents(A):
    with pytest.raises(sd.NonFiniteInputError, match="`sparsediff.Solver`: `A`"):
        B = A.copy()
        B.data[0] = np.nan
        sd.Solver(B)
    for policy in ("raise", "warn"):
        g = np.array([1.0, np.inf, 1.0])
        with pytest.raises(sd.NonFiniteInputError, match="`g`"):
            sd.solve(A, np.ones(3), on_failure=policy).vjp(g)
    sol = sd.solve(A, np.ones(3))
    for bad in (np.nan, np.inf):
        g = np.ones(3)
        g[1] = bad
        with pytest.raises(sd.NonFiniteInputError, match="`Solution.vjp`: `g`"):
            sol.vjp(g)
        with pytest.raises(sd.NonFiniteInputError, match="`Solution.jvp`: `db`"):
            sol.jvp(db=g)
        with pytest.raises(sd.NonFiniteInputError, match="`Solution.jvp`: `dA`"):
            sol.jvp(dA=np.full(A.nnz, bad))
    soln = sd.solve(A, np.ones(3), on_failure="nan")
    g = np.array([1.0, np.nan, 1.0])
    gA, gb = soln.vjp(g)
    assert np.all(np.isnan(gA.data)) and np.all(np.isnan(gb))
    assert np.all(np.isnan(soln.jvp(db=g)))


# ---------------------------------------------------------------------------
# A7: dtypes that cannot be computed in
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dt", [bool, object, np.longdouble, "U3"])
def test_bad_value_dtypes(A, dt):
    if np.dtype(dt) == np.longdouble and np.finfo(np.longdouble).bits == 64:
        pytest.skip("longdouble is float64 here")
    with pytest.raises(TypeError, match=r"`b` must have a numeric dtype .*; got"):
        sd.solve(A, np.ones(3).astype(dt))
    with pytest.raises(TypeError, match="`A` must have a numeric dtype"):
        sd.solve(np.eye(3).astype(dt), np.ones(3))


def test_bool_sparse_matrix(A):
    with pytest.raises(TypeError, match="`A` must have a numeric dtype"):
        sd.solve(A.astype(bool), np.ones(3))


# ---------------------------------------------------------------------------
# A16: devices
# ---------------------------------------------------------------------------

def _fake(module):
    cls = type("ndarray", (), {"__module__": module, "shape": (3,)})
    return cls()


def test_cupy_arguments_are_rejected_clearly(A):
    # mixing names both libraries and says how to bring them to one place;
    # CuPy objects alone need the GPU backend, whose requirements are named
    with pytest.raises(TypeError, match=r"mix cupy arrays \(cupy._core.core.ndarray\)"
                       r" and host arrays \(scipy.*cupy.asnumpy"):
        sd.solve(A, _fake("cupy._core.core"))
    with pytest.raises(TypeError, match=r"need CuPy and numba-cuda.*"
                       r"pip install sparsediff\[gpu\]"):
        sd.Solver(_fake("cupyx.scipy.sparse._csr"))
    with pytest.raises(TypeError, match=r"mix cupy arrays .* and host arrays "
                       r"\(numpy.ndarray\)"):
        sd.solve(_fake("cupyx.scipy.sparse._csr"), np.ones(3), x0=_fake("cupy"))


# ---------------------------------------------------------------------------
# A17: options
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kw,exc,msg", [
    (dict(rtol=-1.0), ValueError, "`rtol` must be a finite number >= 0"),
    (dict(atol=-1e-3), ValueError, "`atol` must be a finite number >= 0"),
    (dict(atol=None), ValueError, "`atol`"),
    (dict(atol="legacy"), ValueError, "`atol`"),
    (dict(rtol=np.nan), ValueError, "`rtol`"),
    (dict(rtol=np.inf), ValueError, "`rtol`"),
    (dict(rtol=[1e-3]), TypeError, "`rtol` must be a real number"),
    (dict(maxiter=-1), ValueError, "`maxiter` must be >= 0"),
    (dict(maxiter=2.5), TypeError, "`maxiter` must be an integer"),
    (dict(on_failure="ignore"), ValueError, "`on_failure` must be one of"),
    (dict(method="lu"), ValueError, "`method` must be one of"),
    (dict(method="direct", M="jacobi"), ValueError, "`M`"),
    (dict(callback=3), TypeError, "`callback` must be callable"),
])
def test_invalid_options(A, kw, exc, msg):
    with pytest.raises(exc, match=msg):
        sd.solve(A, np.ones(3), **kw)


def test_invalid_trans_and_positional(A):
    with pytest.raises(ValueError, match=r"`trans` must be one of \('N', 'T', 'H'\); "
                                         r"got 'C'"):
        sd.Solver(A).solve(np.ones(3), trans="C")
    with pytest.raises(TypeError):
        sd.Solver(A, "direct")
    with pytest.raises(TypeError):
        sd.Solver(A).solve(np.ones(3), None)


def test_direct_accepts_zero_tolerances(A):
    """rtol = atol = 0 is meaningless only for iterative methods."""
    sol = sd.solve(A, np.ones(3), rtol=0.0, atol=0.0, method="direct")
    assert sol.info.converged


# ---------------------------------------------------------------------------
# messages name the function everywhere
# ---------------------------------------------------------------------------

def test_update_and_sparse_outer_messages(A):
    solver = sd.Solver(A)
    with pytest.raises(ValueError, match=r"`Solver.update`: `data` must be a 1-D array "
                                         r"of length nnz = 7"):
        solver.update(np.ones(6))
    with pytest.raises(ValueError, match=r"`sparsediff.sparse_outer`: `u` must have "
                                         r"shape \(3,\) or \(3, m\); got \(2,\)"):
        sd.sparse_outer(A, np.ones(2), np.ones(3))
    with pytest.raises(ValueError, match="same number of columns"):
        sd.sparse_outer(A, np.ones((3, 2)), np.ones((3, 3)))
    with pytest.raises(TypeError, match="`alpha` must be a real or complex scalar"):
        sd.sparse_outer(A, np.ones(3), np.ones(3), alpha=np.ones(2))
    with pytest.raises(TypeError, match="`alpha`"):
        sd.sparse_outer(A, np.ones(3), np.ones(3), alpha="2")


def test_validation_does_not_touch_inputs_even_when_it_fails():
    B = corrupt_csr([0, 1, 2], [1, 0], [1, 2])  # unsorted? no: one entry per row
    B2 = sp.csr_array((np.array([1.0, 2.0, 3.0]), np.array([1, 0, 0]),
                       np.array([0, 2, 3])), shape=(2, 2))  # unsorted row 0
    before = fingerprint(B, B2)
    with pytest.raises(ValueError):
        sd.solve(B2, np.ones(3))
    sd.solve(B2, np.ones(2))
    sd.solve(B, np.ones(2))
    assert fingerprint(B, B2) == before


def test_canonical_csr_takes_the_fast_path(rng, monkeypatch):
    """A canonical CSR is validated in O(nnz) without sorting (the common case,
    and the one benchmarks time); non-canonical input is sorted, on a copy."""
    A, b, D = make_problem(rng, "csr", np.float64, n=40)

    def boom(*args, **kwargs):
        raise AssertionError("the canonical CSR fast path must not sort")

    monkeypatch.setattr(np, "lexsort", boom)
    monkeypatch.setattr(np, "argsort", boom)
    mat = as_matrix(A, "test")
    assert mat._perm is None
    assert not np.shares_memory(mat.data, A.data)
    assert not np.shares_memory(mat.indices, A.indices)
    monkeypatch.undo()
    np.testing.assert_allclose(sd.solve(A, b).x, np.linalg.solve(D, b), rtol=1e-12)
    U, _, _ = make_problem(rng, "csr_unsorted", np.float64, n=40)
    assert as_matrix(U, "test")._perm is not None
