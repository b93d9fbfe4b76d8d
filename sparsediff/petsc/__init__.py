"""Differentiable sparse solves on distributed PETSc matrices (optional extra ``petsc``).

The public contract of :class:`sparsediff.Solver` on a matrix distributed by
rows over MPI ranks: :class:`Solver` solves with any KSP and preconditioner,
and :meth:`Solution.vjp` returns the gradient of each rank's stored entries,
aligned with the caller's local ``data``, by one ``KSPSolveTranspose`` on the
same KSP. See ``docs/petsc.md``.

Needs ``petsc4py`` and ``mpi4py`` (``bash scripts/install-petsc.sh`` builds
them; see the README).
"""

try:
    import mpi4py  # noqa: F401
    import petsc4py  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "sparsediff.petsc needs petsc4py and mpi4py, which are not installed: "
        "run `bash scripts/install-petsc.sh` (it builds PETSc, petsc4py and mpi4py "
        "from source, about 15 minutes on 2 cores; see the README)."
    ) from exc

from ._solver import Solution, Solver, solve

__all__ = ["Solution", "Solver", "solve"]
