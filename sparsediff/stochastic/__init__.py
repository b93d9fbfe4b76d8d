"""Log-determinants and stochastic gradients for large systems.

* :func:`logdet` — ``log|det A|``, its sign and its gradient with respect to
  the stored entries (the inverse restricted to the pattern): exact from the
  LU factors, or Hutchinson / Hutch++ probes and stochastic Lanczos
  quadrature with standard errors.
* :func:`sampled_rhs_gradient` — an unbiased gradient of a loss summed over
  many right-hand sides from a random subset of them, with its standard error.

See docs/stochastic.md.
"""

from ._logdet import LogDet, logdet
from ._sampled import SampledGradient, sampled_rhs_gradient

__all__ = ["LogDet", "SampledGradient", "logdet", "sampled_rhs_gradient"]
