"""Numba CSR kernels (compiled lazily on first call, cached on disk).

Serial and ``parallel=True`` variants of each kernel: the front end in
``__init__`` picks the serial one for small work, where thread start-up costs
more than it saves (docs/architecture.md, "Small problems are overhead-bound").
"""

import numba as nb
import numpy as np

from . import _cache  # noqa: F401  (cache outside the package; before any kernel)

_opts = dict(cache=True, nogil=True, fastmath=False)


@nb.njit(**_opts)
def _matvec1(indptr, indices, data, x, out):
    k0 = np.uint64(indptr[0])
    for i in range(out.shape[0]):
        k1 = np.uint64(indptr[i + 1])
        acc = out.dtype.type(0)
        for k in range(k0, k1):
            acc += data[k] * x[np.uint64(indices[k])]
        out[i] = acc
        k0 = k1


@nb.njit(**_opts)
def csr_matvec_serial(indptr, indices, data, x, out):
    # Row bounds are loaded once per row, and every index is widened to an
    # *unsigned* 64-bit integer: Numba then skips its negative-index
    # wraparound test on each access. ``range(indptr[i], indptr[i + 1])``
    # with signed int32 indices measured 0.87 ms at nnz = 326k, against
    # SciPy's C++ loop 0.25-0.36 ms and 0.23 ms written this way.
    n, m = out.shape
    k0 = np.uint64(indptr[0])
    if m == 1:
        # one right-hand side (the Krylov case): 1-D views of the C-ordered
        # (n, 1) blocks, accumulator in a register
        _matvec1(indptr, indices, data, x.reshape(-1), out.reshape(-1))
        return out
    for i in range(n):
        k1 = np.uint64(indptr[i + 1])
        for c in range(m):
            out[i, c] = 0
        for k in range(k0, k1):
            a = data[k]
            j = np.uint64(indices[k])
            for c in range(m):
                out[i, c] += a * x[j, c]
        k0 = k1
    return out


@nb.njit(parallel=True, **_opts)
def csr_matvec_parallel(indptr, indices, data, x, out):
    n, m = out.shape
    for i in nb.prange(n):
        k0 = np.uint64(indptr[i])
        k1 = np.uint64(indptr[i + 1])
        for c in range(m):
            acc = out.dtype.type(0)
            for k in range(k0, k1):
                acc += data[k] * x[np.uint64(indices[k]), c]
            out[i, c] = acc
    return out


@nb.njit(**_opts)
def _rmatvec_rows(indptr, indices, data, x, out, conj, r0, r1):
    m = out.shape[1]
    k0 = np.uint64(indptr[r0])
    for i in range(r0, r1):
        k1 = np.uint64(indptr[i + 1])
        for k in range(k0, k1):
            a = np.conj(data[k]) if conj else data[k]
            j = np.uint64(indices[k])
            for c in range(m):
                out[j, c] += a * x[i, c]
        k0 = k1


@nb.njit(**_opts)
def csr_rmatvec_serial(indptr, indices, data, x, out, conj):
    out[...] = 0
    _rmatvec_rows(indptr, indices, data, x, out, conj, 0, indptr.shape[0] - 1)
    return out


@nb.njit(parallel=True, **_opts)
def _csr_rmatvec_chunks(indptr, indices, data, x, conj, bufs):
    # Scatter each chunk of rows into its own buffer: no atomics, no races.
    nrows = indptr.shape[0] - 1
    nchunks = bufs.shape[0]
    for t in nb.prange(nchunks):
        r0 = nrows * t // nchunks
        r1 = nrows * (t + 1) // nchunks
        _rmatvec_rows(indptr, indices, data, x, bufs[t], conj, r0, r1)
    return bufs


def csr_rmatvec_parallel(indptr, indices, data, x, out, conj):
    """Parallel ``A.T @ x`` / ``A.conj().T @ x``: chunked scatter, then a sum.

    A thin Python front. The number of chunks is read here, not inside the
    compiled function (``numba.get_num_threads`` in a kernel is a dynamic
    global: it disables the disk cache and costs seconds of compilation in
    every process). The buffers are summed by NumPy in a fixed order, so the
    result does not depend on scheduling: bitwise reproducible for a fixed
    thread count (one ``prange`` also halves the compile time).
    """
    nchunks = max(1, min(nb.get_num_threads(), indptr.shape[0] - 1))
    bufs = np.zeros((nchunks,) + out.shape, dtype=out.dtype)
    _csr_rmatvec_chunks(indptr, indices, data, x, conj, bufs)
    np.sum(bufs, axis=0, out=out)
    return out


@nb.njit(**_opts)
def sparse_outer_serial(indptr, indices, u, v, alpha, out):
    m = u.shape[1]
    k0 = np.uint64(indptr[0])
    for i in range(indptr.shape[0] - 1):
        k1 = np.uint64(indptr[i + 1])
        for k in range(k0, k1):
            j = np.uint64(indices[k])
            acc = out.dtype.type(0)
            for c in range(m):
                acc += u[i, c] * v[j, c]
            out[k] = alpha * acc
        k0 = k1
    return out


@nb.njit(parallel=True, **_opts)
def sparse_outer_parallel(indptr, indices, u, v, alpha, out):
    m = u.shape[1]
    for i in nb.prange(indptr.shape[0] - 1):
        for k in range(np.uint64(indptr[i]), np.uint64(indptr[i + 1])):
            j = np.uint64(indices[k])
            acc = out.dtype.type(0)
            for c in range(m):
                acc += u[i, c] * v[j, c]
            out[k] = alpha * acc
    return out
