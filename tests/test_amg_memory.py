"""What the AMG preconditioner holds: no copy of the matrix beyond what it needs.

Structural checks (shared buffers, counted bytes, what is built lazily), never
timings or resident-set sizes; the measured peak memory is in
``benchmarks/bench_memory.py``.
"""

import gc

import numpy as np
import pyamg
import pytest
import scipy.sparse as sp

from sparsediff._validation import as_matrix
from sparsediff.precond import AMG
from sparsediff.precond.amg import _SMOOTHER


def _root(a):
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _bytes(arrays):
    """Bytes of the distinct buffers behind ``arrays``."""
    roots = {id(_root(a)): _root(a) for a in arrays}
    return sum(r.nbytes for r in roots.values())


def _held_arrays(obj):
    """Arrays reachable from ``obj`` through sparse matrices and containers."""
    out, stack, seen = [], [obj], set()
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, np.ndarray):
            out.append(o)
        elif sp.issparse(o):
            stack += [getattr(o, k) for k in ("data", "indices", "indptr")]
        elif isinstance(o, (list, tuple)):
            stack += list(o)
        elif isinstance(o, dict):
            stack += list(o.values())
    return out


def poisson(k, dtype=np.float64):
    t = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(k, k))
    eye = sp.identity(k)
    return sp.csr_array(sp.kron(t, eye) + sp.kron(eye, t), dtype=dtype)


def nonsymmetric(k, rng):
    A = poisson(k)
    n = A.shape[0]
    N = sp.random_array((n, n), density=3 / n, rng=rng)
    return sp.csr_array(A + 0.3 * sp.triu(abs(N), 1))


def mat_arrays(mat):
    return (mat.data, mat.indices, mat.indptr)


def level0(M):
    return M._ops["N"][0][0][0]


def pyamg_bytes_beyond_level0(A, hermitian=True):
    """Bytes of pyamg's own hierarchy (keep=False, our options) less its level-0 A."""
    ml = pyamg.smoothed_aggregation_solver(
        A.copy(), symmetry="hermitian" if hermitian else "nonsymmetric",
        presmoother=_SMOOTHER, postsmoother=_SMOOTHER, max_coarse=50,
        smooth=("jacobi", {"omega": 4.0 / 3.0}))
    held = []
    for k, lev in enumerate(ml.levels):
        held += _held_arrays([lev.A] if k else [])
        held += _held_arrays([getattr(lev, "P", None), getattr(lev, "R", None)])
    return _bytes(held)


def reachable(obj, depth=6):
    """Every object reachable from ``obj``'s attributes (and containers)."""
    out, stack, seen = [], [(obj, 0)], set()
    while stack:
        o, d = stack.pop()
        if id(o) in seen or d > depth:
            continue
        seen.add(id(o))
        out.append(o)
        if isinstance(o, dict):
            stack += [(v, d + 1) for v in o.values()]
        elif isinstance(o, (list, tuple)):
            stack += [(v, d + 1) for v in o]
        elif hasattr(o, "__dict__") and not isinstance(o, type):
            stack += [(v, d + 1) for v in vars(o).values()]
    return out


def test_level0_is_the_validated_matrix_for_exactly_hermitian_float64():
    mat = as_matrix(poisson(24), "t", "A")
    M = AMG(mat)
    assert M.hermitian
    A0 = level0(M)
    for ours, theirs in zip((A0.data, A0.indices, A0.indptr), mat_arrays(mat)):
        assert np.shares_memory(ours, theirs)


def test_level0_is_read_only_and_the_validated_matrix_unchanged():
    A = poisson(24)
    mat = as_matrix(A, "t", "A")
    before = [a.copy() for a in mat_arrays(mat)]
    M = AMG(mat)
    M.matvec(np.ones(A.shape[0]))
    A0 = level0(M)
    assert not any(a.flags.writeable for a in (A0.data, A0.indices, A0.indptr))
    for a, b in zip(mat_arrays(mat), before):
        np.testing.assert_array_equal(a, b)
        assert a.flags.writeable  # the validated matrix itself is untouched


def owned_level_bytes(M, mat):
    """Bytes of the level operators (A_k, R, P) not shared with ``mat``."""
    shared = {id(a) for a in mat_arrays(mat)}
    return _bytes([a for a in _held_arrays(M._ops["N"][0])
                   if id(_root(a)) not in shared])


@pytest.mark.parametrize("k", [16, 32])
def test_level_operators_no_larger_than_pyamgs_hierarchy(k):
    """Beyond the shared level 0, the level operators hold no more than
    pyamg's own (keep=False) hierarchy beyond its level 0."""
    A = poisson(k)
    mat = as_matrix(A, "t", "A")
    M = AMG(mat)
    assert owned_level_bytes(M, mat) <= pyamg_bytes_beyond_level0(A)
    # what else is held: the dense coarse pseudo-inverse and the aggregates
    # (one stored entry per fine unknown of each coarsening)
    levels, cinv = M._ops["N"]
    agg = _bytes(_held_arrays(M._aggregates))
    nfine = sum(lv[0].shape[0] for lv in levels)
    assert agg <= nfine * (8 + 4) + sum(lv[0].shape[0] + 1 for lv in levels) * 4 * 2
    assert M.owned_nbytes(mat) == owned_level_bytes(M, mat) + cinv.nbytes + agg
    # level 0 is counted in nbytes, and is the only difference
    A0 = level0(M)
    assert M.nbytes == M.owned_nbytes(mat) + _bytes([A0.data, A0.indices, A0.indptr])


def test_rounding_hermitian_keeps_one_level0_matrix():
    """(A + Aᴴ)/2 is made once and serves pyamg and the smoother."""
    rng = np.random.default_rng(3)
    A = poisson(20)
    n = A.shape[0]
    A = sp.csr_array(A + 1e-14 * sp.triu(sp.random_array((n, n), density=3 / n,
                                                         rng=rng)))
    mat = as_matrix(A, "t", "A")
    assert not mat.symmetry.exact and mat.symmetry.hermitian
    M = AMG(mat)
    A0 = level0(M)
    assert not np.shares_memory(A0.data, mat.data)
    assert (abs(A0 - A0.T)).max() == 0  # exactly Hermitian
    lvl0 = _bytes([A0.data, A0.indices, A0.indptr])
    assert owned_level_bytes(M, mat) <= pyamg_bytes_beyond_level0(A0) + lvl0


def test_float32_gets_one_float64_copy_and_is_not_modified():
    A = poisson(20, np.float32)
    mat = as_matrix(A, "t", "A")
    before = mat.data.copy()
    M = AMG(mat)
    A0 = level0(M)
    assert A0.data.dtype == np.float64
    assert not np.shares_memory(A0.data, mat.data)
    np.testing.assert_array_equal(mat.data, before)
    assert owned_level_bytes(M, mat) <= (pyamg_bytes_beyond_level0(
        A.astype(np.float64)) + _bytes([A0.data, A0.indices, A0.indptr]))


def test_real_hermitian_restriction_is_a_view_of_the_prolongation():
    mat = as_matrix(poisson(24), "t", "A")
    M = AMG(mat)
    for _, R, P in M._ops["N"][0]:
        assert np.shares_memory(R.data, P.data)
        assert np.shares_memory(R.indices, P.indices)


def test_no_pyamg_objects_or_keep_leftovers_are_held():
    mat = as_matrix(poisson(24), "t", "A")
    M = AMG(mat)
    gc.collect()
    objs = reachable(M)
    assert not any(isinstance(o, (pyamg.multilevel.MultilevelSolver,
                                  pyamg.multilevel.MultilevelSolver.Level))
                   for o in objs)
    # every array reachable from the object is part of the counted hierarchy
    counted = {id(a) for a in _held_arrays([M._ops, M._aggregates])}
    arrays = _held_arrays([o for o in objs if sp.issparse(o) or
                           isinstance(o, np.ndarray)])
    extra = [a for a in arrays if id(a) not in counted and a.size > 1]
    assert extra == []
    # one aggregation operator per coarsening, nothing else from keep=True
    assert len(M._aggregates) == M.levels - 1


def test_validated_matrix_gets_no_row_index_array():
    """The diagonal check reads the CSR arrays; no nnz-long row array is cached."""
    mat = as_matrix(poisson(16), "t", "A")
    AMG(mat)
    assert mat._rows is None


@pytest.mark.parametrize("complex_", [False, True])
def test_hermitian_never_builds_the_transposed_hierarchy(complex_):
    rng = np.random.default_rng(5)
    A = poisson(16)
    if complex_:
        n = A.shape[0]
        N = sp.triu(sp.random_array((n, n), density=3 / n, rng=rng), 1)
        A = sp.csr_array(A.astype(complex) + 1j * (N - N.T))
    mat = as_matrix(A, "t", "A")
    M = AMG(mat)
    assert M.hermitian
    X = rng.standard_normal((A.shape[0], 2))
    M.matvec(X), M.rmatvec(X), M.tmatvec(X), M.rmatvec(X + 1j * X)
    assert "H" not in M._ops


def test_nonsymmetric_transposed_hierarchy_is_lazy():
    rng = np.random.default_rng(6)
    A = nonsymmetric(16, rng)
    mat = as_matrix(A, "t", "A")
    M = AMG(mat)
    assert not M.hermitian
    # the non-symmetric level 0 is the validated matrix as well
    assert np.shares_memory(level0(M).data, mat.data)
    x = rng.standard_normal(A.shape[0])
    M.matvec(x)
    assert "H" not in M._ops
    n_before = M.nbytes
    M.rmatvec(x)
    assert "H" in M._ops and M.nbytes > n_before


def test_update_shares_the_new_validated_matrix():
    A = poisson(20)
    mat = as_matrix(A, "t", "A")
    M = AMG(mat)
    new = mat.with_data(mat.data * 2.0)
    M2 = M.update(new)
    assert np.shares_memory(level0(M2).data, new.data)
    assert not np.shares_memory(level0(M2).data, mat.data)
    x = np.random.default_rng(7).standard_normal(A.shape[0])
    np.testing.assert_array_equal(M2.matvec(x), AMG(new).matvec(x))
