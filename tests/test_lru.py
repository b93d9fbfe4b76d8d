"""Internal pieces shared by the public layer and the glue: the LRU cache of
the glue's solvers, the integer-option check, the internal Solver constructor."""

import inspect
import threading

import numpy as np
import pytest
import scipy.sparse as sp

import sparsediff as sd
from sparsediff._api import _solver_for
from sparsediff._lru import LRUCache
from sparsediff._validation import as_matrix, check_int


def test_lru_evicts_least_recently_used():
    cache = LRUCache(maxsize=2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1          # "a" is now the most recent
    cache.put("c", 3)                   # evicts "b"
    assert cache.get("b") is None
    assert (cache.get("a"), cache.get("c")) == (1, 3)
    cache.maxsize = 1
    cache.put("d", 4)
    assert [cache.get(k) for k in "acd"] == [None, None, 4]
    cache.clear()
    assert cache.get("d") is None


def test_lru_get_or_build_builds_once_per_key():
    cache = LRUCache(maxsize=4)
    calls = []

    def build():
        calls.append(1)
        return object()

    first = cache.get_or_build("k", build)
    assert cache.get_or_build("k", build) is first
    assert len(calls) == 1


def test_lru_concurrent_use_stays_bounded():
    cache = LRUCache(maxsize=3)

    def work(i):
        for j in range(200):
            cache.get_or_build((i, j % 5), lambda j=j: j + 1)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache._items) <= 3


@pytest.mark.parametrize("value, allow_none, strict, expected", [
    (3, False, False, 3), (np.int64(2), False, False, 2), (None, True, False, None),
    (True, False, False, 1)])
def test_check_int_accepts(value, allow_none, strict, expected):
    assert check_int(value, "f", "k", 0, allow_none=allow_none,
                     strict=strict) == expected


@pytest.mark.parametrize("value, allow_none, strict, exc, match", [
    (-1, False, False, ValueError, "`f`: `k` must be >= 0; got -1."),
    (2.5, False, False, TypeError, "`f`: `k` must be an integer; got 2.5."),
    (None, False, False, TypeError, "`k` must be an integer; got None"),
    ("3", True, False, TypeError, "`k` must be an integer or None; got '3'"),
    (True, True, True, TypeError, "`k` must be an integer or None; got True"),
])
def test_check_int_rejects(value, allow_none, strict, exc, match):
    with pytest.raises(exc, match=match):
        check_int(value, "f", "k", 0, allow_none=allow_none, strict=strict)


def test_solver_public_signature_has_no_private_arguments():
    params = inspect.signature(sd.Solver).parameters
    assert list(params) == ["A", "method", "M", "rtol", "atol", "maxiter",
                            "on_failure"]
    assert [params[k].default for k in list(params)[1:]] == [
        "auto", None, 1e-8, 0.0, None, "raise"]
    with pytest.raises(TypeError):
        sd.Solver(sp.eye(3, format="csr"), _func="x")


def test_internal_constructors_name_the_caller_and_keep_the_dtype():
    A = sp.csr_array(np.array([[4.0, 1.0], [1.0, 3.0]], dtype=np.float32))
    mat = as_matrix(A, "caller")
    wide = mat.with_data(mat.data.astype(np.float64))
    solver = sd.Solver._from_validated(wide, func="caller", a_dtype=mat.dtype)
    assert solver.dtype == np.float32 and solver._state.mat.dtype == np.float64
    with pytest.raises(ValueError, match="`caller`: `on_failure`"):
        sd.Solver._from_validated(wide, func="caller", a_dtype=mat.dtype,
                                  on_failure="ignore")
    with pytest.raises(ValueError, match="`glue`: `rtol`"):
        _solver_for(A, "glue", rtol=-1.0)
    x = _solver_for(A, "glue", method="direct").solve(np.ones(2)).x
    np.testing.assert_allclose(A @ x, np.ones(2), rtol=1e-5)
