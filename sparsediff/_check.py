"""`sparsediff check FILE.mtx` and `sparsediff bench`: diagnostics from the shell.

``check`` solves one Matrix Market system with a seeded random right-hand side,
times the forward solve and the gradient, and verifies the gradient two ways:
central finite differences along random directions in ``(A.data, b)`` and the
dot-product test ``⟨v, J u⟩ = Re⟨Jᴴ v, u⟩`` between :meth:`Solution.jvp` and
:meth:`Solution.vjp`. Everything runs in float64 (complex128 for complex files).
Problems the user can fix (missing or malformed file, non-square or singular
matrix) raise :class:`InputError`, which the command line turns into exit
status 2.
"""

import os
import sys
import time

import numpy as np
import scipy.sparse as sp

__all__ = ["InputError", "bench", "check_matrix", "load_matrix", "poisson2d"]

# a finite-difference check passes below this relative difference: central
# differences with a relative step of 1e-6 agree to ~1e-9 on well-conditioned
# matrices; the margin covers moderately ill-conditioned ones
FD_TOL = 1e-4
# the dot-product test is exact up to rounding
DOT_TOL = 1e-8


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


def _random(rng, shape, dtype):
    x = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dtype)


def _rel(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def check_matrix(path, *, seed=0, directions=3, repeat=3, out=None):
    """Solve, time and gradient-check the system in a Matrix Market file.

    Parameters
    ----------
    path : str
        Matrix Market file.
    seed : int
        Seed of ``b``, of the loss ``L = Re⟨w, x⟩`` and of the directions.
    directions : int
        Random finite-difference directions in ``(A.data, b)``.
    repeat : int
        Repetitions of the timed forward solve and gradient (median).
    out : file, optional
        Where the report goes (default ``sys.stdout``).

    Returns
    -------
    bool
        Whether every gradient check passed.

    Raises
    ------
    InputError
        Bad file or a singular matrix.
    """
    import sparsediff as sd

    out = sys.stdout if out is None else out
    A = load_matrix(path)
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
        return sd.solve(A, b)

    try:
        sol = fresh_solve()
    except sd.SingularMatrixError as exc:
        raise InputError(f"{path}: the matrix is singular ({exc})") from None
    info = sol.info
    bnorm = float(np.linalg.norm(b))
    print(f"  method = {info.method}, residual ‖b − A x‖ = {info.residual_norm:.3e} "
          f"(relative {info.residual_norm / bnorm:.3e})", file=out)
    if not np.isfinite(sol.x).all():
        raise InputError(f"{path}: the solve produced non-finite values "
                         f"(reason: {info.reason}); the matrix is probably singular")

    sol.vjp(w)                          # warm-up: first-call costs out of the timings
    t_fwd = _median_time(fresh_solve, repeat)
    t_vjp = _median_time(lambda: sol.vjp(w), repeat)
    print(f"  forward (factorize + solve): {1e3 * t_fwd:.2f} ms   "
          f"gradient (vjp): {1e3 * t_vjp:.2f} ms   ratio {t_vjp / t_fwd:.3f}",
          file=out)

    grad_A, grad_b = sol.vjp(w)
    g_data = grad_A.data
    solver = sd.Solver(A)

    def loss(data, rhs):
        # same pattern, new values: Solver.update refactorizes numerically
        return float(np.vdot(w, solver.update(data).solve(rhs).x).real)

    ok = True
    print(f"  finite differences (central, float64) on {directions} random "
          f"directions in (A.data, b):", file=out)
    data_scale = float(np.linalg.norm(A.data)) / np.sqrt(max(A.nnz, 1))
    eps = 1e-6
    for k in range(directions):
        dA = _random(rng, A.nnz, dtype) * data_scale
        db = _random(rng, n, dtype)
        try:
            fp = loss(A.data + eps * dA, b + eps * db)
            fm = loss(A.data - eps * dA, b - eps * db)
        except sd.SingularMatrixError:
            print(f"    direction {k}: perturbed matrix is singular; skipped", file=out)
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
    passed = rel < DOT_TOL
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

    The full comparison with JAX and torchsparsegradutils lives in
    ``benchmarks/bench_direct.py`` of the source tree.
    """
    out = sys.stdout if out is None else out
    print("2-D Poisson, direct solves; median of "
          f"{repeat} runs after a warm-up (ms)", file=out)
    print(f"{'grid':>9} {'n':>8} {'sd fwd':>9} {'sd grad':>9} {'grad/fwd':>9} "
          f"{'scipy 2×spsolve':>16} {'scipy/sd':>9}", file=out)
    rng = np.random.default_rng(0)
    for k in sizes:
        t_fwd, t_grad, t_scipy = _bench_one(poisson2d(k), rng, repeat)
        sd_total = t_fwd + t_grad
        print(f"{f'{k}²':>9} {k * k:>8} {1e3 * t_fwd:9.2f} {1e3 * t_grad:9.2f} "
              f"{t_grad / t_fwd:9.3f} {1e3 * t_scipy:16.2f} {t_scipy / sd_total:9.2f}",
              file=out)


def _bench_one(A, rng, repeat):
    import scipy.sparse.linalg as spla

    import sparsediff as sd

    n = A.shape[0]
    b = rng.standard_normal(n)
    g = rng.standard_normal(n)
    sol = sd.solve(A, b)
    sol.vjp(g)                                  # warm-up
    t_fwd = _median_time(lambda: sd.solve(A, b), repeat)
    t_grad = _median_time(lambda: sol.vjp(g), repeat)
    # the naive backward: a second factorization for the transposed system
    spla.spsolve(A, b)
    t_scipy = _median_time(lambda: (spla.spsolve(A, b), spla.spsolve(A.T, g)), repeat)
    return t_fwd, t_grad, t_scipy
