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

from ..backend._csr import diagonal
from . import direct
from ._krylov import is_hermitian, parse_options, resolve_preconditioner
from .bicgstab import BiCGSTABEngine
from .cg import CGEngine
from .direct import DirectEngine
from .gmres import GMRESEngine
from .minres import MINRESEngine

__all__ = ["AUTO_DIRECT_MAX_N", "AUTO_DIRECT_MAX_N_SPD", "METHODS", "make_engine",
           "update_engine"]

METHODS = ("auto", "direct", "cg", "minres", "gmres", "bicgstab")

KRYLOV = {"cg": CGEngine, "minres": MINRESEngine, "gmres": GMRESEngine,
          "bicgstab": BiCGSTABEngine}

#: ``method="auto"`` solves Hermitian matrices with a positive diagonal (the
#: SPD heuristic) directly up to this many unknowns, then by CG + AMG
AUTO_DIRECT_MAX_N_SPD = 20_000

#: ``method="auto"`` solves every other matrix directly up to this many
#: unknowns (see make_engine)
AUTO_DIRECT_MAX_N = 1_000_000


def _split(method, func):
    """``method`` or ``(method, options)`` -> ``(name, options or None)``."""
    options = None
    if isinstance(method, tuple) and len(method) == 2 and isinstance(method[0], str):
        method, options = method
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(
            f"`{func}`: `method` must be one of {METHODS} or a pair (name, "
            f"options); got {method!r}.")
    return method, options


def make_engine(method, mat, M=None, *, func):
    """Build the engine for ``method`` on a validated matrix.

    Parameters
    ----------
    method : str or (str, dict)
        One of :data:`METHODS`, or a pair ``(name, options)`` for method
        options, e.g. ``("gmres", {"restart": 50})`` (GMRES: ``restart``, the
        basis size between restarts, default 20 as in SciPy; ``restart < 1``
        raises ``ValueError``). CG, MINRES and BiCGSTAB take no options.
    mat : MatrixInput
        The validated matrix.
    M : None, str, tuple or object
        Preconditioner, see :func:`sparsediff.precond.make_preconditioner`.
    func : str
        Public function name for error messages.

    Raises
    ------
    ValueError
        Unknown method or option; CG or MINRES on a matrix that is not
        Hermitian to rounding (O(nnz), once per matrix: see
        :mod:`sparsediff._symmetry`; the message reports the measured
        asymmetry and the tolerance), or with a preconditioner that is not
        Hermitian; ``M`` with ``method="direct"``.

    Notes
    -----
    ``method="auto"`` picks, without a preconditioner given:

    * Hermitian with a positive diagonal (the SPD heuristic): ``"direct"``
      if its graph looks two-dimensional (``direct.graph_dimension``) up to
      ``AUTO_DIRECT_MAX_N_SPD`` = 20,000 unknowns, and, with CHOLMOD
      installed (``sparsediff[direct]``) and the matrix exactly Hermitian, up
      to ``direct.AUTO_CHOLMOD_MAX_N_2D`` = 1,100,000; other (3-D) graphs only
      up to ``direct.AUTO_CHOLMOD_MAX_N_3D`` = 12,000 (CHOLMOD) or
      ``direct.AUTO_SUPERLU_MAX_N_3D`` = 1,000 (SuperLU); then ``"cg"`` with
      ``M="amg"`` (docs/direct.md: CHOLMOD beats CG + AMG on 2-D Poisson up
      to 1024² = 1,048,576 unknowns, 6.1 s against 10.8 s; on 3-D Poisson
      CG + AMG wins from about 10,000 unknowns against CHOLMOD, 1,000
      against SuperLU);
    * anything else: ``"direct"`` up to ``AUTO_DIRECT_MAX_N`` = 1,000,000
      unknowns, then ``"minres"`` without preconditioner for a Hermitian
      matrix (the Jacobi preconditioner ``D⁻¹`` is not positive definite for
      such a diagonal, and MINRES needs a positive definite ``M``) and
      ``"gmres"`` with ``M="ilu"`` otherwise.

    With a preconditioner given, ``"auto"`` always iterates: CG for the SPD
    heuristic and a Hermitian ``M``, MINRES for a Hermitian ``A`` and ``M``
    otherwise, GMRES for everything else.

    The thresholds are measured: setup + forward + one gradient (rtol 1e-8,
    one right-hand side, 2-core CPU), seconds, 2-D 5-point problems
    (convection–diffusion with cell Péclet 0.5):

    ========  =======  ======  =========  =======  ============  ==========
    n         Poisson  direct  cg+amg     conv.    direct        bicgstab+ilu
    ========  =======  ======  =========  =======  ============  ==========
    4,096              0.017   0.048               0.017         0.034
    16,384             0.085   0.103               0.083         0.45
    36,864             0.229   0.184               0.212         1.58
    65,536             0.517   0.403               0.493         3.71
    131,044            1.03    0.61                0.92          9.87
    262,144            2.65    1.27                2.06          31.1
    ========  =======  ======  =========  =======  ============  ==========

    CG + AMG overtakes SuperLU between 16k and 37k unknowns on SPD problems
    (the table; CHOLMOD moves the 2-D crossover past 10⁶, see above).
    On the non-symmetric problem ILU-preconditioned Krylov methods lose by
    10–15× at every size measured (GMRES(20) + ILU is slower still), so the
    direct solver is kept up to a memory-driven 10⁶ unknowns. Both crossovers
    are for 2-D problems; in 3-D the fill of the factorization grows much
    faster and iterative methods win earlier — pass ``method=`` explicitly
    there.
    """
    method, options = _split(method, func)
    # what the matrix's backend cannot do is refused before any work
    mat.backend.require("method", method, func)
    if method == "direct":
        if M is not None:
            raise ValueError(
                f"`{func}`: `M` (a preconditioner) has no meaning for method='direct'; "
                f"got M={M!r}.")
        options = dict(options or {})
        library = options.pop("library", "auto")
        if options:
            raise ValueError(f"`{func}`: method='direct' takes only the option "
                             f"'library' (docs/direct.md); got {options!r}.")
        return DirectEngine(mat, func=func, library=library)
    if method == "auto":
        if options:
            raise ValueError(f"`{func}`: method='auto' takes no options; got "
                             f"{options!r}.")
        return _auto(mat, M, func)
    cls = KRYLOV[method]
    options = parse_options(cls, options, func)
    hermitian = is_hermitian(mat)
    if cls.requires_hermitian and not hermitian:
        # refuse before building a (possibly expensive) preconditioner
        cls._refuse_nonhermitian(mat, func)
    precond = resolve_preconditioner(M, mat, func)
    return cls(mat, precond, options, func=func, hermitian=hermitian)


def update_engine(engine, method, mat, M=None, *, func="Solver.update"):
    """The engine for new values ``mat`` on the pattern of ``engine``'s matrix.

    The numeric work is redone on the old engine's structure (SuperLU's
    ordering, AMG's aggregates) when the method still applies. Under
    ``method="auto"`` the choice is made again, and a new engine is built when
    the new values call for another method (e.g. CG + AMG chosen for SPD values
    and non-Hermitian values after the update); with an explicit method the
    engine's own checks refuse what it cannot do, saying what to use instead.
    """
    name, _ = _split(method, func)
    if name == "auto":
        want = _auto_class(mat, M)
        # GMRES with a non-Hermitian preconditioner of the caller's serves
        # every matrix: keep it rather than build M again to find that out
        keep_gmres = (type(engine) is GMRESEngine and M is not None
                      and not engine.precond.hermitian)
        if want is not type(engine) and not keep_gmres:
            return _auto(mat, M, func)
    return engine.update(mat)


def _auto_class(mat, M):
    """The engine class ``method="auto"`` picks for ``mat`` and ``M``."""
    n = mat.shape[0]
    if M is None and n <= min(AUTO_DIRECT_MAX_N_SPD, direct.AUTO_SUPERLU_MAX_N_3D):
        return DirectEngine
    hermitian = is_hermitian(mat)
    spd = hermitian and bool((diagonal(mat).real > 0).all())
    if M is None:
        if spd:
            return (DirectEngine if direct.spd_prefers_direct(mat, AUTO_DIRECT_MAX_N_SPD)
                    else CGEngine)
        if n <= AUTO_DIRECT_MAX_N:
            return DirectEngine
        return MINRESEngine if hermitian else GMRESEngine
    # with a preconditioner, a Hermitian M decides between CG/MINRES and GMRES
    # when the engine is built (see _auto)
    return CGEngine if spd else MINRESEngine if hermitian else GMRESEngine


def _auto(mat, M, func):
    """The ``method="auto"`` rule (see :func:`make_engine`)."""
    cls = _auto_class(mat, M)
    if cls is DirectEngine:
        return DirectEngine(mat, func=func)
    hermitian = is_hermitian(mat)
    if M is None:
        # CG + AMG (SPD), MINRES (Hermitian), GMRES + ILU (otherwise)
        name = {CGEngine: "amg", MINRESEngine: None, GMRESEngine: "ilu"}[cls]
        precond = resolve_preconditioner(name, mat, func)
        return cls(mat, precond, func=func, hermitian=hermitian)
    precond = resolve_preconditioner(M, mat, func)
    if not precond.hermitian:
        cls = GMRESEngine
    return cls(mat, precond, func=func, hermitian=hermitian)
