"""CPU regression check: the same benchmarks on two checkouts, alternating.

Runs a CG timing (one iteration with no preconditioner, Jacobi and AMG: the
marginal cost ``(t(2N) − t(N))/N`` of solves of N and 2N iterations, in which
set-up and the final verdict cancel, and ``t(N)/N``, which includes them) and
a direct-solver timing (factorize + solve, and the cold
gradient: a fresh cotangent each repeat) on an *old* and a *new* checkout of
the library, one after the other, for several rounds, so that both see the
same machine minutes. Each run is a fresh process importing the library from
its checkout (``PYTHONPATH``); the Numba cache is warmed before timing. Prints
the median over rounds of each figure and the ratio new/old.

Usage::

    git worktree add /tmp/old <old-commit>
    python benchmarks/bench_commits.py /tmp/old . --rounds 3 --sizes 64 256 1024
"""

import argparse
import os
import statistics
import subprocess
import sys

DIRECT = r"""
import sys, time
import numpy as np, scipy.sparse as sp
import sparsediff as sd
k = int(sys.argv[1])
t = sp.diags_array([-1.0, 2.0, -1.0], offsets=[-1, 0, 1], shape=(k, k))
A = (sp.kron(sp.eye_array(k), t) + sp.kron(t, sp.eye_array(k))).tocsr()
rng = np.random.default_rng(0)
b = rng.standard_normal(A.shape[0])
sd.Solver(A, method="direct").solve(b).vjp(b)  # warm-up
fwd, grad = [], []
for _ in range(5):
    t0 = time.perf_counter()
    sol = sd.Solver(A, method="direct").solve(b)
    t1 = time.perf_counter()
    sol.vjp(rng.standard_normal(A.shape[0]))
    t2 = time.perf_counter()
    fwd.append(t1 - t0)
    grad.append(t2 - t1)
print(f"DIRECT {k} {min(fwd) * 1e3:.4f} {min(grad) * 1e3:.4f}")
"""


CG = r"""
import sys, time
import numpy as np, scipy.sparse as sp
import sparsediff as sd
k = int(sys.argv[1])
t = sp.diags_array([-1.0, 2.0, -1.0], offsets=[-1, 0, 1], shape=(k, k))
A = (sp.kron(sp.eye_array(k), t) + sp.kron(t, sp.eye_array(k))).tocsr()
b = np.random.default_rng(0).standard_normal(A.shape[0])
for M in (None, "jacobi", "amg"):
    N = 12 if M == "amg" else 100
    best, ran = {}, {}
    for its in (N, 2 * N):
        s = sd.Solver(A, method="cg", M=M, rtol=1e-30, maxiter=its, on_failure="nan")
        ran[its] = s.solve(b).info.iterations  # warm-up; iterations actually run
        best[its] = min(_timed(s, b) for _ in range(7))
    marginal = (best[2 * N] - best[N]) / (ran[2 * N] - ran[N])
    print(f"CG {k} {M or 'none'} {marginal * 1e3:.5f} {best[N] / ran[N] * 1e3:.5f}")
"""

_TIMED = r"""
def _timed(s, b):
    t0 = time.perf_counter()
    s.solve(b)
    return time.perf_counter() - t0
"""


def run(tree, args, sizes):
    """The figures of one checkout: CG per iteration, marginal ((t(2N) − t(N))/N,
    set-up and verdict cancel) and per solve (t(N)/N, everything included), and
    the direct solver."""
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    out = {}
    for k in sizes:
        text = subprocess.run([sys.executable, "-c", _TIMED + CG, str(k)], env=env,
                              capture_output=True, text=True, check=True).stdout
        for line in text.splitlines():
            _, kk, M, marginal, total = line.split()
            out[f"cg iteration {kk}² M={M}"] = float(marginal)
            out[f"cg solve/N {kk}² M={M}"] = float(total)
    for k in args.direct:
        text = subprocess.run([sys.executable, "-c", DIRECT, str(k)], env=env,
                              capture_output=True, text=True, check=True).stdout
        _, kk, f, g = text.split()
        out[f"direct fwd {kk}²"] = float(f)
        out[f"direct grad (cold) {kk}²"] = float(g)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="*", default=[64, 256, 1024])
    ap.add_argument("--direct", type=int, nargs="*", default=[128, 256])
    args = ap.parse_args()
    runs = {"old": [], "new": []}
    for tree in (args.old, args.new):  # warm both Numba caches
        run(tree, argparse.Namespace(direct=[]), [16])
    for r in range(args.rounds):
        order = ("old", "new") if r % 2 == 0 else ("new", "old")
        for name in order:
            runs[name].append(run(getattr(args, name), args, args.sizes))
            print(f"round {r + 1}: {name} done", file=sys.stderr, flush=True)
    print(f"{args.rounds} rounds, alternating; medians in ms\n")
    print("| figure | old ms | new ms | new/old |")
    print("|---|---:|---:|---:|")
    for key in runs["old"][0]:
        old = statistics.median(x[key] for x in runs["old"])
        new = statistics.median(x[key] for x in runs["new"])
        print(f"| {key} | {old:.4g} | {new:.4g} | {new / old:.3f} |")


if __name__ == "__main__":
    main()
