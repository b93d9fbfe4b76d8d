"""Differentiating iterative processes ``x_{k+1} = f(x_k, θ)``.

:func:`fixed_point` runs the iteration to convergence and differentiates the
fixed point implicitly (``wᵀ = vᵀ + wᵀ ∂f/∂x``, solved by GMRES or by
iterating it), in memory independent of the number of steps.
:func:`iterate` runs a fixed number of steps — a truncated solver, a smoother
being learned — and differentiates them by a backward sweep whose iterates are
stored, checkpointed (binomial/Revolve schedule) or reconstructed by inverting
the step (with the caller's inverse, or by a Gauss–Newton solve of
``f(x_i) = x_{i+1}``: :class:`Reconstruct`).
:mod:`sparsediff.fixed_point.steps` holds differentiable steps on a CSR matrix
(Richardson, weighted Jacobi, SOR, Chebyshev, an AMG V-cycle).
"""

from . import steps
from ._reconstruct import Reconstruct
from .implicit import FixedPointInfo, FixedPointResult, fixed_point
from .unrolled import IterateInfo, IterateResult, iterate

__all__ = [
    "FixedPointInfo",
    "FixedPointResult",
    "IterateInfo",
    "IterateResult",
    "Reconstruct",
    "fixed_point",
    "iterate",
    "steps",
]
