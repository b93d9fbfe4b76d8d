"""Learn a diagonal-plus-low-rank preconditioner for a family of diffusion matrices.

The family: ``−∇·(κ∇u)`` on a 24 × 24 grid, with log-normal coefficient fields
around a layered mean (contrast e³ between layers), one matrix per random
field. The preconditioner ``M = D + U Uᵀ`` (rank 4 here, SPD for every
parameter value) approximates ``A`` and is applied as ``M⁻¹`` by the Woodbury
identity.
It is trained end to end through 20 unrolled PCG iterations (loss: log of the
residual after 20 iterations) on 16 matrices, then frozen and handed to
sparsediff's CG as a user preconditioner on 8 *held-out* matrices, where we
count the iterations to ``rtol = 1e-6``.

What to expect: the learned diagonal picks up the layered geology shared by
the family, which plain CG cannot see (a Jacobi preconditioner built from
each matrix's own diagonal is better still — it sees the details). The
low-rank part helps less: a 20-iteration loss is blind to modes that CG only
resolves later, and raising the rank or the learning rate can make the full
solve slower even as the training loss falls (the short-horizon bias of
truncated training). Measured runs of this script (same seeds): 24² grid,
rank 4 (as written): 242 → 133.5 iterations; rank 8: 242 → 147; rank 0:
242 → 119; a 32² grid, rank 8 at learning rate 0.2: 356 → 1733, worse.

Run:  python examples/learned_preconditioner.py   (about 20-40 s on one core;
``--quick``: a 12 × 12 grid, 8 + 4 matrices and 30 training steps, for smoke tests)
"""

import argparse
import time

import numpy as np
import scipy.sparse as sp
import torch

from sparsediff.learn import (
    CSRPattern,
    WoodburyPreconditioner,
    diffusion_family,
    iterations_to_tolerance,
    train_preconditioner,
)

# small tensors: overhead-bound, and one thread avoids oversubscribing the cores
torch.set_num_threads(1)

NX, N_TRAIN, N_HELD, K, RANK, STEPS, LR = 24, 16, 8, 20, 4, 100, 0.05


def held_out_iterations(A0, held, M, rng):
    its = []
    for v in held:
        A = sp.csr_array((v, A0.indices, A0.indptr), shape=A0.shape)
        its.append(iterations_to_tolerance(A, rng.standard_normal(A0.shape[0]), M,
                                           rtol=1e-6))
    return np.array(its)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a 12 × 12 grid, 8 training and 4 held-out matrices and 30 "
                             "training steps (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        nx, n_train, n_held, steps = 12, 8, 4, 30
    else:
        nx, n_train, n_held, steps = NX, N_TRAIN, N_HELD, STEPS
    A0, values = diffusion_family(nx, n_train + n_held, seed=0)
    pattern = CSRPattern(A0.indptr, A0.indices, A0.shape)
    train = torch.tensor(values[:n_train])
    held = values[n_train:]
    n = A0.shape[0]

    P = WoodburyPreconditioner(n, RANK, diag=float(A0.diagonal().mean()),
                               generator=torch.Generator().manual_seed(0))
    before_none = held_out_iterations(A0, held, None, np.random.default_rng(1))
    before = held_out_iterations(A0, held, P, np.random.default_rng(1))

    t0 = time.perf_counter()

    def report(step, loss):
        if step % 20 == 0 or step == steps - 1:
            print(f"  step {step:4d}  loss log(‖r_{K}‖/‖b‖) = {loss:+.3f}")

    print(f"training on {n_train} matrices (n = {n}, k = {K} PCG iterations, "
          f"rank {RANK})")
    train_preconditioner(P, (train, pattern), K, num_steps=steps, lr=LR,
                         generator=torch.Generator().manual_seed(2), callback=report)
    elapsed = time.perf_counter() - t0
    after = held_out_iterations(A0, held, P, np.random.default_rng(1))

    print(f"training time {elapsed:.1f} s")
    print("CG iterations to rtol = 1e-6 on held-out matrices (mean, min-max):")
    for name, its in [("no preconditioner", before_none),
                      ("Woodbury, untrained", before),
                      ("Woodbury, trained", after)]:
        print(f"  {name:<22} {its.mean():7.1f}   ({its.min()}-{its.max()})")


if __name__ == "__main__":
    main()
