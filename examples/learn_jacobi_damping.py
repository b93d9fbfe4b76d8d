"""Learn the damping ω of weighted Jacobi as a multigrid smoother.

A smoother's job is to kill the *high-frequency* part of the error. We start
from random combinations of high-frequency sine modes, run ``k`` sweeps of
``x ↦ x + ω D⁻¹ (b − A x)`` (b = 0, so ``x`` is the error), and descend on ω
with the gradient of ``loss = log(‖e_k‖ / ‖e_0‖) / k`` (the mean reduction per
sweep) computed by :func:`sparsediff.fixed_point.iterate` through all ``k``
sweeps (checkpointed). Local Fourier analysis gives the optimum of the worst
high-frequency amplification: ω = 2/3 for the 1-D Laplacian and ω = 4/5 for
the 2-D 5-point Laplacian. The loss here is an average (a 2k-norm of the
amplification over the modes present), not the worst case, so the learned
values land slightly below the minimax optima, approaching them as k grows.
``k`` stays small because a high-frequency error reduced to rounding level
stops being high-frequency (rounding refills every mode).

Run: ``python examples/learn_jacobi_damping.py [--quick] [--output out.png]`` (saves a
PNG beside itself by default; ``--quick``: coarser grids and fewer gradient steps, for
smoke tests).
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import scipy.fft  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from sparsediff.fixed_point import iterate, steps  # noqa: E402

OUTPUT = Path(__file__).with_suffix(".png")


def laplacian(N, dim):
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(N, N))
    if dim == 1:
        return T.tocsr()
    eye = sp.eye(N)
    return (sp.kron(T, eye) + sp.kron(eye, T)).tocsr()


def high_frequency_errors(N, dim, m, rng):
    """``m`` random combinations of the sine modes with max(j) ≥ (N + 1)/2."""
    shape = (N,) * dim
    coef = rng.standard_normal(shape + (m,))
    j = np.indices(shape).max(axis=0) + 1          # mode numbers 1..N
    coef[j < (N + 1) / 2] = 0.0
    e = scipy.fft.idstn(coef, type=1, axes=tuple(range(dim)))
    return e.reshape(-1, m)


def learn(dim, N, k=10, m=4, omega=0.3, lr=0.02, iters=100, seed=0):
    rng = np.random.default_rng(seed)
    A = laplacian(N, dim)
    step = steps.Jacobi(A)
    e0 = high_frequency_errors(N, dim, m, rng)
    history = []
    for t in range(iters):
        p = step.params(omega)
        res = iterate(step.f, e0, p, k, f_vjp=step.f_vjp, adjoint="checkpoint")
        ek = res.x
        nk2 = float(np.sum(ek * ek))
        loss = 0.5 * np.log(nk2 / np.sum(e0 * e0)) / k
        grad, _ = res.vjp(ek / (nk2 * k))           # ∂loss/∂e_k
        history.append((omega, loss))
        # the loss is nearly a max over modes (sharp at its minimum): a step
        # bound that shrinks over time stops the descent from bouncing across it
        bound = 0.05 * 0.95 ** t
        omega -= float(np.clip(lr * grad["omega"], -bound, bound))
    return omega, np.array(history)


def amplification(omega, dim, theta):
    """Jacobi's amplification of the mode with angle(s) θ (Fourier analysis)."""
    mu = 1.0 - np.cos(theta) if dim == 1 else theta
    return np.abs(1.0 - omega * mu)


def experiment(N1=127, N2=63, iters=100, output=OUTPUT):
    results = {}
    for dim, N, best in ((1, N1, 2 / 3), (2, N2, 4 / 5)):
        omega, hist = learn(dim, N, iters=iters)
        results[dim] = (omega, hist, best)
        print(f"{dim}-D Poisson: learned omega = {omega:.4f}, textbook optimum = "
              f"{best:.4f} (difference {abs(omega - best):.1e}); mean error reduction "
              f"per sweep {np.exp(hist[-1, 1]):.3f}")

    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    for dim, (_, hist, best) in results.items():
        ax[0].plot(hist[:, 0], label=f"{dim}-D (optimum {best:.3f})")
        ax[0].axhline(best, ls=":", c="gray")
        ax[1].plot(np.exp(hist[:, 1]), label=f"{dim}-D")
    ax[0].set(xlabel="gradient step", ylabel="ω", title="learned damping")
    ax[1].set(xlabel="gradient step", ylabel="mean reduction per sweep",
              title="high-frequency error reduction")
    theta = np.linspace(0, np.pi, 400)
    for w, ls in ((results[1][0], "-"), (2 / 3, ":")):
        ax[2].plot(theta, amplification(w, 1, theta), ls, label=f"ω = {w:.3f}")
    ax[2].axvspan(np.pi / 2, np.pi, color="orange", alpha=0.15, label="high frequencies")
    ax[2].set(xlabel="θ", ylabel="|1 − ω(1 − cos θ)|", title="1-D amplification")
    for a in ax:
        a.legend()
    fig.tight_layout()
    out = Path(output)
    fig.savefig(out, dpi=110)
    print(f"saved {out.name}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="grids of 63 and 31² points and 40 gradient steps instead "
                             "of 127, 63² and 100 (smoke test)")
    parser.add_argument("--output", type=Path, default=OUTPUT,
                        help="PNG to write (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.quick:
        experiment(N1=63, N2=31, iters=40, output=args.output)
    else:
        experiment(output=args.output)


if __name__ == "__main__":
    main()
