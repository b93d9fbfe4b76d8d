"""`UnrolledCG`: k conjugate-gradient iterations with learnable step multipliers."""

import torch

from ._pcg import as_matvec, pcg_unrolled

__all__ = ["UnrolledCG", "tape_memory"]


class tape_memory:
    """Context manager measuring the bytes saved on the autograd tape.

    Every tensor that autograd saves for the backward pass inside the block is
    seen by a :func:`torch.autograd.graph.saved_tensors_hooks` pack hook; the
    total counts each underlying storage once (a tensor saved by several
    operations, such as the matrix values, is stored once).

    Examples
    --------
    >>> import torch
    >>> from sparsediff.learn import tape_memory
    >>> x = torch.ones(1000, dtype=torch.float64, requires_grad=True)
    >>> with tape_memory() as tape:
    ...     y = (x * x).sum()
    >>> tape.nbytes
    8000
    """

    def __init__(self):
        self.nbytes = 0
        self._seen = set()
        self._hooks = None

    def _pack(self, t):
        storage = t.untyped_storage()
        key = (storage.data_ptr(), t.device)
        if key not in self._seen:
            self._seen.add(key)
            self.nbytes += storage.nbytes()
        return t

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        # keep the count; drop the references the keys do not hold anyway
        self._seen = set()
        return False


class UnrolledCG(torch.nn.Module):
    """``k`` iterations of conjugate gradients as a differentiable module.

    Iteration ``i`` takes the CG step ``x ← x + s_i α_i p_i`` with the usual
    ``α_i = (r_i·z_i)/(p_i·A p_i)`` multiplied by a learnable scalar ``s_i``
    (initialized to 1, so an untrained module is plain CG). The residual is
    updated with the same step, ``r ← r − s_i α_i A p_i``, so it stays the true
    residual ``b − A x``.

    Parameters
    ----------
    k : int
        Number of iterations (>= 0).
    learn_steps : bool
        Make ``steps`` (``s``, shape ``(k,)``) a learnable parameter; otherwise
        it is a constant buffer of ones.
    dtype : torch.dtype
        Dtype of ``steps`` (float64 by default).

    Attributes
    ----------
    steps : torch.Tensor, shape (k,)
    tape_memory_bytes : int or None
        Bytes of the tensors saved for the backward pass by the last
        :meth:`forward` (each storage once; 0 when gradients are off), measured
        with :func:`torch.autograd.graph.saved_tensors_hooks`. It grows
        linearly with ``k``: this is the price of unrolling, which implicit
        differentiation (:func:`sparsediff.solve` with ``Solution.vjp``) does not pay.

    Notes
    -----
    The gradient is that of the algorithm truncated at ``k`` steps. With
    ``s = 1`` and ``k = n`` CG is exact in exact arithmetic; in floating point
    the result agrees with ``A⁻¹ b`` to rounding on small well-conditioned
    problems. Real dtypes only; ``A`` and the preconditioner must be symmetric
    positive definite.

    See Also
    --------
    scipy.sparse.linalg.cg

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp, torch
    >>> from sparsediff.learn import CSRPattern, UnrolledCG
    >>> A = sp.diags([-1.0, 2.5, -1.0], [-1, 0, 1], shape=(6, 6), format="csr")
    >>> pattern, values = CSRPattern.from_scipy(A)
    >>> b = torch.ones(6, dtype=torch.float64)
    >>> x = UnrolledCG(6)((values, pattern), b)
    >>> bool(torch.allclose(x, torch.tensor(np.linalg.solve(A.toarray(), np.ones(6)))))
    True
    """

    def __init__(self, k, learn_steps=True, *, dtype=torch.float64):
        super().__init__()
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"`UnrolledCG`: `k` must be an integer >= 0; got {k!r}.")
        self.k = k
        steps = torch.ones(k, dtype=dtype)
        if learn_steps:
            self.steps = torch.nn.Parameter(steps)
        else:
            self.register_buffer("steps", steps)
        self.tape_memory_bytes = None

    def extra_repr(self):
        return f"k={self.k}, learn_steps={isinstance(self.steps, torch.nn.Parameter)}"

    def forward(self, A, b, x0=None, M=None):
        """Run the ``k`` iterations and return ``x_k``.

        Parameters
        ----------
        A : (values, CSRPattern), scipy.sparse matrix or dense 2-D tensor
            Symmetric positive definite. With ``(values, pattern)`` the result
            is differentiable with respect to ``values`` (shape ``(nnz,)``, or
            ``(B, nnz)`` for a batch of matrices sharing the pattern).
        b : torch.Tensor, shape (n,) or (B, n)
        x0 : torch.Tensor, optional
            Initial guess (zero by default).
        M : callable, optional
            ``M(r) -> M⁻¹ r``, an SPD preconditioner, e.g.
            ``WoodburyPreconditioner(...)``.

        Returns
        -------
        torch.Tensor, shape of ``b`` broadcast against the batch of ``A``
        """
        matvec, n, dtype = as_matvec(A, dtype=b.dtype, device=b.device)
        if b.shape[-1:] != (n,):
            raise ValueError(
                f"`UnrolledCG.forward`: `b` must have shape (..., n) with n = {n}; "
                f"got {tuple(b.shape)}.")
        if b.is_complex() or dtype != b.dtype:
            raise TypeError(
                f"`UnrolledCG.forward`: `A` and `b` must share one real dtype; "
                f"got {dtype} and {b.dtype}.")
        steps = self.steps.to(b.dtype)
        with tape_memory() as tape:
            x = pcg_unrolled(matvec, b, self.k, M=M, x0=x0, steps=steps)
        self.tape_memory_bytes = tape.nbytes if torch.is_grad_enabled() else 0
        return x
