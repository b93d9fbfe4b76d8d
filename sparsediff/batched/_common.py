"""What the batched engines share: the batch layout, products, maps, threads.

Arrays of the public API are batch-first, ``(B, n, m)``; the kernels of
``mat.backend`` (``batched_csr_matvec``, ``batched_csr_rmatvec``,
``batched_sparse_outer``) take values ``(nnz, B)`` and vectors ``(n, B, m)``,
so that one pass over the shared index arrays serves every element (the
pattern product writes its ``(B, nnz)`` result batch-first, as returned);
``swap01`` copies between the two layouts.
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["batch_last_matvec", "batch_map", "batch_matvec", "batch_norms",
           "caller_order",
           "canonical_order", "pattern_products", "swap01"]

_POOLS = {}
_POOLS_LOCK = threading.Lock()


def default_workers():
    """One worker per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def batch_map(fn, items, workers):
    """``[fn(i) for i in items]``, spread over ``workers`` threads.

    SuperLU's factorization and solves release the GIL (measured in
    ``benchmarks/bench_batched.py``), so the elements of a batch factor in
    parallel. Exceptions propagate from the first failing item.
    """
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [fn(i) for i in items]
    with _POOLS_LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            pool = _POOLS[workers] = ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="sparsediff-batched")
    return list(pool.map(fn, items))


def canonical_order(mat, values):
    """Caller-ordered ``(B, nnz_caller)`` values as canonical ``(B, nnz)``
    (duplicates summed), the batched form of ``MatrixInput.to_canonical``."""
    perm, order, starts = mat._perm, mat._order, mat._starts
    if perm is None:
        return np.array(values, copy=True)
    if starts is None:
        out = np.empty((values.shape[0], mat.nnz), dtype=values.dtype)
        out[:, perm] = values
        return out
    if values.shape[0] == 0 or values.shape[1] == 0:
        return np.zeros((values.shape[0], mat.nnz), dtype=values.dtype)
    return np.add.reduceat(values[:, order], starts, axis=1)


def caller_order(mat, values, copy=True):
    """Canonical ``(B, nnz)`` values in the caller's entry order (a new array,
    or ``values`` itself when the orders agree and not ``copy``; duplicates
    share their merged entry's value)."""
    if mat._perm is None:
        return np.array(values, copy=True) if copy else values
    return values[:, mat._perm]


def batch_norms(a):
    """2-norm of every column of every element of ``a`` (B, n, m) -> (B, m)."""
    if a.shape[1] == 0:
        return np.zeros((a.shape[0], a.shape[2]))
    return np.sqrt(np.einsum("bnm,bnm->bm", a.real, a.real)
                   + (np.einsum("bnm,bnm->bm", a.imag, a.imag)
                      if np.iscomplexobj(a) else 0.0))


def swap01(mat, a, dtype=None):
    """``a`` of shape (p, q, m) as a new C-contiguous (q, p, m) array in
    ``dtype``: batch-first ↔ batch-last, by the backend's tiled kernel
    (NumPy's transposing copies are several times slower on large batches)."""
    dtype = np.dtype(a.dtype if dtype is None else dtype)
    if a.dtype != dtype:
        a = a.astype(dtype)
    out = np.empty((a.shape[1], a.shape[0], a.shape[2]), dtype=dtype)
    mat.backend.kernels.batched_swap01(a, out)
    return out


def batch_last_matvec(mat, data_t, xt, trans="N"):
    """``op(A_e) @ xt[:, e]`` for every element, batch-last: ``data_t``
    (nnz, B), ``xt`` (n, B, m); returns a new (n, B, m) array."""
    kernels = mat.backend.kernels
    dtype = np.result_type(data_t.dtype, xt.dtype)
    xt = np.ascontiguousarray(xt, dtype=dtype)
    data_t = np.ascontiguousarray(data_t, dtype=dtype)
    out = np.empty_like(xt)
    if trans == "N":
        kernels.batched_csr_matvec(mat.indptr, mat.indices, data_t, xt, out)
    else:
        kernels.batched_csr_rmatvec(mat.indptr, mat.indices, data_t, xt, out,
                                    trans == "H")
    return out


def batch_matvec(mat, data_t, x3, trans="N"):
    """``op(A_e) @ x3[e]`` for every element: ``data_t`` (nnz, B), ``x3``
    (B, n, m); returns a new (B, n, m) array."""
    dtype = np.result_type(data_t.dtype, x3.dtype)
    return swap01(mat, batch_last_matvec(mat, data_t, swap01(mat, x3, dtype), trans))


def pattern_operands(x3, lam3, trans):
    """``(u, v)`` with ``∂L/∂a_k = −Σ u[i_k] v[j_k]`` for ``op`` = ``trans``
    (the batched ``adjoint.linear.pattern_gradient``, docs/design.md 2.1)."""
    def conj(a):            # np.conj copies even a real array
        return np.conj(a) if np.iscomplexobj(a) else a

    if trans == "N":
        return lam3, conj(x3)
    if trans == "T":
        return conj(x3), lam3
    return x3, conj(lam3)


def pattern_products(mat, x3, lam3, trans):
    """Canonical ``∂L/∂data`` (B, nnz) of every element from ``x`` and ``λ``
    (the batched ``adjoint.linear.pattern_gradient``, docs/design.md 2.1)."""
    u, v = pattern_operands(x3, lam3, trans)
    dtype = np.result_type(u.dtype, v.dtype)
    ut = swap01(mat, u, dtype)
    vt = swap01(mat, v, dtype)
    out = np.empty((x3.shape[0], mat.nnz), dtype=dtype)
    mat.backend.kernels.batched_sparse_outer(mat.indptr, mat.indices, ut, vt,
                                             dtype.type(-1), out)
    return out
