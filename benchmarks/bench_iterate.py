"""Cost of differentiating ``k`` weighted-Jacobi sweeps on 2-D Poisson.

For ``k`` = 10, 100, 1000 sweeps ``x ↦ x + ω D⁻¹ (b − A x)`` (ω = 4/5) on the
5-point Laplacian of a 256² grid (1024² with ``--large``), this measures the
forward run plus one VJP for each way of getting the iterates back —
``store``, ``checkpoint`` (binomial schedule, ⌈√k⌉ slots), ``reconstruct``
(inverse step = one sparse LU solve; a Jacobi smoother's inverse is so
ill-conditioned that the sweep falls back to checkpointing, which the table
reports) — and the implicit adjoint of :func:`fixed_point` run for the same
``k`` steps with a budget of ``k`` adjoint VJPs (Jacobi on Poisson is far from
converged after ``k`` steps, so this column shows cost and memory only).

Each run is traced by ``tracemalloc`` (peak memory, in units of one iterate,
8n bytes; the per-step temporaries of the Jacobi step and the GMRES basis are
part of it) and timed at once — tracing costs little here, the allocations
being few and large. Time: median of ``--repeat`` runs for k ≤ 100, one run
for k = 1000, after a warm-up at k = 10; as a ratio to the ``k`` forward
sweeps alone.

Usage: ``python benchmarks/bench_iterate.py [--large] [--repeat 3]``
"""

import argparse
import time
import tracemalloc
import warnings

import numpy as np
import scipy.sparse as sp

from sparsediff import ConvergenceWarning
from sparsediff.fixed_point import fixed_point, iterate, steps


def poisson2d(N):
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(N, N))
    I = sp.eye(N)
    return (sp.kron(T, I) + sp.kron(I, T)).tocsr()


def runner(step, p, x0, v, k, mode):
    if mode == "forward":
        return lambda: iterate(step.f, x0, p, k, f_vjp=step.f_vjp, adjoint="checkpoint",
                               checkpoints=1)
    if mode == "implicit":
        def run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                res = fixed_point(step.f, x0, p, f_vjp=step.f_vjp, maxiter=k,
                                  on_failure="warn")
                res.vjp(v, maxiter=k)
            return res
        return run

    def run():
        res = iterate(step.f, x0, p, k, f_vjp=step.f_vjp, f_inverse=step.f_inverse,
                      adjoint=mode)
        res.vjp(v)
        return res
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--large", action="store_true", help="also 1024² (slow, ~9 GB)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    sizes = [256] + ([1024] if args.large else [])
    modes = ["store", "checkpoint", "reconstruct", "implicit"]
    print("| grid | k | forward [s] | " + " | ".join(
        f"{m} time/fwd | {m} peak [iterates]" for m in modes) + " | reconstruct |")
    print("|" + "---|" * (4 + 2 * len(modes)))
    for N in sizes:
        A = poisson2d(N)
        n = A.shape[0]
        rng = np.random.default_rng(0)
        step = steps.Jacobi(A)
        p = step.params(0.8, b=rng.standard_normal(n))
        x0, v = rng.standard_normal(n), rng.standard_normal(n)
        step.f_inverse(step.f(x0, p), p)          # factorize once, outside the timings
        for k in (10, 100, 1000):
            cells, note = [], ""
            fwd = None
            for mode in ["forward"] + modes:
                fn = runner(step, p, x0, v, k, mode)
                if k == 10:
                    fn()                          # warm-up (JIT, caches)
                times, peaks = [], []
                for _ in range(args.repeat if k <= 100 else 1):
                    tracemalloc.start()
                    t0 = time.perf_counter()
                    res = fn()
                    times.append(time.perf_counter() - t0)
                    peaks.append(tracemalloc.get_traced_memory()[1] / x0.nbytes)
                    tracemalloc.stop()
                t = float(np.median(times))
                if mode == "forward":
                    fwd = t
                    continue
                cells += [f"{t / fwd:.2f}", f"{max(peaks):.1f}"]
                if mode == "reconstruct":
                    i = res.info
                    note = (f"fell back at step {i.fallback_step} (error "
                            f"{i.max_reconstruction_error:.1e})" if i.fell_back
                            else f"max error {i.max_reconstruction_error:.1e}")
            print(f"| {N}² | {k} | {fwd:.3f} | " + " | ".join(cells) + f" | {note} |",
                  flush=True)


if __name__ == "__main__":
    main()
