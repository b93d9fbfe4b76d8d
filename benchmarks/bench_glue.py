"""Autograd glue against its peers: forward and forward+backward on 2-D Poisson.

PyTorch: ``sparsediff.torch.solve`` vs torchsparsegradutils
(``sparse_generic_solve``, its default MINRES), torch-sla (``spsolve``, SciPy
LU backend) and dense ``torch.linalg.solve`` (smallest size only: its gradient
with respect to A is a dense n×n matrix).
JAX: ``sparsediff.jax.solve`` vs ``jax.experimental.sparse.linalg.spsolve``,
``jax.scipy.sparse.linalg.cg`` and lineax CG (both on a BCSR matvec).

The loss is ``L = Σ w·x`` with gradients with respect to A's stored values and
to ``b``. Every (method, size) runs in its own subprocess, warmed up once
(JIT compilation, Numba caches) and then timed ``--repeat`` times (median).
Memory is the peak increase of the process's resident set size (psutil,
sampled every 2 ms) over the warmed-up baseline during one call, measured in a
second process with glibc's mmap threshold fixed so that freed blocks leave
the RSS (never in the timed process: that setting makes every large
allocation an mmap with its page faults, and triples the time of
allocation-heavy methods such as CG + AMG): it sees
torch, JAX, NumPy and SuperLU allocations alike (tracemalloc sees only
NumPy's, and nothing of torch's). ``err`` is ``‖x − x_ref‖/‖x_ref‖``
against SciPy's ``spsolve``.

Usage::

    python benchmarks/bench_glue.py                  # sizes 64 128 256 512
    python benchmarks/bench_glue.py --sizes 64 128 --repeat 5
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
import scipy.sparse as sp

if __name__ == "__main__":  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TORCH_METHODS = ["sparsediff.torch", "torchsparsegradutils", "torch-sla",
                 "torch.linalg.solve (dense)"]
JAX_METHODS = ["sparsediff.jax", "jax spsolve", "jax cg", "lineax CG"]
DENSE_MAX_N = 64 * 64
ITERATIVE_RTOL = 1e-8


def poisson(k):
    """5-point Laplacian on a k×k grid (n = k²), CSR float64."""
    t = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(k, k))
    eye = sp.identity(k)
    return sp.csr_array(sp.kron(t, eye) + sp.kron(eye, t))


class PeakRSS:
    """Peak resident-set increase during a ``with`` block (sampled)."""

    def __init__(self, interval=0.002):
        import psutil

        self._proc = psutil.Process()
        self.interval = interval

    def __enter__(self):
        self.base = self._proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self.peak = max(self.peak, self._proc.memory_info().rss)
        self._stop.set()
        self._thread.join()
        self.delta = max(self.peak - self.base, 0)


def _measure_time(fn, repeat):
    fn()  # warm-up: JIT compilation, caches
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _measure_memory(fn):
    fn()  # warm-up
    with PeakRSS() as mem:
        fn()
    return mem.delta


# ---------------------------------------------------------------------------
# workers (one method, one size, in a fresh process)
# ---------------------------------------------------------------------------


def _torch_case(method, A, b_np, w_np):
    import torch

    n = A.shape[0]
    indptr, indices = torch.from_numpy(A.indptr.astype(np.int64)), torch.from_numpy(
        A.indices.astype(np.int64))
    vals0 = torch.from_numpy(A.data.copy())
    b0, w = torch.from_numpy(b_np.copy()), torch.from_numpy(w_np)

    if method == "sparsediff.torch":
        import sparsediff.torch as sdt

        def run(v, b):
            return sdt.solve(v, b)

        vals0 = torch.sparse_csr_tensor(indptr, indices, vals0, (n, n))
    elif method == "torchsparsegradutils":
        import torchsparsegradutils as tsgu

        def run(v, b):
            return tsgu.sparse_generic_solve(v, b.reshape(n, 1)).reshape(n)

        vals0 = torch.sparse_csr_tensor(indptr, indices, vals0, (n, n))
    elif method == "torch-sla":
        import torch_sla

        coo = A.tocoo()
        row, col = torch.from_numpy(coo.row.astype(np.int64)), torch.from_numpy(
            coo.col.astype(np.int64))
        vals0 = torch.from_numpy(coo.data.copy())

        def run(v, b):
            return torch_sla.spsolve(v, row, col, (n, n), b, backend="scipy",
                                     method="lu")
    elif method == "torch.linalg.solve (dense)":
        if n > DENSE_MAX_N:
            return None
        dense0 = torch.from_numpy(A.toarray())
        vals0 = dense0

        def run(v, b):
            return torch.linalg.solve(v, b)
    else:
        raise ValueError(method)

    def fwd():
        with torch.no_grad():
            return run(vals0, b0)

    def fwd_bwd():
        # a leaf A (sparse CSR tensor, values tensor or dense matrix): torch's
        # own CSR constructor has a backward that densifies, so it is kept out
        v = vals0.detach().clone().requires_grad_()
        b = b0.clone().requires_grad_()
        x = run(v, b)
        (x * w).sum().backward()
        return x

    return fwd, fwd_bwd, lambda: fwd().detach().numpy()


def _jax_case(method, A, b_np, w_np):
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    from jax.experimental import sparse as jsparse

    n = A.shape[0]
    data0 = jnp.asarray(A.data)
    indices, indptr = jnp.asarray(A.indices), jnp.asarray(A.indptr)
    b0, w = jnp.asarray(b_np), jnp.asarray(w_np)

    def bcsr(d):
        return jsparse.BCSR((d, indices, indptr), shape=(n, n))

    if method == "sparsediff.jax":
        import sparsediff.jax as sdj

        def run(d, b):
            return sdj.solve((d, indices, indptr), b)
    elif method == "jax spsolve":
        from jax.experimental.sparse.linalg import spsolve

        def run(d, b):
            return spsolve(d, indices, indptr, b, tol=0)
    elif method == "jax cg":
        def run(d, b):
            M = bcsr(d)
            return jax.scipy.sparse.linalg.cg(lambda x: M @ x, b, tol=ITERATIVE_RTOL,
                                              maxiter=10 * n)[0]
    elif method == "lineax CG":
        import lineax as lx

        def run(d, b):
            M = bcsr(d)
            op = lx.FunctionLinearOperator(lambda x: M @ x,
                                           jax.ShapeDtypeStruct((n,), b.dtype),
                                           tags=lx.positive_semidefinite_tag)
            return lx.linear_solve(op, b, lx.CG(rtol=ITERATIVE_RTOL, atol=0.0,
                                                max_steps=10 * n)).value
    else:
        raise ValueError(method)

    if method == "sparsediff.jax":
        # every timed call must factorize: drop the factorization that the
        # previous call left in the callback cache (the backward pass of the
        # same call still finds its forward factorization there)
        fresh = sdj._CACHE.clear
    else:
        def fresh():
            pass

    fwd_j = jax.jit(run)
    grad_j = jax.jit(jax.grad(lambda d, b: jnp.sum(run(d, b) * w), argnums=(0, 1)))

    def fwd():
        fresh()
        return fwd_j(data0, b0).block_until_ready()

    def fwd_bwd():
        fresh()
        return jax.block_until_ready(grad_j(data0, b0))

    return fwd, fwd_bwd, lambda: np.asarray(fwd())


def worker(method, k, repeat, mode):
    A = poisson(k)
    rng = np.random.default_rng(0)
    b, w = rng.standard_normal(A.shape[0]), rng.standard_normal(A.shape[0])
    x_ref = sp.linalg.spsolve(sp.csc_array(A), b)
    try:
        case = (_torch_case if method in TORCH_METHODS else _jax_case)(method, A, b, w)
    except ImportError as exc:
        return {"skip": f"not installed ({exc.name})"}
    if case is None:
        return {"skip": "dense n×n (small n only)"}
    fwd, fwd_bwd, value = case
    if mode == "memory":
        return {"mem_fwd": _measure_memory(fwd), "mem_fwd_bwd": _measure_memory(fwd_bwd)}
    t_f = _measure_time(fwd, repeat)
    t_fb = _measure_time(fwd_bwd, repeat)
    x = value()
    err = float(np.linalg.norm(x - x_ref) / np.linalg.norm(x_ref))
    return {"fwd": t_f, "fwd_bwd": t_fb, "err": err}


# ---------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------


def _run_worker(method, k, repeat, timeout):
    """Time in one process, memory in another: see :func:`_run_mode`."""
    out = _run_mode(method, k, repeat, timeout, "time")
    if "skip" not in out:
        mem = _run_mode(method, k, repeat, timeout, "memory")
        if "skip" in mem:
            return mem
        out.update(mem)
    return out


def _run_mode(method, k, repeat, timeout, mode):
    cmd = [sys.executable, __file__, "--worker", method, str(k), "--repeat", str(repeat),
           "--mode", mode]
    env = dict(os.environ)
    if mode == "memory":
        # a fixed mmap threshold makes glibc return large blocks to the OS on
        # free, so that the RSS of each call shows its own allocations. Never
        # while timing: every large allocation then costs an mmap and its page
        # faults (measured: CG + AMG at 256² 0.30 s → 0.79 s), which punishes
        # allocation-heavy methods out of proportion
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                             env=env)
    except subprocess.TimeoutExpired:
        return {"skip": f"timeout > {timeout} s"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode or not lines:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        return {"skip": f"failed: {last[:80]}"}
    return json.loads(lines[-1])


def _fmt_time(t):
    return f"{t * 1e3:.1f} ms" if t < 1 else f"{t:.2f} s"


def _fmt_mem(b):
    return f"{b / 2**20:.0f} MiB"


def table(title, methods, sizes, repeat, timeout):
    lines = [f"### {title}", "",
             "| grid | n | method | forward | fwd+bwd | ratio fwd+bwd | peak RSS fwd | "
             "peak RSS fwd+bwd | err vs spsolve |",
             "|---|---|---|---|---|---|---|---|---|"]
    timed_out = {}                       # method -> the size it first timed out at
    for k in sizes:
        results = {}
        for m in methods:
            if m in timed_out:           # the cost grows with n: do not wait again
                results[m] = {"skip": f"timeout > {timeout} s at {timed_out[m]}² already"}
                continue
            results[m] = _run_worker(m, k, repeat, timeout)
            if results[m].get("skip", "").startswith("timeout"):
                timed_out[m] = k
        ref = results[methods[0]].get("fwd_bwd")
        for m in methods:
            r = results[m]
            if "skip" in r:
                lines.append(f"| {k}² | {k * k} | {m} | – | – | – | – | – | {r['skip']} |")
                continue
            ratio = f"{r['fwd_bwd'] / ref:.2f}×" if ref else "–"
            lines.append(
                f"| {k}² | {k * k} | {m} | {_fmt_time(r['fwd'])} | "
                f"{_fmt_time(r['fwd_bwd'])} | {ratio} | {_fmt_mem(r['mem_fwd'])} | "
                f"{_fmt_mem(r['mem_fwd_bwd'])} | {r['err']:.1e} |")
        print("\n".join(lines[-len(methods):]), flush=True)
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--timeout", type=int, default=600)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__),
                                                 "results_glue.md"))
    p.add_argument("--only", choices=["torch", "jax"], default=None,
                   help="run one of the two tables")
    p.add_argument("--worker", nargs=2, metavar=("METHOD", "K"))
    p.add_argument("--mode", choices=["time", "memory"], default="time")
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.repeat,
                                args.mode)))
        return
    import platform

    head = ["# Autograd glue benchmark: 2-D Poisson", "",
            f"Python {platform.python_version()}, {os.cpu_count()} CPU cores, "
            f"{platform.machine()}; median of {args.repeat} after one warm-up; "
            f"ratio: fwd+bwd time over the first row of the same size. Peak RSS: "
            f"increase of the process RSS during one call (psutil, 2 ms sampling). "
            f"Iterative peers at rtol = {ITERATIVE_RTOL:g}; torchsparsegradutils "
            f"uses its default MINRES and tolerances.", ""]
    parts = []
    if args.only in (None, "torch"):
        parts += [table("PyTorch (CPU)", TORCH_METHODS, args.sizes, args.repeat,
                        args.timeout), ""]
    if args.only in (None, "jax"):
        parts += [table("JAX (CPU, jit, float64)", JAX_METHODS, args.sizes,
                        args.repeat, args.timeout), ""]
    text = "\n".join(head + parts)
    with open(args.out, "w") as fh:
        fh.write(text)
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
