"""sparsediff: differentiable sparse linear solves for SciPy (and CuPy).

Solve ``A x = b`` with a direct or Krylov solver and get exact gradients with
respect to ``b`` and to the *stored entries* of ``A`` by one adjoint solve that
reuses the forward factorization or preconditioner.

>>> import numpy as np, scipy.sparse as sp, sparsediff as sd
>>> A = sp.csr_array(np.array([[4.0, 1.0], [1.0, 3.0]]))
>>> sol = sd.solve(A, np.array([1.0, 2.0]))
>>> grad_A, grad_b = sol.vjp(np.ones(2))
"""

from ._api import Solver, solve, sparse_outer
from ._compare import compare_gradients
from ._errors import (
    ConvergenceError,
    ConvergenceWarning,
    IllConditionedWarning,
    NonFiniteInputError,
    SingularMatrixError,
)
from .batched import BatchedSolution, BatchedSolver, batched_solve
from .fixed_point import fixed_point, iterate
from .solvers._info import SolveInfo
from .solvers._solution import Solution
from .stochastic import LogDet, SampledGradient, logdet, sampled_rhs_gradient

__version__ = "0.1.0"

__all__ = [
    "BatchedSolution",
    "BatchedSolver",
    "ConvergenceError",
    "ConvergenceWarning",
    "IllConditionedWarning",
    "LogDet",
    "NonFiniteInputError",
    "SampledGradient",
    "SingularMatrixError",
    "Solution",
    "SolveInfo",
    "Solver",
    "batched_solve",
    "compare_gradients",
    "fixed_point",
    "iterate",
    "logdet",
    "sampled_rhs_gradient",
    "solve",
    "sparse_outer",
]
