"""`sparsediff check FILE.mtx` and `sparsediff bench`: diagnostics from the shell.

``check`` solves one Matrix Market system with a seeded random right-hand side,
times the forward solve and the gradient, and verifies the gradient two ways:
central finite differences along random directions in ``(A.data, b)`` and the
dot-product test ``⟨v, J u⟩ = Re⟨Jᴴ v, u⟩`` between :meth:`Solution.jvp` and
:meth:`Solution.vjp`. Everything runs in float64 (complex128 for complex files).
Problems the user can fix (missing or malformed file, non-square or singular
matrix, a method that does not apply to the matrix, a solve that fails) raise
:class:`InputError`, which the command line turns into exit status 2.

Timings are cold: each repeat builds a new solver (factorization or
preconditioner) and differentiates along a new random cotangent, so an
iterative adjoint never warm-starts from the answer of an earlier repeat.
"""

import os
import sys
import time

import numpy as np
import scipy.sparse as sp

from .backend import NUMBA

__all__ = ["METHODS", "PRECONDITIONERS", "InputError", "bench", "check_matrix",
           "load_matrix", "poisson2d"]

#: ``method`` values of ``check`` (those of :class:`sparsediff.Solver`) and
#: its ``M`` values (the named preconditioners)
METHODS = NUMBA.methods
PRECONDITIONERS = NUMBA.preconditioners

# a finite-difference check passes below this relative difference: central
# differences with a relative step of 1e-6 agree to ~1e-9 on well-conditioned
# matrices; the margin covers moderately ill-conditioned ones
FD_TOL = 1e-4
# the dot-product test is exact up to rounding for direct solves; iterative
# tangent and adjoint solves stop at rtol 1e-8, so each side is only that close
DOT_TOL = 1e-8
DOT_TOL_ITERATIVE = 1e-6
# stopping tolerance of the finite-difference solves of iterative methods: the
# difference quotient divides their error by the step (1e-6)
FD_RTOL = 1e-12


class InputError(Exception):
    """A problem with the user's input: reported on stderr, exit status 2."""


def load_matrix(path):
    """Read a Matrix Market file into a CSR array of float64 or complex128.

    Pattern-only files (``coordinate pattern``) are read as matrices of ones;
    dense ``array`` files are converted to CSR (zeros are not stored); integer
    files are converted to float64. Duplicate coordinate entries are summed.

    Raises
    ------
    InputError
        Missing or unreadable file, non-square or empty matrix, unsupported
        value type, NaN or infinite values.
    """
    import scipy.io

    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, not a Matrix Market file")
    try:
        header = scipy.io.mminfo(path)
        M = scipy.io.mmread(path)
    except Exception as exc:  # SciPy raises ValueError, OSError, or worse on junk
        raise InputError(f"{path}: cannot read as a Matrix Market file "
                         f"({type(exc).__name__}: {exc})") from None
    if sp.issparse(M):
        A = sp.csr_array(M)
    else:
        M = np.asarray(M)
        if M.ndim != 2:
            raise InputError(f"{path}: expected a 2-D matrix; got shape {M.shape}")
        A = sp.csr_array(M)
    if A.shape[0] != A.shape[1]:
        raise InputError(f"{path}: the matrix must be square to be solved; "
                         f"got shape {A.shape[0]} × {A.shape[1]}")
    kind = A.dtype.kind
    if kind in "biuf":
        A = A.astype(np.float64)
    elif kind == "c":
        A = A.astype(np.complex128)
    else:
        raise InputError(f"{path}: unsupported value type {A.dtype}")
    A.sum_duplicates()
    if A.shape[0] == 0:
        raise InputError(f"{path}: the matrix is empty (0 × 0)")
    if not np.isfinite(A.data).all():
        raise InputError(f"{path}: the matrix holds NaN or infinite values")
    A.header = dict(zip(("rows", "cols", "entries", "format", "field", "symmetry"),
                        header))
    return A


def symmetry(A):
    """``"symmetric"``, ``"hermitian"``, ``"structurally symmetric"`` or ``"general"``."""
    T = A.T.tocsr()
    scale = abs(A).max() if A.nnz else 1.0

    def small(D):
        return D.nnz == 0 or abs(D).max() <= 1e-14 * scale

    if small(A - T):
        return "symmetric"
    if np.iscomplexobj(A.data) and small(A - T.conj()):
        return "hermitian"
    pattern = (abs(A) > 0).astype(np.int8)
    if (pattern != pattern.T).nnz == 0:
        return "structurally symmetric"
    return "general"


def _median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _cold_times(solve, cotangent, repeat):
    """Median times of ``solve()`` and of one ``vjp`` of its solution.

    Every repeat solves anew (a new solver: factorization or preconditioner
    built again) and differentiates along a new cotangent ``cotangent()``: the
    adjoint solve of an iterative method starts from zero, not from the
    answer of an earlier repeat, as the first gradient of a new point does.
    """
    t_fwd, t_grad = [], []
    for _ in range(repeat):
        g = cotangent()
        t0 = time.perf_counter()
        sol = solve()
        t1 = time.perf_counter()
        sol.vjp(g)
        t2 = time.perf_counter()
        t_fwd.append(t1 - t0)
        t_grad.append(t2 - t1)
    return float(np.median(t_fwd)), float(np.median(t_grad))


def _hermitian_directions(A):
    """``r ↦ (r + conj(r[perm]))/2``: random entries made Hermitian on A's pattern.

    ``perm[k]`` is the position in ``A.data`` of the transposed entry of
    entry ``k``; ``None`` when the stored pattern is not symmetric. CG and
    MINRES refuse a matrix that is not Hermitian (to rounding), which a
    random perturbation would make it, so their finite differences perturb
    ``A`` along Hermitian directions only.
    """
    pos = sp.csr_array((np.arange(1, A.nnz + 1), A.indices, A.indptr), shape=A.shape)
    T = sp.csr_array(pos.T)
    T.sort_indices()
    if not (np.array_equal(T.indptr, A.indptr) and np.array_equal(T.indices, A.indices)):
        return None
    perm = T.data - 1
    return lambda r: (r + r[perm].conj()) / 2


def _random(rng, shape, dtype):
    x = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dtype)


def _rel(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def check_matrix(path, *, seed=0, directions=3, repeat=3, method="auto", M=None,
                 out=None):
    """Solve, time and gradient-check the system in a Matrix Market file.

    Parameters
    ----------
    path : str
        Matrix Market file.
    seed : int
        Seed of ``b``, of the loss ``L = Re⟨w, x⟩``, of the directions and of
        the cotangents of the timed gradients.
    directions : int
        Random finite-difference directions in ``(A.data, b)``.
    repeat : int
        Repetitions of the timed forward solve and gradient (median), each
        with a new solver and a new cotangent (cold).
    method : {"auto", "direct", "cg", "minres", "gmres", "bicgstab"}
        Passed to :class:`sparsediff.Solver`; the report names the method
        actually used (``"cg+amg"`` for CG preconditioned by AMG).
    M : None or {"jacobi", "ilu", "amg"}
        Preconditioner of an iterative method.
    out : file, optional
        Where the report goes (default ``sys.stdout``).

    Returns
    -------
    bool
        Whether every gradient check passed.

    Raises
    ------
    InputError
        Bad file or a singular matrix; a method or preconditioner that does
        not apply to the matrix; a solve that fails. One line, no traceback.
    """
    import sparsediff as sd

    out = sys.stdout if out is None else out
    A = load_matrix(path)
    try:
        return _check(A, path, seed, directions, repeat, method, M, out)
    except sd.SingularMatrixError as exc:
        raise InputError(f"{path}: the matrix is singular ({exc})") from None
    except (ValueError, sd.ConvergenceError, np.linalg.LinAlgError) as exc:
        # a method or preconditioner that does not apply to this matrix, or a
        # solve that fails: the library's message names the requirement (a
        # TypeError here would be a bug, not the user's input: not caught)
        raise InputError(f"{path}: {exc}") from None


def _check(A, path, seed, directions, repeat, method, M, out):
    import sparsediff as sd

    n = A.shape[0]
    dtype = A.dtype
    rng = np.random.default_rng(seed)
    b = _random(rng, n, dtype)
    w = _random(rng, n, dtype)          # the loss L(x) = Re⟨w, x⟩
    print(f"matrix: {path}", file=out)
    head = A.header
    note = " (pattern only: entries read as 1)" if head["field"] == "pattern" else ""
    print(f"  file: {head['format']} {head['field']} {head['symmetry']}{note}",
          file=out)
    print(f"  n = {n}, nnz = {A.nnz}, dtype = {dtype}, {symmetry(A)}", file=out)

    def fresh_solve():
        return sd.Solver(A, method=method, M=M).solve(b)

    sol = fresh_solve()
    info = sol.info
    bnorm = float(np.linalg.norm(b))
    steps = "" if info.method == "direct" else f", {info.iterations} iterations"
    print(f"  method = {info.method}{steps}, residual ‖b − A x‖ = "
          f"{info.residual_norm:.3e} (relative {info.residual_norm / bnorm:.3e})",
          file=out)
    if not np.isfinite(sol.x).all():
        raise InputError(f"{path}: the solve produced non-finite values "
                         f"(reason: {info.reason}); the matrix is probably singular")

    # cotangents of the timed gradients: their own stream, one per repeat
    rng_t = np.random.default_rng([seed, 1])
    fresh_solve().vjp(_random(rng_t, n, dtype))   # warm-up: compilation out of the timings
    t_fwd, t_vjp = _cold_times(fresh_solve, lambda: _random(rng_t, n, dtype), repeat)
    setup = "factorize" if info.method == "direct" else "set up"
    print(f"  forward ({setup} + solve): {1e3 * t_fwd:.2f} ms   "
          f"gradient (vjp, new cotangent): {1e3 * t_vjp:.2f} ms   "
          f"ratio {t_vjp / t_fwd:.3f}", file=out)

    grad_A, grad_b = sol.vjp(w)
    g_data = grad_A.data
    # finite differences with the method just used; iterative solves to a
    # tolerance whose error the difference quotient does not magnify past FD_TOL
    base, _, named_M = info.method.partition("+")
    iterative = base != "direct"
    fd_M = M if M is not None else (named_M or None)
    solver = sd.Solver(A, method=base, M=fd_M,
                       **(dict(rtol=FD_RTOL) if iterative else {}))
    hermitian = _hermitian_directions(A) if base in ("cg", "minres") else None

    def loss(data, rhs):
        # same pattern, new values: Solver.update refactorizes numerically
        return float(np.vdot(w, solver.update(data).solve(rhs).x).real)

    ok = True
    kind = " Hermitian" if hermitian is not None else ""
    print(f"  finite differences (central, float64) on {directions} random{kind} "
          f"directions in (A.data, b):", file=out)
    data_scale = float(np.linalg.norm(A.data)) / np.sqrt(max(A.nnz, 1))
    eps = 1e-6
    for k in range(directions):
        dA = _random(rng, A.nnz, dtype) * data_scale
        if hermitian is not None:
            dA = hermitian(dA)
        db = _random(rng, n, dtype)
        try:
            fp = loss(A.data + eps * dA, b + eps * db)
            fm = loss(A.data - eps * dA, b - eps * db)
        except sd.SingularMatrixError:
            print(f"    direction {k}: perturbed matrix is singular; skipped", file=out)
            continue
        except sd.ConvergenceError:
            print(f"    direction {k}: perturbed solve did not reach rtol {FD_RTOL:g}; "
                  f"skipped", file=out)
            continue
        fd = (fp - fm) / (2 * eps)
        an = float(np.vdot(g_data, dA).real + np.vdot(grad_b, db).real)
        rel = _rel(fd, an)
        passed = rel < FD_TOL
        ok &= passed
        print(f"    direction {k}: FD {fd:+.10e}  vjp {an:+.10e}  rel. diff {rel:.1e}  "
              f"{'ok' if passed else 'FAILED'}", file=out)

    # dot-product test: ⟨v, J u⟩ (jvp) against Re⟨Jᴴ v, u⟩ (vjp), exact to rounding
    dA = _random(rng, A.nnz, dtype)
    db = _random(rng, n, dtype)
    v = _random(rng, n, dtype)
    lhs = float(np.vdot(v, sol.jvp(dA, db)).real)
    gA, gb = sol.vjp(v)
    rhs = float(np.vdot(gA.data, dA).real + np.vdot(gb, db).real)
    rel = _rel(lhs, rhs)
    passed = rel < (DOT_TOL_ITERATIVE if iterative else DOT_TOL)
    ok &= passed
    print(f"  dot-product test ⟨v, J u⟩ = Re⟨Jᴴ v, u⟩: {lhs:+.12e} vs {rhs:+.12e}  "
          f"rel. diff {rel:.1e}  {'ok' if passed else 'FAILED'}", file=out)
    print(f"gradient checks: {'passed' if ok else 'FAILED'}", file=out)
    return ok


def poisson2d(n, dtype=np.float64):
    """The 5-point Laplacian on an ``n × n`` grid (Dirichlet), CSR, ``n²`` unknowns."""
    T = sp.diags_array([-np.ones(n - 1), 2 * np.ones(n), -np.ones(n - 1)],
                       offsets=[-1, 0, 1])
    eye = sp.eye_array(n)
    return sp.csr_array(sp.kron(T, eye) + sp.kron(eye, T), dtype=dtype)


def bench(sizes=(64, 128, 256), repeat=5, out=None):
    """Time sparsediff's forward and gradient against SciPy ``spsolve`` twice.

    sparsediff runs with ``method="auto"`` (a direct solve on the smaller of
    these SPD problems, CG + AMG above: docs/direct.md); each row names the
    method used. The
    gradient is timed cold: a new solve and a new random cotangent each repeat.
    The full comparison with JAX and torchsparsegradutils lives in
    ``benchmarks/bench_direct.py`` of the source tree.
    """
    out = sys.stdout if out is None else out
    print("2-D Poisson, sparsediff method='auto' against SciPy; median of "
          f"{repeat} runs after a warm-up (ms), each run with a new cotangent", file=out)
    print(f"{'grid':>9} {'n':>8} {'method':>8} {'sd fwd':>9} {'sd grad':>9} "
          f"{'grad/fwd':>9} {'scipy 2×spsolve':>16} {'scipy/sd':>9}", file=out)
    rng = np.random.default_rng(0)
    for k in sizes:
        method, t_fwd, t_grad, t_scipy = _bench_one(poisson2d(k), rng, repeat)
        sd_total = t_fwd + t_grad
        print(f"{f'{k}²':>9} {k * k:>8} {method:>8} {1e3 * t_fwd:9.2f} "
              f"{1e3 * t_grad:9.2f} {t_grad / t_fwd:9.3f} {1e3 * t_scipy:16.2f} "
              f"{t_scipy / sd_total:9.2f}", file=out)


def _bench_one(A, rng, repeat):
    import scipy.sparse.linalg as spla

    import sparsediff as sd

    n = A.shape[0]
    b = rng.standard_normal(n)
    sol = sd.solve(A, b)
    sol.vjp(rng.standard_normal(n))             # warm-up
    t_fwd, t_grad = _cold_times(lambda: sd.solve(A, b), lambda: rng.standard_normal(n),
                                repeat)
    # the naive backward: a second factorization for the transposed system
    # (SciPy keeps nothing between calls: the same cotangent is as cold)
    g = rng.standard_normal(n)
    spla.spsolve(A, b)
    t_scipy = _median_time(lambda: (spla.spsolve(A, b), spla.spsolve(A.T, g)), repeat)
    return sol.info.method, t_fwd, t_grad, t_scipy
