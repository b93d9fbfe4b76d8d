"""Preconditioners ``M ≈ A⁻¹`` for the Krylov solvers, each with its adjoint.

``make_preconditioner(M, mat, func)`` turns the public ``M`` argument into a
:class:`Preconditioner` (or ``None``). Every preconditioner applies to blocks
``X`` of shape ``(n, m)`` and provides

- ``matvec(X)``  = ``M X``,
- ``rmatvec(X)`` = ``Mᴴ X`` (used by solves with ``Aᴴ``: the adjoint solve),
- ``tmatvec(X)`` = ``Mᵀ X = conj(Mᴴ conj(X))`` (solves with ``Aᵀ``),

each returning a new array, plus ``shape``, ``dtype``, ``name``,
``hermitian`` (``M = Mᴴ``), ``has_adjoint``, ``setup_time`` and
``update(mat)`` (new values on the same pattern).

==========  ================================================  ==============
``M``       operator                                          ``hermitian``
==========  ================================================  ==============
"jacobi"    ``D⁻¹``                                           real diagonal
"ilu"       SuperLU threshold ILU (``spilu``)                 never
"amg"       pyamg smoothed aggregation, symmetric-GS V-cycle  Hermitian ``A``
object      matrix, LinearOperator, SuperLU, ``matvec``       see below
==========  ================================================  ==============

Options can be given as ``(name, options)``, e.g. ``("ilu", {"drop_tol":
1e-5})`` or ``("amg", {"symmetry": "nonsymmetric"})``; an already built
:class:`Preconditioner` of the right shape is used as it is.
"""

from .._validation import nonfinite_error
from ._base import Preconditioner
from .amg import AMG
from .ilu import ILU
from .jacobi import Jacobi
from .user import UserPreconditioner

__all__ = [
    "AMG",
    "ILU",
    "Jacobi",
    "PRECONDITIONERS",
    "Preconditioner",
    "UserPreconditioner",
    "make_preconditioner",
]

PRECONDITIONERS = {"jacobi": Jacobi, "ilu": ILU, "amg": AMG}


def make_preconditioner(M, mat, func):
    """Build the preconditioner that the public argument ``M`` asks for.

    Parameters
    ----------
    M : None, str, tuple, Preconditioner or object
        ``None`` (no preconditioner), ``"jacobi"``, ``"ilu"``, ``"amg"``, a
        ``(name, options)`` pair whose options go to the class
        (:class:`Jacobi`, :class:`ILU`, :class:`AMG`), a built
        :class:`Preconditioner`, or a caller's operator
        (see :class:`UserPreconditioner`).
    mat : MatrixInput
        The validated matrix (canonical CSR).
    func : str
        Public function name for error messages.

    Returns
    -------
    Preconditioner or None

    Raises
    ------
    ValueError
        Unknown name (the message lists the choices); shape of ``M`` differs
        from that of ``A``; non-finite values in ``A`` (``NonFiniteInputError``).
    TypeError
        ``M`` of an unsupported type, or options that are not a dict.
    SingularMatrixError
        The preconditioner cannot be built (zero diagonal, zero ILU pivot).
    """
    if M is None:
        return None
    n = mat.shape[0]
    if isinstance(M, Preconditioner):
        if tuple(M.shape) != tuple(mat.shape):
            raise ValueError(
                f"`{func}`: `M` must have the shape of `A`, {mat.shape}; got {M.shape}."
            )
        return M
    options = {}
    if isinstance(M, tuple) and len(M) == 2 and isinstance(M[0], str):
        M, options = M
        if not isinstance(options, dict):
            raise TypeError(
                f"`{func}`: the options in `M=(name, options)` must be a dict; got "
                f"{type(options).__name__}."
            )
    if isinstance(M, str):
        cls = PRECONDITIONERS.get(M.lower())
        if cls is None:
            raise ValueError(
                f"`{func}`: `M` must be None, one of {tuple(PRECONDITIONERS)}, or an "
                f"object with `matvec`; got {M!r}."
            )
        mat.backend.require("preconditioner", M.lower(), func)
        if not mat.finite:
            raise nonfinite_error(func, "A")
        try:
            return cls(mat, func=func, **options)
        except TypeError as exc:
            if "unexpected keyword" in str(exc):
                raise TypeError(f"`{func}`: bad option for M={M!r}: {exc}") from None
            raise
    if options:
        raise TypeError(f"`{func}`: options are only accepted with a named `M`.")
    return UserPreconditioner(M, n, func=func)
