"""Learn the interval of a Chebyshev smoother by differentiating through it.

A Chebyshev smoother for ``A x = b`` damps the eigencomponents whose
eigenvalues lie in its interval ``[lmin, lmax]``; as a multigrid smoother it
should target the *high-frequency* part of the spectrum. For the 2-D 5-point
Laplacian (stencil 4, −1) the high-frequency modes (max(θ₁, θ₂) ≥ π/2) have
eigenvalues in ``[2, 8)``. We learn the interval from data: random
high-frequency errors, ``k`` steps of the three-term recurrence (state = the
pair of the last two iterates), loss = mean error reduction per step, and
gradients with respect to ``lmin`` and ``lmax`` from
:func:`sparsediff.fixed_point.iterate` (reconstruct mode: the Chebyshev
recurrence is inverted backwards exactly, without a linear solve).

Run: ``python examples/learn_chebyshev.py [--quick] [--output out.png]`` (saves a PNG
beside itself by default; ``--quick``: a 31 × 31 grid, for smoke tests).
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from learn_jacobi_damping import high_frequency_errors, laplacian  # noqa: E402

from sparsediff.fixed_point import iterate, steps  # noqa: E402

OUTPUT = Path(__file__).with_suffix(".png")


def reduction(step, e0, lo, hi, k):
    """Mean reduction per step, its gradient w.r.t. (lo, hi), and the result."""
    p = step.params(lo, hi)
    res = iterate(step.f, step.initial_state(e0), p, k, f_vjp=step.f_vjp,
                  f_inverse=step.f_inverse, adjoint="reconstruct")
    ek = step.solution(res.x)
    nk2 = float(np.sum(ek * ek))
    loss = 0.5 * np.log(nk2 / np.sum(e0 * e0)) / k
    v = np.zeros_like(res.x)
    v[0] = ek / (nk2 * k)
    grad, _ = res.vjp(v)
    return loss, np.array([grad["lmin"], grad["lmax"]]), res.info


def experiment(N=63, k=6, iters=80, lr=0.05, output=OUTPUT):
    rng = np.random.default_rng(1)
    A = laplacian(N, 2)
    step = steps.Chebyshev(A)
    e0 = high_frequency_errors(N, 2, 4, rng)
    lam = np.log([0.5, 9.0])                      # learn in log-space: stays positive
    hist = []
    for t in range(iters):
        lo, hi = np.exp(lam)
        loss, g, info = reduction(step, e0, lo, hi, k)
        hist.append((lo, hi, loss))
        step_ = lr * g * np.exp(lam)              # chain rule through exp
        bound = 0.2 * 0.96 ** t
        lam = lam - np.clip(step_, -bound, bound)
    lo, hi = np.exp(lam)
    loss, _, info = reduction(step, e0, lo, hi, k)
    ref = reduction(step, e0, 2.0, 8.0, k)[0]
    pyamg_like = reduction(step, e0, 8.0 / 30, 1.1 * 8.0, k)[0]
    print(f"learned interval [{lo:.3f}, {hi:.3f}]  (high-frequency spectrum [2, 8))")
    print(f"mean high-frequency error reduction per step: learned {np.exp(loss):.3f}, "
          f"[2, 8] {np.exp(ref):.3f}, [λmax/30, 1.1 λmax] {np.exp(pyamg_like):.3f}")
    print(f"reconstruction: max error {info.max_reconstruction_error:.1e}, "
          f"fell back: {info.fell_back}")

    hist = np.array(hist)
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].plot(hist[:, 0], label="lmin")
    ax[0].plot(hist[:, 1], label="lmax")
    for y in (2.0, 8.0):
        ax[0].axhline(y, ls=":", c="gray")
    ax[0].set(xlabel="gradient step", ylabel="bound", title="learned Chebyshev interval")
    ax[1].plot(np.exp(hist[:, 2]))
    ax[1].axhline(np.exp(ref), ls=":", c="gray", label="interval [2, 8]")
    ax[1].set(xlabel="gradient step", ylabel="mean reduction per step",
              title="high-frequency error reduction")
    for a in ax:
        a.legend()
    fig.tight_layout()
    out = Path(output)
    fig.savefig(out, dpi=110)
    print(f"saved {out.name}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a 31 × 31 grid instead of 63 × 63 (smoke test)")
    parser.add_argument("--output", type=Path, default=OUTPUT,
                        help="PNG to write (default: %(default)s)")
    args = parser.parse_args(argv)
    experiment(N=31 if args.quick else 63, output=args.output)


if __name__ == "__main__":
    main()
