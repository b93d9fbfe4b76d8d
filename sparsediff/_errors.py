"""Exceptions and warnings raised by sparsediff."""

import numpy as np
from scipy.linalg import LinAlgWarning

__all__ = [
    "ConvergenceError",
    "ConvergenceWarning",
    "IllConditionedWarning",
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
    """An input array holds NaN or infinite values.

    A ``ValueError``; the message names the function and the argument.
    """


class ConvergenceWarning(RuntimeWarning):
    """A solve failed under ``on_failure="warn"``; the result is unconverged."""


class IllConditionedWarning(LinAlgWarning):
    """A direct solve met a matrix so ill-conditioned that few digits are exact.

    A subclass of :class:`scipy.linalg.LinAlgWarning` (SciPy's warning for the
    same condition in ``scipy.linalg.solve``), so existing filters apply.
    Emitted by the forward solve and by every ``vjp``/``jvp`` after it when
    the condition estimate ``κ`` (``info.condition_estimate``, an estimate of
    the 1-norm condition number that does not depend on ``b``) leaves a
    first-order error bound ``κ·eps`` above
    ``sparsediff._api.ILL_CONDITIONED_BOUND``.
    """
