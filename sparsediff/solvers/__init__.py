"""Solver engines behind the public contract.

An *engine* holds the state of one matrix (a factorization, a preconditioner)
and solves with ``op(A)`` for ``op`` in N, T, H::

    engine.solve(b, *, x0=None, trans="N", rtol, atol, maxiter, callback=None)
        -> (x, info)

``b`` is a private C-contiguous ``(n, m)`` array; ``x`` a new array of
``b.dtype``; ``info`` a :class:`SolveInfo` (``is_1d`` is the caller's concern).
Engines report failure in ``info`` and never raise for non-convergence;
the public layer applies the ``on_failure`` policy. ``engine.update(mat)``
returns an engine for new values on the same pattern. ``engine.method`` names
the method, ``engine.iterative`` says whether ``x0`` is used.
"""

from .direct import DirectEngine

__all__ = ["METHODS", "make_engine"]

METHODS = ("auto", "direct", "cg", "minres", "gmres", "bicgstab")


def make_engine(method, mat, M=None, *, func):
    """Build the engine for ``method`` on a validated matrix."""
    if method not in METHODS:
        raise ValueError(f"`{func}`: `method` must be one of {METHODS}; got {method!r}.")
    if method in ("auto", "direct"):
        if M is not None and method == "direct":
            raise ValueError(
                f"`{func}`: `M` (a preconditioner) has no meaning for method='direct'; "
                f"got M={M!r}."
            )
        return DirectEngine(mat)
    raise NotImplementedError(
        f"`{func}`: method={method!r} is not implemented yet in this version; "
        f"use method='direct'."
    )
