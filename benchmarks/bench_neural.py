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

``--features`` compares instead node-feature sets of ``DirectionNet``
(``--sets``, default ``r,xrb``: ``("r", "diag")`` against
``("x", "r", "b", "diag")``, gains of the message passing from ``x`` and
``b``), trained from the same seeds for the same number of Adam steps on the
same problems, then scored in iterations to ``rtol = 1e-8`` on held-out 64²
and 128² problems against CG and CG + Jacobi, in one run. ``--gmres`` trains
one network (``("r", "diag")``) and scores ``neural_gmres`` on nonsymmetric
64² convection-diffusion problems against sparsediff's restarted GMRES, alone
and with Jacobi or ILU.

Usage::

    python benchmarks/bench_neural.py                     # 6-15 min (256²: slow)
    python benchmarks/bench_neural.py --quick             # 32²/48² grids, short training
    python benchmarks/bench_neural.py --out benchmarks/results_neural.md
    python benchmarks/bench_neural.py --features --steps 20 --held 1   # ~10 min
    python benchmarks/bench_neural.py --gmres --steps 20               # ~2 min
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
    neural_gmres,
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


def convection_diffusion(nx, peclet, seed):
    """A held-out random-coefficient diffusion matrix ``K`` (``diffusion_family``)
    plus first-order upwind convection along a random direction, scaled so that
    the cell Péclet number is about ``peclet`` (``peclet`` times the mean
    off-diagonal conductance): nonsymmetric, an M-matrix."""
    A0, values = family("diffusion", nx, 1, seed)
    K = sp.csr_array((values[0], A0.indices, A0.indptr), shape=A0.shape)
    kappa = np.abs(K - sp.diags(K.diagonal())).sum() / (K.nnz - nx * nx)
    angle = np.random.default_rng(seed).uniform(0, 2 * np.pi)

    def upwind(v):     # v·∂u by first-order upwind differences, unit spacing
        if v >= 0:
            return v * sp.diags([-1.0, 1.0], [-1, 0], shape=(nx, nx))
        return v * sp.diags([-1.0, 1.0], [0, 1], shape=(nx, nx))

    eye = sp.eye(nx)
    U = sp.kron(eye, upwind(np.cos(angle))) + sp.kron(upwind(np.sin(angle)), eye)
    A = sp.csr_array(K + peclet * kappa * U)
    A.sort_indices()
    return A


def gmres_rows(net, nx, peclets, restart=30, maxiter=5000):
    """Iterations to RTOL of restarted GMRES (sparsediff's, none / Jacobi / ILU)
    and of flexible GMRES with the network, on convection-diffusion problems."""
    lines = []
    for peclet in peclets:
        A = convection_diffusion(nx, peclet, seed=2000 + nx)
        b = np.random.default_rng(7).standard_normal(A.shape[0])
        cells = []
        for M in (None, "jacobi", "ilu"):
            sol = sd.solve(A, b, method=("gmres", {"restart": restart}), M=M, rtol=RTOL,
                           maxiter=maxiter, on_failure="warn")
            cells.append(sol.info.iterations if sol.info.converged else -1)
        for proposer in (None, net):
            _, info = neural_gmres(A, b, proposer, rtol=RTOL, restart=restart,
                                   maxiter=maxiter)
            cells.append(info.iterations if info.converged else -1)
        lines.append(f"| {nx}² | {peclet:g} | " + " | ".join(map(str, cells)) + " |")
        print(lines[-1], flush=True)
    return lines


def main_gmres(args):
    t0 = time.perf_counter()
    train = [as_problem(*family("diffusion", 32, 4, 0)),
             as_problem(*family("anisotropic", 32, 4, 1))]
    net = DirectionNet(8, 4, generator=torch.Generator().manual_seed(0))
    hist = train_direction_net(net, train, 16, num_steps=args.steps, lr=1e-2,
                               generator=torch.Generator().manual_seed(1))
    print(f"trained {len(hist)} steps, {hist[-1][0]:.0f} s", flush=True)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lines = gmres_rows(net, 64, (0.1, 1, 10))
    print(f"\n### {time.strftime('%Y-%m-%d')}: nonsymmetric, restarted GMRES(30) "
          f"against flexible GMRES(30), iterations to rtol = {RTOL:g} (-1: not "
          f"converged in 5000)\n")
    print(f"DirectionNet(8, 4) trained for {len(hist)} Adam steps through flexible CG on "
          f"the SPD 32² families (it has never seen a nonsymmetric matrix). Problems: "
          f"a held-out random-coefficient diffusion matrix plus first-order upwind "
          f"convection at a random angle, cell Péclet number about Pe.\n")
    print("| grid | cell Pe | GMRES | GMRES + Jacobi | GMRES + ILU | FGMRES + Jacobi "
          "| FGMRES + GNN |")
    print("|---|---|---|---|---|---|---|")
    for line in lines:
        print(line)
    print(f"\n(whole run {time.perf_counter() - t0:.0f} s)")


FEATURE_SETS = {"r": ("r", "diag"), "xrb": ("x", "r", "b", "diag"),
                "rb": ("r", "b", "diag"), "xr": ("x", "r", "diag")}


def compare_features(steps, sizes, n_held, seeds, train_nx=32, k=16, n_mat=4,
                     gate_lr=None, sets=("r", "xrb")):
    """Both feature sets, for each training seed: same initialization (the gains
    start at 1), same right-hand sides, same Adam steps, same problems; then
    the iterations to RTOL on ``n_held`` held-out problems per family and size."""
    train = [as_problem(*family("diffusion", train_nx, n_mat, 0)),
             as_problem(*family("anisotropic", train_nx, n_mat, 1))]
    held = [as_problem(*family("diffusion", train_nx, n_mat, 50)),
            as_problem(*family("anisotropic", train_nx, n_mat, 51))]
    nets, train_rows = {}, []
    for seed in seeds:
        for feats in (FEATURE_SETS[name] for name in sets):
            net = DirectionNet(8, 4, features=feats,
                               generator=torch.Generator().manual_seed(seed))
            before = validation_loss(net, held, k)
            hist = train_direction_net(net, train, k, num_steps=steps, lr=1e-2,
                                       gate_lr=gate_lr,
                                       generator=torch.Generator().manual_seed(seed + 1))
            after = validation_loss(net, held, k)
            nets[seed, feats] = net
            train_rows.append((seed, feats, len(hist), hist[-1][0], before, after))
            print(f"trained seed {seed} {feats}: {hist[-1][0]:.0f} s, held-out loss "
                  f"{before:+.2f} -> {after:+.2f}", flush=True)
    lines, totals = [], np.zeros(2 + len(seeds) * len(sets), dtype=int)
    for nx in sizes:
        for kind in ("diffusion", "anisotropic"):
            A0, values = family(kind, nx, n_held, 1000 + nx)
            for i in range(n_held):
                A = sp.csr_array((values[i], A0.indices, A0.indptr), shape=A0.shape)
                b = np.random.default_rng(nx + i).standard_normal(A.shape[0])
                cells = [sd_cg(A, b, M)[0] for M in (None, "jacobi")]
                for seed in seeds:
                    for name in sets:
                        _, info = neural_cg(A, b, nets[seed, FEATURE_SETS[name]],
                                            rtol=RTOL)
                        cells.append(info.iterations if info.converged else -1)
                totals += np.array(cells)
                lines.append(f"| {nx}² | {kind} | {i} | " + " | ".join(map(str, cells))
                             + " |")
                print(lines[-1], flush=True)
    lines.append("| all | | sum | " + " | ".join(map(str, totals)) + " |")
    return train_rows, lines


def main_features(args):
    t0 = time.perf_counter()
    seeds = tuple(range(args.seeds))
    sets = tuple(args.sets.split(","))
    train_rows, lines = compare_features(args.steps, (64, 128), args.held, seeds,
                                         gate_lr=args.gate_lr, sets=sets)
    gate = "lr / 100" if args.gate_lr is None else f"{args.gate_lr:g}"
    print(f"\n### {time.strftime('%Y-%m-%d')}: node features, DirectionNet(8, 4), "
          f"{args.steps} Adam steps each (lr 1e-2, gains' lr {gate}, k = 16, 32²), "
          f"training seeds {', '.join(map(str, seeds))}\n")
    print("| seed | features | steps | train s | held-out 32² loss before | after |")
    print("|---|---|---|---|---|---|")
    for seed, feats, n, sec, before, after in train_rows:
        print(f"| {seed} | {', '.join(feats)} | {n} | {sec:.0f} | {before:+.2f} | "
              f"{after:+.2f} |")
    names = "; ".join(f"{name} = ({', '.join(FEATURE_SETS[name])})" for name in sets)
    print(f"\nIterations to rtol = {RTOL:g} (-1: not converged); features {names}; "
          f"s = training seed:\n")
    heads = [f"s{seed} {name}" for seed in seeds for name in sets]
    print("| grid | family | problem | CG | CG + Jacobi | " + " | ".join(heads) + " |")
    print("|" + "---|" * (5 + len(heads)))
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
    parser.add_argument("--seeds", type=int, default=3,
                        help="training seeds per network with --features")
    parser.add_argument("--sets", default="r,xrb",
                        help="feature sets to compare with --features: comma-separated "
                             "among " + ", ".join(FEATURE_SETS))
    parser.add_argument("--gate-lr", type=float, default=None,
                        help="learning rate of the gains with --features (default lr/100)")
    parser.add_argument("--gmres", action="store_true",
                        help="nonsymmetric problems: neural_gmres against GMRES instead")
    args = parser.parse_args(argv)
    if args.features:
        return main_features(args)
    if args.gmres:
        return main_gmres(args)
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
