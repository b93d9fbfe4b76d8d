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

Every library is warmed up first (JIT compilation, thread pools); the numbers
are medians of ``--repeat`` runs. Ratios are ``peer / sparsediff`` on
forward + gradient. A peer that cannot be imported or fails is skipped with a
message. Run::

    python benchmarks/bench_direct.py            # 128², 256², 512²
    python benchmarks/bench_direct.py --large    # and 1024²
    python benchmarks/bench_direct.py --save benchmarks/results_direct.md
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

    for name in ("jax", "torch", "torchsparsegradutils"):
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
    args = parser.parse_args(argv)
    sizes = args.sizes or ([128, 256, 512] + ([1024] if args.large else []))

    lines = []

    def emit(text=""):
        print(text, flush=True)
        lines.append(text)

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
