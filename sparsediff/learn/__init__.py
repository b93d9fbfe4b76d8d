"""Learned solvers in PyTorch: unrolled CG and trained preconditioners.

Building blocks for learning parts of a sparse solver end to end:

* :func:`csr_matvec` — a CSR product differentiable with respect to ``x`` and
  to the stored values (twice), over a :class:`CSRPattern`;
* :class:`UnrolledCG` — ``k`` CG iterations with learnable step multipliers,
  reporting the memory of its autograd tape;
* :class:`WoodburyPreconditioner` — ``M = D + U Uᵀ`` (SPD) applied as ``M⁻¹``
  by the Woodbury identity, trained through truncated PCG with
  :func:`train_preconditioner`, evaluated with :func:`iterations_to_tolerance`;
* :func:`truncated_pcg_loss`, :func:`preconditioner_gradient` — the
  differentiable objective and its gradient;
* :class:`DirectionNet` — a graph network on the sparsity graph of ``A`` that
  proposes search directions, used by :func:`neural_cg` (flexible CG),
  :func:`neural_gmres` (flexible GMRES) and :func:`line_search_solve`, trained
  through the solver with :func:`train_direction_net`.

Requires PyTorch (``pip install sparsediff[torch]``).
"""

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without torch only
    raise ImportError(
        "`sparsediff.learn` requires PyTorch; install it with "
        "`pip install sparsediff[torch]`.") from exc

from ._pcg import pcg_numpy, pcg_unrolled
from ._spmv import CSRPattern, csr_matvec
from .neural import (
    DirectionNet,
    anisotropic_family,
    line_search_solve,
    neural_cg,
    neural_cg_loss,
    neural_gmres,
    neural_gmres_loss,
    train_direction_net,
)
from .preconditioner import (
    WoodburyOperator,
    WoodburyPreconditioner,
    diffusion_family,
    iterations_to_tolerance,
    preconditioner_gradient,
    train_preconditioner,
    truncated_pcg_loss,
)
from .unrolled_cg import UnrolledCG, tape_memory

__all__ = [
    "CSRPattern",
    "DirectionNet",
    "UnrolledCG",
    "WoodburyOperator",
    "WoodburyPreconditioner",
    "anisotropic_family",
    "csr_matvec",
    "diffusion_family",
    "iterations_to_tolerance",
    "line_search_solve",
    "neural_cg",
    "neural_cg_loss",
    "neural_gmres",
    "neural_gmres_loss",
    "pcg_numpy",
    "pcg_unrolled",
    "preconditioner_gradient",
    "tape_memory",
    "train_direction_net",
    "train_preconditioner",
    "truncated_pcg_loss",
]
