"""Errors that every rank raises together.

A check that fails on one rank only (an index out of range in its rows, a
right-hand side of the wrong local length) must not leave the other ranks
waiting in the next collective call: :func:`collectively` runs the check on
every rank, gathers the outcome, and raises on all of them when any failed.
"""

import builtins

__all__ = ["collectively", "mpi_comm"]


def mpi_comm(comm):
    """The mpi4py communicator behind a petsc4py one (for allgather/allreduce)."""
    return comm.tompi4py()


def _exception_class(name):
    from .. import _errors

    cls = getattr(_errors, name, None) or getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        return cls
    return RuntimeError


def collectively(comm, thunk):
    """``thunk()`` on every rank of ``comm``; if it raises anywhere, raise everywhere.

    The rank that failed re-raises its own exception; the others raise one of
    the same class whose message is the failing rank's, followed by which rank
    it came from. With one process this is a plain call.
    """
    mpi = mpi_comm(comm)
    try:
        out, err = thunk(), None
    except Exception as exc:  # noqa: BLE001 (re-raised below, on every rank)
        out, err = None, exc
    if mpi.Get_size() == 1:
        if err is not None:
            raise err
        return out
    failures = mpi.allgather(None if err is None else (type(err).__name__, str(err)))
    if err is not None:
        raise err
    for rank, failure in enumerate(failures):
        if failure is not None:
            name, message = failure
            raise _exception_class(name)(
                f"{message} [raised on rank {rank}; rank {mpi.Get_rank()} stops too]")
    return out
