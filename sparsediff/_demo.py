"""`sparsediff demo`: recover a diffusion coefficient from noisy field data.

The inverse problem. On the unit square, cell-centred finite volumes on an
``n × n`` grid discretize ``−∇·(κ ∇u) = f`` with Dirichlet data ``u = g`` on
the boundary. Several experiments ``(f_k, g_k)`` share one unknown coefficient
``κ(x, y) = exp(θ)`` (one value per cell) and give ``A(θ) U = B(θ)``:

* interior face between cells ``a`` and ``b``: transmissibility
  ``T = 2 κ_a κ_b / (κ_a + κ_b)`` (harmonic mean; face length over distance is 1);
* boundary face of cell ``c`` (ghost value at the face, distance ``h/2``):
  ``T = 2 κ_c``, contributing ``T`` to ``A[c, c]`` and ``T g`` to ``B[c]``;
* ``A[a, a] += T``, ``A[b, b] += T``, ``A[a, b] = A[b, a] = −T``; ``B += h² f``.

The sparsity pattern never changes, so it is built once and every evaluation
only refills ``A.data = assemble(θ)`` and calls ``Solver.update(data)``. The
loss is a data misfit plus a smoothed total-variation regularizer,

    J(θ) = ½ Σ_k ‖U_k(θ) − D_k‖² / (σ² N m)  +  α Σ_faces √((θ_a − θ_b)² + ε²),

and its gradient takes one adjoint solve for all experiments together
(``Solution.vjp`` with a ``(N, m)`` cotangent) followed by the O(nnz) chain
rule through the assembly (:meth:`DiffusionProblem.assemble_vjp`).
"""

import sys
import time

import numpy as np
import scipy.sparse as sp

__all__ = ["DiffusionProblem", "run_demo", "true_log_kappa"]


class DiffusionProblem:
    """Finite-volume ``−∇·(exp(θ) ∇u) = f`` on an ``n × n`` grid, fixed pattern.

    Parameters
    ----------
    n : int
        Cells per side; ``N = n²`` unknowns, one ``θ`` per cell.
    sources : ndarray, shape (N, m)
        ``f_k`` at the cell centres, one column per experiment.
    boundary : ndarray, shape (4 n, m)
        ``g_k`` at the boundary face midpoints (order of ``self.bface_cell``).
    """

    def __init__(self, n, sources, boundary):
        self.n = n
        self.h = 1.0 / n
        N = n * n
        self.N = N
        cells = np.arange(N).reshape(n, n)        # cells[iy, ix]
        # interior faces: (a, b) pairs, horizontal then vertical neighbours
        self.face_a = np.concatenate([cells[:, :-1].ravel(), cells[:-1, :].ravel()])
        self.face_b = np.concatenate([cells[:, 1:].ravel(), cells[1:, :].ravel()])
        # boundary faces: the cell each belongs to (left, right, bottom, top)
        self.bface_cell = np.concatenate(
            [cells[:, 0], cells[:, -1], cells[0, :], cells[-1, :]])
        # the pattern, canonical CSR (sorted, unique): diagonal + both off-diagonals
        rows = np.concatenate([np.arange(N), self.face_a, self.face_b])
        cols = np.concatenate([np.arange(N), self.face_b, self.face_a])
        order = np.argsort(rows * N + cols, kind="stable")
        pos = np.empty_like(order)
        pos[order] = np.arange(order.size)
        nf = self.face_a.size
        self.pos_diag = pos[:N]
        self.pos_ab = pos[N:N + nf]
        self.pos_ba = pos[N + nf:]
        self.indices = cols[order].astype(np.int32)
        self.indptr = np.concatenate(
            [[0], np.cumsum(np.bincount(rows, minlength=N))]).astype(np.int32)
        self.nnz = order.size
        self.sources = np.asarray(sources, dtype=float)
        self.boundary = np.asarray(boundary, dtype=float)
        self.m = self.sources.shape[1]

    def matrix(self, data):
        """The CSR matrix holding ``data`` (its own copy of the structure)."""
        return sp.csr_array((data, self.indices.copy(), self.indptr.copy()),
                            shape=(self.N, self.N))

    def _transmissibilities(self, kappa):
        ka, kb = kappa[self.face_a], kappa[self.face_b]
        return 2.0 * ka * kb / (ka + kb), 2.0 * kappa[self.bface_cell]

    def assemble(self, theta):
        """``(A.data, B)`` for ``κ = exp(θ)``; ``A.data`` in the pattern's order."""
        kappa = np.exp(theta)
        t, tb = self._transmissibilities(kappa)
        N = self.N
        data = np.empty(self.nnz)
        data[self.pos_diag] = (np.bincount(self.face_a, t, N)
                               + np.bincount(self.face_b, t, N)
                               + np.bincount(self.bface_cell, tb, N))
        data[self.pos_ab] = -t
        data[self.pos_ba] = -t
        B = self.h ** 2 * self.sources.copy()
        np.add.at(B, self.bface_cell, tb[:, None] * self.boundary)
        return data, B

    def assemble_vjp(self, theta, grad_data, grad_B):
        """Chain ``∂L/∂A.data`` and ``∂L/∂B`` back to ``∂L/∂θ`` in O(nnz)."""
        kappa = np.exp(theta)
        gd = grad_data[self.pos_diag]
        a, b, c = self.face_a, self.face_b, self.bface_cell
        # ∂L/∂T for interior faces: T enters A[a,a], A[b,b] (+) and A[a,b], A[b,a] (−)
        gt = gd[a] + gd[b] - grad_data[self.pos_ab] - grad_data[self.pos_ba]
        # boundary faces: T_b enters A[c,c] and B[c, k] (times g_k)
        gtb = gd[c] + np.einsum("fk,fk->f", grad_B[c], self.boundary)
        ka, kb = kappa[a], kappa[b]
        s2 = (ka + kb) ** 2
        N = self.N
        g_kappa = (np.bincount(a, gt * 2.0 * kb ** 2 / s2, N)
                   + np.bincount(b, gt * 2.0 * ka ** 2 / s2, N)
                   + np.bincount(c, 2.0 * gtb, N))
        return g_kappa * kappa

    def tv(self, theta, eps):
        """Smoothed total variation ``Σ √((θ_a − θ_b)² + ε²)`` and its gradient."""
        d = theta[self.face_a] - theta[self.face_b]
        s = np.sqrt(d * d + eps * eps)
        w = d / s
        grad = np.bincount(self.face_a, w, self.N) - np.bincount(self.face_b, w, self.N)
        return float(s.sum()), grad


def cell_centres(n):
    """``x, y`` of the cell centres, each of shape ``(n, n)`` (index ``[iy, ix]``)."""
    c = (np.arange(n) + 0.5) / n
    return np.meshgrid(c, c)


def true_log_kappa(n):
    """The coefficient to recover: smooth blobs plus a sharp inclusion, as ``log κ``."""
    x, y = cell_centres(n)
    th = (1.2 * np.exp(-((x - 0.3) ** 2 + (y - 0.7) ** 2) / (2 * 0.09 ** 2))
          - 1.0 * np.exp(-((x - 0.7) ** 2 + (y - 0.35) ** 2) / (2 * 0.12 ** 2)))
    square = (np.abs(x - 0.3) < 0.12) & (np.abs(y - 0.27) < 0.12)
    th = th + np.log(2.5) * square
    return th.ravel()


def experiments(n):
    """Sources and boundary data of three experiments: ``g = x``, ``g = y``, ``f = 1``."""
    N = n * n
    c = (np.arange(n) + 0.5) / n
    zeros, ones = np.zeros(n), np.ones(n)
    # boundary face midpoints in the order left, right, bottom, top
    bx = np.concatenate([zeros, ones, c, c])
    by = np.concatenate([c, c, zeros, ones])
    boundary = np.stack([bx, by, np.zeros(4 * n)], axis=1)
    sources = np.zeros((N, 3))
    sources[:, 2] = 10.0
    return sources, boundary


class _Objective:
    """``J(θ)`` and ``∇J(θ)`` for L-BFGS-B, one factorization per evaluation."""

    def __init__(self, problem, data, sigma, alpha, eps):
        import sparsediff as sd

        self.p = problem
        self.data = data
        self.scale = 1.0 / (sigma ** 2 * data.size)
        self.alpha = alpha
        self.eps = eps
        a_data, _ = problem.assemble(np.zeros(problem.N))
        # the pattern is fixed: build (and order) once, refactorize by update()
        self.solver = sd.Solver(problem.matrix(a_data), method="direct")
        self.evaluations = 0
        self.solve_time = 0.0
        self.last = None

    def __call__(self, theta):
        p = self.p
        a_data, B = p.assemble(theta)
        t0 = time.perf_counter()
        self.solver.update(a_data)
        sol = self.solver.solve(B)
        r = sol.x - self.data
        grad_A, grad_B = sol.vjp(self.scale * r)
        self.solve_time += time.perf_counter() - t0
        misfit = 0.5 * self.scale * float(np.vdot(r, r))
        reg, reg_grad = p.tv(theta, self.eps)
        loss = misfit + self.alpha * reg
        grad = p.assemble_vjp(theta, grad_A.data, grad_B) + self.alpha * reg_grad
        self.evaluations += 1
        self.last = dict(theta=theta.copy(), loss=loss, misfit=misfit,
                         grad_norm=float(np.linalg.norm(grad)), u=sol.x)
        return loss, grad


def gradient_check(objective, theta, rng, directions=3, step=1e-5, out=None):
    """Central differences of ``J`` against ``⟨∇J, v⟩`` on random directions."""
    out = sys.stdout if out is None else out
    _, grad = objective(theta)
    worst = 0.0
    for k in range(directions):
        v = rng.standard_normal(theta.size)
        fp, _ = objective(theta + step * v)
        fm, _ = objective(theta - step * v)
        fd = (fp - fm) / (2 * step)
        an = float(grad @ v)
        rel = abs(fd - an) / max(abs(fd), abs(an), 1e-300)
        worst = max(worst, rel)
        print(f"  direction {k}: finite difference {fd:+.10e}  "
              f"gradient {an:+.10e}  rel. diff {rel:.1e}", file=out)
    return worst


def _relative_error(theta, theta_true):
    k, kt = np.exp(theta), np.exp(theta_true)
    return float(np.linalg.norm(k - kt) / np.linalg.norm(kt))


def run_demo(n=128, noise=0.01, maxiter=None, output="sparsediff_demo.png", seed=0,
             check=False, alpha=None, out=None):
    """Run the inverse problem; print progress; write a figure; return a summary.

    Parameters
    ----------
    n : int
        Cells per side (``n²`` unknowns and parameters).
    noise : float
        Standard deviation of the Gaussian noise, relative to the RMS of the
        clean data.
    maxiter : int, optional
        L-BFGS-B iterations (default 300).
    output : str or None
        PNG file for the figure; ``None`` skips plotting.
    seed : int
        Seed of the noise (and of the gradient-check directions).
    check : bool
        Print a finite-difference check of the full gradient first.
    alpha : float, optional
        Weight of the TV regularizer (default scales with ``noise`` and ``h``).
    out : file
        Where progress goes.

    Returns
    -------
    dict
        ``history`` (list of ``(iteration, loss, grad_norm, rel_error)``),
        ``initial_error``, ``final_error``, ``seconds``, ``theta``,
        ``theta_true``, ``gradient_check`` (worst relative difference or None).
    """
    from scipy.optimize import minimize

    out = sys.stdout if out is None else out
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    maxiter = 300 if maxiter is None else maxiter
    sources, boundary = experiments(n)
    problem = DiffusionProblem(n, sources, boundary)
    theta_true = true_log_kappa(n)

    import sparsediff as sd

    a_data, B = problem.assemble(theta_true)
    clean = sd.solve(problem.matrix(a_data), B).x
    rms = float(np.sqrt(np.mean(clean ** 2)))
    data = clean + noise * rms * rng.standard_normal(clean.shape)
    # the misfit is weighted by the noise level (floored: noise-free data still
    # gets a well-scaled loss)
    sigma = max(noise, 1e-3) * rms
    if alpha is None:
        # TV weight: proportional to the noise (discrepancy-like) and to h so the
        # penalty approximates ∫|∇θ| independently of the grid
        alpha = 2.0 * max(noise, 1e-3) / n
    eps = 0.05
    objective = _Objective(problem, data, sigma, alpha, eps)

    print(f"sparsediff demo: recover κ(x, y) on a {n}×{n} grid "
          f"({problem.N} unknowns, nnz(A) = {problem.nnz}, "
          f"{problem.m} experiments, noise {noise:g}, TV weight {alpha:.3g})", file=out)
    theta0 = np.zeros(problem.N)
    worst = None
    if check:
        print("gradient check (central differences of the full loss):", file=out)
        worst = gradient_check(objective, theta0 + 0.1 * rng.standard_normal(problem.N),
                               rng, out=out)
        print(f"  worst relative difference {worst:.1e} "
              f"({'ok' if worst < 1e-5 else 'FAILED'})", file=out)

    history = []
    err0 = _relative_error(theta0, theta_true)
    loss0, g0 = objective(theta0)
    history.append((0, loss0, float(np.linalg.norm(g0)), err0))
    every = max(1, maxiter // 15)
    print(f"{'iter':>5} {'loss':>12} {'|grad|':>10} {'rel.err κ':>10}", file=out)
    print(f"{0:5d} {loss0:12.5e} {history[0][2]:10.3e} {err0:10.4f}", file=out)

    def callback(xk):
        it = len(history)
        last = objective.last
        if last is None or not np.array_equal(last["theta"], xk):
            objective(xk)
            last = objective.last
        row = (it, last["loss"], last["grad_norm"], _relative_error(xk, theta_true))
        history.append(row)
        if it % every == 0:
            print(f"{row[0]:5d} {row[1]:12.5e} {row[2]:10.3e} {row[3]:10.4f}", file=out)

    bounds = [(np.log(1e-2), np.log(1e2))] * problem.N
    res = minimize(objective, theta0, jac=True, method="L-BFGS-B", bounds=bounds,
                   callback=callback,
                   options=dict(maxiter=maxiter, maxcor=20, ftol=1e-12, gtol=1e-9))
    theta = res.x
    err = _relative_error(theta, theta_true)
    seconds = time.perf_counter() - start
    print(f"done: {res.nit} iterations, {objective.evaluations} loss+gradient "
          f"evaluations ({res.message})", file=out)
    print(f"relative error of κ: {err0:.4f} (κ = 1) -> {err:.4f}", file=out)
    print(f"time: {seconds:.1f} s total, {objective.solve_time:.1f} s in "
          f"factorize + solve + vjp", file=out)

    if output is not None:
        objective(theta)
        _plot(output, n, theta_true, theta, data, objective.last["u"], history)
        print(f"figure: {output}", file=out)
    return dict(history=history, initial_error=err0, final_error=err,
                seconds=seconds, theta=theta, theta_true=theta_true,
                gradient_check=worst, result=res)


def _plot(path, n, theta_true, theta, data, u, history):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kt, kr = np.exp(theta_true).reshape(n, n), np.exp(theta).reshape(n, n)
    lo, hi = min(kt.min(), kr.min()), max(kt.max(), kr.max())
    fig, axes = plt.subplots(2, 3, figsize=(13, 8), layout="constrained")
    opts = dict(origin="lower", extent=(0, 1, 0, 1))
    panels = [
        (axes[0, 0], kt, "true κ(x, y)", dict(cmap="viridis", vmin=lo, vmax=hi)),
        (axes[0, 1], kr, "recovered κ", dict(cmap="viridis", vmin=lo, vmax=hi)),
        (axes[0, 2], kr - kt, "recovered − true", dict(cmap="RdBu_r")),
        (axes[1, 0], data[:, 0].reshape(n, n), "noisy data, experiment 1 (u = x on ∂Ω)",
         dict(cmap="magma")),
        (axes[1, 1], (u - data)[:, 0].reshape(n, n), "data misfit u(κ) − d, experiment 1",
         dict(cmap="RdBu_r")),
    ]
    for ax, img, title, kw in panels:
        if kw.get("cmap") == "RdBu_r":
            v = float(np.abs(img).max()) or 1.0
            kw = dict(kw, vmin=-v, vmax=v)
        im = ax.imshow(img, **opts, **kw)
        ax.set_title(title)
        fig.colorbar(im, ax=ax, shrink=0.85)
    h = np.array(history)
    ax = axes[1, 2]
    ax.semilogy(h[:, 0], h[:, 1] / h[0, 1], label="loss / initial loss")
    ax.semilogy(h[:, 0], h[:, 3], label="relative error of κ")
    ax.set_xlabel("L-BFGS-B iteration")
    ax.set_title("convergence")
    ax.legend()
    fig.suptitle(f"sparsediff: coefficient recovery on a {n}×{n} grid "
                 f"(L-BFGS-B with adjoint gradients)")
    fig.savefig(path, dpi=90)
    plt.close(fig)
