"""Neural acceleration against the classical methods it would replace.

A :class:`sparsediff.learn.DirectionNet` is trained once, on 32² grids (4
random-coefficient diffusion and 4 anisotropic diffusion matrices, ``k = 16``
steps of flexible CG, loss ``log(‖r_k‖/‖b‖)``), twice with the same time
budget: backpropagating through all ``k`` steps (``unrolled``) and through
segments of 4 steps with the state detached between them (``truncated``);
both are scored on the same held-out 32² problems. The unrolled one is then
used, unchanged, on held-out problems at 64², 128² and 256² (flexible CG,
``neural_cg``), against sparsediff's CG, CG + Jacobi and CG + AMG
(``sd.solve(A, b, method="cg", M=...)``, iterations from ``info``) and the
learned Woodbury preconditioner (``M = D + U Uᵀ``, rank 4, trained for each
size since its parameters are per unknown). The note's plain form (network
direction + exact line search, no orthogonalization, ``line_search_solve``)
is shown at 64² (capped at 1000 iterations). Everything runs in one process
with one PyTorch thread, to ``rtol = 1e-8``; wall times include each method's
set-up (AMG hierarchy, the network's edge weights), not training, which is
listed separately.

``--features`` compares instead the two node-feature sets of
``DirectionNet``: ``("r", "diag")`` and ``("x", "r", "b", "diag")`` (gains of
the message passing from ``x`` and ``b``), trained from the same seed for the
same number of Adam steps on the same problems, then scored in iterations to
``rtol = 1e-8`` on held-out 64² and 128² problems against CG and CG + Jacobi,
in one run.

Usage::

    python benchmarks/bench_neural.py                     # 6-15 min (256²: slow)
    python benchmarks/bench_neural.py --quick             # 32²/48² grids, short training
    python benchmarks/bench_neural.py --out benchmarks/results_neural.md
    python benchmarks/bench_neural.py --features --steps 30   # about 4 min
"""

import argparse
import io
import platform
import time
from contextlib import redirect_stdout

import numpy as np
import scipy.sparse as sp
import torch

import sparsediff as sd
from sparsediff.learn import (
    CSRPattern,
    DirectionNet,
    WoodburyPreconditioner,
    anisotropic_family,
    diffusion_family,
    line_search_solve,
    neural_cg,
    neural_cg_loss,
    train_direction_net,
    train_preconditioner,
)

torch.set_num_threads(1)
RTOL = 1e-8


def family(kind, nx, count, seed):
    make = diffusion_family if kind == "diffusion" else anisotropic_family
    A0, values = make(nx, count, seed=seed)
    return A0, values


def as_problem(A0, values):
    return torch.tensor(values), CSRPattern(A0.indptr, A0.indices, A0.shape)


def validation_loss(net, problems, k):
    out = 0.0
    for vals, pattern in problems:
        b = torch.tensor(np.random.default_rng(99).standard_normal(
            (vals.shape[0], pattern.shape[0])))
        with torch.no_grad():
            out += neural_cg_loss(net, (vals, pattern), b, k).item()
    return out / len(problems)


def train_nets(nx, k, budget, n_mat):
    train = [as_problem(*family("diffusion", nx, n_mat, 0)),
             as_problem(*family("anisotropic", nx, n_mat, 1))]
    held = [as_problem(*family("diffusion", nx, n_mat, 50)),
            as_problem(*family("anisotropic", nx, n_mat, 51))]
    rows, nets = [], {}
    for mode in ("unrolled", "truncated"):
        net = DirectionNet(8, 4, generator=torch.Generator().manual_seed(0))
        before = validation_loss(net, held, k)
        hist = train_direction_net(net, train, k, num_steps=10_000, lr=1e-2, mode=mode,
                                   truncate=4, time_budget=budget,
                                   generator=torch.Generator().manual_seed(1))
        after = validation_loss(net, held, k)
        seconds = hist[-1][0]
        rows.append((mode, len(hist), seconds, before, after, (before - after) / seconds))
        nets[mode] = (net, seconds, hist)
    return rows, nets


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def sd_cg(A, b, M):
    sol = sd.solve(A, b, method="cg", M=M, rtol=RTOL, on_failure="warn")
    return sol.info.iterations, bool(sol.info.converged)


def woodbury(A0, nx, steps):
    _, values = family("diffusion", nx, 4, 0)
    pattern = CSRPattern(A0.indptr, A0.indices, A0.shape)
    P = WoodburyPreconditioner(A0.shape[0], 4, diag=float(A0.diagonal().mean()),
                               generator=torch.Generator().manual_seed(0))
    _, seconds = timed(lambda: train_preconditioner(
        P, (torch.tensor(values), pattern), 20, num_steps=steps, lr=0.05,
        generator=torch.Generator().manual_seed(2)))
    return P.as_operator(), seconds


def evaluate(sizes, net, train_seconds, train_nx, wood_steps, plain_size):
    # warm-up: first-call costs (kernel compilation, imports) are not timed
    A0, values = family("diffusion", 16, 1, 0)
    for M in (None, "jacobi", "amg"):
        sd_cg(A0, np.ones(A0.shape[0]), M)
    neural_cg(A0, np.ones(A0.shape[0]), net)
    lines = []
    for nx in sizes:
        for kind in ("diffusion", "anisotropic"):
            if kind == "anisotropic" and nx == sizes[-1]:
                continue                     # the largest size: diffusion only (time)
            A0, values = family(kind, nx, 1, 1000 + nx)
            A = sp.csr_array((values[0], A0.indices, A0.indptr), shape=A0.shape)
            b = np.random.default_rng(nx).standard_normal(A.shape[0])
            res = []
            for name, M in (("CG", None), ("CG + Jacobi", "jacobi"), ("CG + AMG", "amg")):
                (its, ok), t = timed(sd_cg, A, b, M)
                res.append((name, its, ok, t, "-"))
            if kind == "diffusion":
                Mw, wsec = woodbury(A0, nx, wood_steps)
                (its, ok), t = timed(sd_cg, A, b, Mw)
                res.append(("CG + Woodbury (learned)", its, ok, t,
                            f"{wsec:.0f} s at {nx}²"))
            (x, info), t = timed(neural_cg, A, b, net, rtol=RTOL)
            res.append(("FCG + GNN (learned)", info.iterations, info.converged, t,
                        f"{train_seconds:.0f} s at {train_nx}² (once)"))
            if nx == plain_size:
                (x, info), t = timed(line_search_solve, A, b, net, rtol=RTOL, maxiter=1000)
                res.append(("GNN + line search only", info.iterations, info.converged, t,
                            "same net"))
            jac = res[1][1]
            for name, its, ok, t, cost in res:
                flag = "" if ok else " (not conv.)"
                lines.append(f"| {nx}² | {kind} | {name} | {its}{flag} | {its / jac:.2f} | "
                             f"{t:.3f} | {cost} |")
            print(f"evaluated {nx}² {kind}", flush=True)
    return lines


FEATURE_SETS = (("r", "diag"), ("x", "r", "b", "diag"))


def compare_features(steps, sizes, n_held, train_nx=32, k=16, n_mat=4, seed=0):
    """Both feature sets: same seed, same Adam steps, same problems; then the
    iterations to RTOL on ``n_held`` held-out problems per family and size."""
    train = [as_problem(*family("diffusion", train_nx, n_mat, 0)),
             as_problem(*family("anisotropic", train_nx, n_mat, 1))]
    held = [as_problem(*family("diffusion", train_nx, n_mat, 50)),
            as_problem(*family("anisotropic", train_nx, n_mat, 51))]
    nets, train_rows = {}, []
    for feats in FEATURE_SETS:
        net = DirectionNet(8, 4, features=feats,
                           generator=torch.Generator().manual_seed(seed))
        before = validation_loss(net, held, k)
        hist = train_direction_net(net, train, k, num_steps=steps, lr=1e-2,
                                   generator=torch.Generator().manual_seed(seed + 1))
        after = validation_loss(net, held, k)
        nets[feats] = net
        train_rows.append((feats, len(hist), hist[-1][0], before, after))
        print(f"trained {feats}: {hist[-1][0]:.0f} s, held-out loss {before:+.2f} -> "
              f"{after:+.2f}", flush=True)
    lines = []
    for nx in sizes:
        for kind in ("diffusion", "anisotropic"):
            A0, values = family(kind, nx, n_held, 1000 + nx)
            for i in range(n_held):
                A = sp.csr_array((values[i], A0.indices, A0.indptr), shape=A0.shape)
                b = np.random.default_rng(nx + i).standard_normal(A.shape[0])
                cells = [sd_cg(A, b, M)[0] for M in (None, "jacobi")]
                for feats in FEATURE_SETS:
                    _, info = neural_cg(A, b, nets[feats], rtol=RTOL)
                    cells.append(info.iterations if info.converged
                                 else f"{info.iterations} (not conv.)")
                lines.append(f"| {nx}² | {kind} | {i} | " + " | ".join(map(str, cells))
                             + " |")
                print(lines[-1], flush=True)
    return train_rows, lines


def main_features(args):
    t0 = time.perf_counter()
    train_rows, lines = compare_features(args.steps, (64, 128), args.held)
    print(f"\n### {time.strftime('%Y-%m-%d')}: node features, DirectionNet(8, 4), "
          f"{args.steps} Adam steps each (lr 1e-2, k = 16, 32², seed 0)\n")
    print("| features | steps | train s | held-out 32² loss before | after |")
    print("|---|---|---|---|---|")
    for feats, n, sec, before, after in train_rows:
        print(f"| {', '.join(feats)} | {n} | {sec:.0f} | {before:+.2f} | {after:+.2f} |")
    print(f"\nIterations to rtol = {RTOL:g}:\n")
    print("| grid | family | problem | CG | CG + Jacobi | " +
          " | ".join(f"FCG + GNN ({', '.join(f)})" for f in FEATURE_SETS) + " |")
    print("|---|---|---|---|---|---|---|")
    for line in lines:
        print(line)
    print(f"\n(whole run {time.perf_counter() - t0:.0f} s)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    parser.add_argument("--features", action="store_true",
                        help="compare the node-feature sets of DirectionNet instead")
    parser.add_argument("--steps", type=int, default=30,
                        help="Adam steps per network with --features")
    parser.add_argument("--held", type=int, default=2,
                        help="held-out problems per family and size with --features")
    args = parser.parse_args(argv)
    if args.features:
        return main_features(args)
    if args.quick:
        train_nx, k, budget, n_mat, sizes, wood_steps = 16, 12, 8.0, 2, (32, 48), 10
    else:
        train_nx, k, budget, n_mat, sizes, wood_steps = 32, 16, 75.0, 4, (64, 128, 256), 30

    buf = io.StringIO()
    rows, nets = train_nets(train_nx, k, budget, n_mat)
    net, seconds, hist = nets["unrolled"]
    lines = evaluate(sizes, net, seconds, train_nx, wood_steps, sizes[0])
    with redirect_stdout(buf):
        print(f"# Neural acceleration: results ({time.strftime('%Y-%m-%d')})\n")
        print(f"Machine: {platform.machine()}, {platform.system()} {platform.release()}, "
              f"Python {platform.python_version()}, torch {torch.__version__}, one "
              f"PyTorch thread. The machine is shared and noisy (2 cores, several "
              f"users): wall times are indicative, iteration counts are exact.\n")
        print(f"## Training (DirectionNet(8, 4), {train_nx}² grids, {n_mat} diffusion + "
              f"{n_mat} anisotropic matrices, k = {k}, Adam lr 1e-2, budget "
              f"{budget:.0f} s each)\n")
        print("| backprop | steps | seconds | held-out loss before | after | "
              "loss decrease per second |")
        print("|---|---|---|---|---|---|")
        for mode, steps, sec, before, after, rate in rows:
            print(f"| {mode} | {steps} | {sec:.0f} | {before:+.2f} | {after:+.2f} | "
                  f"{rate:.4f} |")
        print("\nThe loss is log(‖r_k‖/‖b‖) after k flexible-CG steps (lower is better).\n")
        print(f"## Held-out problems, iterations and wall time to rtol = {RTOL:g}\n")
        print("| grid | family | method | iterations | vs Jacobi | wall s "
              "| training cost |")
        print("|---|---|---|---|---|---|---|")
        for line in lines:
            print(line)
    text = buf.getvalue()
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
