"""Krylov solvers: forward and gradient time against SciPy, pyamg, JAX and lineax.

Problems: 2-D Poisson (5-point, Dirichlet) on k×k grids, and a non-symmetric
2-D convection–diffusion operator (upwind-free central differences, cell
Péclet 0.5) of the same sizes. rtol 1e-8 everywhere; the gradient is that of
``L = gᵀx`` with respect to ``A.data`` and ``b`` (one adjoint solve + the
pattern kernel). Every peer runs in the same process, after a warm-up (Numba
and JAX compilation are not timed).

Usage::

    python benchmarks/bench_krylov.py            # 256², 512²
    python benchmarks/bench_krylov.py --large    # adds 1024²
    python benchmarks/bench_krylov.py --auto     # direct vs iterative sweep
    python benchmarks/bench_krylov.py --out benchmarks/results_krylov.md
"""

import argparse
import io
import platform
import sys
import time
from contextlib import redirect_stdout

import numpy as np
import scipy
import scipy.sparse as sp
import scipy.sparse.linalg as spla

import sparsediff as sd

RTOL = 1e-8


def poisson2d(k):
    p = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(k, k))
    eye = sp.eye(k)
    A = (sp.kron(p, eye) + sp.kron(eye, p)).tocsr()
    A.sort_indices()
    return A


def convection2d(k, peclet=0.5):
    p = sp.diags([-1.0 - peclet, 2.0, -1.0 + peclet], [-1, 0, 1], shape=(k, k))
    eye = sp.eye(k)
    A = (sp.kron(p, eye) + sp.kron(eye, p)).tocsr()
    A.sort_indices()
    return A


def timed(f, repeat=1):
    best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - t)
    return best, out


class Counter:
    def __init__(self):
        self.n = 0

    def __call__(self, *_):
        self.n += 1


# ---------------------------------------------------------------------------
# sparsediff
# ---------------------------------------------------------------------------


def run_ours(A, b, g, method, M):
    t0 = time.perf_counter()
    solver = sd.Solver(A, method=method, M=M, rtol=RTOL, maxiter=20000,
                       on_failure="warn")
    setup = time.perf_counter() - t0
    t_fwd, sol = timed(lambda: solver.solve(b))
    t_grad, _ = timed(lambda: sol.vjp(g))
    return dict(setup=setup, fwd=t_fwd, its=sol.info.iterations,
                grad=t_grad, grad_its=sol.adjoint_info.iterations,
                ok=sol.info.converged and sol.adjoint_info.converged)


# ---------------------------------------------------------------------------
# peers
# ---------------------------------------------------------------------------


def run_scipy(A, b, g, method, M):
    """SciPy's solver with the *same* preconditioner object (forward + adjoint)."""
    t0 = time.perf_counter()
    P = None
    if M is not None:
        from sparsediff._validation import as_matrix
        from sparsediff.precond import make_preconditioner

        P = make_preconditioner(M, as_matrix(A, "bench", "A"), "bench")
    setup = time.perf_counter() - t0
    f = {"cg": spla.cg, "gmres": spla.gmres, "bicgstab": spla.bicgstab}[method]
    kw = dict(rtol=RTOL, atol=0.0, maxiter=20000)
    Mop = None if P is None else spla.LinearOperator(A.shape, matvec=P.matvec,
                                                     dtype=A.dtype)
    Mt = None if P is None else spla.LinearOperator(A.shape, matvec=P.rmatvec,
                                                    dtype=A.dtype)
    c = Counter()
    t_fwd, (x, info) = timed(lambda: f(A, b, M=Mop, callback=c, **kw))
    c2 = Counter()
    AT = A.T.tocsr()

    def grad():
        lam, _ = f(AT, g, M=Mt, callback=c2, **kw)
        rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
        return -lam[rows] * x[A.indices]

    t_grad, _ = timed(grad)
    return dict(setup=setup, fwd=t_fwd, its=c.n, grad=t_grad, grad_its=c2.n,
                ok=info == 0)


def run_pyamg(A, b, g):
    import pyamg

    t0 = time.perf_counter()
    ml = pyamg.smoothed_aggregation_solver(A)
    setup = time.perf_counter() - t0
    res = []
    t_fwd, x = timed(lambda: ml.solve(b, tol=RTOL, accel="cg", residuals=res))
    res2 = []
    t_grad, _ = timed(lambda: ml.solve(g, tol=RTOL, accel="cg", residuals=res2))
    return dict(setup=setup, fwd=t_fwd, its=len(res) - 1, grad=t_grad,
                grad_its=len(res2) - 1, ok=True)


def _jax_problem(A):
    import jax
    import jax.numpy as jnp
    from jax.experimental import sparse as jsparse

    jax.config.update("jax_enable_x64", True)
    indices = jnp.asarray(A.indices)
    indptr = jnp.asarray(A.indptr)
    dinv = jnp.asarray(1.0 / A.diagonal())

    def matvec_of(data):
        M = jsparse.BCSR((data, indices, indptr), shape=A.shape)
        return lambda x: M @ x

    return jax, jnp, dinv, matvec_of


def _time_jax_solve(jax, jnp, solve, A, b, g):
    """Jitted forward and ``grad`` of ``⟨g, solve(data, b)⟩``, timed after a warm-up."""
    fwd = jax.jit(solve)
    loss = jax.jit(jax.grad(lambda d, bb: jnp.vdot(jnp.asarray(g), solve(d, bb)),
                            argnums=(0, 1)))
    data, bj = jnp.asarray(A.data), jnp.asarray(b)
    fwd(data, bj).block_until_ready()
    jax.block_until_ready(loss(data, bj))
    t_fwd, _ = timed(lambda: fwd(data, bj).block_until_ready())
    t_both, _ = timed(lambda: jax.block_until_ready(loss(data, bj)))
    # jax.grad runs the forward solve again: report the backward part alone
    return dict(setup=0.0, fwd=t_fwd, its=-1, grad=max(t_both - t_fwd, 0.0),
                grad_its=-1, ok=True)


def run_jax(A, b, g):
    jax, jnp, dinv, matvec_of = _jax_problem(A)
    from jax.scipy.sparse.linalg import cg as jcg

    def solve(data, bb):
        x, _ = jcg(matvec_of(data), bb, tol=RTOL, atol=0.0, maxiter=20000,
                   M=lambda r: dinv * r)
        return x

    return _time_jax_solve(jax, jnp, solve, A, b, g)


def run_lineax(A, b, g):
    jax, jnp, dinv, matvec_of = _jax_problem(A)
    import lineax as lx

    struct = jax.ShapeDtypeStruct((A.shape[0],), jnp.float64)
    pre = lx.DiagonalLinearOperator(dinv)
    pre = lx.TaggedLinearOperator(pre, lx.positive_semidefinite_tag)

    def solve(data, bb):
        op = lx.FunctionLinearOperator(matvec_of(data), struct,
                                       tags=lx.positive_semidefinite_tag)
        sol = lx.linear_solve(op, bb, solver=lx.CG(rtol=RTOL, atol=0.0,
                                                   max_steps=20000),
                              options={"preconditioner": pre})
        return sol.value

    return _time_jax_solve(jax, jnp, solve, A, b, g)


def cg_iteration_time(A, b, M):
    """Seconds per CG iteration, ours vs SciPy's, same preconditioner object."""
    from sparsediff._validation import as_matrix
    from sparsediff.precond import make_preconditioner

    P = None if M is None else make_preconditioner(M, as_matrix(A, "b", "A"), "b")
    # a fixed number of iterations, short of convergence (AMG converges in
    # about 10), and each time divided by the iterations actually run: SciPy
    # may stop early on an exactly zero residual inner product
    maxiter = 8 if M == "amg" else 200
    solver = sd.Solver(A, method="cg", M=P, rtol=1e-30, maxiter=maxiter,
                       on_failure="nan")
    solver.solve(b)
    t_ours, sol = timed(lambda: solver.solve(b), repeat=3)
    Mop = None if P is None else spla.LinearOperator(A.shape, matvec=P.matvec,
                                                     dtype=A.dtype)
    count = [0]

    def scipy_cg():
        count[0] = 0
        spla.cg(A, b, rtol=1e-30, maxiter=maxiter, M=Mop,
                callback=lambda xk: count.__setitem__(0, count[0] + 1))

    t_sp, _ = timed(scipy_cg, repeat=3)
    return t_ours / max(sol.info.iterations, 1), t_sp / max(count[0], 1)


# ---------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------


def fmt(r):
    if r is None:
        return "| — | — | — | — | — | — |"
    total = r["setup"] + r["fwd"]
    its = r["its"] if r["its"] >= 0 else "—"
    gits = r["grad_its"] if r["grad_its"] >= 0 else "—"
    ok = "" if r["ok"] else " (not converged)"
    return (f"| {r['setup']:.3f} | {r['fwd']:.3f} | {its} | {r['grad']:.3f} | {gits} "
            f"| {r['grad'] / total:.2f}{ok} |")


def safe(f, *args):
    try:
        return f(*args)
    except ImportError as exc:
        print(f"<!-- peer skipped: {exc} -->")
        return None


def problem_table(name, A, peers):
    rng = np.random.default_rng(0)
    n = A.shape[0]
    b = rng.standard_normal(n)
    g = rng.standard_normal(n)
    sym = name.startswith("poisson")
    ours = ([("cg", "jacobi"), ("cg", "amg"), ("minres", "amg"), ("gmres", "amg"),
             ("bicgstab", "amg")] if sym else
            [("gmres", "ilu"), ("bicgstab", "ilu"), ("gmres", "amg"),
             ("bicgstab", "jacobi")])
    print(f"\n### {name}: n = {n:,}, nnz = {A.nnz:,}\n")
    print("| solver | setup s | forward s | its | gradient s | adj. its "
          "| grad/(setup+fwd) |")
    print("|---|---|---|---|---|---|---|")
    results = {}
    r = run_ours(A, b, g, "direct", None)
    print(f"| sparsediff direct (SuperLU) {fmt(r)}")
    results["direct"] = r
    for method, M in ours:
        r = run_ours(A, b, g, method, M)
        results[f"{method}+{M}"] = r
        print(f"| sparsediff {method}+{M} {fmt(r)}")
        sys.stdout.flush()
    scipy_peers = ([("cg", "jacobi"), ("cg", "amg")] if sym
                   else [("gmres", "ilu"), ("bicgstab", "ilu")])
    for method, M in scipy_peers:
        r = run_scipy(A, b, g, method, M)
        results[f"scipy {method}+{M}"] = r
        print(f"| scipy {method}+{M} (same M) {fmt(r)}")
    if sym:
        r = safe(run_pyamg, A, b, g)
        results["pyamg"] = r
        print(f"| pyamg solve (SA, accel=cg) {fmt(r)}")
        if peers:
            for label, f in (("jax cg+jacobi (BCSR, jit)", run_jax),
                             ("lineax CG+jacobi (jit)", run_lineax)):
                r = safe(f, A, b, g)
                results[label] = r
                print(f"| {label} {fmt(r)}")
    return results, b


def ratios(name, res, A, b):
    print(f"\nRatios for {name}:")
    if name.startswith("poisson"):
        amg = res["cg+amg"]
        print(f"- gradient / (setup + forward), cg+amg: "
              f"{amg['grad'] / (amg['setup'] + amg['fwd']):.2f}; "
              f"gradient / forward solve alone: {amg['grad'] / amg['fwd']:.2f} "
              f"(goal ≤ 1.1)")
        ours = min(r["setup"] + r["fwd"] + r["grad"] for k, r in res.items()
                   if r is not None and not k.startswith(("scipy", "pyamg", "jax",
                                                          "lineax")))
        jax_peers = [r["fwd"] + r["grad"] for k, r in res.items()
                     if r is not None and k.startswith(("jax", "lineax"))]
        if jax_peers:
            print(f"- fastest JAX peer forward+gradient / ours (best method): "
                  f"{min(jax_peers) / ours:.1f}× (goal ≥ 10× at 512²)")
        for M in ("jacobi", "amg"):
            ours_it, sp_it = cg_iteration_time(A, b, M)
            print(f"- CG iteration with M={M}: ours {1e3 * ours_it:.3f} ms, "
                  f"scipy {1e3 * sp_it:.3f} ms, scipy/ours = {sp_it / ours_it:.2f} "
                  f"(goal ≥ 1)")
        ours_it, sp_it = cg_iteration_time(A, b, None)
        print(f"- CG iteration without M: ours {1e3 * ours_it:.3f} ms, scipy "
              f"{1e3 * sp_it:.3f} ms, scipy/ours = {sp_it / ours_it:.2f}")
    else:
        for method in ("gmres", "bicgstab"):
            o, s = res[f"{method}+ilu"], res[f"scipy {method}+ilu"]
            print(f"- {method}+ilu forward+gradient, scipy/ours: "
                  f"{(s['fwd'] + s['grad']) / (o['fwd'] + o['grad']):.2f}")


def auto_sweep(sizes):
    """Direct vs iterative, setup + forward + one gradient, to place method='auto'."""
    print("\n### method='auto' threshold: setup + forward + gradient, seconds\n")
    print("| problem | n | direct | iterative | method | fastest |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(1)
    for name, make, (method, M) in (("poisson2d", poisson2d, ("cg", "amg")),
                                    ("convection2d", convection2d, ("gmres", "ilu"))):
        for k in sizes:
            A = make(k)
            n = A.shape[0]
            b, g = rng.standard_normal(n), rng.standard_normal(n)
            d = run_ours(A, b, g, "direct", None)
            it = run_ours(A, b, g, method, M)
            td = d["setup"] + d["fwd"] + d["grad"]
            ti = it["setup"] + it["fwd"] + it["grad"]
            nc = "" if it["ok"] else " (not converged)"
            print(f"| {name} | {n:,} | {td:.3f} | {ti:.3f}{nc} | {method}+{M} "
                  f"| {'direct' if td <= ti else method + '+' + M} |")
            sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--large", action="store_true", help="also 1024²")
    ap.add_argument("--auto", action="store_true", help="direct-vs-iterative sweep")
    ap.add_argument("--no-jax", action="store_true", help="skip JAX and lineax")
    ap.add_argument("--sizes", type=int, nargs="*", default=None)
    ap.add_argument("--out", default=None, help="also write the output here")
    args = ap.parse_args()
    buf = io.StringIO()

    class Tee:
        def write(self, s):
            sys.__stdout__.write(s)
            buf.write(s)

        def flush(self):
            sys.__stdout__.flush()

    with redirect_stdout(Tee()):
        import os

        print("# Krylov solvers: forward and gradient timings\n")
        print(f"Python {platform.python_version()}, numpy {np.__version__}, scipy "
              f"{scipy.__version__}, sparsediff {sd.__version__}, "
              f"{os.cpu_count()} CPU cores ({platform.machine()}); rtol {RTOL}; "
              f"times in seconds, best of one run after warm-up.")
        # warm-up: Numba kernels, pyamg, JAX compilation of small problems
        W = poisson2d(16)
        w = np.ones(W.shape[0])
        for method, M in (("cg", "jacobi"), ("cg", "amg"), ("minres", "amg"),
                          ("gmres", "amg"), ("bicgstab", "amg")):
            run_ours(W, w, w, method, M)
        for method, M in (("gmres", "ilu"), ("bicgstab", "ilu"),
                          ("bicgstab", "jacobi")):
            run_ours(convection2d(16), w, w, method, M)
        if args.auto:
            auto_sweep(args.sizes or [32, 64, 128, 256, 512])
        else:
            sizes = args.sizes or ([256, 512] + ([1024] if args.large else []))
            for k in sizes:
                for name, make in (("poisson2d", poisson2d),
                                   ("convection2d", convection2d)):
                    A = make(k)
                    res, b = problem_table(f"{name} {k}²", A, not args.no_jax)
                    ratios(f"{name} {k}²", res, A, b)
    if args.out:
        with open(args.out, "a") as f:
            f.write(buf.getvalue() + "\n")


if __name__ == "__main__":
    main()
