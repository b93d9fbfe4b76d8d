"""Direct solves with gradients: sparsediff against its peers, same run, same machine.

Problem: the 5-point 2-D Poisson matrix on k × k grids (n = k² unknowns,
float64), one random right-hand side ``b`` and the loss ``L = ⟨g, x⟩``. For each
library we time

* forward: everything from the matrix to ``x`` (factorize + solve);
* gradient: the extra work to get ``∂L/∂A.data`` and ``∂L/∂b`` once ``x`` is
  known (the backward pass).

Peers:

* SciPy: ``spsolve(A, b)``, then the naive backward ``spsolve(Aᵀ, g)`` (a second
  factorization) and the pattern product ``−λ[i]·x[j]``;
* JAX: ``jax.experimental.sparse.linalg.spsolve`` (on CPU it calls SciPy's
  ``spsolve``) with ``jax.value_and_grad``, jitted; its gradient time is
  ``value_and_grad`` minus forward, since JAX cannot reuse the forward pass;
* torchsparsegradutils: ``sparse_solve_c4t(A, b, solve="spsolve")`` (SciPy's
  direct solver on CPU tensors) and ``.backward()``.

A second part (``--engines``) compares sparsediff's direct engines (SuperLU,
CHOLMOD, UMFPACK: ``method=("direct", {"library": ...})``) with the raw
libraries in the same run, on 2-D and 3-D Poisson, a 3-D convection–diffusion
problem and a complex 2-D Helmholtz problem: factorization (sparsediff: the
``Solver`` build; raw: analysis + numeric factorization), one solve, the
gradient (sparsediff: ``vjp``; raw: one transposed solve) and ``update`` + solve
(raw: numeric refactorization on the kept analysis + solve). Raw CHOLMOD and
UMFPACK are SuiteSparse through kvxopt, raw Pardiso is MKL through pypardiso
(real matrices only); each is skipped when not installed.

Every library is warmed up first (JIT compilation, thread pools); the numbers
are medians of ``--repeat`` runs. Ratios are ``peer / sparsediff`` on
forward + gradient. A peer that cannot be imported or fails is skipped with a
message. Run::

    python benchmarks/bench_direct.py            # 128², 256², 512²
    python benchmarks/bench_direct.py --large    # and 1024²
    python benchmarks/bench_direct.py --save benchmarks/results_direct.md
    python benchmarks/bench_direct.py --engines --problems poisson3d:40
    python benchmarks/bench_direct.py --engines --mumps   # with MUMPS (petsc4py)
    python benchmarks/bench_direct.py --iterative-2d 512 768 1024
    python benchmarks/bench_direct.py --crossover-3d 16 24 32 40
"""

import argparse
import datetime
import os
import platform
import sys
import time
import warnings

import numpy as np
import scipy
import scipy.sparse as sp
import scipy.sparse.linalg as spla

try:
    import sparsediff as sd
except ImportError:       # run from a source checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import sparsediff as sd

GOAL = 0.15   # sparsediff's gradient should cost at most this fraction of forward


def poisson2d(k):
    """5-point Laplacian on a k × k grid, Dirichlet boundary, canonical CSR."""
    T = sp.diags_array([-np.ones(k - 1), 2 * np.ones(k), -np.ones(k - 1)],
                       offsets=[-1, 0, 1])
    eye = sp.eye_array(k)
    A = sp.csr_array(sp.kron(T, eye) + sp.kron(eye, T), dtype=np.float64)
    A.sort_indices()
    return A


def median_time(fn, repeat, setup=None):
    """Median wall time of ``fn(setup())`` (setup not timed)."""
    times = []
    for _ in range(repeat):
        arg = setup() if setup is not None else None
        t0 = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


# ---------------------------------------------------------------- libraries


def bench_sparsediff(A, b, g, repeat):
    def forward(_):
        return sd.solve(A, b)

    forward(None).vjp(g)                                   # warm-up (Numba kernels)
    t_fwd = median_time(forward, repeat)
    t_grad = median_time(lambda sol: sol.vjp(g), repeat, setup=lambda: forward(None))
    return t_fwd, t_grad


def bench_scipy(A, b, g, repeat):
    rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
    At = A.T.tocsr()

    def forward(_):
        return spla.spsolve(A, b)

    def backward(x):
        lam = spla.spsolve(At, g)                          # a second factorization
        return -lam[rows] * x[A.indices], lam

    backward(forward(None))
    t_fwd = median_time(forward, repeat)
    t_grad = median_time(backward, repeat, setup=lambda: forward(None))
    return t_fwd, t_grad


def bench_jax(A, b, g, repeat):
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_platforms", "cpu")
    import jax.numpy as jnp
    from jax.experimental.sparse.linalg import spsolve

    data, indices, indptr = (jnp.asarray(A.data), jnp.asarray(A.indices),
                             jnp.asarray(A.indptr))
    bj, gj = jnp.asarray(b), jnp.asarray(g)

    # index arrays are arguments, not closure constants (XLA would constant-fold them)
    fwd = jax.jit(lambda d, ind, ptr, rhs: spsolve(d, ind, ptr, rhs))
    loss = jax.jit(jax.value_and_grad(
        lambda d, rhs, ind, ptr: jnp.vdot(gj, spsolve(d, ind, ptr, rhs)),
        argnums=(0, 1)))
    fwd(data, indices, indptr, bj).block_until_ready()
    jax.block_until_ready(loss(data, bj, indices, indptr))
    t_fwd = median_time(lambda _: fwd(data, indices, indptr, bj).block_until_ready(),
                        repeat)
    t_both = median_time(lambda _: jax.block_until_ready(loss(data, bj, indices, indptr)),
                         repeat)
    return t_fwd, max(t_both - t_fwd, 0.0)


def bench_tsgu(A, b, g, repeat):
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # "cupy not found, using numpy"
        from torchsparsegradutils.cupy import sparse_solve_c4t

    crow = torch.from_numpy(A.indptr.astype(np.int64))
    col = torch.from_numpy(A.indices.astype(np.int64))
    vals = torch.from_numpy(A.data.copy())
    bt, gt = torch.from_numpy(b.copy()), torch.from_numpy(g.copy())

    def forward(_):
        At = torch.sparse_csr_tensor(crow, col, vals.clone(), A.shape,
                                     requires_grad=True)
        bb = bt.clone().requires_grad_(True)
        x = sparse_solve_c4t(At, bb, solve="spsolve", transpose_solve="spsolve")
        return At, bb, x

    def backward(state):
        At, bb, x = state
        (x * gt).sum().backward()
        return At.grad, bb.grad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = forward(None)
        backward(state)
        grad_vals = state[0].grad.values().numpy()
        # correctness against sparsediff before timing
        ref = sd.solve(A, b).vjp(g)[0].data
        if not np.allclose(grad_vals, ref, rtol=1e-6, atol=1e-10 * np.abs(ref).max()):
            raise RuntimeError("gradient differs from sparsediff's")
        t_fwd = median_time(forward, repeat)
        t_grad = median_time(backward, repeat, setup=lambda: forward(None))
    return t_fwd, t_grad


PEERS = [
    ("SciPy spsolve ×2", bench_scipy),
    ("JAX spsolve + grad (CPU)", bench_jax),
    ("torchsparsegradutils (spsolve)", bench_tsgu),
]


# ---------------------------------------------------------------- engines


def _stencil(k, diag, lower, upper, dim):
    """``dim``-D 3-point-per-direction operator on k^dim points, canonical CSR."""
    T = sp.diags_array([np.full(k - 1, lower), np.full(k, diag), np.full(k - 1, upper)],
                       offsets=[-1, 0, 1])
    eye = sp.eye_array(k)
    terms = []
    for d in range(dim):
        mats = [eye] * dim
        mats[d] = T
        out = mats[0]
        for m in mats[1:]:
            out = sp.kron(out, m)
        terms.append(out)
    A = sp.csr_array(sum(terms[1:], terms[0]))
    A.sort_indices()
    return A


def make_problem(name, k):
    """(description, A) for ``name`` on a k-per-side grid."""
    if name == "poisson2d":
        return f"2-D Poisson {k}²", _stencil(k, 2.0, -1.0, -1.0, 2)
    if name == "poisson3d":
        return f"3-D Poisson {k}³", _stencil(k, 2.0, -1.0, -1.0, 3)
    if name == "convdiff2d":
        return (f"2-D convection–diffusion {k}² (Pe 0.5)",
                _stencil(k, 2.0, -1.5, -0.5, 2))
    if name == "convdiff3d":    # upwind-free central convection, cell Péclet 0.5
        return (f"3-D convection–diffusion {k}³ (Pe 0.5)",
                _stencil(k, 2.0, -1.5, -0.5, 3))
    if name == "helmholtz2d":   # −Δu − κ²u with absorption: complex symmetric
        h = 1.0 / (k + 1)
        shift = (2 * np.pi * 4 * h) ** 2 * (1 + 0.05j)
        A = _stencil(k, 2.0, -1.0, -1.0, 2).astype(np.complex128)
        A = sp.csr_array(A - shift * sp.eye_array(k * k))
        A.sort_indices()
        return f"2-D Helmholtz {k}² (complex)", A
    raise ValueError(f"unknown problem {name!r}")


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def engine_sparsediff(library):
    def run(A, b, g):
        method = ("direct", {"library": library})
        t_fac, solver = _timed(lambda: sd.Solver(A, method=method))
        engine = solver._state.engine
        if engine.library != library:
            raise RuntimeError(f"fell back to {engine.library}")
        # time spent in the condition estimates (inside solve and vjp)
        spent = [0.0]
        estimate = engine._estimate_inverse_norm

        def timed_estimate(*args):
            t, out = _timed(lambda: estimate(*args))
            spent[0] += t
            return out

        engine._estimate_inverse_norm = timed_estimate
        t_sol, sol = _timed(lambda: solver.solve(b))
        t_grad, _ = _timed(lambda: sol.vjp(g))
        new = A.data * 1.5

        def upd():
            solver.update(new)
            return solver.solve(b)

        t_upd, _ = _timed(upd)
        return t_fac, t_sol, t_grad, t_upd, spent[0]
    return run


def raw_superlu(A, b, g):
    csc = sp.csc_array(A)
    t_fac, lu = _timed(lambda: spla.splu(csc, permc_spec="COLAMD"))
    t_sol, _ = _timed(lambda: lu.solve(b))
    t_tr, _ = _timed(lambda: lu.solve(g, trans="H"))
    csc2 = csc.copy()
    csc2.data *= 1.5
    t_upd, _ = _timed(lambda: spla.splu(csc2, permc_spec="COLAMD").solve(b))
    return t_fac, t_sol, t_tr, t_upd


def _kvx(A, lower=False):
    """kvxopt's matrix of a SciPy CSR ``A`` (its lower triangle if ``lower``)."""
    from kvxopt import matrix, spmatrix

    rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr)).astype(np.int64)
    cols = A.indices.astype(np.int64)
    data = A.data
    if lower:
        keep = rows >= cols
        rows, cols, data = rows[keep], cols[keep], data[keep]
    return spmatrix(matrix(data), matrix(rows), matrix(cols), A.shape)


def raw_cholmod(A, b, g):
    from kvxopt import cholmod, matrix

    if abs(A - A.conj().T).max() != 0:
        raise RuntimeError("not Hermitian")
    A2 = sp.csr_array((A.data * 1.5, A.indices, A.indptr), shape=A.shape)

    def fac():                          # from the SciPy matrix, as sparsediff
        K = _kvx(A, lower=True)         # CHOLMOD reads the lower triangle
        F = cholmod.symbolic(K)
        cholmod.numeric(K, F)
        return F

    t_fac, F = _timed(fac)
    t_sol, _ = _timed(lambda: cholmod.solve(F, matrix(b)))
    t_tr, _ = _timed(lambda: cholmod.solve(F, matrix(g)))

    def upd():
        cholmod.numeric(_kvx(A2, lower=True), F)   # in place, on the kept analysis
        cholmod.solve(F, matrix(b))

    t_upd, _ = _timed(upd)
    return t_fac, t_sol, t_tr, t_upd


def raw_umfpack(A, b, g):
    from kvxopt import matrix, umfpack

    A2 = sp.csr_array((A.data * 1.5, A.indices, A.indptr), shape=A.shape)

    def fac():                          # from the SciPy matrix, as sparsediff
        K = _kvx(A)
        S = umfpack.symbolic(K)
        return K, S, umfpack.numeric(K, S)

    t_fac, (K, S, F) = _timed(fac)
    t_sol, _ = _timed(lambda: umfpack.solve(K, F, matrix(b)))
    t_tr, _ = _timed(lambda: umfpack.solve(K, F, matrix(g), trans="C"))

    def upd():
        K2 = _kvx(A2)
        umfpack.solve(K2, umfpack.numeric(K2, S), matrix(b))

    t_upd, _ = _timed(upd)
    return t_fac, t_sol, t_tr, t_upd


def raw_pardiso(A, b, g):
    import pypardiso

    if np.iscomplexobj(A.data):
        raise RuntimeError("pypardiso is real only")
    ps = pypardiso.PyPardisoSolver()
    t_fac, _ = _timed(lambda: ps.factorize(A))
    t_sol, _ = _timed(lambda: ps.solve(A, b))

    def tr():                       # iparm(12) = 2: solve with Aᵀ on the factors
        ps.set_iparm(12, 2)
        ps.set_phase(33)
        x = ps._call_pardiso(A, g)
        ps.set_iparm(12, 0)
        return x

    t_tr, _ = _timed(tr)
    A2 = sp.csr_array((A.data * 1.5, A.indices, A.indptr), shape=A.shape)

    def upd():                      # phase 22 on phase 11's analysis, then 33
        ps.set_phase(22)
        ps._call_pardiso(A2, b)
        ps.set_phase(33)
        return ps._call_pardiso(A2, b)

    t_upd, _ = _timed(upd)
    return t_fac, t_sol, t_tr, t_upd


def raw_mumps(A, b, g):
    """MUMPS' LU through petsc4py, on one process (``COMM_SELF``): factor =
    PETSc matrix from the SciPy CSR arrays + KSP ``preonly`` with PC ``lu`` and
    solver type ``mumps`` (analysis + numeric factorization), grad = one
    transposed solve (``KSPSolveTranspose``), update = new values on the same
    pattern (numeric refactorization on the kept analysis) + solve."""
    from petsc4py import PETSc

    if np.iscomplexobj(A.data) and not np.iscomplexobj(np.empty(0, PETSc.ScalarType)):
        raise RuntimeError("this PETSc is built for real scalars")
    n = A.shape[0]
    indptr = A.indptr.astype(PETSc.IntType)
    indices = A.indices.astype(PETSc.IntType)

    def fac():
        M = PETSc.Mat().createAIJWithArrays((n, n), (indptr, indices, A.data.copy()),
                                            comm=PETSc.COMM_SELF)
        M.assemble()
        ksp = PETSc.KSP().create(comm=PETSc.COMM_SELF)
        ksp.setOperators(M)
        ksp.setType("preonly")
        pc = ksp.getPC()
        pc.setType("lu")
        pc.setFactorSolverType("mumps")
        ksp.setUp()
        return M, ksp

    t_fac, (M, ksp) = _timed(fac)
    bv = PETSc.Vec().createWithArray(b.copy(), comm=PETSc.COMM_SELF)
    gv = PETSc.Vec().createWithArray(g.copy(), comm=PETSc.COMM_SELF)
    x, y = bv.duplicate(), gv.duplicate()
    t_sol, _ = _timed(lambda: ksp.solve(bv, x))
    t_tr, _ = _timed(lambda: ksp.solveTranspose(gv, y))
    if np.abs(A.T @ y.getArray() - g).max() > 1e-8 * np.abs(g).max() * n:
        raise RuntimeError("MUMPS' transposed solve is wrong")

    def upd():
        M.setValuesCSR(indptr, indices, A.data * 1.5)
        M.assemble()
        ksp.setOperators(M)
        ksp.solve(bv, x)

    t_upd, _ = _timed(upd)
    return t_fac, t_sol, t_tr, t_upd


ENGINES = [
    ("sparsediff SuperLU", engine_sparsediff("superlu")),
    ("sparsediff CHOLMOD", engine_sparsediff("cholmod")),
    ("sparsediff UMFPACK", engine_sparsediff("umfpack")),
    ("sparsediff Pardiso", engine_sparsediff("pardiso")),
    ("raw SuperLU (COLAMD)", raw_superlu),
    ("raw CHOLMOD", raw_cholmod),
    ("raw UMFPACK", raw_umfpack),
    ("raw Pardiso (MKL)", raw_pardiso),
]

DEFAULT_PROBLEMS = ["poisson2d:256", "poisson2d:512", "poisson3d:24", "poisson3d:32",
                    "poisson3d:40", "convdiff3d:32", "helmholtz2d:256"]
LARGE_PROBLEMS = ["poisson2d:1024", "poisson3d:48"]


def run_engines(problems, emit, skip=(), repeat=1):
    emit("| problem | n | engine | factor ms | solve ms | grad / Aᴴ solve ms "
         "| update + solve ms | estimates ms | fwd + grad ×best raw |")
    emit("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    _, W = make_problem("poisson2d", 8)        # warm-up: Numba kernels, imports
    for _label, fn in ENGINES:
        try:
            fn(W, np.ones(64), np.ones(64))
            fn(W.astype(np.complex128), np.ones(64, complex), np.ones(64, complex))
        except Exception:  # noqa: BLE001 - reported on the real problems
            pass
    for spec in problems:
        name, k = spec.split(":")
        desc, A = make_problem(name, int(k))
        n = A.shape[0]
        b = rng.standard_normal(n).astype(A.dtype)
        results = {}
        labels = [label for label, _ in ENGINES if not any(s in label for s in skip)]
        for r in range(repeat):          # rounds: every engine once per round,
            # in the listed order and reversed in alternate rounds (what ran
            # just before, such as BLAS threads still spinning, is shared);
            # a fresh cotangent per round
            g = rng.standard_normal(n).astype(A.dtype)
            for label, fn in (ENGINES if r % 2 == 0 else ENGINES[::-1]):
                if label not in labels or isinstance(results.get(label), str):
                    continue
                try:
                    results.setdefault(label, []).append(fn(A, b, g))
                except Exception as exc:  # noqa: BLE001 - report and go on
                    results[label] = f"{type(exc).__name__}: {exc}".splitlines()[0][:80]
        rows = [(label, r if isinstance(r, str)
                 else tuple(float(np.median(c)) for c in zip(*r)))
                for label, r in ((lab, results[lab]) for lab in labels)]
        raw = [sum(t[:3]) for label, t in rows
               if label.startswith("raw") and not isinstance(t, str)]
        best = min(raw) if raw else np.nan
        for label, t in rows:
            if isinstance(t, str):
                emit(f"| {desc} | {n} | {label} | – | – | – | – | – | ({t}) |")
                continue
            ratio = f"{sum(t[:3]) / best:.2f}" if np.isfinite(best) else "–"
            est = f"{1e3 * t[4]:.1f}" if len(t) > 4 else "–"
            emit(f"| {desc} | {n} | {label} | {1e3 * t[0]:.0f} | {1e3 * t[1]:.1f} "
                 f"| {1e3 * t[2]:.1f} | {1e3 * t[3]:.0f} | {est} | {ratio} |")


# ---------------------------------------------------- direct against iterative


def _forward_gradient(A, b, g, **options):
    """Seconds for ``Solver`` build + solve + ``vjp`` (setup + forward + one
    gradient), and the relative residual of the forward solve."""
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        solver = sd.Solver(A, **options)
        sol = solver.solve(b)
        sol.vjp(g)
    t = time.perf_counter() - t0
    res = np.linalg.norm(b - A @ np.asarray(sol.x)) / np.linalg.norm(b)
    return t, res


#: --iterative-2d: sparsediff's direct (CHOLMOD) against CG + AMG on 2-D Poisson
ITERATIVE_2D = [("direct (CHOLMOD)", {"method": ("direct", {"library": "cholmod"})}),
                ("CG + AMG", {"method": "cg", "M": "amg", "rtol": 1e-8})]

#: --crossover-3d: sparsediff's direct LUs against preconditioned GMRES on the
#: non-symmetric 3-D convection–diffusion matrix
CROSSOVER_3D = [
    ("direct (Pardiso)", {"method": ("direct", {"library": "pardiso"})}),
    ("direct (UMFPACK)", {"method": ("direct", {"library": "umfpack"})}),
    ("GMRES + ILU", {"method": "gmres", "M": "ilu", "rtol": 1e-8}),
    ("GMRES + AMG", {"method": "gmres", "M": "amg", "rtol": 1e-8}),
    ("BiCGSTAB + ILU", {"method": "bicgstab", "M": "ilu", "rtol": 1e-8}),
]


def run_methods(problem, sizes, methods, emit, skip=(), budget=60.0):
    """One row per size: seconds of setup + forward + one gradient per method,
    one run each (a method that took longer than ``budget`` seconds at one size
    is not run at the larger ones)."""
    names = [label for label, _ in methods if not any(x in label for x in skip)]
    emit("| problem | n | " + " | ".join(names) + " | fastest |")
    emit("|---|---:|" + "---:|" * len(names) + "---|")
    rng = np.random.default_rng(0)
    _, W = make_problem(problem, 6)                 # warm-up: kernels, imports
    for _label, options in methods:
        try:
            _forward_gradient(W, np.ones(W.shape[0]), np.ones(W.shape[0]), **options)
        except Exception:  # noqa: BLE001 - reported on the real problems
            pass
    slow = {}
    for k in sizes:
        desc, A = make_problem(problem, k)
        n = A.shape[0]
        b, g = rng.standard_normal(n), rng.standard_normal(n)
        cells, times = [], {}
        for label, options in methods:
            if label not in names:
                continue
            if label in slow:
                cells.append(f"(> {budget:.0f} s at {slow[label]})")
                continue
            try:
                t, res = _forward_gradient(A, b, g, **options)
            except Exception as exc:  # noqa: BLE001 - report and go on
                cells.append(f"({type(exc).__name__})")
                continue
            times[label] = t
            flag = "" if res < 1e-6 else f" (residual {res:.0e})"
            cells.append(f"{t:.3f}{flag}")
            if t > budget:
                slow[label] = n
        best = min(times, key=times.get) if times else "–"
        emit(f"| {desc} | {n} | " + " | ".join(cells) + f" | {best} |")


# ---------------------------------------------------------------- report


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count()
    return f"{cpu}, {cores} cores"


def versions():
    out = [f"Python {platform.python_version()}", f"NumPy {np.__version__}",
           f"SciPy {scipy.__version__}", f"sparsediff {sd.__version__}"]
    from importlib.metadata import PackageNotFoundError, version

    for name in ("jax", "torch", "torchsparsegradutils", "kvxopt", "pypardiso", "mkl"):
        try:
            out.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    return ", ".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="add the 1024² grid")
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="grid sizes per side (default 128 256 512)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--save", metavar="FILE.md", default=None,
                        help="also write the report to this Markdown file")
    parser.add_argument("--engines", action="store_true",
                        help="compare the direct engines with the raw libraries")
    parser.add_argument("--problems", nargs="+", default=None,
                        help="NAME:K for --engines (poisson2d, poisson3d, convdiff2d, "
                             "convdiff3d, helmholtz2d); default "
                             + " ".join(DEFAULT_PROBLEMS))
    parser.add_argument("--engine-repeat", type=int, default=1,
                        help="--engines: rounds (every engine once per round, "
                             "medians per column)")
    parser.add_argument("--skip", nargs="*", default=(),
                        help="engine labels to leave out (substring), e.g. SuperLU")
    parser.add_argument("--mumps", action="store_true",
                        help="--engines: add MUMPS' serial LU (petsc4py) as a raw "
                             "library")
    parser.add_argument("--iterative-2d", type=int, nargs="*", default=None,
                        metavar="K",
                        help="2-D Poisson K² (default 512 768 1024): sparsediff's "
                             "direct (CHOLMOD) against CG + AMG, setup + forward + "
                             "gradient")
    parser.add_argument("--crossover-3d", type=int, nargs="*", default=None,
                        metavar="K",
                        help="3-D convection–diffusion K³ (default 16 24 32 40): "
                             "sparsediff's direct LUs against GMRES / BiCGSTAB with "
                             "ILU or AMG, setup + forward + gradient")
    args = parser.parse_args(argv)
    sizes = args.sizes or ([128, 256, 512] + ([1024] if args.large else []))

    lines = []

    def emit(text=""):
        print(text, flush=True)
        lines.append(text)

    if args.iterative_2d is not None or args.crossover_3d is not None:
        two_d = args.iterative_2d is not None
        sizes = ((args.iterative_2d or [512, 768, 1024]) if two_d
                 else (args.crossover_3d or [16, 24, 32, 40]))
        emit("# sparsediff's direct solves against its iterative ones, "
             + ("2-D Poisson" if two_d else "3-D convection–diffusion (Pe 0.5)"))
        emit()
        emit(f"Run {datetime.datetime.now().isoformat(timespec='minutes')} on "
             f"{machine()}; {versions()}.")
        emit("Seconds for `Solver` build + solve + `vjp` (setup + forward + one "
             "gradient, cold), one run per cell, rtol 1e-8 for the iterative "
             "methods; a residual above 1e-6 is shown beside the time.")
        emit()
        run_methods("poisson2d" if two_d else "convdiff3d", sizes,
                    ITERATIVE_2D if two_d else CROSSOVER_3D, emit, skip=args.skip)
        if args.save:
            with open(args.save, "w") as f:
                f.write("\n".join(lines) + "\n")
        return 0

    if args.engines:
        if args.mumps:
            ENGINES.append(("raw MUMPS (PETSc, serial LU)", raw_mumps))
        problems = args.problems or (DEFAULT_PROBLEMS
                                     + (LARGE_PROBLEMS if args.large else []))
        emit("# Direct engines against the raw libraries, float64 / complex128")
        emit()
        emit(f"Run {datetime.datetime.now().isoformat(timespec='minutes')} on "
             f"{machine()}; {versions()}.")
        emit(f"Medians of {args.engine_repeat} round(s), every engine once per "
             "round, the order reversed in alternate rounds, in milliseconds "
             "(cold: a fresh factorization and a fresh "
             "cotangent each time). sparsediff: factor = Solver build from the "
             "SciPy matrix (includes the matrix checks), solve includes the "
             "condition and error estimates, grad = vjp; estimates = the part of "
             "solve + grad spent in the condition estimates. Raw: factor = "
             "conversion from the SciPy matrix (CHOLMOD: its lower triangle) + "
             "analysis + numeric factorization, grad column = one Aᴴ solve, "
             "update = conversion + numeric refactorization on the kept analysis "
             "+ solve. Last column: (factor + solve + grad) / the fastest raw "
             "library's (factor + solve + Aᴴ solve).")
        emit()
        run_engines(problems, emit, skip=args.skip, repeat=args.engine_repeat)
        if args.save:
            with open(args.save, "w") as f:
                f.write("\n".join(lines) + "\n")
        return 0

    emit("# Direct solves with gradients: 2-D Poisson, float64")
    emit()
    emit(f"Run {datetime.datetime.now().isoformat(timespec='minutes')} on "
         f"{machine()}; {versions()}.")
    emit(f"Medians of {args.repeat} runs after a warm-up, in milliseconds. "
         "fwd = factorize + solve; grad = the backward pass given x "
         "(∂L/∂A.data and ∂L/∂b for L = ⟨g, x⟩); ×sd = (fwd + grad) / sparsediff's.")
    emit()
    emit("| grid | n | library | fwd ms | grad ms | grad/fwd | ×sd |")
    emit("|---|---:|---|---:|---:|---:|---:|")
    skipped = {}
    goal = {}
    rng = np.random.default_rng(0)
    for k in sizes:
        A = poisson2d(k)
        n = A.shape[0]
        b = rng.standard_normal(n)
        g = rng.standard_normal(n)
        t_fwd, t_grad = bench_sparsediff(A, b, g, args.repeat)
        sd_total = t_fwd + t_grad
        goal[k] = t_grad / t_fwd
        emit(f"| {k}² | {n} | **sparsediff** | {1e3 * t_fwd:.2f} | {1e3 * t_grad:.2f} "
             f"| {t_grad / t_fwd:.3f} | 1.00 |")
        for name, fn in PEERS:
            if name in skipped:
                continue
            try:
                p_fwd, p_grad = fn(A, b, g, args.repeat)
            except Exception as exc:  # noqa: BLE001 - report and go on
                skipped[name] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
                continue
            emit(f"| {k}² | {n} | {name} | {1e3 * p_fwd:.2f} | {1e3 * p_grad:.2f} "
                 f"| {p_grad / p_fwd:.3f} | {(p_fwd + p_grad) / sd_total:.2f} |")
    emit()
    for name, why in skipped.items():
        emit(f"- skipped {name}: {why}")
    for k, ratio in goal.items():
        if k == 512:
            verdict = "met" if ratio <= GOAL else "NOT met"
            emit(f"- goal: sparsediff gradient ≤ {GOAL} × forward at 512²: "
                 f"{ratio:.3f} ({verdict})")
    emit("- JAX's grad column is value_and_grad minus forward: JAX refactorizes "
         "in the backward pass (and runs the forward again).")
    if args.save:
        with open(args.save, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
