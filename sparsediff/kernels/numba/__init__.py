"""CPU kernels compiled with Numba; same names and arguments as ``_reference``.

Nothing is compiled at import: each kernel is compiled on its first call for
the argument types it meets, and cached on disk (``cache=True``) in the user's
cache directory, never inside the installed package (``_cache``).

Parallel variants run one at a time in the process (a lock): Numba's
``workqueue`` threading layer aborts the process when two Python threads launch
parallel kernels at once, and with the other layers two concurrent parallel
kernels only oversubscribe the cores. Serial variants (small work) run
concurrently without a lock (they release the GIL).
"""

import threading

import numba

from . import _csr

__all__ = [
    "PARALLEL_MIN_THREADS",
    "PARALLEL_MIN_WORK",
    "csr_matvec",
    "csr_rmatvec",
    "sparse_outer",
]

#: Below this many multiply-adds a kernel runs on one thread: starting the
#: thread pool (especially right after BLAS work, whose threads still spin)
#: costs more than it saves.
PARALLEL_MIN_WORK = 1_000_000

#: Parallel kernels only with at least this many Numba threads. Measured on a
#: 2-core machine (2-D Poisson, one right-hand side, ms per call): SpMV serial
#: 0.84 / 2.2 / 9.0 against parallel 1.3 / 7.9 / 15.3 at 256², 512², 1024²,
#: and the same for the transposed product and the pattern kernel: with two
#: threads the pool's start-up and the OpenMP spin-wait never pay back.
PARALLEL_MIN_THREADS = 4

_PARALLEL_LOCK = threading.Lock()


def _big(nnz, m):
    return (nnz * m >= PARALLEL_MIN_WORK
            and numba.get_num_threads() >= PARALLEL_MIN_THREADS)


def csr_matvec(indptr, indices, data, x, out):
    """``out = A @ x`` for 2-D ``x`` and ``out`` (C-contiguous)."""
    if _big(data.shape[0], out.shape[1]):
        with _PARALLEL_LOCK:
            return _csr.csr_matvec_parallel(indptr, indices, data, x, out)
    return _csr.csr_matvec_serial(indptr, indices, data, x, out)


def csr_rmatvec(indptr, indices, data, x, out, conj):
    """``out = A.T @ x``, or ``A.conj().T @ x`` when ``conj``."""
    if _big(data.shape[0], out.shape[1]):
        with _PARALLEL_LOCK:
            return _csr.csr_rmatvec_parallel(indptr, indices, data, x, out, conj)
    return _csr.csr_rmatvec_serial(indptr, indices, data, x, out, conj)


def sparse_outer(indptr, indices, u, v, alpha, out):
    """``out[k] = alpha * sum_m u[i_k, m] * v[j_k, m]``."""
    if _big(indices.shape[0], u.shape[1]):
        with _PARALLEL_LOCK:
            return _csr.sparse_outer_parallel(indptr, indices, u, v, alpha, out)
    return _csr.sparse_outer_serial(indptr, indices, u, v, alpha, out)
