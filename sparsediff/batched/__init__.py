"""Batches of systems with one sparsity pattern (docs/batched.md).

``data`` of shape ``(B, nnz)`` on one pattern: the analysis of the pattern
is done once, each element gets its own factorization (or preconditioner),
and the gradients come back as ``(B, nnz)`` in the pattern's entry order.
"""

from ._api import (
    ILU_METHODS,
    METHODS,
    PRECONDITIONERS,
    BatchedSolution,
    BatchedSolver,
    accepts,
    batched_solve,
)

__all__ = ["ILU_METHODS", "METHODS", "PRECONDITIONERS", "BatchedSolution",
           "BatchedSolver", "accepts", "batched_solve"]
