"""Sparse solves as ``torch.autograd.Function``: :func:`solve`, :func:`solve_values`."""

import functools

import numpy as np
import scipy.sparse as sp
import torch

from .._api import _solver_for
from ..batched import ILU_METHODS, METHODS, PRECONDITIONERS, BatchedSolver, accepts

__all__ = ["solve", "solve_values"]

_FUNC = "sparsediff.torch.solve"
_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)
# op(A)⁻ᴴ is the adjoint of op(A)⁻¹: N ↔ H (T only appears for real data, where
# it equals H)
_FLIP = {"N": "H", "H": "N"}


# ---------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------


def _check_device(t, func, name):
    if t.device.type != "cpu":
        raise TypeError(
            f"`{func}`: `{name}` is on device {t.device}; only CPU tensors are "
            f"supported in this version (the GPU backend is not available yet). "
            f"Move the tensors with `.cpu()`."
        )


def _as_index(idx, func, name):
    """An integer index array as int64 NumPy (from a tensor or array-like)."""
    if isinstance(idx, torch.Tensor):
        _check_device(idx, func, name)
        if idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
            raise TypeError(
                f"`{func}`: `{name}` must be an integer tensor; got {idx.dtype}."
            )
        arr = _index_numpy(idx)
    else:
        arr = np.asarray(idx)
        if arr.dtype.kind not in "iu":
            raise TypeError(
                f"`{func}`: `{name}` must be an integer array; got {arr.dtype}."
            )
    if arr.ndim != 1:
        raise ValueError(f"`{func}`: `{name}` must be 1-D; got shape {arr.shape}.")
    return arr


def _index_numpy(idx):
    """An integer tensor as NumPy, also inside ``torch.func`` transforms.

    Under ``torch.func.grad``/``jvp`` (and what is built on them) a tensor
    the transform did not create still has no storage as seen from inside;
    ``.tolist()`` reads it anyway. Indices are never differentiated, so the
    copy loses nothing.
    """
    try:
        return idx.detach().numpy()
    except RuntimeError:  # inside a torch.func transform: no storage to view
        return np.asarray(idx.tolist(), dtype=np.int64).reshape(tuple(idx.shape))


def _numpy(t):
    """A NumPy view (or copy) of a CPU tensor, with lazy conj/neg resolved."""
    return t.detach().resolve_conj().resolve_neg().numpy()


class _Pattern:
    """The stored entries of a square matrix, in the caller's order.

    ``kind`` is ``"csr"`` (``a, b = indptr, indices``) or ``"coo"``
    (``a, b = row, col``). The row and column of every entry (``rows_t``,
    ``cols_t``) are the gather indices of the differentiable pattern gradient.
    """

    def __init__(self, n, kind, a, b):
        self.n = n
        self.kind = kind
        self.a = a
        self.b = b
        self._rc = None

    @property
    def nnz(self):
        return self.b.shape[0]

    def matrix(self, values):
        if self.kind == "csr":
            return sp.csr_array((values, self.b, self.a), shape=(self.n, self.n))
        return sp.coo_array((values, (self.a, self.b)), shape=(self.n, self.n))

    def multiplicity(self):
        """How often each entry's (row, col) occurs (None: no duplicates)."""
        rows, cols = self.rows_cols()
        key = rows.numpy() * max(self.n, 1) + cols.numpy()
        _, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
        if counts.size == key.size:
            return None
        return torch.from_numpy(counts[inv].astype(np.float64))

    def rows_cols(self):
        if self._rc is None:
            if self.kind == "csr":
                rows = np.repeat(np.arange(self.n, dtype=np.int64), np.diff(self.a))
            else:
                rows = self.a.astype(np.int64)
            self._rc = (torch.from_numpy(rows),
                        torch.from_numpy(self.b.astype(np.int64)))
        return self._rc


class _System:
    """One differentiable system: pattern, options and the solver (built once)."""

    def __init__(self, pattern, options):
        self.pattern = pattern
        self.options = options
        self.solver = None
        # under torch.func.vmap over the values: one batched solver (built by
        # the batched forward, reused by its derivative solves), or one system
        # per batch element for options the batched solver does not take
        self.batched = None
        self.children = None

    def build(self, values):
        mat = self.pattern.matrix(_numpy(values))
        self.solver = _solver_for(mat, _FUNC, **self.options)


class _Call:
    """Carries one forward call's :class:`Solution` to ``setup_context``."""

    sol = None


def _pattern_gradient(pattern, x, lam, trans):
    """Differentiable ``∂L/∂data`` (adjoint/linear.py): a gather-multiply."""
    rows, cols = pattern.rows_cols()
    if trans == "N":
        u, v = lam.index_select(0, rows), x.index_select(0, cols).conj()
    else:  # "H"
        u, v = x.index_select(0, rows), lam.index_select(0, cols).conj()
    prod = u * v
    if prod.ndim == 2:
        prod = prod.sum(dim=1)
    return -prod


def _pattern_matvec(pattern, data, x, trans):
    """``op(D) x`` for values ``data`` on the pattern (the tangent ``Ȧ x``)."""
    rows, cols = pattern.rows_cols()
    if trans == "H":
        rows, cols, data = cols, rows, data.conj()
    d = data if x.ndim == 1 else data[:, None]
    out = torch.zeros(x.shape, dtype=torch.promote_types(data.dtype, x.dtype))
    return out.index_add(0, rows, d * x.index_select(0, cols))


def _setup_context(ctx, inputs, output):
    """What the backward and forward rules of a solve need (both Functions)."""
    values, b, system, trans, fresh, call = inputs
    ctx.system = system
    ctx.trans = trans
    ctx.sol = call.sol
    ctx.save_for_backward(values, output)
    ctx.save_for_forward(values, output)


def _backward(ctx, gx, fn, pattern_gradient, host_values):
    """The backward rule of ``fn`` (``_Solve`` or ``_BatchedSolve``).

    On plain tensors: the solution's own ``vjp`` (one adjoint solve on the
    forward factors), ``host_values`` turning its gradient of ``A`` into a
    tensor of values. Under ``create_graph=True`` or ``torch.func`` (tensors
    without storage): the adjoint solve as a registered ``fn`` and the pattern
    gradient from torch operations, so that the backward is differentiable.
    """
    values, x = ctx.saved_tensors
    need_values, need_b = ctx.needs_input_grad[:2]
    if not (need_values or need_b):
        return None, None, None, None, None, None
    g = None
    if ctx.sol is not None and not torch.is_grad_enabled():
        try:
            g = _numpy(gx)
        except RuntimeError:  # a torch.func tensor (no storage)
            g = None
    if g is None:
        lam = fn.apply(values, gx, ctx.system, _FLIP[ctx.trans], False, _Call())
        grad_values = (pattern_gradient(ctx.system.pattern, x, lam, ctx.trans)
                       if need_values else None)
        grad_b = lam
    else:
        grad_A, grad_b = ctx.sol.vjp(g)
        grad_values = host_values(grad_A).to(values.dtype) if need_values else None
        grad_b = torch.from_numpy(grad_b)
    return (grad_values, grad_b if need_b else None, None, None, None, None)


def _jvp(ctx, dvalues, db, fn, pattern_matvec):
    """The forward rule ``ẋ = op(A)⁻¹ (ḃ − op(Ȧ) x)`` of ``fn``, as in
    ``Solution.jvp``. The tangent right-hand side is formed with torch
    operations and solved by the registered ``fn`` on the same solver: under
    torch.func the tangents are wrapped tensors that cannot go to NumPy."""
    values, x = ctx.saved_tensors
    rhs = db
    if dvalues is not None:
        prod = pattern_matvec(ctx.system.pattern, dvalues, x, ctx.trans)
        rhs = -prod if rhs is None else rhs - prod
    if rhs is None:
        return None
    return fn.apply(values, rhs, ctx.system, ctx.trans, False, _Call())


class _Solve(torch.autograd.Function):
    """``x = op(A)⁻¹ b`` with ``A``'s stored values as a dense 1-D tensor.

    ``trans`` is "N" for the user's solve and "H" for its adjoint; the backward
    of one is the other on the same solver, so every order of derivative
    reuses the one factorization. ``forward`` and ``setup_context`` are
    separate and ``vmap`` is explicit, so that the ``torch.func`` transforms
    (grad, jvp, vmap and their compositions) can run it.
    """

    generate_vmap_rule = False

    @staticmethod
    def forward(values, b, system, trans, fresh, call):
        if fresh:
            system.build(values)
        sol = system.solver.solve(_numpy(b), trans=trans)
        call.sol = sol
        return torch.from_numpy(sol.x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _setup_context(ctx, inputs, output)

    @staticmethod
    def backward(ctx, gx):
        return _backward(ctx, gx, _Solve, _pattern_gradient,
                         lambda grad_A: torch.from_numpy(grad_A.data))

    @staticmethod
    def jvp(ctx, dvalues, db, *_):
        # ẋ = op(A)⁻¹ (ḃ − op(Ȧ) x), the rule of Solution.jvp (see _jvp)
        return _jvp(ctx, dvalues, db, _Solve, _pattern_matvec)

    @staticmethod
    def vmap(info, in_dims, values, b, system, trans, fresh, call):
        # A batch of right-hand sides is one multi-column solve (one
        # factorization). A batch of values is a loop, one system (and one
        # factorization) per element, until the core has batched systems; the
        # derivative solves of element i (fresh=False) reuse system i.
        vdim, bdim = in_dims[0], in_dims[1]
        if vdim is None:
            bb = b.movedim(bdim, -1)                       # (n, [m,] B)
            x = _Solve.apply(values, bb.reshape(bb.shape[0], -1), system, trans,
                             fresh, _Call())
            return x.reshape(bb.shape), bb.ndim - 1
        size = info.batch_size
        values = values.movedim(vdim, 0)
        if bdim is not None:
            b = b.movedim(bdim, 0)
        if _batchable(system.options) and (fresh or system.batched is not None):
            # one batched solver: one ordering, B factorizations (docs/batched.md)
            if bdim is None:
                b = b.expand(size, *b.shape)
            x = _BatchedSolve.apply(values, b, system, trans, fresh, _Call())
            return x, 0
        if fresh:
            system.children = [_System(system.pattern, system.options)
                               for _ in range(size)]
        elif system.children is None or len(system.children) != size:
            raise RuntimeError(
                f"`{_FUNC}`: a derivative solve is batched over the values but the "
                f"forward solve was not (batch of {size}); this composition of "
                f"torch.func transforms is not supported.")
        xs = [_Solve.apply(values[i], b if bdim is None else b[i],
                           system.children[i], trans, fresh, _Call())
              for i in range(size)]
        return torch.stack(xs), 0


# ---------------------------------------------------------------------------
# batches of values on one pattern (values of shape (B, nnz))
# ---------------------------------------------------------------------------

def _batchable(options):
    """Whether the batched core solver takes these options (docs/batched.md);
    other options under a batch of values fall back to one system per element."""
    return accepts(options["method"], options["M"])


def _batched_pattern_gradient(pattern, x, lam, trans):
    """Differentiable ``∂L/∂data`` of every element: (B, nnz)."""
    rows, cols = pattern.rows_cols()
    if trans == "N":
        u, v = lam.index_select(1, rows), x.index_select(1, cols).conj()
    else:  # "H"
        u, v = x.index_select(1, rows), lam.index_select(1, cols).conj()
    prod = u * v
    if prod.ndim == 3:
        prod = prod.sum(dim=2)
    return -prod


def _batched_pattern_matvec(pattern, data, x, trans):
    """``op(D_e) x_e`` for every element, values ``data`` (B, nnz)."""
    rows, cols = pattern.rows_cols()
    if trans == "H":
        rows, cols, data = cols, rows, data.conj()
    d = data if x.ndim == 2 else data[:, :, None]
    out = torch.zeros(x.shape, dtype=torch.promote_types(data.dtype, x.dtype))
    return out.index_add(1, rows, d * x.index_select(1, cols))


class _BatchedSolve(torch.autograd.Function):
    """``x_e = op(A_e)⁻¹ b_e`` for values (B, nnz) on one pattern, with one
    :class:`sparsediff.BatchedSolver` (one ordering, B factorizations) shared
    by the forward and every derivative solve."""

    generate_vmap_rule = False

    @staticmethod
    def forward(values, b, system, trans, fresh, call):
        if fresh:
            mat = system.pattern.matrix(np.zeros(system.pattern.nnz))
            system.batched = BatchedSolver(mat, _numpy(values), **system.options)
        sol = system.batched.solve(_numpy(b), trans=trans)
        call.sol = sol
        return torch.from_numpy(sol.x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _setup_context(ctx, inputs, output)

    @staticmethod
    def backward(ctx, gx):
        return _backward(ctx, gx, _BatchedSolve, _batched_pattern_gradient,
                         torch.from_numpy)

    @staticmethod
    def jvp(ctx, dvalues, db, *_):
        return _jvp(ctx, dvalues, db, _BatchedSolve, _batched_pattern_matvec)

    @staticmethod
    def vmap(info, in_dims, values, b, system, trans, fresh, call):
        # A further vmap level (nested vmap, or vmap over values that are
        # already (B, nnz)). Values batched at this level: the C x B systems
        # are flattened into one batched solve of C·B elements (b broadcast
        # when it is not batched here); the derivative solves find the same
        # flattened solver. Values not batched here: the C right-hand sides of
        # each element become C more columns of one solve on the B elements.
        vdim, bdim = in_dims[0], in_dims[1]
        size = info.batch_size
        if vdim is None:
            if bdim is None:  # nothing batched at this level
                return _BatchedSolve.apply(values, b, system, trans, fresh,
                                           _Call()), None
            bb = b.movedim(bdim, -1)                         # (B, n, [m,] C)
            x = _BatchedSolve.apply(values, bb.reshape(*bb.shape[:2], -1), system,
                                    trans, fresh, _Call())
            return x.reshape(bb.shape), bb.ndim - 1
        values = values.movedim(vdim, 0)                     # (C, B, nnz)
        b = (b.expand(size, *b.shape) if bdim is None
             else b.movedim(bdim, 0))                        # (C, B, n[, m])
        inner = values.shape[1]
        if not fresh and system.batched is not None and (
                system.batched.batch_size != size * inner):
            raise RuntimeError(
                f"`{_FUNC}`: a derivative solve is batched over {size} x {inner} "
                f"values but the forward solve was batched over "
                f"{system.batched.batch_size}; this composition of torch.func "
                f"transforms is not supported.")
        x = _BatchedSolve.apply(values.reshape(size * inner, -1),
                                b.reshape(size * inner, *b.shape[2:]), system, trans,
                                fresh, _Call())
        return x.reshape(size, inner, *x.shape[1:]), 0


class _Values(torch.autograd.Function):
    """Stored values of a sparse tensor (caller order); gradient: same layout.

    A sparse gradient stands for its dense sum, so for an uncoalesced tensor
    the merged entry's gradient is shared equally among its duplicates: the
    gradient has ``A``'s indices and the correct dense value. (For the
    per-entry derivative of assembled triplets, use :func:`solve_values`.)
    """

    generate_vmap_rule = False

    @staticmethod
    def forward(A, pattern):
        if A.layout == torch.sparse_coo:
            return A._values().clone()
        return A.values().clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        A, pattern = inputs
        ctx.A_meta = _sparse_parts(A)
        ctx.pattern = pattern

    @staticmethod
    def vmap(info, in_dims, A, pattern):
        # a captured sparse matrix is the same for every batch element (torch
        # cannot batch sparse tensors, so in_dims[0] is always None here)
        return _Values.apply(A, pattern), None

    @staticmethod
    def backward(ctx, g):
        layout, idx, shape, coalesced = ctx.A_meta
        mult = ctx.pattern.multiplicity()
        if mult is not None:
            g = g / mult
        if layout == torch.sparse_coo:
            return (torch.sparse_coo_tensor(idx[0], g, shape, is_coalesced=coalesced),
                    None)
        return torch.sparse_csr_tensor(idx[0], idx[1], g, shape), None


def _sparse_parts(A):
    if A.layout == torch.sparse_coo:
        return (A.layout, (A._indices(),), A.shape, A.is_coalesced())
    return (A.layout, (A.crow_indices(), A.col_indices()), A.shape, None)


# ---------------------------------------------------------------------------
# public functions
# ---------------------------------------------------------------------------


def _opaque_to_compile(fn):
    """Run ``fn`` outside ``torch.compile``'s tracing, as one opaque call.

    The solve reads index arrays and factorizes on the host, which Dynamo
    cannot trace; under ``torch.compile`` the call is a graph break
    (``torch.compiler.disable``) and runs eagerly, with its autograd graph,
    between the compiled pieces. The wrapper is made on first use inside a
    compiled function, so importing the glue does not import the compiler.
    """
    disabled = []

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if torch.compiler.is_compiling():
            if not disabled:
                disabled.append(torch.compiler.disable(fn))
            return disabled[0](*args, **kwargs)
        return fn(*args, **kwargs)

    return wrapper


def _check_b(b, n, dtype, func):
    if not isinstance(b, torch.Tensor):
        raise TypeError(f"`{func}`: `b` must be a torch.Tensor; got {type(b).__name__}.")
    _check_device(b, func, "b")
    if b.layout != torch.strided:
        raise TypeError(f"`{func}`: `b` must be a dense (strided) tensor; got {b.layout}.")
    if b.ndim not in (1, 2) or b.shape[0] != n:
        raise ValueError(
            f"`{func}`: `b` must have shape (n,) or (n, m) with n = {n}; "
            f"got {tuple(b.shape)}."
        )
    if b.dtype != dtype:
        raise TypeError(
            f"`{func}`: `b` must have the dtype of `A`'s values, {dtype}; got "
            f"{b.dtype}. Cast one of them (no silent promotion)."
        )


def _check_values(values, func):
    if not isinstance(values, torch.Tensor):
        raise TypeError(
            f"`{func}`: `values` must be a torch.Tensor; got {type(values).__name__}."
        )
    _check_device(values, func, "values")
    if values.layout != torch.strided or values.ndim != 1:
        raise ValueError(
            f"`{func}`: `values` must be a dense 1-D tensor; got layout "
            f"{values.layout} and shape {tuple(values.shape)}."
        )
    if values.dtype not in _DTYPES:
        raise TypeError(
            f"`{func}`: `values` must be float32, float64, complex64 or complex128; "
            f"got {values.dtype}."
        )


def _run_batched(values, pattern, b, options, func):
    """Values (B, nnz) on one pattern: one batched solve (docs/batched.md)."""
    _check_values(values[0] if values.shape[0] else values.new_zeros(
        values.shape[1:]), func)
    if values.shape[1] != pattern.nnz:
        raise ValueError(
            f"`{func}`: `values` of shape (B, nnz) must have nnz = {pattern.nnz} "
            f"(one per stored index); got shape {tuple(values.shape)}.")
    if not isinstance(b, torch.Tensor) or b.ndim not in (2, 3) or (
            b.shape[0] != values.shape[0] or b.shape[1] != pattern.n):
        raise ValueError(
            f"`{func}`: with values of shape (B, nnz) = {tuple(values.shape)}, `b` "
            f"must have shape (B, n) or (B, n, m) with B = {values.shape[0]}, "
            f"n = {pattern.n}; got {tuple(getattr(b, 'shape', ()))}.")
    _check_b(b[0] if b.shape[0] else b.new_zeros(b.shape[1:]), pattern.n,
             values.dtype, func)
    if not _batchable(options):
        raise ValueError(
            f"`{func}`: values of shape (B, nnz) take method in {METHODS} "
            f"and M in {PRECONDITIONERS} (M='ilu' with {ILU_METHODS}, no M "
            f"with 'direct'); got method={options['method']!r}, "
            f"M={options['M']!r}.")
    system = _System(pattern, options)
    return _BatchedSolve.apply(values, b, system, "N", True, _Call())


def _run(values, pattern, b, options, func):
    if isinstance(values, torch.Tensor) and values.ndim == 2 and (
            values.layout == torch.strided):
        return _run_batched(values, pattern, b, options, func)
    _check_values(values, func)
    if values.shape[0] != pattern.nnz:
        raise ValueError(
            f"`{func}`: `values` must have one entry per stored index, "
            f"{pattern.nnz}; got {values.shape[0]}."
        )
    _check_b(b, pattern.n, values.dtype, func)
    system = _System(pattern, options)
    return _Solve.apply(values, b, system, "N", True, _Call())


@_opaque_to_compile
def solve(A, b, *, method="auto", M=None, rtol=1e-8, atol=0.0, maxiter=None,
          on_failure="raise"):
    """Solve ``A x = b`` differentiably for torch tensors.

    Parameters
    ----------
    A : torch.Tensor or tuple
        The square system matrix, on the CPU:

        * a sparse CSR tensor (``torch.sparse_csr``): ``A.grad`` is a sparse
          CSR tensor with ``A``'s indices;
        * a sparse COO tensor (``torch.sparse_coo``), coalesced or not:
          ``A.grad`` is a sparse COO tensor with ``A``'s (unmodified) indices.
          Duplicate entries are summed in the matrix and each gets the merged
          entry's gradient, so uncoalesced tensors need no ``coalesce()``;
        * a dense 2-D tensor (every entry stored; ``A.grad`` is dense);
        * ``(values, (indptr, indices))``: the values of a CSR pattern as an
          ordinary 1-D tensor, for assembly pipelines — the same as
          :func:`solve_values` with ``indptr`` and ``indices``.

        Stored zeros are part of the pattern and get a gradient.
    b : torch.Tensor, shape (n,) or (n, m)
        Dense right-hand side(s), the dtype of ``A`` (float32, float64,
        complex64 or complex128).
    method, M, rtol, atol, maxiter, on_failure
        As :func:`sparsediff.solve`; they apply to the forward solve and to
        every derivative solve.

    Returns
    -------
    x : torch.Tensor
        Same shape and dtype as ``b``; differentiable with respect to ``b``
        and ``A``'s stored values, in reverse mode (any order) and forward
        mode.

    Raises
    ------
    TypeError
        CUDA tensors (not supported yet), unsupported layouts, float index
        arrays, ``A`` and ``b`` of different dtypes, or a sparse CSR ``A``
        inside ``torch.func.grad``/``jvp`` (and what is built on them).
    ValueError
        Shapes that do not match, corrupt sparse structure, non-finite values.

    Notes
    -----
    With ``λ = A⁻ᴴ g`` (``g`` the incoming gradient, PyTorch's complex
    convention): ``∂L/∂b = λ`` and ``∂L/∂A.values[k] = −λ[i_k]·conj(x[j_k])``.
    The adjoint solve reuses the forward factorization. Second derivatives
    (``create_graph=True``) run further solves with the same factorization.

    ``torch.func`` transforms (``grad``, ``jvp``, ``vmap``, ``jacrev``,
    ``jacfwd``, ``hessian``) apply. ``vmap`` over ``b`` is one multi-column
    solve; ``vmap`` over the values is one :class:`sparsediff.BatchedSolver`
    (one ordering, one factorization per element; docs/batched.md) for the
    methods it takes, else a loop of systems; nested ``vmap`` levels are
    flattened into that one batched solve. Values of shape ``(B, nnz)``
    with ``b`` of shape ``(B, n)`` or ``(B, n, m)`` (tuple form or
    :func:`solve_values`) are the same batched solve. A sparse CSR ``A`` cannot be read
    inside ``grad``/``jvp``-based transforms (``TypeError``; pass the tuple
    form or a COO tensor). Under ``torch.compile`` the solve is an opaque
    eager call (a graph break).

    See Also
    --------
    sparsediff.solve, solve_values, torch.linalg.solve

    Examples
    --------
    >>> import torch, sparsediff.torch as sdt
    >>> values = torch.tensor([4.0, 1.0, 1.0, 3.0], dtype=torch.float64,
    ...                       requires_grad=True)
    >>> indptr, indices = torch.tensor([0, 2, 4]), torch.tensor([0, 1, 0, 1])
    >>> b = torch.tensor([1.0, 2.0], dtype=torch.float64)
    >>> x = sdt.solve((values, (indptr, indices)), b)
    >>> x.sum().backward()
    >>> values.grad.shape
    torch.Size([4])
    """
    options = dict(method=method, M=M, rtol=rtol, atol=atol, maxiter=maxiter,
                   on_failure=on_failure)
    func = _FUNC
    if isinstance(A, tuple):
        if len(A) != 2 or not isinstance(A[1], tuple) or len(A[1]) != 2:
            raise TypeError(
                f"`{func}`: a tuple `A` must be (values, (indptr, indices)); got a "
                f"tuple of length {len(A)}."
            )
        values, (indptr, indices) = A
        return solve_values(values, b, indptr=indptr, indices=indices, **options)
    if not isinstance(A, torch.Tensor):
        raise TypeError(
            f"`{func}`: `A` must be a torch sparse CSR/COO tensor, a dense 2-D "
            f"tensor or (values, (indptr, indices)); got {type(A).__name__}."
        )
    _check_device(A, func, "A")
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(
            f"`{func}`: `A` must be a square 2-D matrix (no batch dimensions); got "
            f"shape {tuple(A.shape)}."
        )
    if A.dtype not in _DTYPES:
        raise TypeError(
            f"`{func}`: `A` must be float32, float64, complex64 or complex128; "
            f"got {A.dtype}."
        )
    n = A.shape[0]
    if A.layout == torch.sparse_csr:
        try:
            crow, col = A.crow_indices(), A.col_indices()
        except RuntimeError as exc:
            # torch.func.grad/jvp (and jacrev, jacfwd, hessian) cannot read a
            # sparse CSR tensor at all, even one captured from outside
            raise TypeError(
                f"`{func}`: a sparse CSR `A` cannot be read inside torch.func.grad, "
                f"jvp, jacrev, jacfwd or hessian (PyTorch does not support sparse "
                f"CSR tensors there). Pass `A` as `(values, (indptr, indices))` "
                f"with its `values()`, `crow_indices()` and `col_indices()`, or as "
                f"a sparse COO tensor."
            ) from exc
        pattern = _Pattern(n, "csr", _as_index(crow, func, "crow_indices"),
                           _as_index(col, func, "col_indices"))
    elif A.layout == torch.sparse_coo:
        if A.sparse_dim() != 2 or A.dense_dim() != 0:
            raise ValueError(
                f"`{func}`: a COO `A` must have 2 sparse and no dense dimensions; "
                f"got {A.sparse_dim()} and {A.dense_dim()}."
            )
        idx = _index_numpy(A._indices())
        row, col = idx[0], idx[1]
        if A.is_coalesced():
            # sorted row-major without duplicates: the CSR fast path, same order
            indptr = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(np.bincount(row, minlength=n), out=indptr[1:])
            pattern = _Pattern(n, "csr", indptr, col)
        else:
            pattern = _Pattern(n, "coo", row, col)
    elif A.layout == torch.strided:
        indptr = np.arange(0, n * n + 1, max(n, 1), dtype=np.int64)
        indices = np.tile(np.arange(n, dtype=np.int64), n)
        pattern = _Pattern(n, "csr", indptr, indices)
        return _run(A.reshape(-1), pattern, b, options, func)
    else:
        raise TypeError(
            f"`{func}`: `A` must be a sparse CSR or COO tensor or a dense tensor; "
            f"got layout {A.layout}."
        )
    return _run(_Values.apply(A, pattern), pattern, b, options, func)


@_opaque_to_compile
def solve_values(values, b, *, indptr=None, indices=None, row=None, col=None,
                 method="auto", M=None, rtol=1e-8, atol=0.0, maxiter=None,
                 on_failure="raise"):
    """Differentiable solve with ``A`` given as values on a fixed pattern.

    For assembly pipelines: ``values`` is an ordinary 1-D tensor (for example
    the output of a finite-element assembly, ``requires_grad=True``), and the
    gradient ``values.grad`` is aligned entry for entry with it.

    Parameters
    ----------
    values : torch.Tensor, shape (nnz,) or (B, nnz)
        Stored values in the pattern's entry order; a 2-D tensor is a batch
        of B matrices on the pattern, solved by one
        :class:`sparsediff.BatchedSolver` (docs/batched.md).
    b : torch.Tensor, shape (n,) or (n, m); (B, n) or (B, n, m) for a batch
        Right-hand side(s), the dtype of ``values``.
    indptr, indices : integer tensors or arrays, optional
        A CSR pattern (``len(indptr) = n + 1``). Unsorted columns and
        duplicates are allowed.
    row, col : integer tensors or arrays, optional
        A COO pattern (``n`` is taken from ``b``); duplicates are summed and
        each gets the merged entry's gradient. Give either the CSR or the COO
        pattern.
    method, M, rtol, atol, maxiter, on_failure
        As :func:`sparsediff.solve`.

    Returns
    -------
    x : torch.Tensor
        Shape and dtype of ``b``.

    See Also
    --------
    solve

    Examples
    --------
    >>> import torch, sparsediff.torch as sdt
    >>> values = torch.tensor([2.0, 1.0, 4.0], dtype=torch.float64, requires_grad=True)
    >>> row, col = torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1])
    >>> x = sdt.solve_values(values, torch.ones(2, dtype=torch.float64), row=row, col=col)
    >>> x
    tensor([0.5000, 0.1250], dtype=torch.float64, grad_fn=<_SolveBackward>)
    """
    func = "sparsediff.torch.solve_values"
    options = dict(method=method, M=M, rtol=rtol, atol=atol, maxiter=maxiter,
                   on_failure=on_failure)
    csr = indptr is not None or indices is not None
    coo = row is not None or col is not None
    if csr == coo or (csr and (indptr is None or indices is None)) or (
            coo and (row is None or col is None)):
        raise TypeError(
            f"`{func}`: give the pattern as `indptr` and `indices` (CSR) or as `row` "
            f"and `col` (COO), not both and not neither."
        )
    if csr:
        a, b_idx = _as_index(indptr, func, "indptr"), _as_index(indices, func, "indices")
        n = a.shape[0] - 1
        if n < 0:
            raise ValueError(f"`{func}`: `indptr` must have length n + 1 >= 1; got 0.")
        pattern = _Pattern(n, "csr", a, b_idx)
    else:
        batched = isinstance(values, torch.Tensor) and values.ndim == 2
        if not isinstance(b, torch.Tensor) or b.ndim not in ((2, 3) if batched
                                                             else (1, 2)):
            if batched:
                _run_batched(values, _Pattern(0, "coo", np.zeros(0, np.int64),
                                              np.zeros(0, np.int64)), b, options, func)
            _check_b(b, -1, None, func)
        a, b_idx = _as_index(row, func, "row"), _as_index(col, func, "col")
        if a.shape != b_idx.shape:
            raise ValueError(
                f"`{func}`: `row` and `col` must have the same length; got "
                f"{a.shape[0]} and {b_idx.shape[0]}."
            )
        # n from b: (n,) / (n, m), or (B, n) / (B, n, m) for a batch of values
        pattern = _Pattern(int(b.shape[1] if batched else b.shape[0]), "coo", a, b_idx)
    return _run(values, pattern, b, options, func)
