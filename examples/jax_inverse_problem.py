"""Recover a conductivity field from sparse measurements (JAX + sparsediff).

The forward model is the finite-volume discretization of

    −∇·(κ ∇u) = f   on the unit square,   u = 0 on the boundary,

on a k×k grid. The stiffness matrix is *assembled in JAX* from κ as COO
triplets (duplicates summed), solved with ``sparsediff.jax.solve``, and the
misfit at a few sensor cells is minimized over ``log κ`` with L-BFGS
(``scipy.optimize.minimize``) on the JIT-compiled value and gradient. Every
gradient is one forward solve plus one adjoint solve that reuses the forward
factorization.

Run: ``python examples/jax_inverse_problem.py [--k 32] [--plot out.png]`` (small and
fast, for smoke tests: ``--k 16 --maxiter 30``)
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize as so
from jax.experimental import sparse as jsparse

import sparsediff.jax as sdj

jax.config.update("jax_enable_x64", True)


def grid_faces(k):
    """Interior faces (cell pairs) and boundary cells of a k×k grid."""
    idx = np.arange(k * k).reshape(k, k)
    pairs = np.concatenate([
        np.stack([idx[:, :-1].ravel(), idx[:, 1:].ravel()], 1),   # x-faces
        np.stack([idx[:-1, :].ravel(), idx[1:, :].ravel()], 1),   # y-faces
    ])
    # number of boundary faces of each cell (Dirichlet u = 0 outside)
    nb = np.zeros((k, k), int)
    nb[0, :] += 1
    nb[-1, :] += 1
    nb[:, 0] += 1
    nb[:, -1] += 1
    return pairs, nb.ravel()


def make_assembler(k):
    """``assemble(log_kappa) -> BCOO`` for the finite-volume operator."""
    h2 = (1.0 / k) ** 2
    pairs, nb = grid_faces(k)
    i, j = pairs[:, 0], pairs[:, 1]
    cells = np.arange(k * k)
    # triplets: (i,i) (j,j) (i,j) (j,i) per face, then the boundary diagonal
    rows = np.concatenate([i, j, i, j, cells])
    cols = np.concatenate([i, j, j, i, cells])
    indices = jnp.asarray(np.stack([rows, cols], 1))

    def assemble(log_kappa):
        kappa = jnp.exp(log_kappa)
        t = 2.0 / (1.0 / kappa[i] + 1.0 / kappa[j]) / h2   # harmonic mean
        data = jnp.concatenate([t, t, -t, -t, 2.0 * kappa * nb / h2])
        return jsparse.BCOO((data, indices), shape=(k * k, k * k))

    return assemble


def true_log_kappa(k):
    x = (np.arange(k) + 0.5) / k
    X, Y = np.meshgrid(x, x, indexing="ij")
    blob = np.exp(-((X - 0.35) ** 2 + (Y - 0.6) ** 2) / 0.02)
    return jnp.asarray((np.log(1.0) + np.log(5.0) * blob).ravel())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", type=int, default=32, help="grid size (n = k²)")
    p.add_argument("--sensors", type=int, default=150)
    p.add_argument("--maxiter", type=int, default=60)
    p.add_argument("--plot", default=None, help="save a figure to this file")
    args = p.parse_args(argv)
    k, n = args.k, args.k ** 2
    if not 0 < args.sensors <= n:
        p.error(f"--sensors must be between 1 and the {n} cells of a {k}×{k} grid")
    rng = np.random.default_rng(0)
    assemble = make_assembler(k)

    # several source terms (right-hand sides) make the problem better posed
    x = (np.arange(k) + 0.5) / k
    X, Y = np.meshgrid(x, x, indexing="ij")
    F = jnp.asarray(np.stack([np.ones(n), (np.sin(np.pi * X) * np.cos(2 * Y)).ravel(),
                              (X * (1 - Y)).ravel() * 4], axis=1))
    sensors = jnp.asarray(rng.choice(n, size=args.sensors, replace=False))
    truth = true_log_kappa(k)
    u_true = sdj.solve(assemble(truth), F)
    noise = 1e-4 * float(jnp.abs(u_true).max())
    data = u_true[sensors] + noise * jnp.asarray(rng.standard_normal((args.sensors, 3)))

    # graph-Laplacian smoothness prior on log κ
    pairs, _ = grid_faces(k)
    alpha = 20.0

    def objective(m):
        u = sdj.solve(assemble(m), F)
        misfit = 0.5 * jnp.sum(((u[sensors] - data) / noise) ** 2)
        reg = 0.5 * alpha * jnp.sum((m[pairs[:, 0]] - m[pairs[:, 1]]) ** 2)
        return misfit + reg

    value_and_grad = jax.jit(jax.value_and_grad(objective))
    history = []

    def fun(m):
        v, g = value_and_grad(jnp.asarray(m))
        return float(v), np.asarray(g)

    def report(m):
        history.append(m)
        it = len(history)
        if it % 10 == 0 or it == 1:
            err = float(jnp.linalg.norm(m - truth) / jnp.linalg.norm(truth))
            print(f"iter {it:3d}  objective {fun(m)[0]:.3e}  "
                  f"relative error of log κ {err:.3f}", flush=True)

    t0 = time.perf_counter()
    m0 = np.zeros(n)
    print(f"grid {k}×{k} (n = {n}), {args.sensors} sensors, 3 sources; "
          f"initial objective {fun(m0)[0]:.3e}")
    res = so.minimize(fun, m0, jac=True, method="L-BFGS-B", callback=report,
                      options=dict(maxiter=args.maxiter, ftol=1e-12, gtol=1e-8))
    m = jnp.asarray(res.x)
    err = float(jnp.linalg.norm(m - truth) / jnp.linalg.norm(truth))
    print(f"done in {time.perf_counter() - t0:.1f} s: {res.nit} iterations, "
          f"objective {res.fun:.3e}, relative error of log κ {err:.3f}")

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 2, figsize=(8, 3.5))
        vmin, vmax = float(truth.min()), float(truth.max())
        for a, field, title in ((ax[0], truth, "true log κ"), (ax[1], m, "recovered")):
            im = a.imshow(np.asarray(field).reshape(k, k).T, origin="lower",
                          vmin=vmin, vmax=vmax)
            a.set_title(title)
        fig.colorbar(im, ax=ax)
        fig.savefig(args.plot, dpi=120)
        print(f"figure written to {args.plot}")
    return err


if __name__ == "__main__":
    main()
