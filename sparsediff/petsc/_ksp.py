"""The KSP of a PETSc solver: defaults, options, converged reasons, transposes.

Everything here reads or configures a ``petsc4py.PETSc.KSP``; nothing here
knows about stored entries or gradients (``_solver.py``).
"""

import itertools
import shlex
import warnings

from .._errors import ConvergenceWarning

__all__ = ["configure", "describe", "reason_name", "transpose_support"]

METHODS = ("auto", "direct", "cg", "gmres")

_prefixes = itertools.count()


def parse_options(options, func):
    """``options`` as ``[(name, value)]``: a dict, or a string of ``-name value``."""
    if options is None:
        return []
    if isinstance(options, dict):
        items = list(options.items())
    elif isinstance(options, str):
        items = []
        tokens = shlex.split(options)
        for i, tok in enumerate(tokens):
            if _is_name(tok):
                nxt = tokens[i + 1] if i + 1 < len(tokens) else None
                items.append((tok, None if nxt is None or _is_name(nxt) else nxt))
            elif i == 0 or not _is_name(tokens[i - 1]):
                raise ValueError(
                    f"`{func}`: `options` must be a string of `-name [value]` pairs; "
                    f"{tok!r} follows no option name.")
    else:
        raise TypeError(
            f"`{func}`: `options` must be a dict or a string of PETSc options; "
            f"got {type(options).__name__}.")
    out = []
    for name, value in items:
        if not isinstance(name, str) or not name.lstrip("-"):
            raise ValueError(f"`{func}`: option names must be non-empty strings; "
                             f"got {name!r}.")
        if isinstance(value, bool):
            value = "true" if value else "false"
        out.append((name.lstrip("-"), None if value is None else str(value)))
    return out


def _is_name(tok):
    if not tok.startswith("-") or len(tok) < 2:
        return False
    try:
        float(tok)
    except ValueError:
        return True
    return False


def new_prefix(prefix, func):
    """A unique options prefix per solver (``sd<k>_``), or the caller's."""
    if prefix is None:
        return f"sd{next(_prefixes)}_"
    if not isinstance(prefix, str) or not prefix or prefix.startswith("-") or \
            not prefix.replace("_", "").isalnum():
        raise ValueError(
            f"`{func}`: `options_prefix` must be letters, digits and underscores "
            f"not starting with '-' (as `-<prefix>ksp_type`); got {prefix!r}.")
    return prefix


def configure(PETSc, ksp, method, *, nranks, symmetric_positive, rtol, atol,
              maxiter, prefix, options, func):
    """Set ``ksp``'s defaults for ``method``, then the caller's options on top.

    Defaults: ``"direct"`` is ``preonly`` + LU (MUMPS where the build has it,
    required on more than one rank); ``"cg"`` is CG + GAMG; ``"gmres"`` is
    GMRES with right preconditioning by ILU (one rank) or block Jacobi with ILU
    blocks (several); ``"auto"`` is ``"cg"`` for a matrix symmetric to rounding
    with a positive diagonal and ``"gmres"`` otherwise. The Krylov defaults
    stop on the unpreconditioned residual, as ``sparsediff.Solver`` does.
    Options given as ``options`` or on the command line under ``prefix``
    override all of it.
    """
    if method == "auto":
        method = "cg" if symmetric_positive else "gmres"
    pc = ksp.getPC()
    if method == "direct":
        ksp.setType("preonly")
        pc.setType("lu")
        if PETSc.Sys.hasExternalPackage("mumps"):
            pc.setFactorSolverType("mumps")
        elif nranks > 1:
            raise ValueError(
                f"`{func}`: method='direct' on {nranks} ranks needs a parallel "
                f"direct solver, and this PETSc build has none (MUMPS is not "
                f"configured). Build PETSc with MUMPS or use an iterative method.")
    elif method == "cg":
        ksp.setType("cg")
        pc.setType("gamg")
        ksp.setNormType(PETSc.KSP.NormType.UNPRECONDITIONED)
    elif method == "gmres":
        ksp.setType("gmres")
        pc.setType("ilu" if nranks == 1 else "bjacobi")
        ksp.setPCSide(PETSc.PC.Side.RIGHT)
        ksp.setNormType(PETSc.KSP.NormType.UNPRECONDITIONED)
    ksp.setTolerances(rtol=rtol, atol=atol, divtol=PETSc.DEFAULT, max_it=maxiter)
    ksp.setOptionsPrefix(prefix)
    db = PETSc.Options(prefix)
    for name, value in options:
        db.setValue(name, value)
    chosen = ksp.getType()
    try:
        ksp.setFromOptions()
    except PETSc.Error as exc:
        raise ValueError(
            f"`{func}`: PETSc refused the options {_show(options)} under the prefix "
            f"{prefix!r}: {_petsc_message(exc)}") from None
    if ksp.getType() != chosen:
        # another KSP than the method's: PETSc's own norm and side for it,
        # unless the caller chose them too
        if not db.hasName("ksp_norm_type"):
            ksp.setNormType(PETSc.KSP.NormType.DEFAULT)
        if not db.hasName("ksp_pc_side"):
            ksp.setPCSide(-1)  # PC_SIDE_DEFAULT, not named in petsc4py
    return method


def setup(PETSc, ksp, prefix, options, func):
    """``KSPSetUp`` (symbolic and numeric setup); then drop our option entries."""
    try:
        ksp.setUp()
    except PETSc.Error as exc:
        raise ValueError(
            f"`{func}`: PETSc could not set up {describe(ksp)} with the options "
            f"{_show(options)}: {_petsc_message(exc)}") from None
    finally:
        db = PETSc.Options(prefix)
        for name, _ in options:
            db.delValue(name)


def _show(options):
    return " ".join(f"-{n}" + ("" if v is None else f" {v}") for n, v in options) or \
        "(none)"


def _petsc_message(exc):
    return f"PETSc error {getattr(exc, 'ierr', '?')} ({exc})"


def factor_solver(ksp):
    pc = ksp.getPC()
    if pc.getType() in ("lu", "cholesky", "ilu", "icc"):
        try:
            return pc.getFactorSolverType() or "petsc"
        except Exception:  # noqa: BLE001 (not set up: the default package)
            return "petsc"
    return None


def describe(ksp):
    """``"cg+gamg"``, ``"preonly+lu(mumps)"``: the method as ``SolveInfo`` names it."""
    pc = ksp.getPC()
    solver = factor_solver(ksp)
    return f"{ksp.getType()}+{pc.getType()}" + (f"({solver})" if solver else "")


def is_direct(ksp):
    return ksp.getType() == "preonly" and ksp.getPC().getType() in ("lu", "cholesky")


_REASONS = {
    "DIVERGED_ITS": "maxiter",
    "DIVERGED_MAX_IT": "maxiter",
    "DIVERGED_DTOL": "breakdown",
    "DIVERGED_BREAKDOWN": "breakdown",
    "DIVERGED_BREAKDOWN_BICG": "breakdown",
    "DIVERGED_NONSYMMETRIC": "breakdown",
    "DIVERGED_INDEFINITE_PC": "indefinite",
    "DIVERGED_INDEFINITE_MAT": "indefinite",
    "DIVERGED_NANORINF": "nonfinite",
    "DIVERGED_NULL": "breakdown",
}


def reason_name(PETSc, ksp):
    """The ``SolveInfo.reason`` of the KSP's last solve, and PETSc's own name."""
    code = int(ksp.getConvergedReason())
    petsc_name = _name_of(PETSc.KSP.ConvergedReason, code)
    if code > 0:
        return "converged", petsc_name
    if petsc_name in ("DIVERGED_PC_FAILED", "DIVERGED_PCSETUP_FAILED"):
        failed = _name_of(PETSc.PC.FailedReason, int(ksp.getPC().getFailedReason()))
        singular = "ZEROPIVOT" in failed and is_direct(ksp)
        return ("singular" if singular else "breakdown", f"{petsc_name} ({failed})")
    return _REASONS.get(petsc_name, "breakdown"), petsc_name


def _name_of(enum, code):
    for k, v in vars(enum).items():
        if k.isupper() and v == code:
            return k
    return str(code)


def transpose_support(ksp, symmetric):
    """Whether PETSc's ``KSPSolveTranspose`` on ``ksp`` is exact.

    Returns ``(ok, message)``: ``ok`` is True (exact), ``"warn"`` (exact result,
    slower convergence) or False (wrong result: refuse).
    """
    ksp_type, pc = ksp.getType(), ksp.getPC()
    pc_type = pc.getType()
    stationary = ksp_type in ("preonly", "richardson")
    solver = factor_solver(ksp)
    if pc_type in ("lu", "cholesky") and solver == "superlu_dist":
        return False, ("SuperLU_DIST registers no transposed solve in PETSc; use "
                       "MUMPS (-pc_factor_mat_solver_type mumps) or an iterative "
                       "method for gradients")
    if pc_type == "hypre":
        msg = ("hypre BoomerAMG's transposed cycle switches to Jacobi smoothing, so "
               "it is not the transpose of the forward cycle")
        if stationary:
            return False, msg + f"; with KSP '{ksp_type}' the adjoint would be wrong"
        return "warn", msg + "; the Krylov adjoint is still exact but converges slower"
    if pc_type in ("sor", "eisenstat") and stationary and not symmetric:
        return False, (f"PETSc transposes SOR only as a symmetric sweep on a symmetric "
                       f"matrix; with KSP '{ksp_type}' on this non-symmetric matrix "
                       f"the adjoint would be wrong")
    return True, ""


def check_transpose(ksp, symmetric, what):
    ok, message = transpose_support(ksp, symmetric)
    if ok is False:
        raise ValueError(f"{what}: {message}.")
    if ok == "warn":
        warnings.warn(f"{what}: {message}.", ConvergenceWarning, stacklevel=3)
