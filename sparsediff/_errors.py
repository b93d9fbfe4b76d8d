"""Exceptions and warnings raised by sparsediff."""

import numpy as np

__all__ = [
    "ConvergenceError",
    "ConvergenceWarning",
    "NonFiniteInputError",
    "SingularMatrixError",
]


class ConvergenceError(RuntimeError):
    """A forward or adjoint solve did not meet its stopping test.

    Raised under ``on_failure="raise"``. The attribute ``info`` holds the
    :class:`sparsediff.SolveInfo` of the failed solve (iterations, true
    residual, reason).
    """

    def __init__(self, message, info=None):
        super().__init__(message)
        self.info = info


class SingularMatrixError(np.linalg.LinAlgError):
    """The matrix is (numerically) singular: no unique solution exists."""

    def __init__(self, message, info=None):
        super().__init__(message)
        self.info = info


class NonFiniteInputError(ValueError):
    """An input array holds NaN or infinite values."""


class ConvergenceWarning(RuntimeWarning):
    """A solve failed under ``on_failure="warn"``; the result is unconverged."""
