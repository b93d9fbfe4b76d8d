"""The numba-cuda kernels behind ``kernels/cuda`` (imported on first use only).

Device code only: the host functions in ``__init__`` choose the launch shapes
and pass the arrays. Conventions shared by every kernel here:

* Arithmetic is written on real and imaginary parts in float64
  (``float(v.real)``, ``float(v.imag)``; the imaginary part of a real value is
  0), so one kernel body serves real and complex values, and a real matrix
  meets a complex block without a complex copy.
* Results that are summed from several threads (atomics) or assembled from
  float64 parts are written through a *float view* ``outf`` of the output:
  ``w = 1`` for real outputs, ``w = 2`` for complex ones (real part at
  ``w * c``, imaginary part at ``w * c + 1``). numba.cuda has no complex
  atomics; two real atomics on the view add a complex value.
* Block reductions go through shared memory (``MAX_THREADS`` float64 slots
  per array) and ``syncthreads``; every thread of a block reaches each
  barrier the same number of times (the loops that contain one run over a
  block-uniform range).
* Blocks are 1-D with a power-of-two size of at most ``MAX_THREADS``.
"""

from numba import cuda, float64

#: Size of the shared-memory reduction arrays: the largest block size.
MAX_THREADS = 256


@cuda.jit(device=True)
def _block_sum(s, t, nt):
    """Tree sum of ``s[:nt]`` into ``s[0]`` (``nt`` a power of two)."""
    cuda.syncthreads()
    h = nt // 2
    while h > 0:
        if t < h:
            s[t] += s[t + h]
        cuda.syncthreads()
        h //= 2


@cuda.jit
def fill_zero(a):
    """``a[:] = 0`` for a 1-D (float view) array."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < a.shape[0]:
        a[i] = 0
        i += stride


# ---------------------------------------------------------------------------
# CSR products
# ---------------------------------------------------------------------------


@cuda.jit(device=True)
def _row_sum(indptr, indices, data, x, c, i, n, group, lane, t, sre, sim):
    """``(A x)[i, c]`` as float64 parts, valid in lane 0 of the row's group.

    ``group`` lanes share row ``i``: lane ``l`` sums the entries ``l, l +
    group, ...``, and the lanes' partial sums are combined in shared memory.
    Every thread of the block must call it (barriers), ``i >= n`` included.
    """
    re = 0.0
    im = 0.0
    if i < n:
        k = indptr[i] + lane
        k1 = indptr[i + 1]
        while k < k1:
            a = data[k]
            v = x[indices[k], c]
            ar = float(a.real)
            ai = float(a.imag)
            vr = float(v.real)
            vi = float(v.imag)
            re += ar * vr - ai * vi
            im += ar * vi + ai * vr
            k += group
    if group > 1:
        sre[t] = re
        sim[t] = im
        cuda.syncthreads()
        h = group // 2
        while h > 0:
            if lane < h:
                sre[t] += sre[t + h]
                sim[t] += sim[t + h]
            cuda.syncthreads()
            h //= 2
        re = sre[t]
        im = sim[t]
        cuda.syncthreads()  # before the next rows overwrite the slots
    return re, im


@cuda.jit
def spmv_n(indptr, indices, data, x, outf, w, group):
    """``out[:, c] = A x[:, c]`` for ``c = blockIdx.y``.

    ``group`` lanes (a power of two ≤ 32) per row (:func:`_row_sum`). Rows
    are visited by a grid-stride loop whose range is the same for the whole
    block (the barriers are uniform).
    """
    sre = cuda.shared.array(MAX_THREADS, float64)
    sim = cuda.shared.array(MAX_THREADS, float64)
    t = cuda.threadIdx.x
    c = cuda.blockIdx.y
    n = indptr.shape[0] - 1
    per_block = cuda.blockDim.x // group
    lane = t % group
    base = cuda.blockIdx.x * per_block
    stride = cuda.gridDim.x * per_block
    while base < n:
        i = base + t // group
        re, im = _row_sum(indptr, indices, data, x, c, i, n, group, lane, t, sre, sim)
        if i < n and lane == 0:
            outf[i, w * c] = re
            if w == 2:
                outf[i, w * c + 1] = im
        base += stride


@cuda.jit
def spmv_n_dot(indptr, indices, data, x, outf, w, group, dotsf):
    """:func:`spmv_n` and ``dots[c] += Σ_i conj(x[i, c]) out[i, c]`` (block
    sums in shared memory, one atomic per block; ``dots`` zeroed before)."""
    sre = cuda.shared.array(MAX_THREADS, float64)
    sim = cuda.shared.array(MAX_THREADS, float64)
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    c = cuda.blockIdx.y
    n = indptr.shape[0] - 1
    per_block = nt // group
    lane = t % group
    base = cuda.blockIdx.x * per_block
    stride = cuda.gridDim.x * per_block
    dre = 0.0
    dim = 0.0
    while base < n:
        i = base + t // group
        re, im = _row_sum(indptr, indices, data, x, c, i, n, group, lane, t, sre, sim)
        if i < n and lane == 0:
            outf[i, w * c] = re
            if w == 2:
                outf[i, w * c + 1] = im
            v = x[i, c]
            vr = float(v.real)
            vi = float(v.imag)
            dre += vr * re + vi * im
            dim += vr * im - vi * re
        base += stride
    sre[t] = dre
    sim[t] = dim
    _block_sum(sre, t, nt)
    _block_sum(sim, t, nt)
    if t == 0:
        cuda.atomic.add(dotsf, w * c, sre[0])
        if w == 2:
            cuda.atomic.add(dotsf, w * c + 1, sim[0])


@cuda.jit
def spmv_t(indptr, indices, data, x, outf, w, group, conj):
    """``out[:, c] += op(A)ᵀ x[:, c]`` for ``c = blockIdx.y`` (``out`` zeroed
    before): ``group`` lanes per row scatter the row's entries by atomics."""
    t = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    c = cuda.blockIdx.y
    n = indptr.shape[0] - 1
    lane = t % group
    i = t // group
    stride = cuda.gridDim.x * cuda.blockDim.x // group
    while i < n:
        v = x[i, c]
        vr = float(v.real)
        vi = float(v.imag)
        k = indptr[i] + lane
        k1 = indptr[i + 1]
        while k < k1:
            a = data[k]
            ar = float(a.real)
            ai = float(a.imag)
            if conj:
                ai = -ai
            j = indices[k]
            cuda.atomic.add(outf, (j, w * c), ar * vr - ai * vi)
            if w == 2:
                cuda.atomic.add(outf, (j, w * c + 1), ar * vi + ai * vr)
            k += group
        i += stride


@cuda.jit
def sparse_outer(indptr, indices, u, v, alr, ali, outf, w):
    """``out[k] = α Σ_c u[i_k, c] v[j_k, c]``: one thread per stored entry,
    its row ``i_k`` found by a binary search in ``indptr``."""
    k = cuda.grid(1)
    stride = cuda.gridsize(1)
    nnz = indices.shape[0]
    n = indptr.shape[0] - 1
    m = u.shape[1]
    while k < nnz:
        lo = 0
        hi = n  # indptr[lo] <= k < indptr[hi]
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if indptr[mid] <= k:
                lo = mid
            else:
                hi = mid
        j = indices[k]
        re = 0.0
        im = 0.0
        for c in range(m):
            a = u[lo, c]
            b = v[j, c]
            ar = float(a.real)
            ai = float(a.imag)
            br = float(b.real)
            bi = float(b.imag)
            re += ar * br - ai * bi
            im += ar * bi + ai * br
        outf[w * k] = alr * re - ali * im
        if w == 2:
            outf[w * k + 1] = alr * im + ali * re
        k += stride


@cuda.jit
def csr_diagonal(indptr, indices, data, outf, w):
    """``out[i] = Σ_{k in row i, j_k = i} data[k]``: one thread per row."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    n = indptr.shape[0] - 1
    while i < n:
        re = 0.0
        im = 0.0
        for k in range(indptr[i], indptr[i + 1]):
            if indices[k] == i:
                a = data[k]
                re += float(a.real)
                im += float(a.imag)
        outf[w * i] = re
        if w == 2:
            outf[w * i + 1] = im
        i += stride


@cuda.jit
def segment_sum(values, starts, outf, w):
    """``out[g] = Σ values[starts[g]:starts[g + 1]]``: one thread per segment."""
    g = cuda.grid(1)
    stride = cuda.gridsize(1)
    ng = starts.shape[0]
    nv = values.shape[0]
    while g < ng:
        end = nv
        if g + 1 < ng:
            end = starts[g + 1]
        re = 0.0
        im = 0.0
        for k in range(starts[g], end):
            a = values[k]
            re += float(a.real)
            im += float(a.imag)
        outf[w * g] = re
        if w == 2:
            outf[w * g + 1] = im
        g += stride


# ---------------------------------------------------------------------------
# Krylov reductions and fused updates: blocks (n, m), one scalar per column.
# Reductions: grid (blocks, m), column c = blockIdx.y, a grid-stride loop over
# the rows, a shared-memory block sum and one atomic per block and column.
# ---------------------------------------------------------------------------


@cuda.jit
def col_dot(a, b, outf, w):
    """``out[c] += Σ_i conj(a[i, c]) b[i, c]`` (``out`` zeroed before)."""
    sre = cuda.shared.array(MAX_THREADS, float64)
    sim = cuda.shared.array(MAX_THREADS, float64)
    t = cuda.threadIdx.x
    c = cuda.blockIdx.y
    i = cuda.blockIdx.x * cuda.blockDim.x + t
    stride = cuda.gridDim.x * cuda.blockDim.x
    re = 0.0
    im = 0.0
    while i < a.shape[0]:
        p = a[i, c]
        q = b[i, c]
        pr = float(p.real)
        pi = float(p.imag)
        qr = float(q.real)
        qi = float(q.imag)
        re += pr * qr + pi * qi
        im += pr * qi - pi * qr
        i += stride
    sre[t] = re
    sim[t] = im
    _block_sum(sre, t, cuda.blockDim.x)
    _block_sum(sim, t, cuda.blockDim.x)
    if t == 0:
        cuda.atomic.add(outf, w * c, sre[0])
        if w == 2:
            cuda.atomic.add(outf, w * c + 1, sim[0])


@cuda.jit
def col_sqnorm(a, out):
    """``out[c] += Σ_i |a[i, c]|²`` (``out`` float64, zeroed before)."""
    s = cuda.shared.array(MAX_THREADS, float64)
    t = cuda.threadIdx.x
    c = cuda.blockIdx.y
    i = cuda.blockIdx.x * cuda.blockDim.x + t
    stride = cuda.gridDim.x * cuda.blockDim.x
    acc = 0.0
    while i < a.shape[0]:
        v = a[i, c]
        vr = float(v.real)
        vi = float(v.imag)
        acc += vr * vr + vi * vi
        i += stride
    s[t] = acc
    _block_sum(s, t, cuda.blockDim.x)
    if t == 0:
        cuda.atomic.add(out, c, s[0])


@cuda.jit
def cg_step(x, r, p, q, alpha, out):
    """``x += α p``, ``r -= α q`` and ``out[c] += ‖r[:, c]‖²`` in one pass."""
    s = cuda.shared.array(MAX_THREADS, float64)
    t = cuda.threadIdx.x
    c = cuda.blockIdx.y
    i = cuda.blockIdx.x * cuda.blockDim.x + t
    stride = cuda.gridDim.x * cuda.blockDim.x
    al = alpha[c]
    acc = 0.0
    while i < x.shape[0]:
        x[i, c] += al * p[i, c]
        r[i, c] -= al * q[i, c]
        v = r[i, c]
        vr = float(v.real)
        vi = float(v.imag)
        acc += vr * vr + vi * vi
        i += stride
    s[t] = acc
    _block_sum(s, t, cuda.blockDim.x)
    if t == 0:
        cuda.atomic.add(out, c, s[0])


@cuda.jit
def sub_scaled(out, r, alpha, v, norms):
    """``out = r − α v`` and ``norms[c] += ‖out[:, c]‖²`` in one pass."""
    s = cuda.shared.array(MAX_THREADS, float64)
    t = cuda.threadIdx.x
    c = cuda.blockIdx.y
    i = cuda.blockIdx.x * cuda.blockDim.x + t
    stride = cuda.gridDim.x * cuda.blockDim.x
    al = alpha[c]
    acc = 0.0
    while i < out.shape[0]:
        out[i, c] = r[i, c] - al * v[i, c]
        y = out[i, c]
        yr = float(y.real)
        yi = float(y.imag)
        acc += yr * yr + yi * yi
        i += stride
    s[t] = acc
    _block_sum(s, t, cuda.blockDim.x)
    if t == 0:
        cuda.atomic.add(norms, c, s[0])


# Element-wise updates: one thread per element of the flat (n·m) block, the
# column c = e mod m (consecutive threads read consecutive addresses).


@cuda.jit
def xpby(z, beta, p):
    """``p = z + β p``."""
    e = cuda.grid(1)
    stride = cuda.gridsize(1)
    m = p.shape[1]
    total = p.shape[0] * m
    while e < total:
        i = e // m
        c = e - i * m
        p[i, c] = z[i, c] + beta[c] * p[i, c]
        e += stride


@cuda.jit
def bicgstab_p(p, r, v, beta, omega):
    """``p = r + β (p − ω v)``."""
    e = cuda.grid(1)
    stride = cuda.gridsize(1)
    m = p.shape[1]
    total = p.shape[0] * m
    while e < total:
        i = e // m
        c = e - i * m
        p[i, c] = r[i, c] + beta[c] * (p[i, c] - omega[c] * v[i, c])
        e += stride


@cuda.jit
def bicgstab_x(x, alpha, phat, omega, shat):
    """``x += α p̂ + ω ŝ``."""
    e = cuda.grid(1)
    stride = cuda.gridsize(1)
    m = x.shape[1]
    total = x.shape[0] * m
    while e < total:
        i = e // m
        c = e - i * m
        x[i, c] += alpha[c] * phat[i, c] + omega[c] * shat[i, c]
        e += stride
