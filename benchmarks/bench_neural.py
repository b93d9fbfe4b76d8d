"""Neural acceleration against the classical methods it would replace.

A :class:`sparsediff.learn.DirectionNet` is trained once, on 32² grids (4
random-coefficient diffusion and 4 anisotropic diffusion matrices, ``k = 16``
steps of flexible CG, loss ``log(‖r_k‖/‖b‖)``), twice with the same time
budget: backpropagating through all ``k`` steps (``unrolled``) and through
segments of 4 steps with the state detached between them (``truncated``);
both are scored on the same held-out 32² problems. The unrolled one is then
used, unchanged, on ``--held`` (default 3) held-out problems per size and
family at 64², 128² and 256² (flexible CG, ``neural_cg``, compiled engine),
against sparsediff's CG, CG + Jacobi and CG + AMG
(``sd.solve(A, b, method="cg", M=...)``, iterations from ``info``) and, on
the diffusion family, the learned Woodbury preconditioner (``M = D + U Uᵀ``,
rank 4, trained for each size since its parameters are per unknown). The
note's plain form (network direction + exact line search, no
orthogonalization, ``line_search_solve``) is shown at 64² (capped at 1000
iterations). Everything runs in one process with one PyTorch thread, to
``rtol = 1e-8``; wall times include each method's set-up (AMG hierarchy, the
network's edge weights), not training, which is listed separately. Each
problem's row gives iterations / seconds; a second table sums each grid and
family.

``--save-net`` / ``--load-net`` keep the trained network (and its training
cost) between invocations, so that the sizes can be evaluated separately
(``--sizes``). ``--engines`` times ``neural_cg`` with the PyTorch path and
the compiled path on the same problems.

``--features`` compares instead node-feature sets of ``DirectionNet``
(``--sets``, default ``r,xrb``: ``("r", "diag")`` against
``("x", "r", "b", "diag")``, gains of the message passing from ``x`` and
``b``), trained from the same seeds for the same number of Adam steps on the
same problems, then scored in iterations to ``rtol = 1e-8`` on held-out 64²
and 128² problems against CG and CG + Jacobi, in one run. ``--gmres`` scores
``neural_gmres`` on nonsymmetric convection-diffusion problems (``--sizes``,
default 64) against sparsediff's restarted GMRES, alone and with Jacobi, ILU
or AMG, in iterations and seconds, with the network of ``--load-net`` or one
trained for ``--steps`` Adam steps.

Usage::

    python benchmarks/bench_neural.py                     # everything, ~15 min
    python benchmarks/bench_neural.py --quick             # 32²/48² grids, short training
    python benchmarks/bench_neural.py --train-only --save-net /tmp/net.pt   # ~3 min
    python benchmarks/bench_neural.py --load-net /tmp/net.pt --sizes 64 128
    python benchmarks/bench_neural.py --load-net /tmp/net.pt --sizes 256
    python benchmarks/bench_neural.py --load-net /tmp/net.pt --engines --sizes 64 128 256
    python benchmarks/bench_neural.py --gmres --load-net /tmp/net.pt --sizes 64 128
    python benchmarks/bench_neural.py --features --steps 20 --held 1   # ~10 min
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


METHODS = ("CG", "CG + Jacobi", "CG + AMG", "CG + Woodbury", "FCG + GNN")


def held_out(kind, nx, n_held):
    """``n_held`` held-out matrices of a family at ``nx²`` (seeds disjoint from
    training) and their right-hand sides; problem 0 is the one of the
    earlier single-problem tables."""
    A0, values = family(kind, nx, n_held, 1000 + nx)
    for i in range(n_held):
        A = sp.csr_array((values[i], A0.indices, A0.indptr), shape=A0.shape)
        b = np.random.default_rng(nx + 7919 * i).standard_normal(A.shape[0])
        yield A0, A, b


def warm_up(net):
    """First-call costs (kernel compilation, imports) are not timed."""
    A0, values = family("diffusion", 16, 1, 0)
    A = sp.csr_array((values[0], A0.indices, A0.indptr), shape=A0.shape)
    for M in (None, "jacobi", "amg"):
        sd_cg(A, np.ones(A.shape[0]), M)
    for engine in ("numba", "torch"):
        neural_cg(A, np.ones(A.shape[0]), net, engine=engine)


def evaluate(sizes, net, n_held, wood_steps, plain_size, engine="auto"):
    """Iterations and seconds of every method on ``n_held`` held-out problems
    per size and family; returns the rows, the Woodbury training seconds per
    size and the plain-form lines."""
    warm_up(net)
    rows, wood_cost, plain = [], {}, []
    for nx in sizes:
        Mw = None
        for kind in ("diffusion", "anisotropic"):
            for i, (A0, A, b) in enumerate(held_out(kind, nx, n_held)):
                res = {}
                for name, M in (("CG", None), ("CG + Jacobi", "jacobi"),
                                ("CG + AMG", "amg")):
                    (its, ok), t = timed(sd_cg, A, b, M)
                    res[name] = (its, ok, t)
                if kind == "diffusion":
                    if Mw is None:
                        Mw, wood_cost[nx] = woodbury(A0, nx, wood_steps)
                    (its, ok), t = timed(sd_cg, A, b, Mw)
                    res["CG + Woodbury"] = (its, ok, t)
                (x, info), t = timed(neural_cg, A, b, net, rtol=RTOL, engine=engine)
                res["FCG + GNN"] = (info.iterations, info.converged, t)
                if nx == plain_size and i == 0:
                    (x, info), t = timed(line_search_solve, A, b, net, rtol=RTOL,
                                         maxiter=1000, engine=engine)
                    flag = "" if info.converged else " (not converged)"
                    plain.append(f"| {nx}² | {kind} | {info.iterations}{flag} | {t:.2f} |")
                rows.append((nx, kind, i, res))
                print(f"evaluated {nx}² {kind} {i}: " + ", ".join(
                    f"{k} {v[0]}/{v[2]:.2f}s" for k, v in res.items()), flush=True)
    return rows, wood_cost, plain


def cell(v):
    if v is None:
        return "–"
    its, ok, t = v
    return f"{its}{'' if ok else ' (not conv.)'} / {t:.3f}"


def print_evaluation(rows, wood_cost, plain, train_seconds, train_steps, train_nx,
                     wood_steps, engine):
    print(f"## Held-out problems: iterations / wall seconds to rtol = {RTOL:g}\n")
    print(f"Network: DirectionNet(8, 4), trained once for {train_seconds:.0f} s "
          f"({train_steps} Adam steps) at {train_nx}², applied with engine="
          f"'{engine}'. Woodbury (rank 4): trained per size, {wood_steps} steps: "
          + ", ".join(f"{sec:.0f} s at {nx}²" for nx, sec in wood_cost.items())
          + ". Wall times include each method's set-up (AMG hierarchy, the "
          "network's edge weights), not training.\n")
    print("| grid | family | # | " + " | ".join(METHODS)
          + " | GNN its / Jacobi its | GNN s / AMG s |")
    print("|" + "---|" * (5 + len(METHODS)))
    for nx, kind, i, res in rows:
        g, j, a = res["FCG + GNN"], res["CG + Jacobi"], res["CG + AMG"]
        print(f"| {nx}² | {kind} | {i} | " + " | ".join(cell(res.get(m)) for m in METHODS)
              + f" | {g[0] / j[0]:.2f} | {g[2] / a[2]:.0f} |")
    print("\nSums over the problems of each grid and family (iterations / seconds):\n")
    print("| grid | family | problems | " + " | ".join(METHODS)
          + " | GNN its / Jacobi its | GNN its / AMG its | GNN s / Jacobi s "
          "| GNN s / AMG s |")
    print("|" + "---|" * (7 + len(METHODS)))
    keys = list(dict.fromkeys((nx, kind) for nx, kind, _, _ in rows))
    for nx, kind in keys:
        group = [res for n_, k_, _, res in rows if (n_, k_) == (nx, kind)]
        tot = {}
        for m in METHODS:
            vals = [res[m] for res in group if m in res]
            if vals:
                tot[m] = (sum(v[0] for v in vals), all(v[1] for v in vals),
                          sum(v[2] for v in vals))
        g, j, a = tot["FCG + GNN"], tot["CG + Jacobi"], tot["CG + AMG"]
        print(f"| {nx}² | {kind} | {len(group)} | "
              + " | ".join(cell(tot.get(m)) for m in METHODS)
              + f" | {g[0] / j[0]:.2f} | {g[0] / a[0]:.1f} | {g[2] / j[2]:.1f} "
              f"| {g[2] / a[2]:.1f} |")
    if plain:
        print("\nThe plain form (network direction + exact line search only, "
              "`line_search_solve`, capped at 1000 iterations), problem 0:\n")
        print("| grid | family | iterations | wall s |")
        print("|---|---|---|---|")
        for line in plain:
            print(line)


def engine_rows(net, sizes, kinds=("diffusion",)):
    """Per-solve and per-iteration seconds of ``neural_cg`` with the PyTorch and
    the compiled path, same network and problem, same process."""
    warm_up(net)
    lines = []
    for nx in sizes:
        for kind in kinds:
            _, A, b = next(held_out(kind, nx, 1))
            cells = []
            for engine in ("torch", "numba"):
                (x, info), t = timed(neural_cg, A, b, net, rtol=RTOL, engine=engine)
                cells.append((info.iterations, t))
            (it_t, t_t), (it_n, t_n) = cells
            lines.append(f"| {nx}² | {kind} | {it_t} | {t_t:.3f} | {1e3 * t_t / it_t:.2f} "
                         f"| {it_n} | {t_n:.3f} | {1e3 * t_n / it_n:.2f} "
                         f"| {t_t / t_n:.1f} |")
            print(lines[-1], flush=True)
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


GMRES_METHODS = ("GMRES", "GMRES + Jacobi", "GMRES + ILU", "GMRES + AMG",
                 "FGMRES + Jacobi", "FGMRES + GNN")


def gmres_rows(net, nx, peclets, restart=30, maxiter=5000, engine="auto", net2=None):
    """Iterations / seconds to RTOL of restarted GMRES (sparsediff's, none /
    Jacobi / ILU / AMG) and of flexible GMRES with Jacobi and with the
    network, on convection-diffusion problems."""
    lines = []
    for peclet in peclets:
        A = convection_diffusion(nx, peclet, seed=2000 + nx)
        b = np.random.default_rng(7).standard_normal(A.shape[0])
        cells = []
        for M in (None, "jacobi", "ilu", "amg"):
            sol, t = timed(sd.solve, A, b, method=("gmres", {"restart": restart}), M=M,
                           rtol=RTOL, maxiter=maxiter, on_failure="warn")
            cells.append((sol.info.iterations, bool(sol.info.converged), t))
        for proposer in (None, net) + ((net2,) if net2 is not None else ()):
            (_, info), t = timed(neural_gmres, A, b, proposer, rtol=RTOL,
                                 restart=restart, maxiter=maxiter, engine=engine)
            cells.append((info.iterations, info.converged, t))
        g, j, amg = cells[5], cells[1], cells[3]
        lines.append(f"| {nx}² | {peclet:g} | " + " | ".join(map(cell, cells))
                     + f" | {g[0] / j[0]:.2f} | {g[2] / amg[2]:.0f} |")
        print(lines[-1], flush=True)
    return lines


def train_fgmres(net, steps, nx=32, k=16):
    """A copy of ``net`` fine-tuned for ``steps`` Adam steps through one cycle
    of ``k`` flexible-GMRES steps on 6 nonsymmetric ``nx²`` problems (cell
    Péclet numbers 0.1, 1, 10, two training seeds each, disjoint from the
    held-out ones). Returns the copy and the seconds spent."""
    import copy

    net2 = copy.deepcopy(net)
    problems = []
    for seed in (3000, 3001):
        for peclet in (0.1, 1, 10):
            A = convection_diffusion(nx, peclet, seed=seed)
            problems.append((torch.tensor(A.data)[None],
                             CSRPattern(A.indptr, A.indices, A.shape)))
    hist = train_direction_net(net2, problems, k, num_steps=steps, lr=3e-3,
                               solver="fgmres", generator=torch.Generator().manual_seed(5))
    print(f"fine-tuned through FGMRES: {len(hist)} steps, {hist[-1][0]:.0f} s, loss "
          f"{hist[0][1]:+.2f} -> {hist[-1][1]:+.2f}", flush=True)
    return net2, hist


def get_net(args):
    """The benchmark's network: loaded (``--load-net``) or trained here (both
    backprop modes, the unrolled one kept; saved with ``--save-net``).
    Returns ``(net, meta)``; ``meta`` has the training rows and cost."""
    if args.load_net:
        saved = torch.load(args.load_net, weights_only=False)
        net = DirectionNet(8, 4)
        net.load_state_dict(saved["state"])
        return net, saved["meta"]
    train_nx, k, budget, n_mat = ((16, 12, 8.0, 2) if args.quick else (32, 16, 75.0, 4))
    rows, nets = train_nets(train_nx, k, budget, n_mat)
    net, seconds, hist = nets["unrolled"]
    meta = dict(rows=rows, seconds=seconds, steps=len(hist), train_nx=train_nx, k=k,
                budget=budget, n_mat=n_mat)
    if args.save_net:
        torch.save({"state": net.state_dict(), "meta": meta}, args.save_net)
    return net, meta


def print_training(meta):
    print(f"## Training (DirectionNet(8, 4), {meta['train_nx']}² grids, {meta['n_mat']} "
          f"diffusion + {meta['n_mat']} anisotropic matrices, k = {meta['k']}, Adam lr "
          f"1e-2, budget {meta['budget']:.0f} s each)\n")
    print("| backprop | steps | seconds | held-out loss before | after | "
          "loss decrease per second |")
    print("|---|---|---|---|---|---|")
    for mode, steps, sec, before, after, rate in meta["rows"]:
        print(f"| {mode} | {steps} | {sec:.0f} | {before:+.2f} | {after:+.2f} | "
              f"{rate:.4f} |")
    print("\nThe loss is log(‖r_k‖/‖b‖) after k flexible-CG steps (lower is better).\n")


def main_gmres(args):
    t0 = time.perf_counter()
    if args.load_net:
        net, meta = get_net(args)
        origin = (f"the main benchmark's network ({meta['steps']} Adam steps, "
                  f"{meta['seconds']:.0f} s")
    else:
        train = [as_problem(*family("diffusion", 32, 4, 0)),
                 as_problem(*family("anisotropic", 32, 4, 1))]
        net = DirectionNet(8, 4, generator=torch.Generator().manual_seed(0))
        hist = train_direction_net(net, train, 16, num_steps=args.steps, lr=1e-2,
                                   generator=torch.Generator().manual_seed(1))
        print(f"trained {len(hist)} steps, {hist[-1][0]:.0f} s", flush=True)
        origin = (f"DirectionNet(8, 4) trained for {len(hist)} Adam steps "
                  f"({hist[-1][0]:.0f} s")
    sizes = args.sizes or (64,)
    net2 = hist2 = None
    if args.train_gmres:
        net2, hist2 = train_fgmres(net, args.train_gmres)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warm_up(net)
        lines = [line for nx in sizes
                 for line in gmres_rows(net, nx, (0.1, 1, 10), net2=net2)]
    print(f"\n### {time.strftime('%Y-%m-%d')}: nonsymmetric, restarted GMRES(30) "
          f"against flexible GMRES(30), iterations / wall seconds to rtol = {RTOL:g} "
          f"(not conv.: not converged in 5000)\n")
    print(f"Network: {origin}) through flexible CG on the SPD 32² families (it has "
          f"never seen a nonsymmetric matrix), compiled engine. Problems: a held-out "
          f"random-coefficient diffusion matrix plus first-order upwind convection at a "
          f"random angle, cell Péclet number about Pe.\n")
    heads = list(GMRES_METHODS)
    if net2 is not None:
        heads.append("FGMRES + GNN fine-tuned through FGMRES")
        print(f"The last column: the same network fine-tuned for {len(hist2)} Adam steps "
              f"(lr 3e-3, {hist2[-1][0]:.0f} s) through one cycle of 16 flexible-GMRES "
              f"steps on 6 nonsymmetric 32² problems (Pe 0.1, 1, 10; training seeds "
              f"disjoint from these); its loss went from {hist2[0][1]:+.2f} to "
              f"{hist2[-1][1]:+.2f}.\n")
    print("| grid | cell Pe | " + " | ".join(heads)
          + " | GNN its / Jacobi its | GNN s / AMG s |")
    print("|" + "---|" * (4 + len(heads)))
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
                        help="Adam steps per network with --features / --gmres")
    parser.add_argument("--held", type=int, default=None,
                        help="held-out problems per family and size (default 3; "
                             "2 with --features)")
    parser.add_argument("--seeds", type=int, default=3,
                        help="training seeds per network with --features")
    parser.add_argument("--sets", default="r,xrb",
                        help="feature sets to compare with --features: comma-separated "
                             "among " + ", ".join(FEATURE_SETS))
    parser.add_argument("--gate-lr", type=float, default=None,
                        help="learning rate of the gains with --features (default lr/100)")
    parser.add_argument("--gmres", action="store_true",
                        help="nonsymmetric problems: neural_gmres against GMRES instead")
    parser.add_argument("--train-gmres", type=int, default=0,
                        help="with --gmres: also fine-tune the network through FGMRES "
                             "for this many Adam steps")
    parser.add_argument("--engines", action="store_true",
                        help="time neural_cg with the PyTorch and the compiled path")
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="grid sizes to evaluate (default 64 128 256)")
    parser.add_argument("--save-net", default=None,
                        help="save the trained network (and its training cost) here")
    parser.add_argument("--load-net", default=None,
                        help="evaluate a network saved with --save-net (no training)")
    parser.add_argument("--train-only", action="store_true",
                        help="train (and --save-net) only, print the training table")
    args = parser.parse_args(argv)
    if args.features:
        if args.held is None:
            args.held = 2
        return main_features(args)
    if args.gmres:
        return main_gmres(args)
    t0 = time.perf_counter()
    sizes = args.sizes or ((32, 48) if args.quick else (64, 128, 256))
    wood_steps = 10 if args.quick else 30
    n_held = 3 if args.held is None else args.held
    net, meta = get_net(args)
    head = (f"Machine: {platform.machine()}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}, one "
            f"PyTorch thread. The machine is shared and noisy (2 cores, several "
            f"users): wall times are indicative, iteration counts are exact.\n")
    if args.engines:
        lines = engine_rows(net, sizes)
        print(f"\n### {time.strftime('%Y-%m-%d')}: neural_cg, PyTorch path against the "
              f"compiled path (same network, problem 0 of each size)\n")
        print(head)
        print("| grid | family | its (torch) | s | ms / iteration | its (compiled) | s "
              "| ms / iteration | speed-up |")
        print("|---|---|---|---|---|---|---|---|---|")
        for line in lines:
            print(line)
        print(f"\n(whole run {time.perf_counter() - t0:.0f} s)")
        return
    buf = io.StringIO()
    if not args.train_only:
        rows, wood_cost, plain = evaluate(sizes, net, n_held, wood_steps,
                                          64 if 64 in sizes else None)
    with redirect_stdout(buf):
        print(f"# Neural acceleration: results ({time.strftime('%Y-%m-%d')})\n")
        print(head)
        print_training(meta)
        if not args.train_only:
            print_evaluation(rows, wood_cost, plain, meta["seconds"], meta["steps"],
                             meta["train_nx"], wood_steps, "auto")
        print(f"\n(whole run {time.perf_counter() - t0:.0f} s)")
    text = buf.getvalue()
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
