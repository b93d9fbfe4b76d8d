"""Learn a diffusion-coefficient field with a sparse solve inside a torch model.

A 1-layer "physics" model: a learnable field ``θ`` gives the conductivity
``κ = softplus(θ)`` of a finite-volume discretization of

    −∇·(κ ∇u) = f   on the unit square,   u = 0 on the boundary.

The stiffness matrix is assembled in torch as COO triplets (duplicates are
summed by the solve) and solved with ``sparsediff.torch.solve_values``, so
``values.grad`` — and through the assembly, ``θ.grad`` — comes from one adjoint
solve that reuses the forward factorization. Training data are solutions for
random source terms; the loss is the mean squared error of ``u``. Adam
training, progress printed every 25 steps.

Run: ``python examples/torch_inverse_problem.py [--k 24] [--steps 150]`` (small and
fast, for smoke tests: ``--k 12 --steps 50``)
"""

import argparse
import time

import numpy as np
import torch

import sparsediff.torch as sdt


def grid(k):
    """COO pattern of the 5-point finite-volume operator on a k×k grid."""
    idx = np.arange(k * k).reshape(k, k)
    pairs = np.concatenate([
        np.stack([idx[:, :-1].ravel(), idx[:, 1:].ravel()], 1),
        np.stack([idx[:-1, :].ravel(), idx[1:, :].ravel()], 1),
    ])
    nb = np.zeros((k, k))
    nb[0, :] += 1
    nb[-1, :] += 1
    nb[:, 0] += 1
    nb[:, -1] += 1
    i, j = pairs[:, 0], pairs[:, 1]
    cells = np.arange(k * k)
    row = torch.from_numpy(np.concatenate([i, j, i, j, cells]))
    col = torch.from_numpy(np.concatenate([i, j, j, i, cells]))
    return torch.from_numpy(i), torch.from_numpy(j), torch.from_numpy(nb.ravel()), row, col


class DiffusionModel(torch.nn.Module):
    """``u = A(κ)⁻¹ f`` with ``κ = softplus(θ)`` learned per cell."""

    def __init__(self, k):
        super().__init__()
        self.k = k
        self.theta = torch.nn.Parameter(torch.zeros(k * k, dtype=torch.float64))
        self.i, self.j, self.nb, self.row, self.col = grid(k)

    def kappa(self):
        return torch.nn.functional.softplus(self.theta) + 1e-3

    def forward(self, f, kappa=None):
        kappa = self.kappa() if kappa is None else kappa
        h2 = (1.0 / self.k) ** 2
        t = 2.0 / (1.0 / kappa[self.i] + 1.0 / kappa[self.j]) / h2
        values = torch.cat([t, t, -t, -t, 2.0 * kappa * self.nb / h2])
        return sdt.solve_values(values, f, row=self.row, col=self.col)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, default=24)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--lr", type=float, default=0.1)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    k, n = args.k, args.k ** 2
    model = DiffusionModel(k)

    x = (torch.arange(k, dtype=torch.float64) + 0.5) / k
    X, Y = torch.meshgrid(x, x, indexing="ij")
    kappa_true = (1.0 + 3.0 * torch.exp(-((X - 0.6) ** 2 + (Y - 0.4) ** 2) / 0.03)
                  + 0.5 * (X > 0.3).double() * (Y > 0.7).double()).reshape(-1)
    # training set: 16 random sources, solved with the true field
    F = torch.randn(n, 16, dtype=torch.float64)
    with torch.no_grad():
        U = model(F, kappa_true)

    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        opt.zero_grad()
        loss = ((model(F) - U) ** 2).mean() / (U ** 2).mean()
        loss.backward()
        opt.step()
        if step == 1 or step % 25 == 0:
            with torch.no_grad():
                err = float(torch.linalg.vector_norm(model.kappa() - kappa_true)
                            / torch.linalg.vector_norm(kappa_true))
            print(f"step {step:4d}  relative loss {loss.item():.3e}  "
                  f"relative error of κ {err:.3f}", flush=True)
    print(f"{args.steps} steps on a {k}×{k} grid in {time.perf_counter() - t0:.1f} s")
    return loss.item()


if __name__ == "__main__":
    main()
