"""JAX glue: a differentiable sparse solve that works under jit, grad, jvp, vmap.

The solve is a :func:`jax.lax.custom_linear_solve`: JAX differentiates the
matrix–vector product (a segment-sum SpMV on the stored entries, so the
``Ȧ x`` term of every derivative is JAX's own), and the two solves it needs —
``A x = b`` and ``Aᵀ y = c`` — are host callbacks into :class:`sparsediff.Solver`.
The callbacks key a small cache by the bytes of the matrix, so the transposed
(adjoint) solve and every higher-order solve reuse the forward factorization.

>>> import jax.numpy as jnp
>>> from jax.experimental import sparse as jsparse
>>> import sparsediff.jax as sdj
>>> A = jsparse.BCSR.fromdense(jnp.array([[4.0, 1.0], [1.0, 3.0]]))
>>> x = sdj.solve(A, jnp.array([1.0, 2.0]))
"""

try:
    import jax
    import jax.numpy as jnp
except ImportError as exc:  # pragma: no cover - exercised without jax
    raise ImportError("sparsediff.jax needs JAX: pip install sparsediff[jax]") from exc

import hashlib

import numpy as np
import scipy.sparse as sp

from ._api import _solver_for
from ._lru import LRUCache
from .batched import BatchedSolver, accepts

__all__ = ["solve"]

_FUNC = "sparsediff.jax.solve"


# The last few Solver objects, keyed by the matrix bytes. Inside ``jit`` the
# matrix reaches the host anew with every callback; the key (a hash of values,
# structure and options) lets the transposed solve of the backward pass find
# the forward factorization. Entries are immutable and the cache is bounded,
# so stale or unbounded reuse cannot happen.
_CACHE = LRUCache(maxsize=4)


def _option_key(options):
    M = options["M"]
    m_key = M if M is None or isinstance(M, str) else ("object", id(M))
    return tuple((k, m_key if k == "M" else v) for k, v in sorted(options.items()))


def _host_solver(kind, n, options, data, a, b):
    h = hashlib.blake2b(digest_size=20)
    for arr in (data, a, b):
        arr = np.ascontiguousarray(arr)
        h.update(str((arr.dtype, arr.shape)).encode())
        h.update(arr.tobytes())
    key = (kind, n, _option_key(options), h.hexdigest())

    def build():
        if kind == "csr":
            mat = sp.csr_array((data, b, a), shape=(n, n))
        else:
            mat = sp.coo_array((data, (a, b)), shape=(n, n))
        return _solver_for(mat, _FUNC, **options)

    return _CACHE.get_or_build(key, build)


def _batchable(options):
    """Whether the batched core solver takes these options (docs/batched.md)."""
    return accepts(options["method"], options["M"])


def _host_batched_solver(kind, n, options, data, a, b):
    """A cached :class:`sparsediff.BatchedSolver` for values (B, nnz) on one
    pattern: the transposed solves of the backward find it again."""
    h = hashlib.blake2b(digest_size=20)
    for arr in (data, a, b):
        arr = np.ascontiguousarray(arr)
        h.update(str((arr.dtype, arr.shape)).encode())
        h.update(arr.tobytes())
    key = ("batched", kind, n, _option_key(options), h.hexdigest())

    def build():
        if kind == "csr":
            pattern = sp.csr_array((np.zeros(b.shape[0]), b, a), shape=(n, n))
        else:
            pattern = sp.coo_array((np.zeros(b.shape[0]), (a, b)), shape=(n, n))
        return BatchedSolver(pattern, data, **options)

    return _CACHE.get_or_build(key, build)


def _host_solve(kind, n, options, trans, core, data, a, b, rhs):
    """The host side of one (possibly batched) callback.

    Under ``jax.vmap`` the callback runs once for the whole batch
    (``vmap_method="expand_dims"``): every argument carries the batch axes
    in front, of size 1 where it is not batched. A batch of right-hand sides
    on one matrix is one multi-column solve; a batch of values on one pattern
    is one :class:`sparsediff.BatchedSolver` (one ordering, one factorization
    per distinct matrix: nested batch axes are flattened, and axes along
    which only the right-hand side is batched become more columns); batched
    index arrays (several patterns) loop.
    """
    nb = data.ndim - 1
    if nb == 0:
        solver = _host_solver(kind, n, options, data, a, b)
        return np.asarray(solver.solve(rhs, trans=trans).x, dtype=rhs.dtype)
    shape = np.broadcast_shapes(data.shape[:nb], a.shape[:nb], b.shape[:nb],
                                rhs.shape[:nb])
    size = int(np.prod(shape))
    one_pattern = a.reshape(-1, a.shape[-1]).shape[0] == 1 and (
        b.reshape(-1, b.shape[-1]).shape[0] == 1)
    data_f = data.reshape(-1, data.shape[-1])
    if one_pattern and data_f.shape[0] == 1:
        # one matrix, many right-hand sides: one multi-column solve
        rhs_f = np.broadcast_to(rhs, shape + core).reshape((size,) + core)
        solver = _host_solver(kind, n, options, data_f[0], a.reshape(-1),
                              b.reshape(-1))
        cols = np.moveaxis(rhs_f, 0, -1).reshape(n, -1)
        x = solver.solve(cols, trans=trans).x.reshape(core + (size,))
        x = np.moveaxis(x, -1, 0)
    elif one_pattern and _batchable(options):
        # one element per distinct matrix (the axes along which ``data`` is
        # batched, in nested vmaps too); the axes where only ``rhs`` is
        # batched become more columns of those elements' solves
        data_axes = [i for i in range(nb) if data.shape[i] != 1]
        col_axes = [i for i in range(nb) if data.shape[i] == 1]
        size_d = int(np.prod([shape[i] for i in data_axes]))
        perm = data_axes + list(range(nb, nb + len(core))) + col_axes
        rhs_p = np.broadcast_to(rhs, shape + core).transpose(perm)
        moved = rhs_p.shape
        solver = _host_batched_solver(kind, n, options, data.reshape(size_d, -1),
                                      a.reshape(-1), b.reshape(-1))
        x = solver.solve(rhs_p.reshape(size_d, n, -1), trans=trans).x
        x = x.reshape(moved).transpose(np.argsort(perm))
    else:
        rhs_f = np.broadcast_to(rhs, shape + core).reshape((size,) + core)
        data_f = np.broadcast_to(data, shape + data.shape[-1:]).reshape(size, -1)
        a_f = np.broadcast_to(a, shape + a.shape[-1:]).reshape(size, -1)
        b_f = np.broadcast_to(b, shape + b.shape[-1:]).reshape(size, -1)
        x = np.stack([_host_solver(kind, n, options, data_f[i], a_f[i], b_f[i])
                      .solve(rhs_f[i], trans=trans).x for i in range(size)])
    return np.asarray(x, dtype=rhs.dtype).reshape(shape + core)


def _callback_solve(kind, n, options, trans, data, a, b, rhs):
    """``op(A)⁻¹ rhs`` on the host, through a pure callback (one call for a
    whole ``vmap`` batch)."""
    core = tuple(rhs.shape)

    def host(data, a, b, rhs):
        data, a, b, rhs = (np.asarray(t) for t in (data, a, b, rhs))
        return _host_solve(kind, n, options, trans, core, data, a, b, rhs)

    out = jax.ShapeDtypeStruct(rhs.shape, rhs.dtype)
    return jax.pure_callback(host, out, data, a, b, rhs, vmap_method="expand_dims")


def _parts(A, func):
    """``(kind, n, data, a, b, rows, cols)`` from a supported matrix form."""
    from jax.experimental import sparse as jsparse

    if isinstance(A, (jsparse.BCSR, jsparse.BCOO)) and (A.n_batch or A.n_dense):
        raise ValueError(
            f"`{func}`: `A` must be an unbatched {type(A).__name__} matrix (n_batch = "
            f"n_dense = 0); got n_batch = {A.n_batch}, n_dense = {A.n_dense}. Use "
            f"jax.vmap for batches.")
    if isinstance(A, jsparse.BCSR):
        kind, data, a, b, shape = "csr", A.data, A.indptr, A.indices, A.shape
    elif isinstance(A, jsparse.BCOO):
        kind, data, shape = "coo", A.data, A.shape
        a, b = A.indices[:, 0], A.indices[:, 1]
    elif isinstance(A, tuple) and len(A) == 3:
        data, indices, indptr = (jnp.asarray(t) for t in A)
        kind, a, b = "csr", indptr, indices
        if indptr.ndim != 1 or indptr.shape[0] < 1:
            raise ValueError(
                f"`{func}`: `indptr` must be 1-D of length n + 1; got shape "
                f"{indptr.shape}.")
        shape = (indptr.shape[0] - 1,) * 2
    else:
        raise TypeError(
            f"`{func}`: `A` must be a jax.experimental.sparse BCSR or BCOO matrix or "
            f"a (data, indices, indptr) tuple; got {type(A).__name__}.")
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"`{func}`: `A` must be square; got shape {tuple(shape)}.")
    for arr, name in ((a, "indptr" if kind == "csr" else "row"),
                      (b, "indices" if kind == "csr" else "col")):
        if not jnp.issubdtype(arr.dtype, jnp.integer):
            raise TypeError(
                f"`{func}`: `{name}` must be an integer array; got {arr.dtype}.")
    if data.ndim != 1 or data.shape[0] != b.shape[0]:
        raise ValueError(
            f"`{func}`: `data` must be 1-D with one value per stored index, "
            f"{b.shape[0]}; got shape {data.shape}.")
    n = int(shape[0])
    if kind == "csr":
        if a.shape[0] != n + 1:
            raise ValueError(
                f"`{func}`: `indptr` must have length n + 1 = {n + 1}; got "
                f"{a.shape[0]}.")
        # the row of every stored entry, traceable (no concrete indptr needed)
        rows = jnp.searchsorted(a, jnp.arange(b.shape[0], dtype=a.dtype),
                                side="right") - 1
    else:
        rows = a
    return kind, n, data, a, b, rows, b


def solve(A, b, *, method="auto", M=None, rtol=1e-8, atol=0.0, maxiter=None,
          on_failure="raise"):
    """Solve ``A x = b`` for a sparse JAX matrix, differentiably.

    Works under :func:`jax.jit`, :func:`jax.grad`, :func:`jax.jvp`,
    :func:`jax.vmap` and :func:`jax.hessian` (any order, forward and reverse).

    Parameters
    ----------
    A : jax.experimental.sparse.BCSR or BCOO, or tuple
        The square matrix: an unbatched ``BCSR``/``BCOO`` or a CSR triple
        ``(data, indices, indptr)``. Derivatives are taken with respect to the
        stored values ``data`` (duplicates are summed in the matrix; each gets
        the merged entry's derivative; stored zeros are part of the pattern).
    b : jax.Array, shape (n,) or (n, m)
        Right-hand side(s).
    method, M, rtol, atol, maxiter, on_failure
        As :func:`sparsediff.solve`, for the forward and derivative solves.

    Returns
    -------
    x : jax.Array
        Shape of ``b``, dtype ``jnp.result_type(data, b)`` (integers promote
        to the default float type).

    Raises
    ------
    TypeError, ValueError
        Unsupported forms, non-integer indices, mismatched shapes (at trace
        time). Failures of the solve itself (singular matrix, non-finite
        values) are raised from the host callback when the computation runs.

    Notes
    -----
    ``jax.lax.custom_linear_solve`` with ``matvec`` the SpMV on the stored
    entries and ``solve``/``transpose_solve`` host calls to
    :class:`sparsediff.Solver` with ``trans="N"``/``"T"``: the tangent is
    ``ẋ = A⁻¹(ḃ − Ȧ x)`` and the cotangents ``λ = A⁻ᵀ g``,
    ``∂L/∂data_k = −λ[i_k] x[j_k]`` (JAX's complex convention, without the
    conjugates of PyTorch's). Under ``jit`` the host callback hashes the
    matrix to find the forward factorization again (O(nnz) per call).

    See Also
    --------
    sparsediff.solve, jax.experimental.sparse.linalg.spsolve,
    jax.scipy.sparse.linalg.cg

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import sparsediff.jax as sdj
    >>> data = jnp.array([4.0, 1.0, 1.0, 3.0])
    >>> indices, indptr = jnp.array([0, 1, 0, 1]), jnp.array([0, 2, 4])
    >>> b = jnp.array([1.0, 2.0])
    >>> def loss(data):
    ...     return sdj.solve((data, indices, indptr), b).sum()
    >>> jax.jit(jax.grad(loss))(data).shape
    (4,)
    """
    func = _FUNC
    options = dict(method=method, M=M, rtol=rtol, atol=atol, maxiter=maxiter,
                   on_failure=on_failure)
    kind, n, data, a, bidx, rows, cols = _parts(A, func)
    b = jnp.asarray(b)
    if b.ndim not in (1, 2) or b.shape[0] != n:
        raise ValueError(
            f"`{func}`: `b` must have shape (n,) or (n, m) with n = {n}; got "
            f"{b.shape}.")
    dtype = jnp.result_type(data.dtype, b.dtype)
    if not jnp.issubdtype(dtype, jnp.inexact):
        dtype = jnp.result_type(dtype, float)
    data = data.astype(dtype)
    b = b.astype(dtype)

    def matvec(x):
        d = data if x.ndim == 1 else data[:, None]
        return jax.ops.segment_sum(d * x[cols], rows, num_segments=n)

    def solve_n(_, rhs):
        return _callback_solve(kind, n, options, "N", data, a, bidx, rhs)

    def solve_t(_, rhs):
        # the linear transpose of A⁻¹ is A⁻ᵀ (JAX transposes, it never conjugates)
        return _callback_solve(kind, n, options, "T", data, a, bidx, rhs)

    return jax.lax.custom_linear_solve(matvec, b, solve_n, solve_t)
