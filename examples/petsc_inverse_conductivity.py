"""Recover a 3-D conductivity field from noisy measurements, on many MPI ranks.

The forward model is steady diffusion ``−∇·(κ ∇u) + c u = f`` on an m×m×m
cell-centred grid (finite volumes, 7-point stencil), with ``κ = exp(θ)`` per
cell and face conductivities the mean of the two cells. The mesh is split into
slabs of z-planes, one slab per rank, and each rank assembles **its own rows**
the way a PDE code does: face by face, so every diagonal entry arrives as a
sum of duplicates. ``sparsediff.petsc.Solver`` solves with CG + GAMG on the
distributed matrix, and ``vjp`` returns the gradient of each rank's stored
entries (one transposed solve on the same KSP).

The chain rule to the parameters runs on each rank: every stored entry is
``s_k · (κ_a + κ_b) / 2`` for the two cells ``a``, ``b`` of its face, so
``∂L/∂κ_a`` sums ``grad_data[k]·s_k/2`` over the entries touching ``a``. Cells
of the neighbouring slab (the ghost plane) receive contributions too; one
exchange with each neighbour sends them to their owner. The parameters are
then fitted by gradient descent with Barzilai–Borwein steps (every quantity a
global sum over ranks, so all ranks take the same step).

Run::

    mpiexec -n 2 python examples/petsc_inverse_conductivity.py
    mpiexec -n 2 python examples/petsc_inverse_conductivity.py --quick
"""

import argparse
import time

import numpy as np
from mpi4py import MPI

from sparsediff import petsc as sdp


def slab(m, comm):
    """The z-planes ``[z0, z1)`` this rank owns."""
    counts = [len(c) for c in np.array_split(np.arange(m), comm.Get_size())]
    z0 = sum(counts[:comm.Get_rank()])
    return z0, z0 + counts[comm.Get_rank()]


def faces(m, z0, z1):
    """Every face touching a cell of planes ``[z0, z1)``: cell pairs (a, b) as
    global indices, a owned here. Boundary faces (Dirichlet, u = 0 outside)
    have b = −1."""
    k, j, i = np.meshgrid(np.arange(z0, z1), np.arange(m), np.arange(m), indexing="ij")
    cell = (k * m + j) * m + i
    pairs = []
    for axis, idx in ((0, k), (1, j), (2, i)):
        step = m ** (2 - axis)
        for d in (-1, 1):
            nb = np.where((idx + d >= 0) & (idx + d < m), cell + d * step, -1)
            pairs.append(np.stack([cell.ravel(), nb.ravel()], axis=1))
    return np.concatenate(pairs)


def assemble(m, z0, z1, kappa_of, c_react):
    """This rank's rows, face by face: ``(indptr, indices, data)`` with duplicates,
    plus for every stored entry its two cells and its sign (the chain rule)."""
    h2 = (1.0 / (m + 1)) ** 2
    pairs = faces(m, z0, z1)
    a, b = pairs[:, 0], pairs[:, 1]
    inner = b >= 0
    bb = np.where(inner, b, a)               # boundary face: κ of the cell itself
    # diagonal contribution of every face, off-diagonal of the inner ones
    rows = np.concatenate([a, a[inner]])
    cols = np.concatenate([a, b[inner]])
    sign = np.concatenate([np.full(a.size, 1.0 / h2), np.full(inner.sum(), -1.0 / h2)])
    ca = np.concatenate([a, a[inner]])
    cb = np.concatenate([bb, b[inner]])
    # boundary faces are at half distance: twice the coefficient
    sign[:a.size][~inner] *= 2.0
    # the reaction term, one more duplicate on the diagonal
    own = np.arange(z0 * m * m, z1 * m * m)
    order = np.argsort(np.concatenate([rows, own]), kind="stable")
    rows = np.concatenate([rows, own])[order]
    cols = np.concatenate([cols, own])[order]
    sign = np.concatenate([sign, np.zeros(own.size)])[order]
    ca = np.concatenate([ca, own])[order]
    cb = np.concatenate([cb, own])[order]
    react = np.where(sign == 0, c_react, 0.0)   # the reaction duplicates
    data = sign * 0.5 * (kappa_of(ca) + kappa_of(cb)) + react
    nloc = own.size
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows - own[0] if nloc else rows,
                                                         minlength=nloc))])
    return (indptr, cols, data), (ca, cb, sign)


class Slab:
    """One rank's cells and its ghost planes; halo exchanges with neighbours."""

    def __init__(self, m, comm):
        self.m, self.comm = m, comm
        self.z0, self.z1 = slab(m, comm)
        self.plane = m * m
        self.lo = max(self.z0 - 1, 0) * self.plane           # owned + ghost cells
        self.hi = min(self.z1 + 1, m) * self.plane
        self.own = slice(self.z0 * self.plane - self.lo, self.z1 * self.plane - self.lo)

    def with_ghosts(self, local):
        """Owned values plus the neighbours' boundary planes (one exchange each)."""
        rank, size, comm, p = self.comm.Get_rank(), self.comm.Get_size(), self.comm, \
            self.plane
        out = np.zeros(self.hi - self.lo)
        out[self.own] = local
        if rank > 0 and local.size:
            out[:p] = comm.sendrecv(local[:p], dest=rank - 1, source=rank - 1)
        if rank < size - 1 and local.size:
            out[-p:] = comm.sendrecv(local[-p:], dest=rank + 1, source=rank + 1)
        return out

    def reduce_ghosts(self, full):
        """Owned values plus what the neighbours computed for them (reverse halo)."""
        rank, size, comm, p = self.comm.Get_rank(), self.comm.Get_size(), self.comm, \
            self.plane
        local = full[self.own].copy()
        if rank > 0 and local.size:
            local[:p] += comm.sendrecv(full[:p], dest=rank - 1, source=rank - 1)
        if rank < size - 1 and local.size:
            local[-p:] += comm.sendrecv(full[-p:], dest=rank + 1, source=rank + 1)
        return local


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, default=24, help="cells per side")
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--quick", action="store_true", help="small grid, few steps")
    ap.add_argument("--check", action="store_true",
                    help="first compare the chained gradient with central differences")
    args = ap.parse_args(argv)
    if args.quick:
        args.m, args.iters = 10, 12
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    m = args.m
    geo = Slab(m, comm)
    if geo.z1 - geo.z0 < 1:
        raise SystemExit("more ranks than z-planes: use fewer ranks or a larger --m")

    # the truth: a conductive blob in a unit background; measurements with noise
    k, j, i = np.meshgrid(np.arange(geo.z0, geo.z1), np.arange(m), np.arange(m),
                          indexing="ij")
    r2 = ((i - 0.6 * m) ** 2 + (j - 0.4 * m) ** 2 + (k - 0.5 * m) ** 2) / m ** 2
    theta_true = np.log(1.0 + 4.0 * np.exp(-r2 / 0.02)).ravel()
    f = np.ones(theta_true.size)
    rng = np.random.default_rng(rank)

    def system(theta):
        ghosts = np.exp(geo.with_ghosts(theta))
        return assemble(m, geo.z0, geo.z1, lambda c: ghosts[c - geo.lo], 1.0)

    rows, _ = system(theta_true)
    u_true = sdp.Solver(rows, method="cg", rtol=1e-12).solve(f).x
    noise = 1e-3 * np.abs(u_true).max() if u_true.size else 0.0
    u_obs = u_true + noise * rng.standard_normal(u_true.size)
    alpha = 1e-9

    def loss_and_grad(theta):
        rows, (ca, cb, sign) = system(theta)
        solver = sdp.Solver(rows, method="cg", rtol=1e-10)
        sol = solver.solve(f)
        resid = sol.x - u_obs
        loss = comm.allreduce(0.5 * resid @ resid + 0.5 * alpha * theta @ theta)
        grad_data, _ = sol.vjp(resid)
        # chain rule, on this rank: data_k = sign_k·(κ_a + κ_b)/2, κ = exp(θ)
        kappa = np.exp(geo.with_ghosts(theta))
        w = grad_data * sign * 0.5
        full = np.bincount(ca - geo.lo, weights=w, minlength=kappa.size) + \
            np.bincount(cb - geo.lo, weights=w, minlength=kappa.size)
        grad = geo.reduce_ghosts(full * kappa) + alpha * theta
        return loss, grad, sol.info

    theta = np.zeros_like(theta_true)
    if args.check:
        # ⟨∇L, d⟩ against (L(θ + h d) − L(θ − h d)) / 2h, summed over ranks
        d = np.random.default_rng(100 + rank).standard_normal(theta.size)
        h = 1e-5
        _, grad, _ = loss_and_grad(theta)
        slope = comm.allreduce(grad @ d)
        fd = (loss_and_grad(theta + h * d)[0] - loss_and_grad(theta - h * d)[0]) / (2 * h)
        rel = abs(fd - slope) / abs(slope)
        if rank == 0:
            print(f"gradient check: ⟨∇L, d⟩ = {slope:.6e}, central difference "
                  f"{fd:.6e}, relative difference {rel:.1e}")
        assert rel < 1e-5, "the chained gradient disagrees with finite differences"
    t0 = time.perf_counter()
    loss0, grad, info = loss_and_grad(theta)
    step = 1.0 / max(np.sqrt(comm.allreduce(grad @ grad)), 1e-300)
    err0 = np.sqrt(comm.allreduce(((theta - theta_true) ** 2).sum()))
    history = [loss0]
    for _ in range(args.iters):
        new = theta - step * grad
        loss, g_new, info = loss_and_grad(new)
        if loss > history[-1]:
            step *= 0.3
            continue
        s, y = new - theta, g_new - grad
        sy = comm.allreduce(s @ y)
        step = comm.allreduce(s @ s) / sy if sy > 0 else step
        theta, grad = new, g_new
        history.append(loss)
    err = np.sqrt(comm.allreduce(((theta - theta_true) ** 2).sum()))
    if rank == 0:
        print(f"{comm.Get_size()} ranks, {m}³ = {m ** 3} cells, {info.method}, "
              f"last solve {info.iterations} iterations")
        print(f"loss {history[0]:.4e} -> {history[-1]:.4e} in {len(history) - 1} "
              f"accepted steps ({time.perf_counter() - t0:.1f} s)")
        print(f"‖θ − θ_true‖ {err0:.3f} -> {err:.3f}")
    assert history[-1] < 0.5 * history[0], "the fit did not reduce the loss"
    return history, err0, err


if __name__ == "__main__":
    main()
