"""GPU kernels written with numba-cuda: same names and arguments as ``_reference``.

Every function here is a *host* function with exactly the signature of its
NumPy twin in ``kernels/_reference.py``: it takes device arrays (CuPy arrays,
through ``__cuda_array_interface__``; NumPy arrays under Numba's CUDA
simulator, ``NUMBA_ENABLE_CUDASIM=1``), launches the kernels of ``_device``,
writes into ``out`` and returns it. Nothing is imported at ``import
sparsediff``, nor at the import of this package: numba.cuda is imported, and
each kernel compiled for its argument types, on first use. The SOR sweeps
(sequential by nature) and the batched kernels have no device version yet.

No host synchronization: per-column scalars (``alpha``, ``beta``, ``omega``)
are read by the kernels from device arrays; reductions are written to device
arrays. CuPy arrays are wrapped with ``sync=False`` and the kernels launched on
CuPy's current stream (numba's default would synchronize on the array's
stream at every launch).

Launch configuration (``THREADS`` threads per 1-D block, a power of two;
grids of at most ``BLOCKS_PER_SM`` blocks per multiprocessor, with
grid-stride loops beyond):

``csr_matvec``, ``csr_matvec_dot(1)``
    Grid ``(blocks, m)``: column ``c = blockIdx.y``. A group of ``G`` lanes
    per row: ``G = 1`` when the average row holds fewer than
    ``GROUP_MIN_AVG`` entries (one thread per row: 2-D and 3-D stencils),
    else the power of two ≤ ``min(32, avg / 2)`` (at least 2, at most
    ``THREADS``): a warp or part of one per long row, whose lanes read
    consecutive entries, their partial sums combined in shared memory. Sums
    in float64 (real and imaginary parts). The fused dot of CG (``pᴴ A p``)
    is summed per block in shared memory, then one atomic per block and
    column.
``csr_rmatvec`` (T, and H with ``conj``)
    ``out`` zeroed, then the same row groups scatter ``a_ik x_i`` into
    ``out[j]`` by atomic adds (real and imaginary parts separately on a float
    view: numba.cuda has no complex atomics). Not bitwise reproducible from
    run to run (the order of the atomics varies).
``sparse_outer``
    One thread per stored entry (coalesced writes of ``out``); the entry's row
    by a binary search in ``indptr`` (``log2 n`` reads, mostly cache hits for
    neighbouring threads): no row array is allocated.
``col_dot``, ``col_sqnorm``, ``cg_step``, ``sub_scaled``
    Grid ``(blocks, m)``; a grid-stride loop over the rows with a float64 (or
    complex as two float64) accumulator in a register, a shared-memory tree sum
    per block, one atomic per block and column into the zeroed output: at most
    ``BLOCKS_PER_SM × SMs`` atomics per column.
``xpby``, ``bicgstab_p``, ``bicgstab_x``
    One thread per element of the flat ``(n·m)`` block (consecutive threads,
    consecutive addresses), the column's scalar read from the device array.
``csr_diagonal``, ``segment_sum``
    One thread per row / per segment (short loops over a few entries).

Arrays are C-contiguous, as everywhere on the seam: the outputs written
through float views (complex results, atomics) and zeroed as flat arrays
must be.
"""

import numpy as np

__all__ = [
    "BLOCKS_PER_SM",
    "GROUP_MIN_AVG",
    "THREADS",
    "bicgstab_p",
    "bicgstab_x",
    "cg_step",
    "col_dot",
    "col_sqnorm",
    "csr_diagonal",
    "csr_matvec",
    "csr_matvec_dot",
    "csr_matvec_dot1",
    "csr_rmatvec",
    "load",
    "segment_sum",
    "sparse_outer",
    "sub_scaled",
    "xpby",
]

#: Threads per block (a power of two, at most ``_device.MAX_THREADS``).
THREADS = 256

#: Grid size cap: blocks per multiprocessor (grid-stride loops beyond). Keeps
#: the reductions' atomics per column at a few hundred.
BLOCKS_PER_SM = 4

#: Average entries per row from which a group of lanes shares a row in the
#: CSR products (below it, one thread per row).
GROUP_MIN_AVG = 8

_SM_COUNT = []


def load():
    """Import the device code now (numba.cuda; nothing is compiled yet).

    A backend calls it to refuse early, with a clear message, where
    numba-cuda is missing; the kernels call it on first use.
    """
    try:
        from . import _device
    except ImportError as exc:
        raise ImportError(
            f"the GPU kernels of sparsediff need numba-cuda "
            f"(`pip install numba-cuda`): {exc}") from exc
    return _device


_dev = load


def _sm_count():
    if not _SM_COUNT:
        from numba import cuda

        try:
            _SM_COUNT.append(int(cuda.get_current_device().MULTIPROCESSOR_COUNT))
        except Exception:  # the simulator's device has no attributes
            _SM_COUNT.append(4)
    return _SM_COUNT[0]


def _blocks(work):
    """Blocks for ``work`` threads: enough to cover it, at most the cap."""
    return max(1, min(-(-work // THREADS), BLOCKS_PER_SM * _sm_count()))


def _group(nnz, n):
    """Lanes per row for the CSR products (see the module docstring)."""
    avg = nnz / max(n, 1)
    if avg < GROUP_MIN_AVG:
        return 1
    g = 1
    while g * 2 <= min(32, THREADS, max(2, avg / 2)):
        g *= 2
    return g


_STREAMS = {}


def _stream(a):
    """The stream to launch on: CuPy's current stream for CuPy arrays."""
    if type(a).__module__.split(".")[0] != "cupy":
        return 0
    import cupy  # pragma: no cover - GPU only
    from numba import cuda

    ptr = cupy.cuda.get_current_stream().ptr
    if not ptr:
        return 0
    s = _STREAMS.get(ptr)
    if s is None:
        s = _STREAMS[ptr] = cuda.external_stream(ptr)
    return s


def _d(a):
    """``a`` as a kernel argument: a CUDA array interface object is wrapped
    without the stream synchronization numba would do; NumPy arrays (the
    simulator) pass as they are."""
    cai = getattr(a, "__cuda_array_interface__", None)
    if cai is None:
        return a
    from numba import cuda  # pragma: no cover - GPU only

    return cuda.from_cuda_array_interface(cai, owner=a, sync=False)


def _fview(a):
    """``(view, w)``: ``a`` as real numbers, ``w = 2`` parts per complex value."""
    if a.dtype.kind == "c":
        return a.view(np.float32 if a.dtype == np.complex64 else np.float64), 2
    return a, 1


def _zero(a, stream):
    """``a[...] = 0`` on the stream of what follows: CuPy's ``fill`` (a memset
    on its current stream, cheaper than a numba launch), else a kernel."""
    if type(a).__module__.split(".")[0] == "cupy":  # pragma: no cover - GPU only
        a.fill(0)
        return
    flat = a.reshape(-1)
    if flat.shape[0]:
        k = _dev().fill_zero
        k[_blocks(flat.shape[0]), THREADS, stream](_d(flat))


def _as2d(a):
    return a.reshape(-1, 1) if a.ndim == 1 else a


# ---------------------------------------------------------------------------
# CSR products
# ---------------------------------------------------------------------------


def _spmv_n(indptr, indices, data, x, out, dots):
    dv = _dev()
    s = _stream(out)
    n, m = out.shape
    outf, w = _fview(out)
    if dots is not None:
        dotsf, _ = _fview(dots)
        _zero(dotsf[:w * m], s)
    if n == 0 or m == 0:
        return out
    g = _group(indices.shape[0], n)
    grid = (_blocks(n * g), m)
    args = (_d(indptr), _d(indices), _d(data), _d(x), _d(outf), w, g)
    if dots is None:
        dv.spmv_n[grid, THREADS, s](*args)
    else:
        dv.spmv_n_dot[grid, THREADS, s](*args, _d(dotsf))
    return out


def csr_matvec(indptr, indices, data, x, out):
    """``out = A @ x``."""
    return _spmv_n(indptr, indices, data, x, out, None)


def csr_matvec_dot(indptr, indices, data, x, out, dots):
    """``out = A x`` and ``dots[c] = Σ_i conj(x[i, c]) · out[i, c]``."""
    _spmv_n(indptr, indices, data, x, out, dots)
    return out


def csr_matvec_dot1(indptr, indices, data, x, out, dots):
    """:func:`csr_matvec_dot` for one right-hand side on 1-D ``x`` and ``out``."""
    _spmv_n(indptr, indices, data, _as2d(x), _as2d(out), dots[:1])
    return out


def csr_rmatvec(indptr, indices, data, x, out, conj):
    """``out = A.T @ x`` (``conj=False``) or ``A.conj().T @ x`` (``conj=True``)."""
    s = _stream(out)
    outf, w = _fview(out)
    _zero(outf, s)
    n = indptr.shape[0] - 1
    m = out.shape[1]
    if n == 0 or m == 0 or indices.shape[0] == 0:
        return out
    g = _group(indices.shape[0], n)
    _dev().spmv_t[(_blocks(n * g), m), THREADS, s](
        _d(indptr), _d(indices), _d(data), _d(x), _d(outf), w, g, bool(conj))
    return out


def sparse_outer(indptr, indices, u, v, alpha, out):
    """``out[k] = alpha * sum_m u[i_k, m] * v[j_k, m]`` for stored entries k."""
    nnz = indices.shape[0]
    if nnz == 0:
        return out
    a = complex(alpha)
    outf, w = _fview(out)
    s = _stream(out)
    _dev().sparse_outer[_blocks(nnz), THREADS, s](
        _d(indptr), _d(indices), _d(u), _d(v), a.real, a.imag, _d(outf), w)
    return out


def csr_diagonal(indptr, indices, data, out):
    """``out[i] = A[i, i]`` (0 where not stored; duplicates summed)."""
    n = out.shape[0]
    if n == 0:
        return out
    outf, w = _fview(out)
    _dev().csr_diagonal[_blocks(n), THREADS, _stream(out)](
        _d(indptr), _d(indices), _d(data), _d(outf), w)
    return out


def segment_sum(values, starts, out):
    """``out[g] = Σ values[starts[g]:starts[g + 1]]`` (the last to the end)."""
    ng = starts.shape[0]
    if ng == 0:
        return out
    outf, w = _fview(out)
    _dev().segment_sum[_blocks(ng), THREADS, _stream(out)](
        _d(values), _d(starts), _d(outf), w)
    return out


# ---------------------------------------------------------------------------
# Krylov reductions and fused updates
# ---------------------------------------------------------------------------


def _reduce_grid(n, m):
    return (_blocks(n), m)


def col_dot(a, b, out):
    """``out[c] = Σ_i conj(a[i, c]) · b[i, c]`` (``out`` float64 or complex128)."""
    s = _stream(out)
    outf, w = _fview(out)
    _zero(outf, s)
    n, m = a.shape
    if n and m:
        _dev().col_dot[_reduce_grid(n, m), THREADS, s](_d(a), _d(b), _d(outf), w)
    return out


def col_sqnorm(a, out):
    """``out[c] = Σ_i |a[i, c]|²`` (``out`` float64)."""
    s = _stream(out)
    _zero(out, s)
    n, m = a.shape
    if n and m:
        _dev().col_sqnorm[_reduce_grid(n, m), THREADS, s](_d(a), _d(out))
    return out


def cg_step(x, r, p, q, alpha, out):
    """``x += α p``, ``r -= α q``, ``out[c] = ‖r[:, c]‖²``."""
    s = _stream(out)
    _zero(out, s)
    n, m = x.shape
    if n and m:
        _dev().cg_step[_reduce_grid(n, m), THREADS, s](
            _d(x), _d(r), _d(p), _d(q), _d(alpha), _d(out))
    return out


def sub_scaled(out, r, alpha, v, norms):
    """``out = r − α v`` and ``norms[c] = ‖out[:, c]‖²``."""
    s = _stream(out)
    _zero(norms, s)
    n, m = out.shape
    if n and m:
        _dev().sub_scaled[_reduce_grid(n, m), THREADS, s](
            _d(out), _d(r), _d(alpha), _d(v), _d(norms))
    return out


def _elementwise(name, first, *args):
    n, m = first.shape
    if n and m:
        k = getattr(_dev(), name)
        k[_blocks(n * m), THREADS, _stream(first)](*(_d(a) for a in args))


def xpby(z, beta, p):
    """``p = z + β p``."""
    _elementwise("xpby", p, z, beta, p)
    return p


def bicgstab_p(p, r, v, beta, omega):
    """``p = r + β (p − ω v)``."""
    _elementwise("bicgstab_p", p, p, r, v, beta, omega)
    return p


def bicgstab_x(x, alpha, phat, omega, shat):
    """``x += α p̂ + ω ŝ``."""
    _elementwise("bicgstab_x", x, x, alpha, phat, omega, shat)
    return x
