"""log|det A| and its gradient on GMRF precision matrices: exact against stochastic.

Two parts:

``--part scaling`` (default): a Matérn-like SPDE precision ``Q = (κ²I + L)²``
(``L`` the 2-D 5-point Laplacian, a 13-point stencil) on m×m grids. For each
size: the exact value and gradient (one SuperLU factorization + selected
inversion), the exact gradient by n solves instead (small sizes only: the
measured alternative), Hutchinson and Hutch++ on the same factorization and
Hutch++ with CG + AMG (no factorization), with time, memory and the relative
error ``‖ĝ − g‖/‖g‖`` against the exact gradient where it was computed.
Memory: the peak of Python-side allocations (tracemalloc) plus the bytes of
SuperLU's factors (``(nnz(L) + nnz(U))·(8 + 4)``), which tracemalloc does not
see. Every gradient is cold (a new call, new probes).

``--part table``: bias and variance over many seeds of the seed note's
sampled-rows estimator (``compare_gradients(methods=("sampled_rows",))``)
against the exact gradient, beside the unbiased estimators, on 2-D Poisson, a
convection–diffusion problem and a GMRF precision; the table in
docs/stochastic.md comes from it.

    python benchmarks/bench_logdet.py --sizes 100 316 --probes 10 100
    python benchmarks/bench_logdet.py --part table --seeds 100
"""

import argparse
import platform
import time
import tracemalloc

import numpy as np
import scipy.sparse as sp

import sparsediff as sd
from sparsediff._compare import compare_gradients
from sparsediff._validation import as_matrix
from sparsediff.stochastic import _logdet


def laplacian(m):
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m))
    return (sp.kron(T, sp.eye(m)) + sp.kron(sp.eye(m), T)).tocsr()


def matern_precision(m, kappa2=0.1):
    K = (laplacian(m) + kappa2 * sp.eye(m * m)).tocsr()
    return (K @ K).tocsr()


def theta_jacobian(Q, m, kappa2):
    """``∂Q.data/∂(κ², τ)`` at τ = 1 on Q's pattern: ``2K`` and ``Q``."""
    K = (laplacian(m) + kappa2 * sp.eye(m * m)).tocsr()
    n = m * m
    Q = sp.csr_array(Q)
    rows = np.repeat(np.arange(n), np.diff(Q.indptr)).astype(np.int64)
    keys = rows * n + Q.indices
    order = np.argsort(keys)
    Kc = sp.csr_array(2 * K)
    Kc.sum_duplicates()
    krows = np.repeat(np.arange(n), np.diff(Kc.indptr)).astype(np.int64)
    dk = np.zeros(Q.nnz)
    dk[order[np.searchsorted(keys[order], krows * n + Kc.indices)]] = Kc.data
    return np.stack([dk, Q.data], axis=1)


def measured(fn, *args, **kwargs):
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        out = fn(*args, **kwargs)
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return out, elapsed, peak


def rel(g, ref):
    return float(np.linalg.norm(g - ref) / np.linalg.norm(ref))


def scaling(args):
    print(f"# log-determinant gradients on Q = (κ²I + L)², κ² = 0.1 "
          f"({platform.machine()}, {platform.processor() or 'cpu'})")
    print("| n | method | probes | time [s] | ×exact | memory [MB] | rel. error grad "
          "| rel. error dθ (± stderr) | value error / stderr |")
    print("|---|---|---|---|---|---|---|---|---|")
    sd.logdet(matern_precision(8))                        # compile the kernels
    sd.logdet(matern_precision(8), estimator="hutch++", num_probes=3)
    for m in args.sizes:
        Q = matern_precision(m)
        n = Q.shape[0]
        J = theta_jacobian(Q, m, 0.1)
        exact = gp_exact = None
        if n <= args.max_exact:
            mat = as_matrix(Q, "bench")
            lu, t_fac, _ = measured(_logdet.factorize, mat)
            factor_mb = (lu.L.nnz + lu.U.nnz) * 12 / 2**20
            res, t_ex, peak = measured(sd.logdet, Q, jacobian=J)
            exact, value, gp_exact = res.grad.data, res.logabsdet, res.grad_params
            t_sel = t_ex - t_fac
            print(f"| {n} | exact (factor {t_fac:.2f} s + selinv {t_sel:.2f} s) | - | "
                  f"{t_ex:.2f} | 1.00 | {peak / 2**20 + factor_mb:.0f} | 0 | 0 | exact |")
            if n <= args.max_solves:
                (g, _), t_sol, peak_s = measured(_logdet.exact_gradient, lu, mat,
                                                 how="solves")
                print(f"| {n} | exact by n solves | - | {t_sol + t_fac:.2f} | "
                      f"{(t_sol + t_fac) / t_ex:.2f} | "
                      f"{peak_s / 2**20 + factor_mb:.0f} | "
                      f"{rel(mat.from_canonical(g), exact):.1e} | - | exact |")
        for probes in args.probes:
            runs = [("hutchinson", "direct", None), ("hutch++", "direct", None),
                    ("hutch++", "cg", "amg")]
            for est, method, M in runs:
                if method == "direct" and n > args.max_exact:
                    continue
                if method == "cg" and probes > args.max_cg_probes:
                    continue
                r, t, peak = measured(sd.logdet, Q, method=method, M=M, estimator=est,
                                      num_probes=probes, seed=probes, rtol=1e-8,
                                      value=(method != "direct"), jacobian=J)
                err = "-" if exact is None else f"{rel(r.grad.data, exact):.2e}"
                name = f"{est} ({r.method})"
                ratio = "-" if exact is None else f"{t / t_ex:.2f}"
                mb = peak / 2**20 + (factor_mb if method == "direct" else 0)
                val = "-"
                if r.value_estimator == "slq" and exact is not None:
                    val = f"{(r.logabsdet - value) / r.logabsdet_stderr:+.2f}"
                elif r.value_estimator == "slq":
                    val = f"± {r.logabsdet_stderr / abs(r.logabsdet):.1e} (rel.)"
                gerr = "-"
                if gp_exact is not None:
                    se = np.linalg.norm(r.grad_params_stderr) / np.linalg.norm(gp_exact)
                    gerr = f"{rel(r.grad_params, gp_exact):.1e} (± {se:.1e})"
                print(f"| {n} | {name} | {probes} | {t:.2f} | {ratio} | {mb:.0f} | "
                      f"{err} | {gerr} | {val} |")


# ---------------------------------------------------------------------------
# bias / variance table
# ---------------------------------------------------------------------------


def problems(m):
    A = laplacian(m)
    n = m * m
    h = 1.0 / (m + 1)
    # upwind convection–diffusion: −Δu + 20·∂u/∂x on the unit square
    D = sp.diags([-1.0, 1.0], [-1, 0], shape=(m, m))
    C = (A / h**2 + 20.0 * sp.kron(sp.eye(m), D) / h).tocsr()
    return {"2-D Poisson": (A + 1e-3 * sp.eye(n)).tocsr(),
            "convection–diffusion": C,
            "GMRF precision": matern_precision(m)}


def spread(samples, exact):
    samples = np.asarray(samples)
    R = samples.shape[0]
    norm = np.linalg.norm(exact)
    bias = np.linalg.norm(samples.mean(axis=0) - exact) / norm
    std = np.sqrt(np.sum(samples.var(axis=0, ddof=1))) / norm
    return bias, std, std / np.sqrt(R)


def table(args):
    m = args.table_m
    rates = (0.1, 0.25, 0.5, 0.9)
    R = args.seeds
    rng = np.random.default_rng(0)
    print(f"# bias and variance, {m}×{m} grids (n = {m * m}), {R} seeds per row")
    print("| problem | estimator | rate / probes | rel. bias | rel. std | "
          "noise of the bias |")
    print("|---|---|---|---|---|---|")
    for name, A in problems(m).items():
        if args.problems and not any(name.startswith(p) for p in args.problems):
            continue
        n = A.shape[0]
        b = rng.standard_normal(n)
        g = compare_gradients(A, b, methods=("implicit",), symmetric=False,
                              warmup=False).get("implicit").grad
        for rate in rates:
            samples = [compare_gradients(A, b, methods=("sampled_rows",),
                                         symmetric=False, sample_rates=rate, seed=s,
                                         warmup=False).get("sampled_rows").grad
                       for s in range(R)]
            bias, std, noise = spread(samples, g)
            print(f"| {name} | sampled rows (seed note, ∂(½‖x‖²)/∂θ) | {rate:g} | "
                  f"{bias:.3f} | {std:.3f} | {noise:.3f} |")
        B = rng.standard_normal((n, 64))
        exact = sd.solve(A, B, method="direct")
        gB = exact.vjp(exact.x)[0].data
        for rate in rates:
            s_cols = max(1, int(round(rate * 64)))
            samples = [sd.sampled_rhs_gradient(A, B, lambda X, c: X, num_columns=s_cols,
                                               seed=s, method="direct").grad_A.data
                       for s in range(R)]
            bias, std, noise = spread(samples, gB)
            print(f"| {name} | sampled right-hand sides (64 columns, ∂/∂A.data) | "
                  f"{rate:g} | {bias:.3f} | {std:.3f} | {noise:.3f} |")
        gl = sd.logdet(A).grad.data
        for est in ("hutchinson", "hutch++"):
            for probes in (10, 100):
                samples = [sd.logdet(A, estimator=est, num_probes=probes, seed=s,
                                     value=False).grad.data for s in range(R)]
                bias, std, noise = spread(samples, gl)
                print(f"| {name} | {est} (∂ log|det A|/∂A.data) | {probes} | "
                      f"{bias:.3f} | {std:.3f} | {noise:.3f} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("scaling", "table"), default="scaling")
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 316],
                   help="grid sides m (n = m²)")
    p.add_argument("--probes", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--max-exact", type=int, default=200_000,
                   help="largest n for the exact gradient")
    p.add_argument("--max-solves", type=int, default=10_000,
                   help="largest n for the exact gradient by n solves")
    p.add_argument("--max-cg-probes", type=int, default=100,
                   help="most probes for CG + AMG (each probe is a CG solve)")
    p.add_argument("--seeds", type=int, default=100)
    p.add_argument("--table-m", type=int, default=24)
    p.add_argument("--problems", nargs="*", default=None,
                   help="table rows for these problems only (name prefixes)")
    args = p.parse_args()
    (table if args.part == "table" else scaling)(args)


if __name__ == "__main__":
    main()
