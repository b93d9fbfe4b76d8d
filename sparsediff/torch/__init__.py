"""PyTorch glue: differentiable sparse solves as ``torch.autograd.Function``.

Thin layer over the core. The forward pass builds a :class:`sparsediff.Solver`
(one factorization); the backward pass is :meth:`Solution.vjp` on the same
solver, or — when a graph of the backward is requested (``create_graph=True``,
Hessian–vector products) — the same computation written with differentiable
pieces: the adjoint solve is itself a registered solve with ``trans="H"`` on
the same solver, and the pattern gradient is a gather-multiply in torch.
Forward mode (``torch.func.jvp``, ``torch.autograd.forward_ad``) calls
:meth:`Solution.jvp`.

>>> import torch, sparsediff.torch as sdt
>>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64).to_sparse_csr()
>>> A.requires_grad_()                                   # doctest: +ELLIPSIS
tensor(...)
>>> x = sdt.solve(A, torch.tensor([1.0, 2.0], dtype=torch.float64))
>>> x.sum().backward()
>>> A.grad.layout
torch.sparse_csr

The solves work under the ``torch.func`` transforms and their compositions
(``grad``, ``jvp``, ``vjp``, ``vmap``, ``jacrev``, ``jacfwd``, ``hessian``).
Under ``vmap`` a batch of right-hand sides is one multi-column solve (one
factorization); a batch of values is one :class:`sparsediff.BatchedSolver`
(one ordering, one factorization per element, docs/batched.md), as are
values of shape ``(B, nnz)`` passed directly. A sparse CSR ``A`` cannot be
read inside ``grad``/``jvp``-based transforms (PyTorch does not support it
there): pass ``(values, (indptr, indices))`` or a COO tensor instead, or use
:func:`solve_values`. Under ``torch.compile`` each solve is an opaque eager
call between compiled pieces (a graph break), with the same values and
gradients.

Only CPU tensors are supported in this version (the GPU backend is not
available yet); CUDA tensors raise ``TypeError``.
"""

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without torch
    raise ImportError(
        "sparsediff.torch needs PyTorch: pip install sparsediff[torch]"
    ) from exc

from ._fixed_point import fixed_point
from ._solve import solve, solve_values

__all__ = ["fixed_point", "solve", "solve_values"]
