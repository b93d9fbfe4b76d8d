"""A physics neural ODE with a sparse linear solve inside its right-hand side.

Reaction–diffusion on [0, 1] with P1 finite elements and an unknown,
spatially varying heat capacity ``c(x)`` and unknown reaction term ``R(u)``:

    M(θ) du/dt = −K u + M₀ R_φ(u),      u = 0 at x = 0 and x = 1,

where ``M(θ)`` is the finite-element mass matrix weighted by
``c = exp(θ)`` (one value per element), ``K`` the stiffness matrix of a known
diffusivity, ``M₀`` the lumped unit mass and ``R_φ`` a small neural network
applied pointwise. Every evaluation of the right-hand side solves with the
sparse ``M(θ)`` through :func:`sparsediff.torch.solve_values`, whose backward
pass is one adjoint solve with the same factorization; the gradient with
respect to the stored values of ``M`` flows on into ``θ``.

Data come from the true ``c(x) = exp(0.5 sin 2πx)`` and ``R(u) = 5 u (1 − u)``
(Fisher–KPP). The model is integrated with classical RK4 (torchdiffeq's fixed-
step ``rk4`` if it is installed, else the loop below) and fitted to the whole
trajectory by Adam; the loss falls by more than an order of magnitude. (The
capacity is only identifiable where the solution moves, so ``θ`` itself is
not compared with the truth.)

Run:  python examples/neural_ode_solve.py   (under a minute; ``--quick``: 10 epochs
instead of 60, for smoke tests)
"""

import argparse
import time

import numpy as np
import torch

import sparsediff.torch as sdt

torch.set_num_threads(1)   # small tensors: overhead-bound
torch.manual_seed(0)

N = 32                     # interior nodes
H = 1.0 / (N + 1)
DIFFUSIVITY = 1e-3
T_END, STEPS = 1.0, 20
DT = T_END / STEPS

# tridiagonal CSR pattern of M and K (sorted columns)
rows = np.repeat(np.arange(N), [2] + [3] * (N - 2) + [2])
cols = np.concatenate([[0, 1]] + [[i - 1, i, i + 1] for i in range(1, N - 1)]
                      + [[N - 2, N - 1]])
indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=N))])
ROWS, COLS = torch.tensor(rows), torch.tensor(cols)
ON_DIAG = ROWS == COLS
# element e joins interior nodes e − 1 and e (elements 0..N); the entry (i, j)
# off the diagonal lives on element max(i, j), the diagonal on elements i, i + 1
ELEM = torch.maximum(ROWS, COLS)


def mass_values(theta):
    """Stored values of the capacity-weighted P1 mass matrix, c = exp(θ)."""
    c = torch.exp(theta)
    return torch.where(ON_DIAG, (c[ROWS] + c[ROWS + 1]) * H / 3, c[ELEM] * H / 6)


def stiffness(u):
    Ku = 2 * u
    Ku[1:] -= u[:-1]
    Ku[:-1] -= u[1:]
    return DIFFUSIVITY / H * Ku


class Reaction(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.Tanh(),
                                       torch.nn.Linear(16, 1)).double()

    def forward(self, u):
        return self.net(u[:, None])[:, 0]


class RHS(torch.nn.Module):
    def __init__(self, theta, reaction):
        super().__init__()
        self.theta, self.reaction = theta, reaction

    def forward(self, t, u):
        values = mass_values(self.theta)
        rhs = -stiffness(u) + H * self.reaction(u)
        return sdt.solve_values(values, rhs, indptr=indptr, indices=cols)


def rk4(f, u0):
    us, u = [u0], u0
    for i in range(STEPS):
        t = i * DT
        k1 = f(t, u)
        k2 = f(t + DT / 2, u + DT / 2 * k1)
        k3 = f(t + DT / 2, u + DT / 2 * k2)
        k4 = f(t + DT, u + DT * k3)
        u = u + DT / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        us.append(u)
    return torch.stack(us)


def integrate(f, u0):
    try:
        from torchdiffeq import odeint
    except ImportError:
        return rk4(f, u0)
    t = torch.linspace(0, T_END, STEPS + 1, dtype=torch.float64)
    return odeint(f, u0, t, method="rk4", options={"step_size": DT})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="10 training epochs instead of 60 (smoke test)")
    args = parser.parse_args(argv)
    x = torch.linspace(H, 1 - H, N, dtype=torch.float64)
    xe = (torch.arange(N + 1, dtype=torch.float64) + 0.5) * H
    u0 = torch.exp(-((x - 0.3) / 0.08) ** 2)

    class TrueReaction(torch.nn.Module):
        def forward(self, u):
            return 5 * u * (1 - u)

    theta_true = 0.5 * torch.sin(2 * np.pi * xe)
    with torch.no_grad():
        data = integrate(RHS(theta_true, TrueReaction()), u0)

    theta = torch.nn.Parameter(torch.zeros(N + 1, dtype=torch.float64))
    model = RHS(theta, Reaction())
    opt = torch.optim.Adam([{"params": [theta], "lr": 0.03},
                            {"params": model.reaction.parameters(), "lr": 0.01}])
    t0 = time.perf_counter()
    epochs = 10 if args.quick else 60
    for epoch in range(epochs):
        opt.zero_grad()
        pred = integrate(model, u0)
        loss = ((pred - data) ** 2).mean()
        loss.backward()
        opt.step()
        if epoch % 10 == 0 or epoch == epochs - 1:
            print(f"epoch {epoch:3d}  trajectory MSE {loss.item():.3e}")
    print(f"{epochs} epochs, {epochs * STEPS * 4} sparse solves forward and as many "
          f"adjoint solves: {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
