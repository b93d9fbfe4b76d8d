"""Time of one CG iteration, ours against SciPy's, same preconditioner object.

2-D Poisson on k×k grids; a fixed number of iterations short of convergence
(100, or 12 with AMG, which converges in about 10), each time divided by the
iterations actually run (counted by a callback for SciPy). Best of 3.

Usage::

    python benchmarks/bench_cg_iteration.py 64 256 1024
"""

import sys
import time

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

import sparsediff as sd
from sparsediff._validation import as_matrix
from sparsediff.precond import make_preconditioner


def poisson2d(k):
    t = sp.diags_array([-1.0, 2.0, -1.0], offsets=[-1, 0, 1], shape=(k, k))
    return (sp.kron(sp.eye_array(k), t) + sp.kron(t, sp.eye_array(k))).tocsr()


def per_iteration(A, b, M):
    P = None if M is None else make_preconditioner(M, as_matrix(A, "bench", "A"),
                                                   "bench")
    maxiter = 12 if M == "amg" else 100
    solver = sd.Solver(A, method="cg", M=P, rtol=1e-30, maxiter=maxiter,
                       on_failure="nan")
    solver.solve(b)  # warm-up (Numba)
    ours = np.inf
    for _ in range(3):
        t = time.perf_counter()
        sol = solver.solve(b)
        ours = min(ours, (time.perf_counter() - t) / max(sol.info.iterations, 1))
    Mop = None if P is None else spla.LinearOperator(A.shape, matvec=P.matvec,
                                                     dtype=A.dtype)
    theirs = np.inf
    count = [0]
    for _ in range(3):
        count[0] = 0
        t = time.perf_counter()
        spla.cg(A, b, rtol=1e-30, maxiter=maxiter, M=Mop,
                callback=lambda xk: count.__setitem__(0, count[0] + 1))
        theirs = min(theirs, (time.perf_counter() - t) / max(count[0], 1))
    return ours, theirs


def main(sizes):
    print("| grid | M | ours ms | SciPy ms | SciPy/ours |")
    print("|---|---|---:|---:|---:|")
    for k in sizes:
        A = poisson2d(k)
        b = np.random.default_rng(0).standard_normal(A.shape[0])
        for M in (None, "jacobi", "amg"):
            ours, theirs = per_iteration(A, b, M)
            print(f"| {k}² | {M or 'none'} | {1e3 * ours:.3f} | {1e3 * theirs:.3f} "
                  f"| {theirs / ours:.2f} |", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [64, 256])
