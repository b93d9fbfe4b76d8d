"""Inference kernels of ``sparsediff.learn.DirectionNet`` (compiled lazily, cached on disk).

When no gradient is needed (a trained network inside ``neural_cg`` or
``neural_gmres``), PyTorch's ``index_select`` / ``index_add`` pair of every
message-passing layer (a gathered ``(nnz, H)`` temporary, a multiply and a
scatter, each a separate dispatch) is replaced here by one pass over the CSR
arrays that also adds the layer's dense part. The dense products by the
``H × H`` mixing matrices stay with the caller (one ``torch.mm`` per layer on
the same memory: a BLAS kernel was 5-10× faster than a Numba loop over eight
channels). The arithmetic is that of ``sparsediff/learn/_gnn.py`` in another
order, so the result equals the PyTorch one to rounding.

Layout: ``h`` is ``(n, H)`` C-contiguous (the ``H`` channels of a node
adjacent), the edge weights ``W`` of a layer ``(nnz, H)`` in CSR entry order.
A layer of ``Φ`` is ``h ← h + h S + M(h T)`` with
``M(g)_i = Σ_{k in row i} W_k ⊙ g_{cols_k}``; a layer of ``Φᵀ`` is
``h ← h + h Sᵀ + Mᵀ(h) Tᵀ`` (``sparsediff/learn/_gnn.py``).

Serial on purpose: at the sizes where the network is used (up to 256², one
right-hand side) a parallel launch costs more than it saves on two cores (see
``PARALLEL_MIN_THREADS`` in this package), and a serial loop releases the GIL.
``dot`` is a serial inner product: on a shared two-core machine NumPy's
multithreaded BLAS ``ddot`` was measured at 0.06-8 ms per call on 16,384
entries (threads waking up), against 0.02 ms here.
"""

import numba as nb

from . import _cache  # noqa: F401  (cache outside the package; before any kernel)

__all__ = ["dot", "gather_layer", "scatter_layer"]

_opts = dict(cache=True, nogil=True, fastmath=False)


@nb.njit(**_opts)
def dot(a, b):
    """``Σ_i a_i b_i`` of two 1-D float64 arrays, serial (four partial sums)."""
    n = a.shape[0]
    s0 = s1 = s2 = s3 = 0.0
    m = n - n % 4
    for i in range(0, m, 4):
        s0 += a[i] * b[i]
        s1 += a[i + 1] * b[i + 1]
        s2 += a[i + 2] * b[i + 2]
        s3 += a[i + 3] * b[i + 3]
    for i in range(m, n):
        s0 += a[i] * b[i]
    return (s0 + s1) + (s2 + s3)


@nb.njit(**_opts)
def gather_layer(indptr, indices, W, h, G, gain, use_gain, out):
    """One layer of ``Φ``: ``out = (h + G[:, :H] + M(G[:, H:])) ⊙ gain``.

    ``G = h [S | T]`` is ``(n, 2H)`` (computed by the caller with a dense
    matrix product), ``M(g)_i = Σ_{k in row i} W_k ⊙ g_{cols_k}``; ``gain``
    ``(n, H)`` is read only when ``use_gain``. Returns ``out``.
    """
    n, H = h.shape
    for i in range(n):
        for a in range(H):
            out[i, a] = h[i, a] + G[i, a]
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            for a in range(H):
                out[i, a] += W[k, a] * G[j, H + a]
        if use_gain:
            for a in range(H):
                out[i, a] *= gain[i, a]
    return out


@nb.njit(**_opts)
def scatter_layer(indptr, indices, W, h, gain, use_gain, B):
    """Before one layer of ``Φᵀ``: ``B = [h ⊙ gain | Mᵀ(h ⊙ gain)]``, ``(n, 2H)``.

    ``Mᵀ(v)_j = Σ_{k: cols_k = j} W_k ⊙ v_{rows_k}`` (messages gathered on the
    rows and summed on the columns); the caller then forms
    ``B[:, :H] + B [Sᵀ; Tᵀ]``. ``gain`` is read only when ``use_gain``.
    """
    n, H = h.shape
    for i in range(n):
        for a in range(H):
            B[i, a] = h[i, a] * gain[i, a] if use_gain else h[i, a]
            B[i, H + a] = 0.0
    for i in range(n):
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            for a in range(H):
                B[j, H + a] += W[k, a] * B[i, a]
    return B
