"""Batches of systems on one pattern: `sd.BatchedSolver` against a Python loop
over `sd.Solver` and the peers, forward and forward + gradient.

Problem: B 2-D diffusion matrices on a k×k grid (5-point stencil, Dirichlet),
face coefficients ``exp(N(0, 1))`` drawn per element, float64, one
right-hand side per element, loss ``L = Σ_e ⟨g_e, x_e⟩`` with a fresh
cotangent ``g`` for every repetition (cold gradients). Gradients are with
respect to the values ``(B, nnz)`` and ``b``.

Methods (a peer that is not installed is skipped with a message):

* ``sd.BatchedSolver`` (direct): one ordering for the pattern, B
  factorizations over a thread pool, adjoints on the same factors;
* loop over ``sd.Solver``: one ``Solver`` (and ordering) per element;
* torch-sla ``spsolve_batch_same_layout`` with ``.backward()`` (its CPU
  batch runs CG; compared with ``sd.BatchedSolver(method="cg", M="jacobi")``);
* klujax ``solve`` on values ``(B, nnz)`` (its batched call) under
  ``jax.jit(jax.value_and_grad)``;
* ``jax.vmap`` over ``jax.experimental.sparse.linalg.spsolve`` (sequential
  host callbacks), at the smaller sizes only.

Usage::

    python benchmarks/bench_batched.py                       # 32², 64²; B = 16, 64
    python benchmarks/bench_batched.py --sizes 32 64 128 --batches 16 64 256
    python benchmarks/bench_batched.py --save benchmarks/results_batched.md
    python benchmarks/bench_batched.py --krylov --sizes 64 --batches 16 64

``--krylov`` measures the batched Krylov path instead: ``sd.BatchedSolver``
with CG + AMG, CG + Jacobi and GMRES + AMG (``rtol = 1e-8``) against a loop
over ``sd.Solver`` with the same method and preconditioner, and prints the
loop's time over the batch's for each.
"""

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np
import scipy.sparse as sp

if __name__ == "__main__":  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sparsediff as sd  # noqa: E402


def problem(k, B, seed=0):
    """Pattern (CSR), values (B, nnz) and right-hand sides (B, n)."""
    rng = np.random.default_rng(seed)
    n = k * k
    idx = np.arange(n).reshape(k, k)
    rows, cols = [], []
    for di, dj in ((0, 1), (1, 0)):
        a, c = idx[: k - di, : k - dj].ravel(), idx[di:, dj:].ravel()
        rows += [a, c]
        cols += [c, a]
    rows = np.concatenate(rows + [np.arange(n)])
    cols = np.concatenate(cols + [np.arange(n)])
    A = sp.csr_array((np.ones(rows.size), (rows, cols)), shape=(n, n))
    A.sort_indices()
    r = np.repeat(np.arange(n), np.diff(A.indptr))
    off = r != A.indices
    data = np.empty((B, A.nnz))
    for e in range(B):
        w = np.exp(rng.standard_normal(n))
        v = -(w[r] + w[A.indices]) / 2
        v[~off] = 0
        diag = -np.bincount(r, weights=v, minlength=n) + 1.0 / k  # Dirichlet-like
        v[~off] = diag[r[~off]]
        data[e] = v
    b = rng.standard_normal((B, n))
    return A, data, b


def timed(fn, repeat):
    fn()  # warm-up
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def timed_split(fwd, grad, repeat):
    """Medians of the forward and of the gradient alone, timed in the same
    repetitions (``grad(sol)`` with a fresh cotangent each time)."""
    grad(fwd())  # warm-up
    tf, tg = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        sol = fwd()
        t1 = time.perf_counter()
        grad(sol)
        tf.append(t1 - t0)
        tg.append(time.perf_counter() - t1)
    return statistics.median(tf), statistics.median(tg)


def bench_batched(A, data, b, rng):
    def fwd():
        return sd.BatchedSolver(A, data).solve(b)

    def grad(sol):
        sol.vjp(rng.standard_normal(b.shape))

    def both():
        grad(fwd())

    return fwd, both, grad


def bench_batched_cg(A, data, b, rng):
    def fwd():
        return sd.BatchedSolver(A, data, method="cg", M="jacobi", rtol=1e-10).solve(b)

    def grad(sol):
        sol.vjp(rng.standard_normal(b.shape))

    def both():
        grad(fwd())

    return fwd, both, grad


def bench_loop(A, data, b, rng):
    mats = [sp.csr_array((d, A.indices, A.indptr), shape=A.shape) for d in data]

    def fwd():
        return [sd.Solver(M, method="direct").solve(b[e]) for e, M in enumerate(mats)]

    def grad(sols):
        g = rng.standard_normal(b.shape)
        for e, sol in enumerate(sols):
            sol.vjp(g[e])

    def both():
        grad(fwd())

    return fwd, both, grad


def bench_torch_sla(A, data, b, rng):
    import torch
    import torch_sla

    coo = A.tocoo()
    row = torch.tensor(coo.row.astype(np.int64))
    col = torch.tensor(coo.col.astype(np.int64))
    vals0 = torch.tensor(data)
    b0 = torch.tensor(b)

    def fwd():
        with torch.no_grad():
            return torch_sla.spsolve_batch_same_layout(vals0, row, col, A.shape, b0,
                                                       method="cg", atol=1e-10)

    def both():
        v = vals0.clone().requires_grad_()
        bb = b0.clone().requires_grad_()
        x = torch_sla.spsolve_batch_same_layout(v, row, col, A.shape, bb, method="cg",
                                                atol=1e-10)
        (x * torch.tensor(rng.standard_normal(b.shape))).sum().backward()

    return fwd, both


def bench_klujax(A, data, b, rng):
    import jax
    import jax.numpy as jnp
    import klujax

    jax.config.update("jax_enable_x64", True)
    coo = A.tocoo()
    Ai = jnp.array(coo.row, dtype=jnp.int32)
    Aj = jnp.array(coo.col, dtype=jnp.int32)
    Ax, bj = jnp.array(data), jnp.array(b)
    f = jax.jit(lambda Ax, b: klujax.solve(Ai, Aj, Ax, b))
    loss = jax.jit(jax.value_and_grad(
        lambda Ax, b, g: jnp.sum(g * klujax.solve(Ai, Aj, Ax, b)), argnums=(0, 1)))

    def fwd():
        return f(Ax, bj).block_until_ready()

    def both():
        v, (ga, gb) = loss(Ax, bj, jnp.array(rng.standard_normal(b.shape)))
        ga.block_until_ready()

    return fwd, both


def bench_jax_spsolve(A, data, b, rng):
    import jax
    import jax.numpy as jnp
    from jax.experimental.sparse.linalg import spsolve

    jax.config.update("jax_enable_x64", True)
    ind, ptr = jnp.array(A.indices), jnp.array(A.indptr)
    solve = jax.vmap(lambda d, bb: spsolve(d, ind, ptr, bb))
    f = jax.jit(solve)
    loss = jax.jit(jax.value_and_grad(
        lambda d, bb, g: jnp.sum(g * solve(d, bb)), argnums=(0, 1)))
    Ax, bj = jnp.array(data), jnp.array(b)

    def fwd():
        return f(Ax, bj).block_until_ready()

    def both():
        v, (ga, gb) = loss(Ax, bj, jnp.array(rng.standard_normal(b.shape)))
        ga.block_until_ready()

    return fwd, both


KRYLOV = [("cg", "amg"), ("cg", "jacobi"), ("gmres", "amg")]


def bench_krylov_pair(A, data, b, rng, method, M):
    """``(fwd, both)`` of the batch and of the loop, one method and ``M``."""
    mats = [sp.csr_array((d, A.indices, A.indptr), shape=A.shape) for d in data]

    def bfwd():
        return sd.BatchedSolver(A, data, method=method, M=M, rtol=1e-8).solve(b)

    def bboth():
        bfwd().vjp(rng.standard_normal(b.shape))

    def lfwd():
        return [sd.Solver(Me, method=method, M=M, rtol=1e-8).solve(b[e])
                for e, Me in enumerate(mats)]

    def lboth():
        g = rng.standard_normal(b.shape)
        for e, sol in enumerate(lfwd()):
            sol.vjp(g[e])

    return (bfwd, bboth), (lfwd, lboth)


def main_krylov(args):
    rng = np.random.default_rng(1)
    lines = [
        "| grid | B | method | batched fwd | batched fwd+grad | loop fwd | "
        "loop fwd+grad | loop / batched (fwd, fwd+grad) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k in args.sizes:
        for B in args.batches:
            A, data, b = problem(k, B)
            for method, M in KRYLOV:
                (bf, bb), (lf, lb) = bench_krylov_pair(A, data, b, rng, method, M)
                t = [timed(f, args.repeat) for f in (bf, bb, lf, lb)]
                line = (f"| {k}² | {B} | {method}+{M} | {fmt(t[0])} | {fmt(t[1])} | "
                        f"{fmt(t[2])} | {fmt(t[3])} | {t[2] / t[0]:.2f}×, "
                        f"{t[3] / t[1]:.2f}× |")
                lines.append(line)
                print(line, flush=True)
    head = (f"{datetime.date.today()}, Python {platform.python_version()}, "
            f"{os.cpu_count()} CPU cores ({platform.machine()}), sparsediff "
            f"{sd.__version__}; median of {args.repeat} after one warm-up; "
            f"rtol 1e-8; loop / batched > 1: the batch is faster.\n")
    table = head + "\n" + "\n".join(lines) + "\n"
    if args.save:
        with open(args.save, "w") as fh:
            fh.write(table)
    return table


METHODS = [
    ("sd.BatchedSolver", bench_batched, None),
    ("loop over sd.Solver", bench_loop, None),
    ("klujax (batched values)", bench_klujax, None),
    ("jax.vmap(spsolve)", bench_jax_spsolve, 64 * 64 * 16),  # n·B limit
    ("sd.BatchedSolver cg+jacobi, rtol 1e-10", bench_batched_cg, 64 * 64 * 16),
    # torch-sla's CPU batch is slow (≈ 30× ours at 32²): small sizes only
    ("torch-sla batch (its CPU batch is CG, atol 1e-10)", bench_torch_sla,
     32 * 32 * 16),
]


def fmt(t):
    return "–" if t is None else (f"{t * 1e3:.1f} ms" if t < 1 else f"{t:.2f} s")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    p.add_argument("--batches", type=int, nargs="+", default=[16, 64])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--save", default=None)
    p.add_argument("--krylov", action="store_true",
                   help="the batched Krylov rows against loops (see the module)")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    if args.krylov:
        return main_krylov(args)
    rng = np.random.default_rng(1)
    lines = [
        "| grid | B | method | forward | fwd+grad | grad/fwd | ×BatchedSolver (fwd+grad) |",
        "|---|---|---|---|---|---|---|",
    ]
    for k in args.sizes:
        for B in args.batches:
            A, data, b = problem(k, B)
            base = None
            for name, make, limit in METHODS:
                tg = None
                if limit is not None and k * k * B > limit:
                    row = (None, None, "skipped at this size (too slow)")
                else:
                    try:
                        fwd, both, *grad = make(A, data, b, rng)
                        tf = timed(fwd, args.repeat)
                        tb = timed(both, args.repeat)
                        # the gradient alone where it can be timed alone
                        tg = timed_split(fwd, grad[0], args.repeat) if grad else None
                        row = (tf, tb, None)
                    except ImportError as exc:
                        row = (None, None, f"not installed ({exc.name})")
                    except Exception as exc:  # noqa: BLE001 - a failing peer is reported
                        row = (None, None, f"failed: {type(exc).__name__}: "
                                           f"{str(exc)[:60]}")
                tf, tb, note = row
                if name == "sd.BatchedSolver":
                    base = tb
                ratio = "–" if tb is None or base is None else f"{tb / base:.2f}×"
                if tb is None:
                    gf = "–"
                elif tg is not None:
                    gf = f"{tg[1] / tg[0]:.2f}"
                else:
                    gf = f"{(tb - tf) / tf:.2f}*"
                cell = note if note else fmt(tb)
                line = (f"| {k}² | {B} | {name} | {fmt(tf)} | {cell} | {gf} | "
                        f"{ratio} |")
                lines.append(line)
                print(line, flush=True)
    head = (f"# Batched solves on one pattern\n\n{datetime.date.today()}, Python "
            f"{platform.python_version()}, {os.cpu_count()} CPU cores "
            f"({platform.machine()}), sparsediff {sd.__version__}; median of "
            f"{args.repeat} after one warm-up; ×: fwd+grad time over "
            f"sd.BatchedSolver's in the same run; grad/fwd: the gradient alone "
            f"over the forward, timed in the same repetitions (with *: from "
            f"two separate timings, fwd+grad − fwd, for peers whose gradient "
            f"cannot run alone).\n")
    table = head + "\n" + "\n".join(lines) + "\n"
    if args.save:
        with open(args.save, "w") as fh:
            fh.write(table)
    return table


if __name__ == "__main__":
    main()
