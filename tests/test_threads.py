"""Concurrency: one Solver shared by many threads."""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import caller_data, randn

import sparsediff as sd
from sparsediff.kernels import numba as kernels

NTHREADS = 8


def poisson_like(n, dtype=np.complex128, seed=0):
    rng = np.random.default_rng(seed)
    main = 4.0 + rng.random(n)
    off = -1.0 + 0.3j * rng.random(n - 1) if np.dtype(dtype).kind == "c" else -1.0
    A = sp.diags_array([off, main, np.conj(off) * 0.9], offsets=[-1, 0, 1],
                       shape=(n, n), format="csr").astype(dtype)
    return A


def work_items(n, dtype, count, seed=1):
    rng = np.random.default_rng(seed)
    return [(("N", "T", "H")[k % 3], randn(rng, (n, 2), dtype), randn(rng, (n, 2), dtype))
            for k in range(count)]


def run_item(solver, item):
    trans, b, g = item
    sol = solver.solve(b, trans=trans)
    gA, gb = sol.vjp(g)
    return sol.x, caller_data(gA), gb, sol.jvp(db=g)


def assert_bitwise(results, expected):
    for got, want in zip(results, expected):
        for a, c in zip(got, want):
            np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("parallel_kernels", [False, True])
def test_shared_solver_is_bitwise_equal_to_serial(parallel_kernels, monkeypatch):
    """E1: 8 threads doing N/T/H solves and vjps on one factorization."""
    if parallel_kernels:  # also exercise the lock around parallel Numba kernels
        monkeypatch.setattr(kernels, "PARALLEL_MIN_WORK", 0)
        monkeypatch.setattr(kernels, "PARALLEL_MIN_THREADS", 1)
    n = 300 if not parallel_kernels else 60
    A = poisson_like(n)
    solver = sd.Solver(A)
    items = work_items(n, np.complex128, 48)
    expected = [run_item(solver, it) for it in items]
    barrier = threading.Barrier(NTHREADS)

    def task(chunk):
        barrier.wait()
        return [run_item(solver, it) for it in chunk]

    chunks = [items[i::NTHREADS] for i in range(NTHREADS)]
    with ThreadPoolExecutor(NTHREADS) as pool:
        out = list(pool.map(task, chunks))
    for i, res in enumerate(out):
        assert_bitwise(res, expected[i::NTHREADS])
    # and a repeat in this thread is bitwise identical too (E7)
    assert_bitwise([run_item(solver, it) for it in items[:6]], expected[:6])


def test_update_concurrent_with_solves():
    """E3: updates swap the factorization atomically; every solution keeps the
    factorization (and values) it was solved with."""
    n = 200
    A = poisson_like(n, np.float64)
    v1 = caller_data(A)
    v2 = 1.7 * v1
    b = np.random.default_rng(3).standard_normal(n)
    g = np.random.default_rng(4).standard_normal(n)
    refs = {}
    for key, v in (("1", v1), ("2", v2)):
        s = sd.Solver(sp.csr_array((v, A.indices, A.indptr), shape=A.shape)).solve(b)
        refs[key] = (s.x, caller_data(s.vjp(g)[0]), s.vjp(g)[1])
    solver = sd.Solver(A)
    stop = threading.Event()
    errors = []

    def updater():
        k = 0
        while not stop.is_set():
            solver.update(v2 if k % 2 == 0 else v1)
            k += 1

    def solving():
        try:
            for _ in range(40):
                sol = solver.solve(b)
                key = "1" if np.array_equal(sol.x, refs["1"][0]) else "2"
                np.testing.assert_array_equal(sol.x, refs[key][0])
                gA, gb = sol.vjp(g)
                np.testing.assert_array_equal(caller_data(gA), refs[key][1])
                np.testing.assert_array_equal(gb, refs[key][2])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    up = threading.Thread(target=updater)
    workers = [threading.Thread(target=solving) for _ in range(NTHREADS)]
    up.start()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    up.join()
    assert not errors, errors[0]


def test_factor_from_an_exited_thread():
    """E2: a Solver built in a worker thread that has exited still works."""
    A = poisson_like(50)
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("s", sd.Solver(A)))
    t.start()
    t.join()
    b = np.ones(50, complex)
    x = box["s"].solve(b, trans="H").x
    np.testing.assert_allclose(x, np.linalg.solve(A.toarray().conj().T, b), rtol=1e-12)


def test_module_level_calls_from_threads(rng):
    """sd.solve / sparse_outer from many threads at once: no shared state."""
    A = poisson_like(80, np.float64)
    bs = [rng.standard_normal(80) for _ in range(16)]
    expected = [sd.solve(A, b).x for b in bs]
    with ThreadPoolExecutor(NTHREADS) as pool:
        got = list(pool.map(lambda b: sd.solve(A, b).x, bs))
        outer = list(pool.map(lambda b: sd.sparse_outer(A, b, b).data, bs))
    for a, c in zip(got, expected):
        np.testing.assert_array_equal(a, c)
    for b, o in zip(bs, outer):
        np.testing.assert_array_equal(o, sd.sparse_outer(A, b, b).data)
