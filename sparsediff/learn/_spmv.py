"""A differentiable CSR matrix–vector product for PyTorch.

``y = A x`` where ``A`` is given by a fixed sparsity pattern (``indptr``,
``indices``) and a tensor of stored values. The backward pass follows the
pattern rule of the whole library (docs/design.md): for a cotangent ``g`` of ``y``,

    ∂L/∂x       = Aᴴ g                         (the product with the transposed pattern)
    ∂L/∂data_k  = g[i_k] · conj(x[j_k])        (one number per stored entry)

so it costs O(nnz), like the forward product, and never forms a dense matrix.
The backward is built from the same Function (on the transposed pattern) and
from plain gathers, so it is itself differentiable: double backward works.
"""

import numpy as np
import torch

__all__ = ["CSRPattern", "csr_matvec"]


class CSRPattern:
    """The sparsity pattern of a CSR matrix, as PyTorch index tensors.

    Parameters
    ----------
    indptr : array_like of int, shape (n_rows + 1,)
    indices : array_like of int, shape (nnz,)
        Column index of each stored entry. Unsorted indices and duplicates are
        allowed: duplicates add up, as in ``scipy.sparse``.
    shape : tuple of int, optional
        ``(n_rows, n_cols)``; default ``(n_rows, n_rows)``.

    Attributes
    ----------
    rows, cols : torch.Tensor of int64, shape (nnz,)
        Row and column of every stored entry, in the caller's entry order.
    shape : tuple of int
    nnz : int

    Examples
    --------
    >>> import scipy.sparse as sp, torch
    >>> from sparsediff.learn import CSRPattern, csr_matvec
    >>> pattern, values = CSRPattern.from_scipy(sp.eye(3, format="csr") * 2.0)
    >>> csr_matvec(values, pattern, torch.ones(3, dtype=torch.float64))
    tensor([2., 2., 2.], dtype=torch.float64)
    """

    def __init__(self, indptr, indices, shape=None, *, device=None):
        func = "CSRPattern"
        indptr = np.asarray(indptr)
        indices = np.asarray(indices)
        if indptr.ndim != 1 or indptr.size < 1 or indices.ndim != 1:
            raise ValueError(
                f"`{func}`: `indptr` and `indices` must be 1-D with len(indptr) >= 1; "
                f"got shapes {indptr.shape} and {indices.shape}.")
        if indptr.dtype.kind not in "iu" or indices.dtype.kind not in "iu":
            raise TypeError(
                f"`{func}`: `indptr` and `indices` must be integer arrays; "
                f"got {indptr.dtype} and {indices.dtype}.")
        n_rows = indptr.size - 1
        if shape is None:
            shape = (n_rows, n_rows)
        shape = tuple(int(s) for s in shape)
        if len(shape) != 2 or shape[0] != n_rows:
            raise ValueError(
                f"`{func}`: `shape` must be (n_rows, n_cols) with n_rows = "
                f"len(indptr) - 1 = {n_rows}; got {shape}.")
        counts = np.diff(indptr)
        if indptr[0] != 0 or (counts < 0).any() or indptr[-1] != indices.size:
            raise ValueError(
                f"`{func}`: `indptr` must start at 0, be non-decreasing and end at "
                f"len(indices) = {indices.size}; got indptr[0] = {indptr[0]}, "
                f"indptr[-1] = {indptr[-1]}.")
        if indices.size and (indices.min() < 0 or indices.max() >= shape[1]):
            raise ValueError(
                f"`{func}`: `indices` must lie in [0, {shape[1]}); got values in "
                f"[{indices.min()}, {indices.max()}].")
        rows = np.repeat(np.arange(n_rows, dtype=np.int64), counts)
        self.shape = shape
        self.nnz = int(indices.size)
        self.rows = torch.as_tensor(rows, dtype=torch.int64, device=device)
        self.cols = torch.as_tensor(indices.astype(np.int64), device=device)
        self._transpose = None

    @classmethod
    def from_scipy(cls, A, *, dtype=torch.float64, device=None):
        """Pattern and values of a SciPy sparse matrix (converted to CSR).

        Returns
        -------
        pattern : CSRPattern
        values : torch.Tensor, shape (nnz,)
            A copy of ``A.data`` (of its CSR form), a leaf tensor.
        """
        import scipy.sparse as sp

        if not sp.issparse(A):
            raise TypeError(
                f"`CSRPattern.from_scipy`: `A` must be a scipy.sparse matrix or "
                f"array; got {type(A).__name__}.")
        A = A.tocsr()
        pattern = cls(A.indptr, A.indices, A.shape, device=device)
        values = torch.tensor(np.array(A.data), dtype=dtype, device=device)
        return pattern, values

    @classmethod
    def _from_entries(cls, rows, cols, shape, *, device=None):
        """A pattern from per-entry rows and columns (any order, e.g. COO/CSC)."""
        p = object.__new__(cls)
        p.shape = tuple(int(s) for s in shape)
        p.nnz = int(np.size(rows))
        p.rows = torch.as_tensor(np.asarray(rows, dtype=np.int64), device=device)
        p.cols = torch.as_tensor(np.asarray(cols, dtype=np.int64), device=device)
        p._transpose = None
        return p

    @property
    def T(self):
        """The transposed pattern, entry k of both at the same place."""
        if self._transpose is None:
            t = object.__new__(CSRPattern)
            t.shape = (self.shape[1], self.shape[0])
            t.nnz = self.nnz
            t.rows, t.cols = self.cols, self.rows
            t._transpose = self
            self._transpose = t
        return self._transpose

    def diagonal_index(self):
        """Entry indices ``k`` with ``rows[k] == cols[k]`` (the stored diagonal)."""
        return torch.nonzero(self.rows == self.cols).reshape(-1)

    def to_scipy(self, values):
        """A ``scipy.sparse.csr_array`` with this pattern and ``values``."""
        import scipy.sparse as sp

        v = values.detach().cpu().numpy()
        return sp.csr_array((v, (self.rows.cpu().numpy(), self.cols.cpu().numpy())),
                            shape=self.shape)

    def __repr__(self):
        return f"CSRPattern(shape={self.shape}, nnz={self.nnz})"


def _sum_to(t, shape):
    """Reduce a broadcast gradient back to an input's shape."""
    if t.shape == shape:
        return t
    lead = t.dim() - len(shape)
    if lead:
        t = t.sum(dim=tuple(range(lead)))
    dims = tuple(i for i, s in enumerate(shape) if s == 1 and t.shape[i] != 1)
    if dims:
        t = t.sum(dim=dims, keepdim=True)
    return t


def _gather_product(values, pattern, x):
    """``y[..., i] = Σ_k values[..., k] x[..., j_k]`` over the entries of row i."""
    prod = values * x[..., pattern.cols]
    out = torch.zeros(prod.shape[:-1] + (pattern.shape[0],), dtype=prod.dtype,
                      device=prod.device)
    return out.index_add(-1, pattern.rows, prod)


class _CSRMatvec(torch.autograd.Function):
    # forward saves only `values` and `x` (O(nnz + n)); the products are not kept

    @staticmethod
    def forward(values, x, pattern):
        return _gather_product(values, pattern, x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        values, x, pattern = inputs
        ctx.pattern = pattern
        ctx.save_for_backward(values, x)
        ctx.save_for_forward(values, x)

    @staticmethod
    def jvp(ctx, dvalues, dx, _):
        # forward mode: ẏ = A(v̇) x + A(v) ẋ, both on the same pattern
        values, x = ctx.saved_tensors
        out = None
        if dvalues is not None:
            out = _CSRMatvec.apply(dvalues, x, ctx.pattern)
        if dx is not None:
            t = _CSRMatvec.apply(values, dx, ctx.pattern)
            out = t if out is None else out + t
        return out

    @staticmethod
    def backward(ctx, g):
        values, x = ctx.saved_tensors
        pattern = ctx.pattern
        grad_values = grad_x = None
        if ctx.needs_input_grad[0]:
            # ∂L/∂data_k = g[i_k]·conj(x[j_k]) — a differentiable gather
            gv = g[..., pattern.rows] * x[..., pattern.cols].conj()
            grad_values = _sum_to(gv, values.shape)
        if ctx.needs_input_grad[1]:
            # ∂L/∂x = Aᴴ g: the same Function on the transposed pattern, so the
            # backward is itself differentiable (double backward, HVPs)
            gx = _CSRMatvec.apply(values.conj(), g, pattern.T)
            grad_x = _sum_to(gx, x.shape)
        return grad_values, grad_x, None


def csr_matvec(values, pattern, x):
    """Differentiable sparse product ``y = A x`` for ``A`` = (pattern, values).

    Parameters
    ----------
    values : torch.Tensor, shape (..., nnz)
        Stored values in the pattern's entry order; leading dimensions batch
        several matrices with the same pattern.
    pattern : CSRPattern
    x : torch.Tensor, shape (..., n_cols)
        Vectors along the last dimension; leading dimensions broadcast
        against those of ``values``.

    Returns
    -------
    torch.Tensor, shape (..., n_rows)

    Notes
    -----
    Gradients: ``∂L/∂x = Aᴴ g`` and ``∂L/∂values[k] = g[i_k]·conj(x[j_k])``
    (docs/design.md), O(nnz) each; twice differentiable.

    See Also
    --------
    torch.sparse.mm : no gradient with respect to the stored values of a CSR
        tensor, and no double backward.
    """
    if not isinstance(pattern, CSRPattern):
        raise TypeError(
            f"`csr_matvec`: `pattern` must be a CSRPattern; got {type(pattern).__name__}.")
    if values.shape[-1:] != (pattern.nnz,):
        raise ValueError(
            f"`csr_matvec`: `values` must have shape (..., nnz) with nnz = "
            f"{pattern.nnz}; got {tuple(values.shape)}.")
    if x.shape[-1:] != (pattern.shape[1],):
        raise ValueError(
            f"`csr_matvec`: `x` must have shape (..., n) with n = {pattern.shape[1]}; "
            f"got {tuple(x.shape)}.")
    if values.dtype != x.dtype:
        raise TypeError(
            f"`csr_matvec`: `values` and `x` must have the same dtype; "
            f"got {values.dtype} and {x.dtype}.")
    return _CSRMatvec.apply(values, x, pattern)
