"""GPU benchmark of the CuPy backend, against the bandwidth floor and cupyx.

Run by ``benchmarks/gpu/run.sh`` on a GPU machine; writes a Markdown table.
Every figure is a median of CUDA-event timings with the device synchronized,
after a warm-up (kernel compilation). Sections that fail print their error
and the run goes on, so that one table shows what works.

* **CG iteration** on 2-D Poisson (5-point, float64, int32 indices) at 1024²,
  2048², 4096²: ``(t(2N) − t(N)) / N`` for solves of ``N`` and ``2N``
  iterations (``rtol = 1e-30``), which removes set-up and the final
  verdict. Against the **floor**, the bytes one iteration must move (the
  SpMV's values, indices, row pointers, gathered and written vectors, and
  the vector updates and reductions) divided by the measured device-to-device
  copy bandwidth, and against ``cupyx.scipy.sparse.linalg.cg`` timed the
  same way.
* **Gradient**: ``Solver(A, method="cg", M="jacobi")`` forward and cold VJP
  (a fresh cotangent each repeat), and their ratio.
* **sparse_outer**: effective GB/s over the bytes it must move.

Usage::

    python3 benchmarks/gpu/bench_gpu.py --out results_gpu.md [--sizes 1024 2048]
"""

import argparse
import statistics
import sys
import traceback

import numpy as np
import scipy.sparse as sp


def _poisson(k):
    t = sp.diags_array([-1.0, 2.0, -1.0], offsets=[-1, 0, 1], shape=(k, k))
    A = (sp.kron(sp.eye_array(k), t) + sp.kron(t, sp.eye_array(k))).tocsr()
    A.indices = A.indices.astype(np.int32)
    A.indptr = A.indptr.astype(np.int32)
    return A


def _time(cupy, fn, repeat=5):
    """Median seconds of ``fn()`` over ``repeat`` runs (CUDA events)."""
    fn()
    times = []
    for _ in range(repeat):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return statistics.median(times)


def copy_bandwidth(cupy):
    """Device-to-device copy bandwidth in bytes/s (read + write counted)."""
    a = cupy.ones(2 ** 27, dtype=np.float64)  # 1 GiB
    b = cupy.empty_like(a)
    t = _time(cupy, lambda: b.__setitem__(slice(None), a), repeat=10)
    return 2 * a.nbytes / t


def cg_floor_bytes(A):
    """Bytes one unpreconditioned CG iteration must move (float64, int32)."""
    n, nnz = A.shape[0], A.nnz
    spmv = nnz * (8 + 4) + (n + 1) * 4 + n * 8 + n * 8  # values, indices, ptr, x, y
    vectors = 8 * n * (2 + 6 + 3)  # pᴴq reads p, q; x, r update; p = z + βp
    return spmv + vectors


def bench_cg(cupy, csp, cspl, sd, k, bw, rows):
    A = _poisson(k)
    Ad = csp.csr_matrix(A)
    b = cupy.asarray(np.random.default_rng(0).standard_normal(A.shape[0]))
    N = 100

    def ours(its):
        solver = sd.Solver(Ad, method="cg", rtol=1e-30, maxiter=its, on_failure="nan")
        return lambda: solver.solve(b)

    def theirs(its):
        return lambda: cspl.cg(Ad, b, tol=1e-30, maxiter=its)

    per = {}
    for name, make in (("sparsediff", ours), ("cupyx", theirs)):
        t1 = _time(cupy, make(N), repeat=3)
        t2 = _time(cupy, make(2 * N), repeat=3)
        per[name] = (t2 - t1) / N
    floor = cg_floor_bytes(A) / bw
    rows.append((f"CG iteration {k}² (µs)", f"{per['sparsediff'] * 1e6:.1f}",
                 f"floor {floor * 1e6:.1f}; cupyx {per['cupyx'] * 1e6:.1f}",
                 f"{per['sparsediff'] / floor:.2f}× floor; "
                 f"{per['cupyx'] / per['sparsediff']:.2f}× faster than cupyx"))


def bench_gradient(cupy, csp, sd, k, rows):
    A = _poisson(k)
    Ad = csp.csr_matrix(A)
    rng = np.random.default_rng(1)
    b = cupy.asarray(rng.standard_normal(A.shape[0]))
    solver = sd.Solver(Ad, method="cg", M="jacobi", rtol=1e-8)
    fwd = _time(cupy, lambda: solver.solve(b), repeat=3)
    sol = solver.solve(b)
    gs = [cupy.asarray(rng.standard_normal(A.shape[0])) for _ in range(5)]
    it = iter(gs)
    grad = _time(cupy, lambda: sol.vjp(next(it)), repeat=3)  # cold: fresh cotangent
    rows.append((f"CG+Jacobi {k}² forward / gradient (s)", f"{fwd:.4f}",
                 f"gradient {grad:.4f}", f"gradient/forward {grad / fwd:.2f}"))


def bench_outer(cupy, csp, sd, k, rows):
    A = _poisson(k)
    Ad = csp.csr_matrix(A)
    rng = np.random.default_rng(2)
    u = cupy.asarray(rng.standard_normal(A.shape[0]))
    v = cupy.asarray(rng.standard_normal(A.shape[0]))
    t = _time(cupy, lambda: sd.sparse_outer(Ad, u, v))
    moved = A.nnz * (4 + 8 + 8 + 8) + (A.shape[0] + 1) * 4  # idx, out, gathers
    rows.append((f"sparse_outer {k}² (GB/s)", f"{moved / t / 1e9:.0f}",
                 f"{t * 1e3:.3f} ms", "goal ≥ 2000 GB/s at 2048²"))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results_gpu.md")
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    args = p.parse_args()
    import cupy
    import cupyx.scipy.sparse as csp
    import cupyx.scipy.sparse.linalg as cspl

    import sparsediff as sd

    rows = []
    bw = copy_bandwidth(cupy)
    rows.append(("device copy bandwidth (GB/s)", f"{bw / 1e9:.0f}", "", ""))
    for k in args.sizes:
        for name, fn, fargs in (("cg", bench_cg, (cupy, csp, cspl, sd, k, bw, rows)),
                                ("gradient", bench_gradient, (cupy, csp, sd, k, rows)),
                                ("outer", bench_outer, (cupy, csp, sd, k, rows))):
            try:
                fn(*fargs)
            except Exception as exc:  # noqa: BLE001 - report and go on
                traceback.print_exc()
                rows.append((f"{name} {k}²", "failed", type(exc).__name__, str(exc)[:80]))
            print(rows[-1], flush=True)
    dev = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    lines = [f"# GPU results: {dev}", "", "| figure | value | detail | ratio |",
             "|---|---:|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    text = "\n".join(lines) + "\n"
    with open(args.out, "w") as f:
        f.write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
