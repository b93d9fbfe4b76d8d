"""Operator learning with batched sparse solves: a network emits the
coefficients of a 2-D diffusion operator for every sample of a minibatch.

Each sample is described by four numbers ``p`` (the centre, width and height
of a bump in the log-conductivity). The true conductivity field is
``κ_p(x) = exp(bump_p(x))`` on a k×k grid. The observation is the solution of

    −∇·(κ_p ∇u) = 1   on the unit square,   u = 0 on the boundary,

discretized by finite volumes (5-point stencil). A small MLP maps ``p`` to a
log-conductivity field. The field is assembled into the stored values of the
operator, with shape ``(B, nnz)`` on one COO pattern with duplicates, for the
whole minibatch. ``sparsediff.torch.solve_values`` solves the B systems with
one ``sparsediff.BatchedSolver``: one ordering for the pattern, one
factorization per sample, adjoints on the same factors. The loss is the mean
squared error of ``u`` plus a small smoothness penalty on the emitted field
(one source term does not determine the fine scales of ``κ``: without it the
network fits ``u`` with a rough field). The training curve and a few
recovered fields are saved to a PNG.

Run: ``python examples/batched_operator_learning.py [--k 16] [--epochs 60]``
(``--quick`` for a smoke test). The figure of the default run is
``examples/figures/batched_operator_learning.png``.
"""

import argparse
import time

import numpy as np
import torch

import sparsediff.torch as sdt


def pattern(k):
    """COO triplet pattern of the 5-point finite-volume operator (duplicates
    on the diagonal: one per face and boundary side, summed by the solve)."""
    idx = np.arange(k * k).reshape(k, k)
    faces = np.concatenate([
        np.stack([idx[:, :-1].ravel(), idx[:, 1:].ravel()], 1),
        np.stack([idx[:-1, :].ravel(), idx[1:, :].ravel()], 1),
    ])
    nb = np.zeros((k, k))
    nb[0, :] += 1
    nb[-1, :] += 1
    nb[:, 0] += 1
    nb[:, -1] += 1
    i, j = faces[:, 0], faces[:, 1]
    bnd = np.flatnonzero(nb.ravel())
    row = np.concatenate([i, j, i, j, bnd])
    col = np.concatenate([i, j, j, i, bnd])
    return (torch.tensor(faces), torch.tensor(bnd), torch.tensor(nb.ravel()[bnd]),
            torch.tensor(row), torch.tensor(col))


def assemble(logk, faces, bnd, nbcount, k):
    """Values (B, nnz) of the operator for log-conductivities (B, k²)."""
    kappa = torch.exp(logk)
    h2 = float(k * k)
    w = 0.5 * (kappa[:, faces[:, 0]] + kappa[:, faces[:, 1]]) * h2
    wb = 2.0 * kappa[:, bnd] * nbcount * h2           # Dirichlet half-cells
    return torch.cat([w, w, -w, -w, wb], dim=1)


def true_logk(p, k):
    """A bump in the log-conductivity for each parameter row (cx, cy, r, a)."""
    xs = (torch.arange(k, dtype=torch.float64) + 0.5) / k
    X, Y = torch.meshgrid(xs, xs, indexing="ij")
    cx, cy, r, a = (p[:, i, None, None] for i in range(4))
    bump = a * torch.exp(-((X - cx) ** 2 + (Y - cy) ** 2) / (2 * r ** 2))
    return bump.reshape(p.shape[0], k * k)


def sample(n, rng):
    p = np.column_stack([rng.uniform(0.3, 0.7, n), rng.uniform(0.3, 0.7, n),
                         rng.uniform(0.1, 0.25, n), rng.uniform(-1.5, 1.5, n)])
    return torch.tensor(p)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--smooth", type=float, default=3e-3,
                    help="weight of the penalty on the field's differences")
    ap.add_argument("--quick", action="store_true", help="small and fast")
    ap.add_argument("--output", default="batched_operator_learning.png")
    args = ap.parse_args(argv)
    if args.quick:
        args.k, args.samples, args.batch, args.epochs = 8, 64, 16, 12
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    k, n = args.k, args.k * args.k
    faces, bnd, nbcount, row, col = pattern(k)
    f = torch.ones(n, dtype=torch.float64)

    def solve(logk):
        values = assemble(logk, faces, bnd, nbcount, k)
        rhs = f.expand(values.shape[0], n)
        return sdt.solve_values(values, rhs, row=row, col=col, method="direct")

    p_train = sample(args.samples, rng)
    with torch.no_grad():
        u_train = solve(true_logk(p_train, k))
    scale = u_train.abs().max()

    net = torch.nn.Sequential(
        torch.nn.Linear(4, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64),
        torch.nn.Tanh(), torch.nn.Linear(64, n)).double()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    curve = []
    t0 = time.perf_counter()
    solves = 0
    for epoch in range(1, args.epochs + 1):
        perm = torch.randperm(args.samples)
        total = 0.0
        for start in range(0, args.samples, args.batch):
            idx = perm[start:start + args.batch]
            logk = net(p_train[idx])
            u = solve(logk)
            mse = torch.mean(((u - u_train[idx]) / scale) ** 2)
            field = logk.reshape(-1, k, k)
            rough = (torch.mean(torch.diff(field, dim=1) ** 2)
                     + torch.mean(torch.diff(field, dim=2) ** 2))
            loss = mse + args.smooth * rough
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += mse.item() * len(idx)
            solves += len(idx)
        curve.append(total / args.samples)
        if epoch == 1 or epoch % max(1, args.epochs // 6) == 0 or epoch == args.epochs:
            print(f"epoch {epoch:4d}  relative MSE {curve[-1]:.3e}")
    elapsed = time.perf_counter() - t0
    print(f"{args.epochs} epochs, {solves} sparse solves in batches of {args.batch} "
          f"on a {k}×{k} grid, {elapsed:.1f} s")

    p_test = sample(4, rng)
    with torch.no_grad():
        lk_true = true_logk(p_test, k)
        lk_pred = net(p_test)
        err = torch.linalg.norm(solve(lk_pred) - solve(lk_true)) / torch.linalg.norm(
            solve(lk_true))
    print(f"held-out relative error of u {float(err):.3e}")

    try:
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is optional
        print("matplotlib not installed: no figure")
        return curve
    fig, axes = plt.subplots(2, 5, figsize=(14, 5.5))
    ax = axes[0, 0]
    ax.semilogy(np.arange(1, len(curve) + 1), curve)
    ax.set_xlabel("epoch")
    ax.set_ylabel("relative MSE of u")
    ax.set_title("training curve")
    axes[1, 0].axis("off")
    lo, hi = float(lk_true.min()), float(lk_true.max())
    for c in range(4):
        for r, (field, name) in enumerate(((lk_true, "true"), (lk_pred, "learned"))):
            a = axes[r, c + 1]
            im = a.imshow(field[c].reshape(k, k).T, origin="lower", vmin=lo, vmax=hi,
                          cmap="viridis")
            a.set_title(f"log κ, {name} #{c}")
            a.set_xticks([])
            a.set_yticks([])
    fig.colorbar(im, ax=axes[:, 1:].ravel().tolist(), shrink=0.8)
    fig.savefig(args.output, dpi=90)
    print(f"figure written to {args.output}")
    return curve


if __name__ == "__main__":
    main()
